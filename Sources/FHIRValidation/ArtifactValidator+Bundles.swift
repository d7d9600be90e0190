import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// The bundle pass: envelopes, entries, requests, size caps, conditional writes, data bundles.
extension ArtifactValidator {
    /// The JSON pointer of a token of the bundle on the tape (built only for findings).
    func pointer(_ token: Int) -> String { tape.pointer(to: token, from: 0) }

    func checkBundle(file: String, size: Int, step: Int32, transactionCounter: inout Int32) {
        let tape = self.tape
        guard tape.kind(0) == .object, let type = tape.member(0, "resourceType"), tape.equals(type, "Bundle") else {
            if foreign, tape.kind(0) == .object, let type = tape.member(0, "resourceType"), tape.kind(type) == .string {
                return checkDataResource(0, typeToken: type, file: file, step: step)
            }
            findings.append(Finding(rule: .bundleType, file: file, pointer: "/resourceType", message: "the file is not a Bundle"))
            return
        }
        if size > limits.bundleBytes {
            findings.append(Finding(rule: .bundleBytes, file: file, message: "the bundle is \(size) bytes, more than \(limits.bundleBytes)"))
        }
        checkEntries(0, file: file, step: step, transactionCounter: &transactionCounter)
    }

    /// The tokens of a bundle entry that the checks read, each found once.
    struct EntryTokens {
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

