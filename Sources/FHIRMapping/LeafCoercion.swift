import FHIRModel
import FHIRSources

/// Turns leaf text into the JSON primitive its FHIR type needs.
enum LeafCoercion {
    static func coerce(_ s: String, kind: LeafKind, path: String) throws -> JSONValue {
        switch kind {
        case .string: return .string(s)
        case .boolean:
            switch s.trimmingBlanks.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw RowFailure("\(path) is a boolean, but the value is not true or false (use map() to translate it)", value: s)
            }
        case .integer:
            let t = s.trimmingBlanks
            guard isInteger(t), let n = Int(t), n >= Int(Int32.min), n <= Int(Int32.max) else {
                throw RowFailure("\(path) is an integer, but the value is not a whole number", value: s)
            }
            return .number(String(n))
        case .decimal:
            let t = s.trimmingBlanks
            guard let normalized = normalizedDecimal(t) else {
                throw RowFailure("\(path) is a decimal, but the value is not a number", value: s)
            }
            return .number(normalized)
        }
    }

    static func isInteger(_ s: String) -> Bool {
        var u = Substring(s).utf8[...]
        if u.first == UInt8(ascii: "-") || u.first == UInt8(ascii: "+") { u = u.dropFirst() }
        return !u.isEmpty && u.allSatisfy { $0 >= 48 && $0 <= 57 }
    }

    /// FHIR decimal text as a JSON number, keeping its precision; leading zeros dropped, a leading '+' removed.
    static func normalizedDecimal(_ s: String) -> String? {
        var bytes = Array(s.utf8)
        var sign: [UInt8] = []
        if bytes.first == UInt8(ascii: "-") { sign = [UInt8(ascii: "-")]; bytes.removeFirst() } else if bytes.first == UInt8(ascii: "+") { bytes.removeFirst() }
        var i = 0
        var intDigits = 0
        while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; intDigits += 1 }
        var fracDigits = 0
        if i < bytes.count && bytes[i] == UInt8(ascii: ".") {
            i += 1
            while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; fracDigits += 1 }
            if fracDigits == 0 { return nil }
        }
        if intDigits == 0 { return nil }
        if i < bytes.count && (bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E")) {
            i += 1
            if i < bytes.count && (bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-")) { i += 1 }
            var expDigits = 0
            while i < bytes.count && bytes[i] >= 48 && bytes[i] <= 57 { i += 1; expDigits += 1 }
            if expDigits == 0 { return nil }
        }
        if i != bytes.count { return nil }
        var start = 0
        while start < intDigits - 1 && bytes[start] == UInt8(ascii: "0") { start += 1 }
        return String(decoding: sign + bytes[start...], as: UTF8.self)
    }
}

extension UInt8 {
    /// Space, tab or line break.
    var isBlankByte: Bool { self == 0x20 || self == 0x09 || self == 0x0A || self == 0x0D }
}

extension String {
    /// Empty or only spaces, tabs and line breaks.
    var isBlank: Bool {
        // In place for native strings; most values stop at their first byte.
        utf8.withContiguousStorageIfAvailable { $0.allSatisfy(\.isBlankByte) } ?? utf8.allSatisfy(\.isBlankByte)
    }

    var trimmingBlanks: String {
        let u = Array(utf8)
        var a = 0
        var b = u.count
        while a < b && (u[a] == 0x20 || u[a] == 0x09 || u[a] == 0x0A || u[a] == 0x0D) { a += 1 }
        while b > a && (u[b - 1] == 0x20 || u[b - 1] == 0x09 || u[b - 1] == 0x0A || u[b - 1] == 0x0D) { b -= 1 }
        if a == 0 && b == u.count { return self }
        return String(decoding: u[a..<b], as: UTF8.self)
    }

    func splitAll(_ separator: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.firstRange(of: separator) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }

    func replacingAll(_ target: String, with replacement: String) -> String {
        splitAll(target).joined(separator: replacement)
    }
}
