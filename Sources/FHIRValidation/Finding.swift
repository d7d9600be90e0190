/// One problem found in an artifact folder: which rule, how serious, where, what is wrong and what to do.
public struct Finding: Sendable, Equatable {
    public enum Severity: String, Sendable, Comparable {
        case error, warning

        public static func < (a: Severity, b: Severity) -> Bool { a == .error && b == .warning }
    }

    /// Stable rule id, e.g. `reference-unresolved`; see `Rule`.
    public let rule: String
    public let severity: Severity
    /// Path of the file, relative to the folder.
    public let file: String
    /// 1-based line: the NDJSON line, or the line of a JSON syntax error.
    public let line: Int?
    /// JSON pointer inside the file's JSON (a bundle, or the NDJSON line's resource).
    public let pointer: String?
    public let message: String
    /// For a reference that resolves to nothing: the identity it looks for, `Type?identifier=system|value`
    /// (unescaped), so that `convert` can name the reject that explains it.
    public let missingIdentity: String?

    public init(rule: Rule, file: String, line: Int? = nil, pointer: String? = nil, message: String, missingIdentity: String? = nil) {
        self.rule = rule.id
        severity = rule.severity
        self.file = file
        self.line = line
        self.pointer = pointer
        self.message = message
        self.missingIdentity = missingIdentity
    }

    /// What to do about it (the rule's hint).
    public var hint: String { Rule(rawValue: rule)?.hint ?? "" }

    /// `file:line` or `file#pointer`, as printed.
    public var location: String {
        var s = file
        if let line { s += ":\(line)" }
        if let pointer { s += "#\(pointer)" }
        return s
    }
}

/// The rules the validator applies, each with a stable id (its raw value), a severity and a hint for newcomers.
///
/// One list (`allCases`): the tests check that every rule has a fixture folder that makes it fire.
public enum Rule: String, CaseIterable, Sendable {
    // Syntax and consistency
    case jsonSyntax = "json-syntax"
    case duplicateKey = "duplicate-key"
    case notARegularFile = "not-a-regular-file"
    case fileTooLarge = "file-too-large"
    case ndjsonLine = "ndjson-line"
    case manifestInvalid = "manifest-invalid"
    case manifestChecksum = "manifest-checksum"
    case manifestMissingFile = "manifest-missing-file"
    case manifestCounts = "manifest-counts"
    case unlistedHiddenFile = "unlisted-hidden-file"
    case ndjsonBundleMismatch = "ndjson-bundle-mismatch"
    // Bundle structure
    case bundleType = "bundle-type"
    case bundleInvariant = "bundle-invariant"
    case entryRequest = "entry-request"
    case entryResourceType = "entry-resource-type"
    case fullUrlDuplicate = "bdl-7"
    case fullUrlInvalid = "full-url-invalid"
    case batchOfTransactionsEntry = "batch-of-transactions-entry"
    // Size caps
    case transactionEntries = "transaction-entries"
    case conditionalTransactionEntries = "conditional-transaction-entries"
    case transactionUpdates = "transaction-updates"
    case bundleBytes = "bundle-bytes"
    case batchEntries = "batch-entries"
    // References
    case urnInBatch = "urn-uuid-in-batch"
    case urnUnresolved = "urn-uuid-unresolved"
    case conditionalUnresolved = "conditional-reference-unresolved"
    case conditionalAmbiguous = "conditional-reference-ambiguous"
    case conditionalLaterStep = "conditional-reference-order"
    case conditionalSameBatch = "conditional-reference-same-batch"
    case fileCycle = "file-cycle"
    case literalUnresolved = "literal-reference-unresolved"
    case referenceTarget = "reference-target-type"
    // Identifiers and idempotency
    case identifierDuplicate = "identifier-duplicate"
    case identifierShared = "identifier-shared"
    case identifierNoSystem = "identifier-no-system"
    case notIdempotent = "not-idempotent"
    case conditionalIdentifierMissing = "conditional-identifier-missing"
    case idInConditionalUpdate = "id-in-conditional-update"
    // FHIR R4 structure
    case unknownResourceType = "unknown-resource-type"
    case unknownElement = "unknown-element"
    case cardinality = "cardinality"
    case primitiveType = "primitive-json-type"
    case primitiveFormat = "primitive-format"
    case requiredBinding = "required-binding"
    case emptyValue = "empty-value"

    public var id: String { rawValue }

    public var severity: Finding.Severity {
        switch self {
        case .unlistedHiddenFile, .batchEntries, .conditionalSameBatch, .identifierShared, .identifierNoSystem, .notIdempotent: .warning
        default: .error
        }
    }