    func checkEntries(_ bundle: Int, file: String, step: Int32, transactionCounter: inout Int32) {
        let tape = self.tape
        checkEnvelope(bundle, file: file)
        let typeToken = tape.member(bundle, "type")
        let isBatch = typeToken.map { tape.equals($0, "batch") } ?? false
        let isTransaction = typeToken.map { tape.equals($0, "transaction") } ?? false
        let dataTypes: [StaticString] = ["collection", "searchset", "document", "message", "history"]
        let isData = foreign && bundle == 0 && (typeToken.map { t in dataTypes.contains { tape.equals(t, $0) } } ?? false)
        guard isBatch || isTransaction || isData else {
            let type = typeToken.flatMap { tape.string($0) } ?? ""
            findings.append(Finding(rule: .bundleType, file: file, pointer: pointer(bundle) + "/type",
                                    message: "bundle type '\(type)' cannot be uploaded; use batch or transaction\(foreign ? " (or collection, searchset, document, message, history for data)" : "")"))
            return
        }
        if isData { return checkDataEntries(bundle, file: file, step: step) }
        let bundleSerial = bundleCounter
        bundleCounter += 1
        // A transaction is known by its bundle's number.
        let transaction: Int32 = isTransaction ? bundleSerial : -1
        if isTransaction { transactionCounter += 1 }
        // Each entry's tokens, looked up once for the passes below.
        var entries: [EntryTokens] = []
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            entries.reserveCapacity(tape.count(list))
            tape.forEachItem(list) { _, entry in entries.append(EntryTokens(tape, entry)) }
        }
        if isTransaction {
            var conditional = 0
            var updates = 0
            for entry in entries where entry.request != nil {
                if entry.urlIsSearch { conditional += 1 }
                if let method = entry.method, tape.equals(method, "PUT") || tape.equals(method, "PATCH") { updates += 1 }
            }
            if entries.count > limits.transactionEntries {
                findings.append(Finding(rule: .transactionEntries, file: file, pointer: pointer(bundle) + "/entry", message: "the transaction has \(entries.count) entries, more than \(limits.transactionEntries)"))
            }
            if conditional > 0 && entries.count > limits.conditionalTransactionEntries {
                findings.append(Finding(rule: .conditionalTransactionEntries, file: file, pointer: pointer(bundle) + "/entry",
                                        message: "the transaction has \(entries.count) entries with conditional operations, more than \(limits.conditionalTransactionEntries)"))
            }
            if updates > limits.transactionUpdates {
                findings.append(Finding(rule: .transactionUpdates, file: file, pointer: pointer(bundle) + "/entry", message: "\(updates) update operations, more than \(limits.transactionUpdates)"))
            }
        } else if entries.count > limits.batchEntries {
            findings.append(Finding(rule: .batchEntries, file: file, pointer: pointer(bundle) + "/entry", message: "the batch has \(entries.count) entries, more than \(limits.batchEntries)"))
        }
        // fullUrls of this bundle (hashed): unique (bdl-7), and the targets of urn:uuid references inside a
        // transaction, with their resource type.
        var fullUrls: [UInt128: String] = [:]
        var hashes: [UInt128] = []
        var hashRanges: [Range<Int>] = []
        hashRanges.reserveCapacity(entries.count)
        for tokens in entries {
            // Index first, so that references within this bundle resolve whatever the entry order.
            let first = hashes.count
            let entry = tokens.entry, resource = tokens.resource, resourceTypeToken = tokens.resourceType
            // An inner transaction (POSTed to /) is indexed entry by entry when it is read; a Bundle written as a
            // resource (a document) is a resource like any other.
            let isInnerTransaction = tokens.validRequest.map { tape.equals($0.url, "/") } ?? false
            if let resource, let resourceTypeToken, !isInnerTransaction {
                let place = EntryPlace(step: step, transaction: transaction, bundle: bundleSerial, position: Int32(hashRanges.count), data: false)
                index(resource, typeToken: resourceTypeToken, place: place, hashes: &hashes)
            }
            hashRanges.append(first..<hashes.count)
            guard let fullUrl = tape.member(entry, "fullUrl"), tape.kind(fullUrl) == .string else { continue }
            let key = tape.withString(fullUrl) { FastHash.hash128($0) }!
            if fullUrls[key] != nil {
                findings.append(Finding(rule: .fullUrlDuplicate, file: file, pointer: pointer(fullUrl), message: "fullUrl \(tape.string(fullUrl)!) appears twice in the bundle"))
            }
            if tape.hasPrefix(fullUrl, "urn:uuid:"), tape.withString(fullUrl, { PrimitiveFormats.check($0, .uuid) }) != true {
                findings.append(Finding(rule: .fullUrlInvalid, file: file, pointer: pointer(fullUrl), message: "'\(tape.string(fullUrl)!)' is not a valid urn:uuid"))
            }
            fullUrls[key] = resourceTypeToken.map { typeName($0) } ?? ""
        }
        var references: [FoundReference] = []
        for (i, tokens) in entries.enumerated() {
            let entry = tokens.entry
            guard let (method, url) = tokens.validRequest else {
                findings.append(Finding(rule: .entryRequest, file: file, pointer: pointer(entry) + "/request", message: "the entry has no request.method and request.url"))
                continue
            }
            if tape.equals(method, "DELETE") {
                deleteEntries += 1
                // A delete by search must name one identity, as the conditional updates do; by id, Type/id.
                let target = tape.string(url) ?? ""
                let namesOne = target.contains("?") ? ConditionalURL.parseIdentifier(target) != nil
                    : target.split(separator: "/", omittingEmptySubsequences: false).count == 2 && !target.hasPrefix("/") && !target.hasSuffix("/")
                if tokens.resource != nil || !namesOne {
                    findings.append(Finding(rule: .entryRequest, file: file, pointer: pointer(entry) + "/request",
                                            message: "a DELETE entry must have no resource and must name one resource: Type?identifier=system|value or Type/id"))
                }
                continue
            }
            guard let resource = tokens.resource else { continue }
            let resourceTypeToken = tokens.resourceType
            let isPost = tape.equals(method, "POST")
            let isBundle = resourceTypeToken.map { tape.equals($0, "Bundle") } ?? false
            if isPost && tape.equals(url, "/") {
                guard !isTransaction, isBundle, let inner = tape.member(resource, "type"), tape.equals(inner, "transaction") else {
                    findings.append(Finding(rule: .batchOfTransactionsEntry, file: file, pointer: pointer(entry), message: "an entry POSTed to / must be a transaction Bundle inside a batch"))
                    continue
                }
                checkEntries(resource, file: file, step: step, transactionCounter: &transactionCounter)
                continue
            }
            // A PATCH body is a FHIRPath patch (Parameters) or a JSON patch (Binary), not the resource it changes.
            let isPatchBody = tape.equals(method, "PATCH") && (resourceTypeToken.map { tape.equals($0, "Parameters") || tape.equals($0, "Binary") } ?? false)
            // The type at the start of request.url must be the resource's (a resource without one matches none).
            let typeMatches = isPatchBody || tape.withString(url) { u -> Bool in
                let urlType = u.prefix { $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "/") }
                guard let resourceTypeToken else { return urlType.isEmpty }
                return tape.withString(resourceTypeToken) { sameBytes($0, UnsafeBufferPointer(rebasing: urlType)) } ?? false
            }!
            if !typeMatches {
                let urlType = tape.string(url)!.prefix { $0 != "?" && $0 != "/" }
                findings.append(Finding(rule: .entryResourceType, file: file, pointer: pointer(entry) + "/request/url",
                                        message: "request.url is for \(urlType) but the resource is a \(resourceTypeToken.map { typeName($0) } ?? "")"))
            }
            if isPost {
                if let ifNoneExist = tokens.request.flatMap({ tape.member($0, "ifNoneExist") }), tape.kind(ifNoneExist) == .string {
                    // A conditional create: a replay finds the resource and creates nothing.
                    checkConditionalKey(entry: entry, resource: resource, search: ifNoneExist, typeToken: resourceTypeToken, file: file, create: true)
                } else {
                    findings.append(Finding(rule: .notIdempotent, file: file, pointer: pointer(entry) + "/request",
                                            message: "POST \(tape.string(url)!) creates a new \(resourceTypeToken.map { typeName($0) } ?? "") on every replay"))
                }
            }
            if tokens.urlIsSearch && tape.equals(method, "PUT") {
                checkConditionalUpdate(entry: entry, resource: resource, url: url, file: file)
                checkConditionalKey(entry: entry, resource: resource, search: url, typeToken: resourceTypeToken, file: file, create: false)
            }
            resources += 1
            bundleTypeCounts.add(tape, typeToken: resourceTypeToken)
            if Int(step) < stepTypeCounts.count { stepTypeCounts[Int(step)].add(tape, typeToken: resourceTypeToken) }
            references.removeAll(keepingCapacity: true)
            checkStructure(resource, file: file, references: &references)
            if !foreign, let resourceTypeToken, let type = tables.resourceType(tape, resourceTypeToken) {
                recordTwin(resource, type: type, references: references, identifiers: hashes[hashRanges[i]])
            }
            checkIdentifiersHaveSystems(resource, file: file, line: nil)
            for hash in hashes[hashRanges[i]] where (index[hash]?.count ?? 0) > 1 {
                if let resourceTypeToken { sightDuplicate(hash, resource: resource, typeToken: resourceTypeToken, file: file, line: nil) }
            }
            // A Bundle written as a resource (a document, a collection) is stored as it is: its references resolve
            // inside it, not against the upload.
            if isBundle { continue }
            let place = EntryPlace(step: step, transaction: transaction, bundle: bundleSerial, position: Int32(i), data: false)
            for reference in references {
                checkReference(reference, file: file, line: nil, place: place, isTransaction: isTransaction, fullUrls: fullUrls)
            }
        }
    }

    /// The Bundle itself, without its entries' resources: its elements (type, timestamp, entry.request.method, unknown
    /// keys, ...) as for any resource, and the Bundle invariants of FHIR R4 that concern its shape.
    func checkEnvelope(_ bundle: Int, file: String) {
        // A worker that prepared the file checked the envelope whole (its structure, then its invariants).
        let prepared = prechecked[-1 - bundle] != nil
        var references: [FoundReference] = []
        checkStructure(bundle, file: file, envelope: true, references: &references)
        if !prepared { Self.checkInvariants(of: bundle, tape, file: file, into: &findings) }
    }

    /// The Bundle invariants of FHIR R4 that concern its shape (those on fullUrls are checked with the entries): a
    /// function of the bundle alone, so that a worker can check them ahead.
    static func checkInvariants(of bundle: Int, _ tape: JSONTape, file: String, into findings: inout [Finding]) {
        // The type is compared in place: a batch of transactions has an envelope for each of its transactions.
        let typeToken = tape.member(bundle, "type")
        func typeIs(_ names: StaticString...) -> Bool {
            guard let typeToken else { return false }
            return names.contains { tape.equals(typeToken, $0) }
        }
        func typeText() -> String { typeToken.flatMap { tape.string($0) } ?? "" }
        func invariant(_ id: String, _ token: Int, _ message: String) {
            findings.append(Finding(rule: .bundleInvariant, file: file, pointer: tape.pointer(to: token, from: 0), message: "\(id): \(message)"))
        }
        if let total = tape.member(bundle, "total"), !typeIs("searchset", "history") {
            invariant("bdl-1", total, "total is only for a searchset or history bundle")
        }
        // bdl-3 and bdl-4 depend on the type: not judged when the type itself is wrong (reported above).
        let knownType = typeIs("document", "message", "transaction", "transaction-response", "batch", "batch-response", "history", "searchset", "collection")
        let requests = !knownType || typeIs("batch", "transaction", "history")
        let responses = typeIs("batch-response", "transaction-response", "history")
        let searchset = typeIs("searchset")
        var first: Int?
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            tape.forEachItem(list) { position, entry in
                guard tape.kind(entry) == .object else { return }
                let resource = tape.member(entry, "resource")
                if position == 0 { first = resource }
                if let search = tape.member(entry, "search"), !searchset {
                    invariant("bdl-2", search, "entry.search is only for a searchset bundle")
                }
                let request = tape.member(entry, "request")
                if let request, !requests {
                    let type = typeText()
                    invariant("bdl-3", request, "entry.request is only for a batch, transaction or history bundle, not \(type.isEmpty ? "this one" : "a \(type)")")
                }
                let response = tape.member(entry, "response")
                if let response, !responses {
                    invariant("bdl-4", response, "entry.response is only for a batch-response, transaction-response or history bundle")
                } else if response == nil && responses && knownType {
                    invariant("bdl-4", entry, "an entry of a \(typeText()) bundle needs a response")
                }
                if resource == nil && request == nil && response == nil {
                    invariant("bdl-5", entry, "the entry has neither a resource nor a request or response")
                }
                if let fullUrl = tape.member(entry, "fullUrl"), tape.contains(fullUrl, "/_history/") {
                    invariant("bdl-8", fullUrl, "fullUrl cannot be a version-specific reference")
                }
            }
        }
        func firstIs(_ type: StaticString) -> Bool {
            first.flatMap { tape.member($0, "resourceType") }.map { tape.equals($0, type) } ?? false
        }
        if typeIs("document") {
            let identifier = tape.member(bundle, "identifier")
            if identifier.flatMap({ tape.member($0, "system") }) == nil || identifier.flatMap({ tape.member($0, "value") }) == nil {
                invariant("bdl-9", bundle, "a document needs an identifier with a system and a value")
            }
            if tape.member(bundle, "timestamp") == nil { invariant("bdl-10", bundle, "a document needs a timestamp") }
            if !firstIs("Composition") { invariant("bdl-11", bundle, "a document's first entry must be a Composition") }
        }
        if typeIs("message") && !firstIs("MessageHeader") { invariant("bdl-12", bundle, "a message's first entry must be a MessageHeader") }
    }

    /// A resource type's name: the tables' own string for R4 types (no allocation), else the token's text.
    func typeName(_ token: Int) -> String {
        if let i = tables.resourceType(tape, token) { return tables.types[Int(i)].name }
        return tape.string(token) ?? ""
    }

    /// A conditional update (`PUT Type?identifier=system|value`) has no id in its body and carries the identifier it
    /// searches for.
    func checkConditionalUpdate(entry: Int, resource: Int, url: Int, file: String) {
        let tape = self.tape
        if tape.member(resource, "id") != nil {
            findings.append(Finding(rule: .idInConditionalUpdate, file: file, pointer: pointer(entry) + "/resource/id", message: "a conditional update body must not contain id"))
        }
        let identifiers = tape.member(resource, "identifier").flatMap { tape.kind($0) == .array ? $0 : nil }
        // nil: not an identifier search; else the description of the identifier when the resource lacks it.
        let missing: String?? = tape.withString(url) { u -> String?? in
            guard let token = Self.identifierQuery(u) else { return .none }
            return withParsedToken(token) { system, value -> String? in
                var carries = false
                if let identifiers {
                    tape.forEachItem(identifiers) { _, identifier in
                        guard !carries, let s = tape.member(identifier, "system"), let v = tape.member(identifier, "value") else { return }
                        carries = tape.withString(s, { sameBytes($0, system) }) == true && tape.withString(v, { sameBytes($0, value) }) == true
                    }
                }
                return carries ? nil : String(decoding: system, as: UTF8.self) + "|" + String(decoding: value, as: UTF8.self)
            }
        } ?? .none
        if case .some(.some(let description)) = missing {
            findings.append(Finding(rule: .conditionalIdentifierMissing, file: file, pointer: pointer(entry) + "/resource/identifier",
                                    message: "the update searches for identifier \(description), which the resource does not carry"))
        }
    }

    /// The identifier a conditional update (`url`) or create (`ifNoneExist`) searches for is a key: it must be unique,
    /// and a conditional create must carry it.
    func checkConditionalKey(entry: Int, resource: Int, search: Int, typeToken: Int?, file: String, create: Bool) {
        let tape = self.tape
        guard let typeToken else { return }
        let hash: UInt128?? = tape.withString(search) { u -> UInt128? in
            let query: UnsafeBufferPointer<UInt8>?
            if create {
                let prefix: StaticString = "identifier="
                query = u.count > prefix.utf8CodeUnitCount && memcmp(u.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
                    ? UnsafeBufferPointer(rebasing: u[prefix.utf8CodeUnitCount...]) : nil
            } else {
                query = Self.identifierQuery(u)
            }
            guard let query else { return nil }
            return withParsedToken(query) { system, value in
                tape.withString(typeToken) { t in identifierHash(type: t, system: system, value: value) }
            } ?? nil
        }
        guard let hash = hash ?? nil else { return }
        // One probe: the entry was indexed moments ago, so it is there unless the resource lacks the identifier.
        let carried = index.update(hash, startingAt: IndexEntry()) { e -> Bool in
            guard e.count > 0 else { return false }
            e.used = true
            if create { e.conditionalCreates += 1 }
            return true
        }
        if !carried && create {
            findings.append(Finding(rule: .conditionalIdentifierMissing, file: file, pointer: pointer(entry) + "/resource/identifier",
                                    message: "the conditional create searches for identifier \(tape.string(search) ?? ""), which the resource does not carry"))
        }
    }

    /// A resource in a data bundle or file of its own: checked, indexed, its references resolved.
    func checkDataResource(_ resource: Int, typeToken: Int, file: String, step: Int32, fullUrls: [UInt128: String] = [:]) {
        let tape = self.tape
        let place = EntryPlace(step: step, transaction: -1, bundle: -1, position: 0, data: true)
        var hashes: [UInt128] = []
        if !tape.equals(typeToken, "Bundle") { index(resource, typeToken: typeToken, place: place, hashes: &hashes) }
        checkIndexedDataResource(resource, typeToken: typeToken, hashes: hashes[...], file: file, place: place, fullUrls: fullUrls)
    }

    func checkIndexedDataResource(_ resource: Int, typeToken: Int, hashes: ArraySlice<UInt128>, file: String, place: EntryPlace,
                                          fullUrls: [UInt128: String]) {
        let tape = self.tape
        resources += 1
        bundleTypeCounts.add(tape, typeToken: typeToken)
        var references: [FoundReference] = []
        checkStructure(resource, file: file, references: &references)
        checkIdentifiersHaveSystems(resource, file: file, line: nil)
        for hash in hashes where (index[hash]?.count ?? 0) > 1 { sightDuplicate(hash, resource: resource, typeToken: typeToken, file: file, line: nil) }
        for reference in references { checkReference(reference, file: file, line: nil, place: place, isTransaction: false, fullUrls: fullUrls) }
    }

    /// The entries of a collection, searchset, document, message or history bundle: resources to check, not writes.
    func checkDataEntries(_ bundle: Int, file: String, step: Int32) {
        let tape = self.tape
        var entries: [(resource: Int, type: Int)] = []
        var fullUrls: [UInt128: String] = [:]
        if let list = tape.member(bundle, "entry"), tape.kind(list) == .array {
            tape.forEachItem(list) { _, entry in
                guard let resource = tape.member(entry, "resource"), let type = tape.member(resource, "resourceType"), tape.kind(type) == .string else { return }
                entries.append((resource, type))
                if let fullUrl = tape.member(entry, "fullUrl"), tape.kind(fullUrl) == .string {
                    fullUrls[tape.withString(fullUrl) { FastHash.hash128($0) }!] = typeName(type)
                }
            }
        }
        let place = EntryPlace(step: step, transaction: -1, bundle: -1, position: 0, data: true)
        var hashes: [UInt128] = []
        var ranges: [Range<Int>] = []
        for (resource, type) in entries {
            let first = hashes.count
            index(resource, typeToken: type, place: place, hashes: &hashes)
            ranges.append(first..<hashes.count)
        }
        for (i, (resource, type)) in entries.enumerated() {
            checkIndexedDataResource(resource, typeToken: type, hashes: hashes[ranges[i]], file: file, place: place, fullUrls: fullUrls)
        }
    }
}
