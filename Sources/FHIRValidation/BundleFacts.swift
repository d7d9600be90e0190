import FHIRDefinitions
import FHIRModel
import Glibc

/// What the checks of a batch or transaction bundle need that depends on the bundle alone, worked out ahead by the
/// worker that prepares its file (`PreparedFile`), or by the validating thread just before it checks the bundle.
///
/// The validating thread keeps what depends on the other files: the identifier index, references to other bundles,
/// duplicates, counts, the order of upload. It takes the facts at the place where it would have worked them out, so
/// the findings, and their order, do not depend on who prepared them. The facts sit in flat arrays (an entry's are
/// ranges into them): nothing per resource to allocate, retain or release.
struct BundleFacts: Sendable {
    /// One batch or transaction bundle: the file's, or one of the transactions of a batch of transactions.
    struct Bundle: Sendable {
        let token: Int
        /// The envelope's structure findings and Bundle invariants (`ArtifactValidator.checkEnvelope`).
        var envelopeFindings: Range<Int>
        var entries: Range<Int>
        /// fullUrl (hashed) → the type of its entry's resource: the targets of urn references in a transaction.
        var fullUrls: [UInt128: String] = [:]
        /// Duplicate and malformed fullUrls, in entry order.
        var fullUrlFindings: Range<Int>
    }

    var bundles: [Bundle] = []
    var entries: [EntryFacts] = []
    var findings: [Finding] = []
    var references: [PreparedReference] = []
    var identifierHashes: [UInt128] = []
    /// The urn references of twins, in token order (`ResourceFacts.urns`).
    var urns: [FoundReference] = []

    /// The facts of the bundle at `token`, when prepared (bundles are prepared in token order).
    func bundle(at token: Int) -> Bundle? {
        var low = 0, high = bundles.count
        while low < high {
            let mid = (low + high) / 2
            if bundles[mid].token < token { low = mid + 1 } else { high = mid }
        }
        return low < bundles.count && bundles[low].token == token ? bundles[low] : nil
    }

    /// Prepares the file on `tape` when it is a batch or transaction Bundle (other shapes are checked as they come).
    /// `twins`: the bundles have NDJSON mirror lines (a folder with a manifest), so each resource's twin hashes count.
    mutating func prepareFile(_ tape: JSONTape, file: String, twins: Bool, worker: inout PreparationWorker) {
        guard tape.kind(0) == .object, let type = tape.member(0, "resourceType"), tape.equals(type, "Bundle"),
              let kind = tape.member(0, "type"), tape.equals(kind, "batch") || tape.equals(kind, "transaction") else { return }
        prepare(tape, bundle: 0, file: file, twins: twins, tables: worker.tables, keys: &worker.keys)
    }

