/// Size limits for the bundles fhirbundle writes and checks, with defaults that are safe for Medplum.
public struct BundleLimits: Sendable, Equatable {
    /// Entries in one transaction (the cap in Medplum's migration guide).
    public var transactionEntries = 20
    /// Entries in one transaction that holds conditional operations (Medplum's limit for serializable transactions).
    public var conditionalTransactionEntries = 8
    /// Update operations (PUT, PATCH) in one transaction.
    public var transactionUpdates = 50
    /// Entries in one batch bundle (for batch-of-transactions: inner transactions per batch).
    public var batchEntries = 500
    /// Bytes in one bundle body (Medplum's default `maxJsonSize`, 1 MB).
    public var bundleBytes = 1_000_000

    public init() {}

    /// Names used in mapping files (`limits:`) and on the command line.
    public static let keys = ["transactionEntries", "conditionalTransactionEntries", "transactionUpdates", "batchEntries", "bundleBytes"]

    /// Sets the limit called `key` (one of `keys`); returns false for an unknown key.
    @discardableResult
    public mutating func set(_ key: String, _ value: Int) -> Bool {
        switch key {
        case "transactionEntries": transactionEntries = value
        case "conditionalTransactionEntries": conditionalTransactionEntries = value
        case "transactionUpdates": transactionUpdates = value
        case "batchEntries": batchEntries = value
        case "bundleBytes": bundleBytes = value
        default: return false
        }
        return true
    }

    /// The limits that fit Medplum's hosted server.
    public static let medplum = BundleLimits()
}
