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

    public init(rule: Rule, file: String, line: Int? = nil, pointer: String? = nil, message: String) {
        self.rule = rule.id
        severity = rule.severity
        self.file = file
        self.line = line
        self.pointer = pointer
        self.message = message
    }

    /// What to do about it (the rule's hint).
    public var hint: String { Rule.byID[rule]?.hint ?? "" }

    /// `file:line` or `file#pointer`, as printed.
    public var location: String {
        var s = file
        if let line { s += ":\(line)" }
        if let pointer { s += "#\(pointer)" }
        return s
    }
}

/// The rules the validator applies, with a stable id, a severity and a hint for newcomers.
public struct Rule: Sendable, Hashable {
    public let id: String
    public let severity: Finding.Severity
    public let hint: String

    static let all: [Rule] = [
        jsonSyntax, duplicateKey, ndjsonLine, notARegularFile, fileTooLarge, manifestInvalid, manifestChecksum, manifestMissingFile, manifestCounts, ndjsonBundleMismatch,
        bundleType, bundleInvariant, entryRequest, entryResourceType, fullUrlDuplicate, fullUrlInvalid, batchOfTransactionsEntry,
        transactionEntries, conditionalTransactionEntries, transactionUpdates, bundleBytes, batchEntries,
        urnInBatch, urnUnresolved, conditionalUnresolved, conditionalAmbiguous, conditionalLaterStep, conditionalSameBatch, fileCycle,
        literalUnresolved, referenceTarget, unlistedHiddenFile, identifierDuplicate, identifierShared, identifierNoSystem, notIdempotent, conditionalIdentifierMissing, idInConditionalUpdate,
        unknownResourceType, unknownElement, cardinality, primitiveType, primitiveFormat, requiredBinding, emptyValue,
    ]
    static let byID: [String: Rule] = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })

    // Syntax and consistency
    public static let jsonSyntax = Rule(id: "json-syntax", severity: .error, hint: "Fix the JSON at that line and column; the file cannot be read otherwise.")
    public static let duplicateKey = Rule(id: "duplicate-key", severity: .error, hint: "Remove one of the two: the validator, the uploader and the server could each read a different one.")
    public static let notARegularFile = Rule(id: "not-a-regular-file", severity: .error, hint: "Only regular files are read (a FIFO would wait forever, a device never ends): replace it with the file itself, or remove it.")
    public static let fileTooLarge = Rule(id: "file-too-large", severity: .error, hint: "A JSON file is read whole and an NDJSON line is one resource: split a huge bundle (fhirbundle rebundle writes small ones), or raise --max-json-bytes if the machine has the memory.")
    public static let ndjsonLine = Rule(id: "ndjson-line", severity: .error, hint: "Each NDJSON line must be exactly one JSON resource with a resourceType.")
    public static let manifestInvalid = Rule(id: "manifest-invalid", severity: .error, hint: "manifest.json must follow schemas/manifest.schema.json; regenerate the folder with fhirbundle convert.")
    public static let manifestChecksum = Rule(id: "manifest-checksum", severity: .error, hint: "The file changed after it was written (or was damaged in transit); regenerate or recopy the folder.")
    public static let manifestMissingFile = Rule(id: "manifest-missing-file", severity: .error, hint: "The manifest lists a file that is not in the folder (or the folder has one it does not list); recopy the whole folder.")
    public static let manifestCounts = Rule(id: "manifest-counts", severity: .error, hint: "The resources found do not add up to the manifest's counts; the folder is incomplete or altered.")
    public static let unlistedHiddenFile = Rule(id: "unlisted-hidden-file", severity: .warning, hint: "The folder holds a hidden file or folder (or something in upload/ that the uploader did not write) that the manifest does not list; it is not uploaded. Remove it if it should not travel with the artifacts.")
    public static let ndjsonBundleMismatch = Rule(id: "ndjson-bundle-mismatch", severity: .error, hint: "NDJSON files and bundles must hold the same resources; regenerate the folder.")
    // Bundle structure
    public static let bundleType = Rule(id: "bundle-type", severity: .error, hint: "An upload bundle must be a Bundle of type batch or transaction.")
    public static let bundleInvariant = Rule(id: "bundle-invariant", severity: .error, hint: "The Bundle breaks one of FHIR R4's Bundle invariants (bdl-1 to bdl-12, named in the message); see the Bundle resource's definition.")
    public static let entryRequest = Rule(id: "entry-request", severity: .error, hint: "Every entry needs request.method and request.url.")
    public static let entryResourceType = Rule(id: "entry-resource-type", severity: .error, hint: "The resource type must agree with the type at the start of request.url.")
    public static let fullUrlDuplicate = Rule(id: "bdl-7", severity: .error, hint: "fullUrl must be unique within a bundle (FHIR invariant bdl-7).")
    public static let fullUrlInvalid = Rule(id: "full-url-invalid", severity: .error, hint: "A urn:uuid fullUrl must be urn:uuid: followed by a lowercase RFC 4122 UUID.")
    public static let batchOfTransactionsEntry = Rule(id: "batch-of-transactions-entry", severity: .error, hint: "An entry POSTed to '/' in a batch must hold a transaction Bundle.")
    // Size caps
    public static let transactionEntries = Rule(id: "transaction-entries", severity: .error, hint: "Split the transaction, or raise the limit if the server allows it (--limit transactionEntries=N).")
    public static let conditionalTransactionEntries = Rule(id: "conditional-transaction-entries", severity: .error, hint: "Medplum refuses transactions with more conditional operations; split the group (--limit conditionalTransactionEntries=N for other servers).")
    public static let transactionUpdates = Rule(id: "transaction-updates", severity: .error, hint: "Too many update operations in one transaction; split it.")
    public static let bundleBytes = Rule(id: "bundle-bytes", severity: .error, hint: "The server refuses bodies this large (Medplum: 1 MB); use smaller batches.")
    public static let batchEntries = Rule(id: "batch-entries", severity: .warning, hint: "A very large batch makes one slow request; use smaller batches (--batch-size).")
    // References
    public static let urnInBatch = Rule(id: "urn-uuid-in-batch", severity: .error, hint: "Batch entries are independent: a urn:uuid reference cannot resolve there. Use a transaction or a conditional reference.")
    public static let urnUnresolved = Rule(id: "urn-uuid-unresolved", severity: .error, hint: "A urn:uuid reference must name the fullUrl of an entry of the same transaction.")
    public static let conditionalUnresolved = Rule(id: "conditional-reference-unresolved", severity: .error, hint: "No resource in these artifacts has that identifier; add it, or list it with --known-identifiers if it is already on the server.")
    public static let conditionalAmbiguous = Rule(id: "conditional-reference-ambiguous", severity: .error, hint: "Several resources carry that identifier, so the server cannot resolve the reference.")
    public static let conditionalLaterStep = Rule(id: "conditional-reference-order", severity: .error, hint: "The target is written in the same batch step or a later one; it must be uploaded in an earlier step or the same transaction. `fhirbundle rebundle DIR --out OUT` writes a folder whose steps put every target first.")
    public static let conditionalSameBatch = Rule(id: "conditional-reference-same-batch", severity: .warning, hint: "Servers that process a batch in order (HAPI, Medplum) resolve it, but FHIR lets a server process batch entries in any order; `fhirbundle rebundle` puts the target in an earlier step.")
    public static let fileCycle = Rule(id: "file-cycle", severity: .error, hint: "Without a manifest, files are uploaded in the order their references give; these refer to each other. `fhirbundle rebundle` orders resources rather than files.")
    public static let literalUnresolved = Rule(id: "literal-reference-unresolved", severity: .error, hint: "A Type/id reference must point at a resource in these artifacts or one declared known (--known-identifiers).")
    public static let referenceTarget = Rule(id: "reference-target-type", severity: .error, hint: "FHIR does not allow a reference to this resource type here (see the element's definition).")
    // Identifiers and idempotency
    public static let identifierDuplicate = Rule(id: "identifier-duplicate", severity: .error, hint: "Two resources of one type share system|value, and a conditional update, create or reference uses it: it would match both (412) or overwrite one.")
    public static let identifierShared = Rule(id: "identifier-shared", severity: .warning, hint: "Several resources share this identifier; that is harmless while no conditional operation uses it, but it cannot tell them apart.")
    public static let identifierNoSystem = Rule(id: "identifier-no-system", severity: .warning, hint: "An identifier without a system cannot be matched reliably; give it the source system's URI.")
    public static let notIdempotent = Rule(id: "not-idempotent", severity: .warning, hint: "A POST creates a new resource on every replay; use a conditional update (PUT Type?identifier=system|value).")
    public static let conditionalIdentifierMissing = Rule(id: "conditional-identifier-missing", severity: .error, hint: "The resource must carry the identifier its conditional update searches for, or a replay will create duplicates.")
    public static let idInConditionalUpdate = Rule(id: "id-in-conditional-update", severity: .error, hint: "Remove id from the body of a conditional update (Medplum rejects it); the server assigns it.")
    // FHIR R4 structure
    public static let unknownResourceType = Rule(id: "unknown-resource-type", severity: .error, hint: "resourceType must be a FHIR R4 resource type.")
    public static let unknownElement = Rule(id: "unknown-element", severity: .error, hint: "The element does not exist in FHIR R4 for this type; check its spelling and the type's definition.")
    public static let cardinality = Rule(id: "cardinality", severity: .error, hint: "A required element is missing, or a single element is given as an array (or the reverse).")
    public static let primitiveType = Rule(id: "primitive-json-type", severity: .error, hint: "Use the JSON type FHIR expects: booleans as true/false, numbers unquoted, everything else as strings.")
    public static let primitiveFormat = Rule(id: "primitive-format", severity: .error, hint: "The value does not match the FHIR R4 format of its type (dates yyyy-MM-dd, dateTimes with a UTC offset, ids of at most 64 characters, ...).")
    public static let requiredBinding = Rule(id: "required-binding", severity: .error, hint: "The element is bound to a required value set: use one of its codes.")
    public static let emptyValue = Rule(id: "empty-value", severity: .error, hint: "FHIR forbids empty strings, arrays and objects and null; leave the element out instead.")
}