    /// Prepares the batch or transaction bundle at token `bundle`, then the transactions it holds (the entries
    /// `ArtifactValidator.checkEntries` reads as inner transactions); returns the bundle's facts.
    @discardableResult
    mutating func prepare(_ tape: JSONTape, bundle: Int, file: String, twins: Bool, tables: StructureTables,
                          keys: inout IdentifierKeys) -> Bundle {
        let checker = ResourceChecker(tables: tables)
        let envelopeStart = findings.count
        var found: [FoundReference] = []
        checker.check(tape, root: bundle, pointerRoot: 0, file: file, line: nil, envelope: true, findings: &findings, references: &found)
        ArtifactValidator.checkInvariants(of: bundle, tape, file: file, into: &findings)
        var facts = Bundle(token: bundle, envelopeFindings: envelopeStart..<findings.count, entries: entries.count..<entries.count,
                           fullUrlFindings: findings.count..<findings.count)
        let isTransaction = tape.member(bundle, "type").map { tape.equals($0, "transaction") } ?? false
        var tokens: [EntryTokens] = []
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            tokens.reserveCapacity(tape.count(list))
            tape.forEachItem(list) { _, entry in tokens.append(EntryTokens(tape, entry)) }
        }
        // fullUrls, in entry order: unique (bdl-7), valid when urn:uuid, and the targets of urn references.
        let fullUrlStart = findings.count
        for t in tokens {
            guard let fullUrl = tape.member(t.entry, "fullUrl"), tape.kind(fullUrl) == .string else { continue }
            let key = tape.withString(fullUrl) { FastHash.hash128($0) }!
            if facts.fullUrls[key] != nil {
                findings.append(Finding(rule: .fullUrlDuplicate, file: file, pointer: tape.pointer(to: fullUrl, from: 0),
                                        message: "fullUrl \(tape.string(fullUrl)!) appears twice in the bundle"))
            }
            if tape.hasPrefix(fullUrl, "urn:uuid:"), tape.withString(fullUrl, { PrimitiveFormats.check($0, .uuid) }) != true {
                findings.append(Finding(rule: .fullUrlInvalid, file: file, pointer: tape.pointer(to: fullUrl, from: 0),
                                        message: "'\(tape.string(fullUrl)!)' is not a valid urn:uuid"))
            }
            facts.fullUrls[key] = t.resourceType.map { tables.typeName(tape, $0) } ?? ""
        }
        facts.fullUrlFindings = fullUrlStart..<findings.count
        var inner: [Int] = []
        for t in tokens {
            var entry = EntryFacts(tokens: t)
            if let resource = t.resource {
                if Self.isInnerTransaction(tape, t, in: isTransaction) {
                    inner.append(resource)
                } else {
                    entry.resource = prepareResource(tape, resource, typeToken: t.resourceType, file: file, twins: twins, checker: checker,
                                                     found: &found, keys: &keys)
                    if let (method, url) = t.validRequest {
                        if tape.equals(method, "POST") {
                            if let ifNoneExist = t.request.flatMap({ tape.member($0, "ifNoneExist") }), tape.kind(ifNoneExist) == .string {
                                entry.conditionalKey = ConditionalWrite.keyHash(tape, search: ifNoneExist, typeToken: t.resourceType, create: true, keys: &keys)
                            }
                        } else if t.urlIsSearch && tape.equals(method, "PUT") {
                            entry.update = ConditionalWrite.updateFacts(tape, resource: resource, url: url)
                            entry.conditionalKey = ConditionalWrite.keyHash(tape, search: url, typeToken: t.resourceType, create: false, keys: &keys)
                        }
                    }
                }
            }
            entries.append(entry)
        }
        facts.entries = facts.entries.lowerBound..<entries.count
        bundles.append(facts)
        for resource in inner { prepare(tape, bundle: resource, file: file, twins: twins, tables: tables, keys: &keys) }
        return facts
    }

    /// Whether `checkEntries` reads the entry as a transaction of a batch of transactions (else it is a resource).
    static func isInnerTransaction(_ tape: JSONTape, _ t: EntryTokens, in transaction: Bool) -> Bool {
        guard !transaction, let (method, url) = t.validRequest, tape.equals(method, "POST"), tape.equals(url, "/"),
              let resource = t.resource, let type = t.resourceType, tape.equals(type, "Bundle"),
              let inner = tape.member(resource, "type") else { return false }
        return tape.equals(inner, "transaction")
    }

    private mutating func prepareResource(_ tape: JSONTape, _ resource: Int, typeToken: Int?, file: String, twins: Bool,
                                          checker: ResourceChecker, found: inout [FoundReference], keys: inout IdentifierKeys) -> ResourceFacts {
        let structureStart = findings.count
        found.removeAll(keepingCapacity: true)
        checker.check(tape, root: resource, pointerRoot: 0, file: file, line: nil, findings: &findings, references: &found)
        var facts = ResourceFacts(structureFindings: structureStart..<findings.count)
        let systemStart = findings.count
        ArtifactValidator.checkIdentifiersHaveSystems(tape, resource, file: file, line: nil, into: &findings)
        facts.systemFindings = systemStart..<findings.count
        let referenceStart = references.count
        for reference in found { references.append(PreparedReference(tape, reference, keys: &keys)) }
        facts.references = referenceStart..<references.count
        if let typeToken, tape.kind(typeToken) == .string {
            facts.type = checker.tables.resourceType(tape, typeToken) ?? -1
            let hashStart = identifierHashes.count
            keys.hashes(tape, resource, typeToken: typeToken, into: &identifierHashes)
            facts.identifierHashes = hashStart..<identifierHashes.count
        }
        if twins && facts.type >= 0 {
            facts.bytesHash = UInt64(truncatingIfNeeded: tape.hashOfBytes(resource))
            let urnStart = urns.count
            urns.append(contentsOf: found.filter { tape.hasPrefix($0.token, "urn:") }.sorted { $0.token < $1.token })
            facts.urns = urnStart..<urns.count
            if !facts.urns.isEmpty {
                facts.maskedHash = ArtifactValidator.maskedHash(tape, resource, urns[facts.urns].lazy.map(\.token))
            }
        }
        return facts
    }
}

/// What a thread that prepares files keeps from one to the next: its own copy of the structure tables, and a buffer.
struct PreparationWorker {
    let tables: StructureTables
    var keys = IdentifierKeys()

    init(tables: StructureTables = .r4Copy()) { self.tables = tables }
}

