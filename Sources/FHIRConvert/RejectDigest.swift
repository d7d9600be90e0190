/// The rejects of a run grouped by reason, with the first places of each, and which identities the rejected rows
/// would have written: what the summary shows, so that a failed run says why without opening rejects.ndjson.
///
/// Reasons name columns and elements, never cell values, so the digest holds no health data beyond the
/// identifiers that the validator's messages already show.
public struct RejectDigest: Sendable {
    /// Where a rejected row is.
    public struct Place: Sendable, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public var description: String { "\(file):\(line)" }

        public init(file: String, line: Int) {
            self.file = file
            self.line = line
        }
    }

    /// The rejects that share a reason (numbers in it, such as a line or a field count, aside).
    public struct Group: Sendable {
        /// The reason with its numbers written as `N`.
        public let reason: String
        public fileprivate(set) var count: Int
        /// The first few rejects, in the order they came.
        public fileprivate(set) var examples: [Place]
    }

    /// A reject that explains why a resource is missing.
    public struct Explanation: Sendable, Equatable {
        public let place: Place
        public let reason: String
    }

    public static let examplesPerGroup = 3
    /// Identities remembered for explaining dangling references; a run that rejects more rows than this has a
    /// mapping problem the groups already show.
    static let identityCapacity = 100_000

    public private(set) var groups: [Group] = []
    private var groupIndex: [String: Int] = [:]
    private var byIdentity: [String: Explanation] = [:]
    public private(set) var count = 0

    public init() {}

    mutating func add(file: String, line: Int, reason: String, identities: [String]) {
        count += 1
        let place = Place(file: file, line: line)
        let key = Self.withoutNumbers(reason)
        if let i = groupIndex[key] {
            groups[i].count += 1
            if groups[i].examples.count < Self.examplesPerGroup { groups[i].examples.append(place) }
        } else {
            groupIndex[key] = groups.count
            groups.append(Group(reason: key, count: 1, examples: [place]))
        }
        for identity in identities where byIdentity.count < Self.identityCapacity && byIdentity[identity] == nil {
            byIdentity[identity] = Explanation(place: place, reason: reason)
        }
    }

    /// The groups, largest first (first seen breaks ties, so the order is stable).
    public var largestFirst: [Group] {
        groups.enumerated().sorted { ($0.element.count, -$0.offset) > ($1.element.count, -$1.offset) }.map(\.element)
    }

    /// The reject of the row that would have written the resource with this identity
    /// (`Type?identifier=system|value`), if one did.
    public func explanation(of identity: String) -> Explanation? {
        byIdentity[identity]
    }

    /// `expected 4 fields, found 3` → `expected N fields, found N`: one group per kind of reason. Only numbers
    /// that stand alone are replaced, so a column named `address2` keeps its name.
    public static func withoutNumbers(_ reason: String) -> String {
        let chars = Array(reason)
        func isWordPart(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" || c == "'" }
        var out = ""
        var i = 0
        while i < chars.count {
            guard chars[i].isASCII, chars[i].isNumber, i == 0 || !isWordPart(chars[i - 1]) else {
                out.append(chars[i])
                i += 1
                continue
            }
            var end = i
            while end < chars.count, chars[end].isASCII, chars[end].isNumber { end += 1 }
            if end < chars.count, isWordPart(chars[end]) {
                out.append(contentsOf: chars[i..<end])
            } else {
                out.append("N")
            }
            i = end
        }
        return out
    }
}
