/// One bundle limit: its name in mapping files, manifests and `--limit`, and what it caps. The one definition of the
/// limits: every list of names, help text and check derives from it.
public enum BundleLimit: String, CaseIterable, Sendable {
    case transactionEntries
    case conditionalTransactionEntries
    case transactionUpdates
    case batchEntries
    case bundleBytes

    /// What the limit caps, for help texts.
    public var summary: String {
        switch self {
        case .transactionEntries: "entries in one transaction"
        case .conditionalTransactionEntries: "entries in one transaction that holds conditional operations"
        case .transactionUpdates: "update operations (PUT, PATCH) in one transaction"
        case .batchEntries: "entries in one batch (for a batch of transactions: its inner transactions)"
        case .bundleBytes: "bytes in one bundle body"
        }
    }

    /// `name=value` or `name=none` (no limit), as `--limit` and mapping files take it; the error says what is wrong.
    public static func parseOverride(_ text: String) -> Result<(BundleLimit, Int?), LimitSyntaxError> {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return .failure(LimitSyntaxError("--limit takes name=value or name=none, e.g. --limit batchEntries=50")) }
        guard let limit = BundleLimit(rawValue: parts[0]) else {
            return .failure(LimitSyntaxError("unknown limit '\(parts[0])'; the limits are \(BundleLimit.names)"))
        }
        if parts[1] == "none" { return .success((limit, nil)) }
        guard let value = Int(parts[1]), value > 0 else {
            return .failure(LimitSyntaxError("the limit \(parts[0]) takes a positive whole number or none, not '\(parts[1])'"))
        }
        return .success((limit, value))
    }

    /// "transactionEntries, conditionalTransactionEntries, …" for messages.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}

/// A `--limit` that cannot be read.
public struct LimitSyntaxError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Size limits for the bundles fhirbundle writes and checks. `Int.max` stands for no limit; the defaults are
/// Medplum's (`ServerProfile.medplum`).
public struct BundleLimits: Sendable, Equatable {
    public var transactionEntries = 20
    public var conditionalTransactionEntries = 8
    public var transactionUpdates = 50
    public var batchEntries = 500
    public var bundleBytes = 1_000_000

    public init() {}

    /// No limit at all.
    public static let none: BundleLimits = {
        var limits = BundleLimits()
        for limit in BundleLimit.allCases { limits[limit] = nil }
        return limits
    }()

    /// The value of a limit; nil for no limit.
    public subscript(limit: BundleLimit) -> Int? {
        get {
            let value: Int
            switch limit {
            case .transactionEntries: value = transactionEntries
            case .conditionalTransactionEntries: value = conditionalTransactionEntries
            case .transactionUpdates: value = transactionUpdates
            case .batchEntries: value = batchEntries
            case .bundleBytes: value = bundleBytes
            }
            return value == Int.max ? nil : value
        }
        set {
            let value = newValue ?? Int.max
            switch limit {
            case .transactionEntries: transactionEntries = value
            case .conditionalTransactionEntries: conditionalTransactionEntries = value
            case .transactionUpdates: transactionUpdates = value
            case .batchEntries: batchEntries = value
            case .bundleBytes: bundleBytes = value
            }
        }
    }

    /// The limits that fit Medplum's hosted server.
    public static let medplum = BundleLimits()
}

/// The servers fhirbundle knows the limits of. A profile gives the bundle limits and whether a transaction of the
/// input may stay one transaction; the manifest records which one an artifact folder was written for.
public enum ServerProfile: String, CaseIterable, Sendable {
    case medplum
    /// Medplum, uploaded with `fhirupload --async`: batches as large as an asynchronous job takes.
    case medplumAsync = "medplum-async"
    case hapi
    case generic

    /// Whether the profile is a Medplum server's (its transactions keep Medplum's caps).
    public var isMedplum: Bool { self == .medplum || self == .medplumAsync }

    /// The limits of the profile.
    public var limits: BundleLimits {
        switch self {
        case .medplum:
            return .medplum
        case .medplumAsync:
            var limits = BundleLimits.medplum
            limits.batchEntries = 5_000
            limits.bundleBytes = 50_000_000
            return limits
        case .hapi:
            var limits = BundleLimits.none
            limits.batchEntries = 500
            limits.bundleBytes = 10_000_000
            return limits
        case .generic:
            return .none
        }
    }

    /// Where the numbers come from, for `--help` and the documentation.
    public var origin: String {
        switch self {
        case .medplum:
            return "Medplum: 20 entries per transaction (its guide \"Building Migration Pipelines\"), 8 when the transaction holds "
                + "conditional operations (serializable transactions), 1 MB per body (the server's default maxJsonSize), "
                + "50 updates per transaction and 500 entries per batch (kept short so that a failed request costs little)"
        case .medplumAsync:
            return "Medplum's asynchronous batches (fhirupload --async): transactions as for medplum, batches up to 5,000 entries and "
                + "50 MB (the server's default maxBatchSize, which applies to Prefer: respond-async requests only)"
        case .hapi:
            return "HAPI FHIR JPA server: no cap on transaction entries by default (maximumTransactionBundleSize is unset); "
                + "500 entries and 10 MB per bundle are this project's choice, to keep each request short"
        case .generic:
            return "any FHIR R4 server: only FHIR's own rules, no size caps"
        }
    }
}