/// The tokens of a bundle entry that the checks read, each found once.
struct EntryTokens: Sendable {
    let entry: Int
    let resource: Int?
    /// The resource's `resourceType`, when it is a string.
    let resourceType: Int?
    let request: Int?
    let method: Int?
    let url: Int?
    /// `request.method` and `request.url` when both are strings.
    let validRequest: (method: Int, url: Int)?
    /// Whether `request.url` is a string with a search (`?`): a conditional write.
    let urlIsSearch: Bool

    init(_ tape: JSONTape, _ entry: Int) {
        self.entry = entry
        resource = tape.member(entry, "resource")
        resourceType = resource.flatMap { tape.member($0, "resourceType") }.flatMap { tape.kind($0) == .string ? $0 : nil }
        request = tape.member(entry, "request")
        method = request.flatMap { tape.member($0, "method") }
        url = request.flatMap { tape.member($0, "url") }
        if let method, tape.kind(method) == .string, let url, tape.kind(url) == .string {
            validRequest = (method, url)
        } else {
            validRequest = nil
        }
        urlIsSearch = url.flatMap { tape.withString($0) { $0.contains(UInt8(ascii: "?")) } } ?? false
    }
}

/// The facts of one bundle entry.
struct EntryFacts: Sendable {
    let tokens: EntryTokens
    /// Its resource's, unless the entry is a transaction of a batch of transactions.
    var resource: ResourceFacts?
    /// The hash of `Type|system|value` that its conditional create (`ifNoneExist`) or update (`PUT Type?identifier=`)
    /// searches for.
    var conditionalKey: UInt128?
    /// A conditional update's body: whether it has an id, and the identifier it lacks.
    var update: ConditionalWrite.UpdateFacts?
}

/// The facts of one resource of a bundle, as ranges into `BundleFacts`' arrays.
struct ResourceFacts: Sendable {
    var structureFindings: Range<Int>
    /// Identifiers without a system.
    var systemFindings: Range<Int> = 0..<0
    var references: Range<Int> = 0..<0
    /// Index of `StructureTables.types`, or -1.
    var type: Int32 = -1
    var identifierHashes: Range<Int> = 0..<0
    /// For the NDJSON mirror (`recordTwin`): the hash of its bytes, its urn references and the hash of the bytes
    /// around them.
    var bytesHash: UInt64 = 0
    var urns: Range<Int> = 0..<0
    var maskedHash: UInt64 = 0
}

/// The checks of a conditional write that depend on the entry alone.
enum ConditionalWrite {
    struct UpdateFacts: Sendable {
        let hasID: Bool
        /// `system|value` of the identifier the update searches for when the resource does not carry it.
        let missingIdentifier: String?
    }

    /// A conditional update (`PUT Type?identifier=system|value`) has no id in its body and carries the identifier it
    /// searches for.
    static func updateFacts(_ tape: JSONTape, resource: Int, url: Int) -> UpdateFacts {
        // nil: not an identifier search; else the description of the identifier when the resource lacks it.
        let missing: String?? = tape.withString(url) { u -> String?? in
            guard let token = IdentifierSearch.query(u) else { return .none }
            return IdentifierSearch.withParsedToken(token) { system, value -> String? in
                var carries = false
                tape.forEachIdentifier(of: resource) { identifier in
                    guard !carries, let s = tape.member(identifier, "system"), let v = tape.member(identifier, "value") else { return }
                    carries = tape.withString(s, { sameBytes($0, system) }) == true && tape.withString(v, { sameBytes($0, value) }) == true
                }
                return carries ? nil : String(decoding: system, as: UTF8.self) + "|" + String(decoding: value, as: UTF8.self)
            }
        } ?? .none
        return UpdateFacts(hasID: tape.member(resource, "id") != nil, missingIdentifier: missing ?? nil)
    }

    /// The hash of `Type|system|value` that a conditional update's url or a conditional create's `ifNoneExist`
    /// (`search`) searches for, when it searches by identifier.
    static func keyHash(_ tape: JSONTape, search: Int, typeToken: Int?, create: Bool, keys: inout IdentifierKeys) -> UInt128? {
        guard let typeToken else { return nil }
        let hash: UInt128?? = tape.withString(search) { u -> UInt128? in
            let query: UnsafeBufferPointer<UInt8>?
            if create {
                let prefix: StaticString = "identifier="
                query = u.count > prefix.utf8CodeUnitCount && memcmp(u.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
                    ? UnsafeBufferPointer(rebasing: u[prefix.utf8CodeUnitCount...]) : nil
            } else {
                query = IdentifierSearch.query(u)
            }
            guard let query else { return nil }
            return IdentifierSearch.withParsedToken(query) { system, value in
                tape.withString(typeToken) { t in keys.hash(type: t, system: system, value: value) }
            } ?? nil
        }
        return hash ?? nil
    }
}
