/// A declared source date format such as `MM/dd/yyyy` or `yyyy-MM-dd'T'HH:mm:ssXXX`, compiled once and applied
/// to every row without Foundation's slow, locale-dependent `DateFormatter`.
///
/// Pattern letters: `yyyy` year, `MM`/`M` month, `dd`/`d` day, `HH`/`H` hour (24h), `mm` minute, `ss` second,
/// `S…` fraction of a second (any number of digits), `XXX`/`XX`/`X`/`Z` UTC offset (`Z`, `+01:00`, `+0100`,
/// `+01`). Text in single quotes and any other character must match literally.
struct DateFormat: Sendable, Equatable {
    enum Field: Sendable, Equatable {
        case year, month(minDigits: Int), day(minDigits: Int), hour(minDigits: Int), minute, second, fraction, offset
        case literal(Unicode.Scalar)
    }

    let pattern: String
    let fields: [Field]

    var hasTime: Bool { fields.contains(.hour(minDigits: 1)) || fields.contains(.hour(minDigits: 2)) }
    var hasOffset: Bool { fields.contains(.offset) }
    var hasMonth: Bool { fields.contains { if case .month = $0 { return true } else { return false } } }
    var hasDay: Bool { fields.contains { if case .day = $0 { return true } else { return false } } }

    /// Compiles `pattern`; throws a message naming the problem.
    init(_ pattern: String) throws(DateFormatError) {
        self.pattern = pattern
        var fields: [Field] = []
        let chars = Array(pattern.unicodeScalars)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            var run = 1
            while i + run < chars.count && chars[i + run] == c { run += 1 }
            switch c {
            case "y":
                guard run == 4 else { throw DateFormatError("use 'yyyy' for the year") }
                fields.append(.year)
            case "M":
                guard run <= 2 else { throw DateFormatError("use 'MM' or 'M' for the month (month names are not supported)") }
                fields.append(.month(minDigits: run))
            case "d":
                guard run <= 2 else { throw DateFormatError("use 'dd' or 'd' for the day") }
                fields.append(.day(minDigits: run))
            case "H":
                guard run <= 2 else { throw DateFormatError("use 'HH' or 'H' for the hour") }
                fields.append(.hour(minDigits: run))
            case "m":
                guard run == 2 else { throw DateFormatError("use 'mm' for minutes") }
                fields.append(.minute)
            case "s":
                guard run == 2 else { throw DateFormatError("use 'ss' for seconds") }
                fields.append(.second)
            case "S": fields.append(.fraction)
            case "X", "Z": fields.append(.offset)
            case "'":
                var j = i + 1
                while j < chars.count && chars[j] != "'" {
                    fields.append(.literal(chars[j]))
                    j += 1
                }
                guard j < chars.count else { throw DateFormatError("quoted text without closing ' ") }
                i = j + 1
                continue
            case "h", "a", "E", "L", "D", "u", "G", "k", "K", "z", "Y":
                throw DateFormatError("pattern letter '\(c)' is not supported; use yyyy MM dd HH mm ss S XXX")
            default:
                for _ in 0..<run { fields.append(.literal(c)) }
            }
            i += run
        }
        guard fields.contains(.year) else { throw DateFormatError("the format has no year (yyyy)") }
        // 'mm' is minutes: without an hour, 'yyyy-mm-dd' means months (as 'MM').
        let hasHour = fields.contains { if case .hour = $0 { return true } else { return false } }
        if fields.contains(.minute) && !hasHour { throw DateFormatError("'mm' is minutes, and the format has no hour (HH); use 'MM' for the month") }
        self.fields = fields
    }

    /// A parsed point in time, precise to what the source gave.
    struct Parts: Equatable {
        var year = 0, month = 0, day = 0, hour = -1, minute = 0, second = 0
        var fraction = ""
        /// `Z` or `+hh:mm`, nil when the source gave no offset.
        var offset: String?
    }

    /// Parses `text` against the format, checking calendar ranges. Returns nil when it does not match.
    func parse(_ text: String) -> Parts? {
        let s = Array(text.utf8)
        var i = 0
        var p = Parts()
        func digits(min: Int, max: Int) -> Int? {
            var n = 0
            var count = 0
            while i < s.count && count < max && s[i] >= 48 && s[i] <= 57 {
                n = n * 10 + Int(s[i] - 48)
                i += 1
                count += 1
            }
            return count >= min ? n : nil
        }
        for field in fields {
            switch field {
            case .year: guard let v = digits(min: 4, max: 4) else { return nil }; p.year = v
            case .month(let m): guard let v = digits(min: m, max: 2), (1...12).contains(v) else { return nil }; p.month = v
            case .day(let m): guard let v = digits(min: m, max: 2), v >= 1 else { return nil }; p.day = v
            case .hour(let m): guard let v = digits(min: m, max: 2), v <= 23 else { return nil }; p.hour = v
            case .minute: guard let v = digits(min: 2, max: 2), v <= 59 else { return nil }; p.minute = v
            case .second: guard let v = digits(min: 2, max: 2), v <= 60 else { return nil }; p.second = v
            case .fraction:
                let start = i
                while i < s.count && s[i] >= 48 && s[i] <= 57 { i += 1 }
                guard i > start else { return nil }
                p.fraction = String(decoding: s[start..<i], as: UTF8.self)
            case .offset:
                guard i < s.count else { return nil }
                if s[i] == UInt8(ascii: "Z") {
                    p.offset = "Z"
                    i += 1
                } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
                    let sign = s[i]
                    i += 1
                    guard let hh = digits(min: 2, max: 2), hh <= 14 else { return nil }
                    if i < s.count && s[i] == UInt8(ascii: ":") { i += 1 }
                    let mm = digits(min: 2, max: 2) ?? 0
                    guard mm <= 59 else { return nil }
                    p.offset = String(UnicodeScalar(sign)) + pad2(hh) + ":" + pad2(mm)
                } else {
                    return nil
                }
            case .literal(let c):
                if c.isASCII {
                    guard i < s.count, s[i] == UInt8(c.value) else { return nil }
                    i += 1
                } else {
                    let enc = Array(String(c).utf8)
                    guard i + enc.count <= s.count, Array(s[i..<i + enc.count]) == enc else { return nil }
                    i += enc.count
                }
            }
        }
        guard i == s.count else { return nil }
        if p.day > 0 {
            guard p.month > 0, p.day <= DateFormat.daysIn(month: p.month, year: p.year) else { return nil }
        }
        return p
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

