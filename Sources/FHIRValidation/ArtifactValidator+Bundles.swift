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

    /// The facts of the batch or transaction bundle at `bundle` (see `BundleFacts`): the worker's, or worked out now.
    func bundleFacts(_ bundle: Int, file: String) -> BundleFacts.Bundle {
        if let prepared = facts.bundle(at: bundle) { return prepared }
        return facts.prepare(tape, bundle: bundle, file: file, twins: !foreign, tables: tables, keys: &identifierKeys)
    }

    func checkEntries(_ bundle: Int, file: String, step: Int32, transactionCounter: inout Int32) {
        let tape = self.tape
        let typeToken = tape.member(bundle, "type")
        let isBatch = typeToken.map { tape.equals($0, "batch") } ?? false
        let isTransaction = typeToken.map { tape.equals($0, "transaction") } ?? false
        let dataTypes: [StaticString] = ["collection", "searchset", "document", "message", "history"]
        let isData = foreign && bundle == 0 && (typeToken.map { t in dataTypes.contains { tape.equals(t, $0) } } ?? false)
        guard isBatch || isTransaction else {
            checkEnvelope(bundle, file: file)
            if isData { return checkDataEntries(bundle, file: file, step: step) }
            let type = typeToken.flatMap { tape.string($0) } ?? ""
            findings.append(Finding(rule: .bundleType, file: file, pointer: pointer(bundle) + "/type",
                                    message: "bundle type '\(type)' cannot be uploaded; use batch or transaction\(foreign ? " (or collection, searchset, document, message, history for data)" : "")"))
            return
        }
        let prepared = bundleFacts(bundle, file: file)
        findings.append(contentsOf: facts.findings[prepared.envelopeFindings])
        let entries = facts.entries[prepared.entries]
        let bundleSerial = bundleCounter
        bundleCounter += 1
        // A transaction is known by its bundle's number.
        let transaction: Int32 = isTransaction ? bundleSerial : -1
        if isTransaction { transactionCounter += 1 }
        if isTransaction {
            var conditional = 0
            var updates = 0
            for entry in entries where entry.tokens.request != nil {
                if entry.tokens.urlIsSearch { conditional += 1 }
                if let method = entry.tokens.method, tape.equals(method, "PUT") || tape.equals(method, "PATCH") { updates += 1 }
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
        // Index first, so that references within this bundle resolve whatever the entry order. An inner transaction
        // (POSTed to /) is indexed entry by entry when it is read; a Bundle written as a resource (a document) is a
        // resource like any other.
        var indexed: [Range<Int>] = []
        indexed.reserveCapacity(entries.count)
        // No identifier indexed again from here on: no resource of the bundle needs looking up again for duplicates.
        let repeatsBefore = repeatedIdentifiers
        for (position, entry) in entries.enumerated() {
            let tokens = entry.tokens
            let isInnerTransaction = tokens.validRequest.map { tape.equals($0.url, "/") } ?? false
            guard let resource = tokens.resource, let resourceTypeToken = tokens.resourceType, !isInnerTransaction,
                  let hashes = entry.resource?.identifierHashes else {
                indexed.append(0..<0)
                continue
            }
            let place = EntryPlace(step: step, transaction: transaction, bundle: bundleSerial, position: Int32(position), data: false)
            index(resource, typeToken: resourceTypeToken, place: place, hashes: facts.identifierHashes[hashes])
            indexed.append(hashes)
        }
        findings.append(contentsOf: facts.findings[prepared.fullUrlFindings])
        for (i, entry) in entries.enumerated() {
            let tokens = entry.tokens
            let entryToken = tokens.entry
            guard let (method, url) = tokens.validRequest else {
                findings.append(Finding(rule: .entryRequest, file: file, pointer: pointer(entryToken) + "/request", message: "the entry has no request.method and request.url"))
                continue
            }
            if tape.equals(method, "DELETE") {
                deleteEntries += 1
                // A delete by search must name one identity, as the conditional updates do; by id, Type/id.
                let target = tape.string(url) ?? ""
                let namesOne = target.contains("?") ? ConditionalURL.parseIdentifier(target) != nil
                    : target.split(separator: "/", omittingEmptySubsequences: false).count == 2 && !target.hasPrefix("/") && !target.hasSuffix("/")
                if tokens.resource != nil || !namesOne {
                    findings.append(Finding(rule: .entryRequest, file: file, pointer: pointer(entryToken) + "/request",
                                            message: "a DELETE entry must have no resource and must name one resource: Type?identifier=system|value or Type/id"))
                }
                continue
            }
            guard let resource = tokens.resource else { continue }
            let resourceTypeToken = tokens.resourceType
            let isPost = tape.equals(method, "POST")
            let isBundle = resourceTypeToken.map { tape.equals($0, "Bundle") } ?? false
            if isPost && tape.equals(url, "/") {
                guard BundleFacts.isInnerTransaction(tape, tokens, in: isTransaction) else {
                    findings.append(Finding(rule: .batchOfTransactionsEntry, file: file, pointer: pointer(entryToken), message: "an entry POSTed to / must be a transaction Bundle inside a batch"))
                    continue
                }
                checkEntries(resource, file: file, step: step, transactionCounter: &transactionCounter)
                continue
            }
            // Prepared for every entry with a resource but the inner transactions, read above.
            let resourceFacts = entry.resource!
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
                findings.append(Finding(rule: .entryResourceType, file: file, pointer: pointer(entryToken) + "/request/url",
                                        message: "request.url is for \(urlType) but the resource is a \(resourceTypeToken.map { typeName($0) } ?? "")"))
            }
            if isPost {
                if let ifNoneExist = tokens.request.flatMap({ tape.member($0, "ifNoneExist") }), tape.kind(ifNoneExist) == .string {
                    // A conditional create: a replay finds the resource and creates nothing.
                    checkConditionalKey(entry.conditionalKey, entry: entryToken, search: ifNoneExist, file: file, create: true)
                } else {
                    findings.append(Finding(rule: .notIdempotent, file: file, pointer: pointer(entryToken) + "/request",
                                            message: "POST \(tape.string(url)!) creates a new \(resourceTypeToken.map { typeName($0) } ?? "") on every replay"))
                }
            }
            if tokens.urlIsSearch && tape.equals(method, "PUT"), let update = entry.update {
                if update.hasID {
                    findings.append(Finding(rule: .idInConditionalUpdate, file: file, pointer: pointer(entryToken) + "/resource/id", message: "a conditional update body must not contain id"))
                }
                if let description = update.missingIdentifier {
                    findings.append(Finding(rule: .conditionalIdentifierMissing, file: file, pointer: pointer(entryToken) + "/resource/identifier",
                                            message: "the update searches for identifier \(description), which the resource does not carry"))
                }
                checkConditionalKey(entry.conditionalKey, entry: entryToken, search: url, file: file, create: false)
            }
            resources += 1
            let type: Int32? = resourceFacts.type >= 0 ? resourceFacts.type : nil
            bundleTypeCounts.add(type, tape, typeToken: resourceTypeToken)
            if Int(step) < stepTypeCounts.count { stepTypeCounts[Int(step)].add(type, tape, typeToken: resourceTypeToken) }
            findings.append(contentsOf: facts.findings[resourceFacts.structureFindings])
            let hashes = facts.identifierHashes[indexed[i]]
            if !foreign, let type { recordTwin(resource, type: type, facts: resourceFacts, identifiers: hashes) }
            findings.append(contentsOf: facts.findings[resourceFacts.systemFindings])
            for hash in hashes where repeatedIdentifiers != repeatsBefore && (index[hash]?.count ?? 0) > 1 {
                if let resourceTypeToken { sightDuplicate(hash, resource: resource, typeToken: resourceTypeToken, file: file, line: nil) }
            }
            // A Bundle written as a resource (a document, a collection) is stored as it is: its references resolve
            // inside it, not against the upload.
            if isBundle { continue }
            let place = EntryPlace(step: step, transaction: transaction, bundle: bundleSerial, position: Int32(i), data: false)
            for reference in facts.references[resourceFacts.references] {
                checkReference(reference, file: file, line: nil, place: place, isTransaction: isTransaction, fullUrls: prepared.fullUrls)
            }
        }
    }

    /// The Bundle itself, without its entries' resources, when it is not a batch or transaction (whose envelope is
    /// checked with its facts): its elements as for any resource, and the Bundle invariants of FHIR R4.
    func checkEnvelope(_ bundle: Int, file: String) {
        var references: [FoundReference] = []
        checkStructure(bundle, file: file, envelope: true, references: &references)
        Self.checkInvariants(of: bundle, tape, file: file, into: &findings)
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
    func typeName(_ token: Int) -> String { tables.typeName(tape, token) }

    /// The identifier a conditional update (`url`) or create (`ifNoneExist`) searches for (`hash`, see
    /// `ConditionalWrite.keyHash`) is a key: it must be unique, and a conditional create must carry it.
    func checkConditionalKey(_ hash: UInt128?, entry: Int, search: Int, file: String, create: Bool) {
        guard let hash else { return }
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
        if !tape.equals(typeToken, "Bundle") {
            identifierKeys.hashes(tape, resource, typeToken: typeToken, into: &hashes)
            index(resource, typeToken: typeToken, place: place, hashes: hashes[...])
        }
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
            identifierKeys.hashes(tape, resource, typeToken: type, into: &hashes)
            index(resource, typeToken: type, place: place, hashes: hashes[first...])
            ranges.append(first..<hashes.count)
        }
        for (i, (resource, type)) in entries.enumerated() {
            checkIndexedDataResource(resource, typeToken: type, hashes: hashes[ranges[i]], file: file, place: place, fullUrls: fullUrls)
        }
    }
}