    /// What to do about a finding of this rule.
    public var hint: String {
        switch self {
        case .jsonSyntax: "Fix the JSON at that line and column; the file cannot be read otherwise."
        case .duplicateKey: "Remove one of the two: the validator, the uploader and the server could each read a different one."
        case .notARegularFile: "Only regular files are read (a FIFO would wait forever, a device never ends): replace it with the file itself, or remove it."
        case .fileTooLarge: "A JSON file is read whole and an NDJSON line is one resource: split a huge bundle (fhirbundle rebundle writes small ones), or raise --max-json-bytes if the machine has the memory."
        case .ndjsonLine: "Each NDJSON line must be exactly one JSON resource with a resourceType."
        case .manifestInvalid: "manifest.json must follow schemas/manifest.schema.json; regenerate the folder with fhirbundle convert."
        case .manifestChecksum: "The file changed after it was written (or was damaged in transit); regenerate or recopy the folder."
        case .manifestMissingFile: "The manifest lists a file that is not in the folder (or the folder has one it does not list); recopy the whole folder."
        case .manifestCounts: "The resources found do not add up to the manifest's counts; the folder is incomplete or altered."
        case .unlistedHiddenFile: "The folder holds a hidden file or folder (or something in upload/ that the uploader did not write) that the manifest does not list; it is not uploaded. Remove it if it should not travel with the artifacts."
        case .ndjsonBundleMismatch: "NDJSON files and bundles must hold the same resources; regenerate the folder."
        case .bundleType: "An upload bundle must be a Bundle of type batch or transaction."
        case .bundleInvariant: "The Bundle breaks one of FHIR R4's Bundle invariants (bdl-1 to bdl-12, named in the message); see the Bundle resource's definition."
        case .entryRequest: "Every entry needs request.method and request.url."
        case .entryResourceType: "The resource type must agree with the type at the start of request.url."
        case .fullUrlDuplicate: "fullUrl must be unique within a bundle (FHIR invariant bdl-7)."
        case .fullUrlInvalid: "A urn:uuid fullUrl must be urn:uuid: followed by a lowercase RFC 4122 UUID."
        case .batchOfTransactionsEntry: "An entry POSTed to '/' in a batch must hold a transaction Bundle."
        case .transactionEntries: "Split the transaction, or raise the limit if the server allows it (--limit transactionEntries=N)."
        case .conditionalTransactionEntries: "Medplum refuses transactions with more conditional operations; split the group (--limit conditionalTransactionEntries=N for other servers)."
        case .transactionUpdates: "Too many update operations in one transaction; split it."
        case .bundleBytes: "The server refuses bodies this large (Medplum: 1 MB); use smaller batches."
        case .batchEntries: "A very large batch makes one slow request; use smaller batches (--batch-size)."
        case .urnInBatch: "Batch entries are independent: a urn:uuid reference cannot resolve there. Use a transaction or a conditional reference."
        case .urnUnresolved: "A urn:uuid reference must name the fullUrl of an entry of the same transaction."
        case .conditionalUnresolved: "No resource in these artifacts has that identifier; add it, or list it with --known-identifiers if it is already on the server."
        case .conditionalAmbiguous: "Several resources carry that identifier, so the server cannot resolve the reference."
        case .conditionalLaterStep: "The target is written in the same batch step or a later one; it must be uploaded in an earlier step or the same transaction. `fhirbundle rebundle DIR --out OUT` writes a folder whose steps put every target first."
        case .conditionalSameBatch: "Servers that process a batch in order (HAPI, Medplum) resolve it, but FHIR lets a server process batch entries in any order; `fhirbundle rebundle` puts the target in an earlier step."
        case .fileCycle: "Without a manifest, files are uploaded in the order their references give; these refer to each other. `fhirbundle rebundle` orders resources rather than files."
        case .literalUnresolved: "A Type/id reference must point at a resource in these artifacts or one declared known (--known-identifiers)."
        case .referenceTarget: "FHIR does not allow a reference to this resource type here (see the element's definition)."
        case .identifierDuplicate: "Two resources of one type share system|value, and a conditional update, create or reference uses it: it would match both (412) or overwrite one."
        case .identifierShared: "Several resources share this identifier; that is harmless while no conditional operation uses it, but it cannot tell them apart."
        case .identifierNoSystem: "An identifier without a system cannot be matched reliably; give it the source system's URI."
        case .notIdempotent: "A POST creates a new resource on every replay; use a conditional update (PUT Type?identifier=system|value)."
        case .conditionalIdentifierMissing: "The resource must carry the identifier its conditional update searches for, or a replay will create duplicates."
        case .idInConditionalUpdate: "Remove id from the body of a conditional update (Medplum rejects it); the server assigns it."
        case .unknownResourceType: "resourceType must be a FHIR R4 resource type."
        case .unknownElement: "The element does not exist in FHIR R4 for this type; check its spelling and the type's definition."
        case .cardinality: "A required element is missing, or a single element is given as an array (or the reverse)."
        case .primitiveType: "Use the JSON type FHIR expects: booleans as true/false, numbers unquoted, everything else as strings."
        case .primitiveFormat: "The value does not match the FHIR R4 format of its type (dates yyyy-MM-dd, dateTimes with a UTC offset, ids of at most 64 characters, ...)."
        case .requiredBinding: "The element is bound to a required value set: use one of its codes."
        case .emptyValue: "FHIR forbids empty strings, arrays and objects and null; leave the element out instead."
        }
    }
}
