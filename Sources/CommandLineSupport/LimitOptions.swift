import ArgumentParser
import FHIRArtifacts
import FHIRModel
import Foundation

extension ServerProfile: ExpressibleByArgument {}

/// `--profile` and `--limit`, shared by the commands that size or check bundles. Their help lists the profiles and
/// limits from their one definition (`ServerProfile`, `BundleLimit`).
public struct LimitOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The server the bundles are for: \(ServerProfile.allCases.map(\.rawValue).joined(separator: ", ")). "
                               + ServerProfile.allCases.map { "\($0.rawValue): \($0.origin)." }.joined(separator: " "),
                               valueName: "name"))
    public var profile: ServerProfile?

    @Option(name: .customLong("limit"), parsing: .singleValue,
            help: ArgumentHelp("Set one limit of the profile, e.g. --limit conditionalTransactionEntries=20, or switch it off with "
                               + "name=none. Limits: " + BundleLimit.allCases.map { "\($0.rawValue) (\($0.summary))" }.joined(separator: ", ") + ".",
                               valueName: "name=value"))
    public var limits: [String] = []

    public init() {}

    public func validate() throws {
        _ = try overrides()
    }

    /// The `--limit` values, by limit (nil: no limit).
    public func overrides() throws -> [BundleLimit: Int?] {
        var out: [BundleLimit: Int?] = [:]
        for text in limits {
            switch BundleLimit.parseOverride(text) {
            case .success(let (limit, value)): out[limit] = value
            case .failure(let error): throw ValidationError(error.description)
            }
        }
        return out
    }
}

/// `--known-identifiers FILE`, shared by the commands that validate: resources already on the server that
/// references may point at.
public struct KnownIdentifierOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A file of resources already on the server that references may point at, one per line: Type|system|value or Type/id.",
                               valueName: "file"))
    public var knownIdentifiers: String?

    public init() {}

    /// The identifiers of the file (empty without the option); a file that cannot be read is an error naming it.
    public func load() throws -> Set<String> {
        guard let knownIdentifiers else { return [] }
        guard let text = try? String(contentsOfFile: knownIdentifiers, encoding: .utf8) else {
            throw ValidationError("cannot read --known-identifiers \(knownIdentifiers)")
        }
        let bad = KnownIdentifiers.malformedLines(text)
        if !bad.isEmpty {
            let lines = bad.prefix(5).map(String.init).joined(separator: ", ") + (bad.count > 5 ? " and \(bad.count - 5) more" : "")
            throw ValidationError("--known-identifiers \(knownIdentifiers): line \(lines) is neither Type|system|value nor Type/id; fix or remove it (# starts a comment)")
        }
        return KnownIdentifiers.parse(text)
    }
}
