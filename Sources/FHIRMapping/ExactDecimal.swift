/// A decimal number as its digits and a scale, for the mapping's arithmetic and comparisons: `0.1 + 0.2` is
/// `0.3` and `70.50` keeps its two decimals, where a Double would round both. Up to 38 significant digits (an
/// Int128); a result that needs more is an error, never a rounded value.
struct ExactDecimal: Sendable, Equatable {
    /// The value is `significand × 10^-scale`.
    let significand: Int128
    let scale: Int

    static let maxScale = 30

    init(significand: Int128, scale: Int) {
        self.significand = significand
        self.scale = scale
    }

    /// Reads `-12.50`, `+3`, `1e3`, `1.5E-2` (surrounding blanks allowed); nil for anything else.
    init?(_ text: String) {
        var bytes = Substring(text).utf8.drop { $0 == 32 || $0 == 9 }
        while let last = bytes.last, last == 32 || last == 9 { bytes = bytes.dropLast() }
        var negative = false
        if let first = bytes.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        var significand: Int128 = 0
        var scale = 0
        var digits = 0
        var seenPoint = false
        var exponent = 0
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b >= 48 && b <= 57 {
                let (m, o1) = significand.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int128(b - 48))
                if o1 || o2 { return nil }
                significand = a
                digits += 1
                if seenPoint { scale += 1 }
            } else if b == UInt8(ascii: "."), !seenPoint, digits > 0 {
                seenPoint = true
            } else if b == UInt8(ascii: "e") || b == UInt8(ascii: "E") {
                guard digits > 0, let e = Int(String(Substring(bytes[bytes.index(after: i)...]))), abs(e) <= Self.maxScale else { return nil }
                exponent = e
                i = bytes.endIndex
                break
            } else {
                return nil
            }
            i = bytes.index(after: i)
        }
        guard digits > 0, !(seenPoint && scale == 0) else { return nil }
        if negative { significand = -significand }
        scale -= exponent
        if scale < 0 {
            guard let scaled = Self.scaled(significand, by: -scale) else { return nil }
            significand = scaled
            scale = 0
        }
        guard scale <= Self.maxScale else { return nil }
        self.init(significand: significand, scale: scale)
    }

    /// `value × 10^places`, nil on overflow.
    static func scaled(_ value: Int128, by places: Int) -> Int128? {
        var v = value
        for _ in 0..<places {
            let (m, o) = v.multipliedReportingOverflow(by: 10)
            if o { return nil }
            v = m
        }
        return v
    }

    /// Both significands at the larger scale.
    private static func aligned(_ a: ExactDecimal, _ b: ExactDecimal) -> (Int128, Int128, Int)? {
        let scale = max(a.scale, b.scale)
        guard let x = scaled(a.significand, by: scale - a.scale), let y = scaled(b.significand, by: scale - b.scale) else { return nil }
        return (x, y, scale)
    }

    func adding(_ other: ExactDecimal) -> ExactDecimal? {
        guard let (x, y, scale) = Self.aligned(self, other) else { return nil }
        let (sum, o) = x.addingReportingOverflow(y)
        return o ? nil : ExactDecimal(significand: sum, scale: scale)
    }

    func subtracting(_ other: ExactDecimal) -> ExactDecimal? {
        guard let (x, y, scale) = Self.aligned(self, other) else { return nil }
        let (difference, o) = x.subtractingReportingOverflow(y)
        return o ? nil : ExactDecimal(significand: difference, scale: scale)
    }

    /// Exact: the scales add up (`1.5 × 0.25 = 0.375`).
    func multiplied(by other: ExactDecimal) -> ExactDecimal? {
        let (product, o) = significand.multipliedReportingOverflow(by: other.significand)
        guard !o, scale + other.scale <= Self.maxScale else { return nil }
        return ExactDecimal(significand: product, scale: scale + other.scale)
    }

    /// The quotient rounded half away from zero to `places` decimals; nil when dividing by zero or on overflow.
    func divided(by other: ExactDecimal, places: Int) -> ExactDecimal? {
        guard other.significand != 0 else { return nil }
        // self / other = (s1 / s2) × 10^(scale2 - scale1); computed at places + 1 digits, then rounded.
        let shift = places + 1 + other.scale - scale
        var numerator = significand
        var denominator = other.significand
        if shift >= 0 {
            guard let n = Self.scaled(numerator, by: shift) else { return nil }
            numerator = n
        } else {
            guard let d = Self.scaled(denominator, by: -shift) else { return nil }
            denominator = d
        }
        return ExactDecimal(significand: numerator / denominator, scale: places + 1).rounded(places: places)
    }

    /// Rounded half away from zero (`2.45` → `2.5`, `-2.45` → `-2.5`) to `places` decimals; more places than the
    /// value has pad it with zeros (`2.5` to 2 places is `2.50`), as FHIR decimals carry their precision.
    func rounded(places: Int) -> ExactDecimal? {
        if places >= scale {
            return Self.scaled(significand, by: places - scale).map { ExactDecimal(significand: $0, scale: places) }
        }
        guard let divisor = Self.scaled(1, by: scale - places) else { return nil }
        var q = significand / divisor
        let r = significand % divisor
        if (r < 0 ? -r : r) * 2 >= divisor { q += significand < 0 ? -1 : 1 }
        return ExactDecimal(significand: q, scale: places)
    }

    func compare(_ other: ExactDecimal) -> Int? {
        guard let (x, y, _) = Self.aligned(self, other) else { return nil }
        return x < y ? -1 : x > y ? 1 : 0
    }

    /// Plain notation, every decimal kept: `-0.50`, `68.0388555`.
    var text: String {
        let negative = significand < 0
        var digits = String(significand.magnitude)
        if scale > 0 {
            if digits.count <= scale { digits = String(repeating: "0", count: scale - digits.count + 1) + digits }
            digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -scale))
        }
        return (negative ? "-" : "") + digits
    }
}
