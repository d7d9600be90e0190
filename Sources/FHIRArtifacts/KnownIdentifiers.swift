/// Resources already on the server that artifacts may refer to: `Type|system|value` (a conditional reference's
/// target) or `Type/id` (a literal one), one per line.
///
/// A folder converted against them carries them as `known-identifiers.txt`, listed in its manifest, so that
/// `validate` and the uploader's own validation accept the same references, on this machine or across an air gap.
public enum KnownIdentifiers {
    public static let fileName = "known-identifiers.txt"

    /// The lines of a known-identifiers file, trimmed; blank lines and `#` comments are skipped.
    public static func parse(_ text: String) -> Set<String> {
        Set(text.split(whereSeparator: \.isNewline).map { $0.trimmingBlanks }.filter { !$0.isEmpty && !$0.hasPrefix("#") })
    }

    /// The numbers of the lines that are neither blank, a `#` comment, `Type|system|value` nor `Type/id` (a type
    /// name, then a system and a value, or an id, none empty): a file the user wrote by hand, checked before it is
    /// trusted to stand for what the server holds.
    public static func malformedLines(_ text: String) -> [Int] {
        var bad: [Int] = []
        for (n, raw) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = raw.trimmingBlanks
            if line.isEmpty || line.hasPrefix("#") { continue }
            let isType = { (t: Substring) in t.first?.isUppercase == true && t.allSatisfy { $0.isLetter } }
            let token = line.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false)
            let literal = line.split(separator: "/", omittingEmptySubsequences: false)
            let ok = token.count == 3 ? isType(token[0]) && !token[1].isEmpty && !token[2].isEmpty
                : literal.count == 2 && isType(literal[0]) && !literal[1].isEmpty
            if !ok { bad.append(n + 1) }
        }
        return bad
    }

    /// The file a folder carries: one identifier per line, sorted, so that it is the same on every run.
    public static func fileBytes(_ identifiers: Set<String>) -> [UInt8] {
        Array(identifiers.sorted().map { $0 + "\n" }.joined().utf8)
    }
}

extension StringProtocol {
    fileprivate var trimmingBlanks: String {
        String(drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed())
    }
}
