#if canImport(Glibc)
import Glibc
#endif

/// Checks primitive values against the formats of FHIR R4's primitive types: the validator checks every value
/// it reads, and `convert` each value a mapping gives, so that a bad cell rejects its row instead of the run.
///
/// Byte-level equivalents of the regular expressions published in the R4 definitions (the test suite checks them
/// against those regexes on a corpus of values): a regex engine per value would cost more than the rest of the
/// validation together.
public enum PrimitiveFormats {
    /// The format rule of a primitive type, resolved once per element rather than per value.
    public enum Format: Sendable {
        case date, dateTime, instant, time, id, code, uri, oid, uuid, nonEmpty, base64Binary, xhtml, any

        public init(type: String) {
            switch type {
            case "date": self = .date
            case "dateTime": self = .dateTime
            case "instant": self = .instant
            case "time": self = .time
            case "id": self = .id
            case "code": self = .code
            case "uri", "url", "canonical": self = .uri
            case "oid": self = .oid
            case "uuid": self = .uuid
            case "string", "markdown": self = .nonEmpty
            case "base64Binary": self = .base64Binary
            case "xhtml": self = .xhtml
            default: self = .any
            }
        }
    }

    /// Whether `s` is a valid value of primitive type `type`; types without a format rule accept any string.
    public static func isValid(_ s: String, type: String) -> Bool {
        var s = s
        return s.withUTF8 { p in check(p, Format(type: type)) }
    }

