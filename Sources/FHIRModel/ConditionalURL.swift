/// Builds the search URLs of conditional operations and references: `Patient?identifier=system|value`.
///
/// Token values are escaped as FHIR search requires (`\`, `|`, `,` and `$` get a backslash) and then
/// percent-encoded where a URL cannot carry the character, so an identifier with a space or `&` still matches
/// exactly one resource. The `|` separator itself stays literal, as in Medplum's guide.
public enum ConditionalURL {
    /// `Type?identifier=system|value`.
    public static func identifier(type: String, system: String, value: String) -> String {
        appending(token: value, to: prefix(type: type, system: system))
    }

    /// `Type?identifier=system|`: the part that is the same for every resource of a template, computed once.
    public static func prefix(type: String, system: String) -> String {
        "\(type)?identifier=\(encodeToken(system))|"
    }

    /// `prefix` followed by `token` escaped as `encodeToken` does, built in one allocation: this runs for every
    /// resource and reference, and String's `+` takes a slow generic path.
    public static func appending(token: String, to prefix: String) -> String {
        var token = token
        var prefix = prefix
        return token.withUTF8 { t in
            prefix.withUTF8 { p in
                var size = p.count
                for b in t { size += isPlain(b) ? 1 : isTokenSpecial(b) ? 6 : 3 }
                return String(unsafeUninitializedCapacity: size) { out in
                    _ = out.initialize(fromContentsOf: p)
                    var o = p.count
                    for b in t {
                        if isPlain(b) {
                            out[o] = b
                            o += 1
                            continue
                        }
                        if isTokenSpecial(b) {
                            out[o] = UInt8(ascii: "%"); out[o + 1] = UInt8(ascii: "5"); out[o + 2] = UInt8(ascii: "C")
                            o += 3
                        }
                        out[o] = UInt8(ascii: "%"); out[o + 1] = hex[Int(b >> 4)]; out[o + 2] = hex[Int(b & 0xF)]
                        o += 3
                    }
                    return o
                }
            }
        }
    }

    /// Characters a token search escapes with a backslash.
    @inline(__always)
    private static func isTokenSpecial(_ b: UInt8) -> Bool {
        b == UInt8(ascii: "\\") || b == UInt8(ascii: "|") || b == UInt8(ascii: ",") || b == UInt8(ascii: "$")
    }

    /// Escapes one part of a token search parameter.
    public static func encodeToken(_ s: String) -> String {
        if s.utf8.allSatisfy(isPlain) { return s }
        return appending(token: s, to: "")
    }

    /// Characters that may stand unencoded in the query part of a URL and carry no FHIR search meaning.
    @inline(__always)
    private static func isPlain(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "/"),
            UInt8(ascii: "@"), UInt8(ascii: "!"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
            UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: "?"):
            return true
        default:
            return false
        }
    }

    private static let hex = Array("0123456789ABCDEF".utf8)
}

extension ConditionalURL {
    /// The identifier a conditional reference names, also when it searches by more than its identifier
    /// (`Patient?identifier=system|value&active=true`): the target is the resource with that identifier, which the
    /// other criteria only narrow (checked by the server, not offline). Nil without one `identifier` parameter.
    public static func identifierCriterion(_ url: String) -> (type: String, system: String, value: String)? {
        guard let q = url.firstIndex(of: "?") else { return nil }
        let parameters = url[url.index(after: q)...].split(separator: "&", omittingEmptySubsequences: false)
        let identifiers = parameters.filter { $0.hasPrefix("identifier=") }
        guard identifiers.count == 1 else { return nil }
        return parseIdentifier(String(url[..<q]) + "?" + identifiers[0])
    }

    /// The type and the `system|value` of `Type?identifier=system|value` (percent-decoded and unescaped), or nil
    /// when the URL is not a single-identifier search. The inverse of `identifier(type:system:value:)`.
    public static func parseIdentifier(_ url: String) -> (type: String, system: String, value: String)? {
        guard let q = url.firstIndex(of: "?") else { return nil }
        let type = String(url[..<q])
        let query = url[url.index(after: q)...]
        guard query.hasPrefix("identifier="), !query.contains("&") else { return nil }
        guard let decoded = String(query.dropFirst("identifier=".count)).removingPercentEncodingKeepingInvalid else { return nil }
        var parts = [""]
        var escaped = false
        for c in decoded {
            if escaped {
                parts[parts.count - 1].append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "|" && parts.count == 1 {
                parts.append("")
            } else if c == "," {
                return nil  // an OR list, not one identifier
            } else {
                parts[parts.count - 1].append(c)
            }
        }
        guard parts.count == 2, !type.isEmpty else { return nil }
        return (type, parts[0], parts[1])
    }
}

extension String {
    /// Percent-decoding that fails (nil) only on invalid UTF-8, as Foundation's does.
    fileprivate var removingPercentEncodingKeepingInvalid: String? {
        var out: [UInt8] = []
        var bytes = Array(utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "%"), bytes.count >= 2, let h = hexValue(bytes[bytes.startIndex]), let l = hexValue(bytes[bytes.startIndex + 1]) {
                out.append(h << 4 | l)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }
}

private func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
    default: return nil
    }
}
