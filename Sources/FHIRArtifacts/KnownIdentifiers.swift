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