    /// Whether `p` has `format`. XHTML is not judged here (it is always true): narratives are the validator's
    /// `NarrativeChecker`'s.
    public static func check(_ p: UnsafeBufferPointer<UInt8>, _ format: Format) -> Bool {
        switch format {
        case .date: return date(p, allowTime: false)
        case .dateTime: return date(p, allowTime: true)
        case .instant: return instant(p)
        case .time: var i = 0; return time(p, &i) && i == p.count
        case .id: return p.count >= 1 && p.count <= 64 && p.allSatisfy { isAlnum($0) || $0 == 0x2D || $0 == 0x2E }
        case .code: return code(p)
        case .uri: return p.count >= 1 && !p.contains(where: isSpace)
        case .oid: return oid(p)
        case .uuid: return uuid(p)
        case .nonEmpty: return p.count >= 1
        case .base64Binary: return base64(p)
        case .xhtml: return true
        case .any: return true
        }
    }

    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    @inline(__always) static func isAlnum(_ b: UInt8) -> Bool { isDigit(b) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) }
    @inline(__always) static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0C || b == 0x0B }

    private static func digits(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int, _ n: Int) -> Int? {
        guard i + n <= p.count else { return nil }
        var v = 0
        for k in 0..<n {
            let b = p[i + k]
            guard isDigit(b) else { return nil }
            v = v * 10 + Int(b - 0x30)
        }
        i += n
        return v
    }

    private static func expect(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int, _ c: UInt8) -> Bool {
        guard i < p.count, p[i] == c else { return false }
        i += 1
        return true
    }

    /// year(-MM(-DD(Thh:mm:ss(.f)?offset)?)?)?; the year 0000 is not allowed.
    private static func date(_ p: UnsafeBufferPointer<UInt8>, allowTime: Bool) -> Bool {
        var i = 0
        guard let year = digits(p, &i, 4), year > 0 else { return false }
        if i == p.count { return true }
        guard expect(p, &i, 0x2D), let month = digits(p, &i, 2), (1...12).contains(month) else { return false }
        if i == p.count { return true }
        guard expect(p, &i, 0x2D), let day = digits(p, &i, 2), (1...daysIn(month, of: year)).contains(day) else { return false }
        if i == p.count { return true }
        guard allowTime, expect(p, &i, 0x54), time(p, &i), offset(p, &i) else { return false }
        return i == p.count
    }

    private static func instant(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        guard let year = digits(p, &i, 4), year > 0, expect(p, &i, 0x2D), let month = digits(p, &i, 2), (1...12).contains(month),
              expect(p, &i, 0x2D), let day = digits(p, &i, 2), (1...daysIn(month, of: year)).contains(day), expect(p, &i, 0x54),
              time(p, &i), offset(p, &i) else { return false }
        return i == p.count
    }

    /// The days of a month in the proleptic Gregorian calendar: the published regexes allow 2023-02-30, but FHIR's
    /// date is an ISO 8601 calendar date (and XML Schema's xs:date, which FHIR's XML uses, refuses it).
    static func daysIn(_ month: Int, of year: Int) -> Int {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// hh:mm:ss(.f)?
    private static func time(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Bool {
        guard let h = digits(p, &i, 2), h <= 23, expect(p, &i, 0x3A), let m = digits(p, &i, 2), m <= 59,
              expect(p, &i, 0x3A), let s = digits(p, &i, 2), s <= 60 else { return false }
        if i < p.count && p[i] == 0x2E {
            i += 1
            let start = i
            while i < p.count && isDigit(p[i]) { i += 1 }
            if i == start { return false }
        }
        return true
    }

    /// Z | (+|-)(0[0-9]|1[0-3]):[0-5][0-9] | (+|-)14:00
    private static func offset(_ p: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Bool {
        guard i < p.count else { return false }
        if p[i] == 0x5A { i += 1; return true }
        guard p[i] == 0x2B || p[i] == 0x2D else { return false }
        i += 1
        guard let h = digits(p, &i, 2), expect(p, &i, 0x3A), let m = digits(p, &i, 2) else { return false }
        return (h <= 13 && m <= 59) || (h == 14 && m == 0)
    }

    /// [^\s]+(\s[^\s]+)*: no leading, trailing or doubled whitespace. Unicode spaces (U+00A0, U+2000...) count as
    /// whitespace, as in the ECMAScript reading of the pattern that the JSON Schema and other validators use: a code
    /// `CHEST` followed by a no-break space does not match the code `CHEST`.
    private static func code(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        if p.contains(where: { $0 >= 0x80 }) {
            let scalars = Array(String(decoding: p, as: UTF8.self).unicodeScalars)
            guard let first = scalars.first, let last = scalars.last, !first.properties.isWhitespace, !last.properties.isWhitespace else { return false }
            var previousSpace = false
            for scalar in scalars {
                let space = scalar.properties.isWhitespace
                if space && previousSpace { return false }
                previousSpace = space
            }
            return true
        }
        guard let first = p.first, let last = p.last, !isSpace(first), !isSpace(last) else { return false }
        var previousSpace = false
        for b in p {
            let space = isSpace(b)
            if space && previousSpace { return false }
            previousSpace = space
        }
        return true
    }

    private static func oid(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        let prefix = Array("urn:oid:".utf8)
        guard p.count > prefix.count + 2, Array(p[0..<prefix.count]) == prefix else { return false }
        var i = prefix.count
        guard p[i] >= 0x30 && p[i] <= 0x32 else { return false }
        i += 1
        var arcs = 0
        while i < p.count {
            guard p[i] == 0x2E, i + 1 < p.count, isDigit(p[i + 1]) else { return false }
            i += 1
            if p[i] == 0x30 {
                i += 1
                if i < p.count && isDigit(p[i]) { return false }
            } else {
                while i < p.count && isDigit(p[i]) { i += 1 }
            }
            arcs += 1
        }
        return arcs >= 1
    }

    private static func uuid(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        let prefix: StaticString = "urn:uuid:"
        let n = prefix.utf8CodeUnitCount
        guard p.count == n + 36, memcmp(p.baseAddress!, prefix.utf8Start, n) == 0 else { return false }
        for (k, b) in p[n...].enumerated() {
            if k == 8 || k == 13 || k == 18 || k == 23 {
                if b != 0x2D { return false }
            } else if !(isDigit(b) || (b >= 0x61 && b <= 0x66)) {
                return false
            }
        }
        return true
    }

    /// (\s*([0-9a-zA-Z+=]){4}\s*)+ : groups of four base64 characters, whitespace allowed around groups.
    private static func base64(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
        var count = 0
        for b in p {
            if isSpace(b) { continue }
            guard isAlnum(b) || b == 0x2B || b == 0x3D || b == 0x2F else { return false }
            count += 1
        }
        return count > 0 && count % 4 == 0
    }
}