struct DateFormatError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

@inline(__always)
func pad2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

extension DateFormat.Parts {
    /// FHIR `date`: `yyyy`, `yyyy-MM` or `yyyy-MM-dd`, as precise as the source.
    var fhirDate: String { render(time: false, offset: nil) }

    /// FHIR `dateTime`. With a time, the offset comes from the source or else `defaultOffset`. Without a time, the
    /// date alone, unless `defaultOffset` is given: then midnight at that offset (the seed's `2023-06-15T00:00:00Z`).
    func fhirDateTime(defaultOffset: String?) -> String? {
        if hour < 0 {
            guard let defaultOffset, day > 0 else { return fhirDate }
            return render(time: true, offset: defaultOffset)
        }
        guard let off = offset ?? defaultOffset else { return nil }
        return render(time: true, offset: off)
    }

    /// Writes the value into one buffer: every row has dates, and joining small strings cost more than parsing them.
    private func render(time: Bool, offset: String?) -> String {
        let capacity = 32 + fraction.utf8.count + (offset?.utf8.count ?? 0) + 8
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buffer in
            var n = 0
            func put(_ b: UInt8) { buffer[n] = b; n += 1 }
            func two(_ v: Int) { put(UInt8(48 + v / 10 % 10)); put(UInt8(48 + v % 10)) }
            if year < 10_000 {
                two(year / 100)
                two(year % 100)
            } else {
                for b in String(year).utf8 { put(b) }
            }
            if month > 0 {
                put(UInt8(ascii: "-")); two(month)
                if day > 0 { put(UInt8(ascii: "-")); two(day) }
            }
            if time {
                put(UInt8(ascii: "T"))
                let clock = hour < 0 ? (0, 0, 0) : (hour, minute, second)  // no time in the source: midnight
                two(clock.0); put(UInt8(ascii: ":")); two(clock.1); put(UInt8(ascii: ":")); two(clock.2)
                if hour >= 0 && !fraction.isEmpty {
                    put(UInt8(ascii: "."))
                    for b in fraction.utf8 { put(b) }
                }
                for b in (offset ?? "").utf8 { put(b) }
            }
            return String(decoding: UnsafeBufferPointer(rebasing: buffer[0..<n]), as: UTF8.self)
        }
    }
}
