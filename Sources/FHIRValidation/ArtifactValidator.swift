import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

/// Options of a validation run.
public struct ValidationOptions: Sendable {
    public var limits: BundleLimits
    /// `Type|system|value` or `Type/id` lines naming resources that already exist on the server.
    public var knownIdentifiers: Set<String>

    public init(limits: BundleLimits = .medplum, knownIdentifiers: Set<String> = []) {
        self.limits = limits
        self.knownIdentifiers = knownIdentifiers
    }
}

/// What a validation found.
public struct ValidationReport: Sendable {
    public var findings: [Finding]
    public var resources: Int
    public var files: Int
    public var errors: Int { findings.lazy.filter { $0.severity == .error }.count }
    public var warnings: Int { findings.lazy.filter { $0.severity == .warning }.count }
}

/// Why validation could not run at all (exit status 2).
public struct ValidationFailure: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Validates an artifact folder offline: written by `fhirbundle convert` (with a manifest) or any folder of Bundle
/// JSON and NDJSON files (without one, each folder of bundles is taken as one upload step, in path order).
public final class ArtifactValidator {
    private let folder: String
    private let options: ValidationOptions
    private let checker = ResourceChecker()
    private var findings: [Finding] = []
    private var resources = 0
    /// Identifier (hash of `Type|system|value`) → where resources with it are written.
    private var index = HashedKeyMap<IndexEntry>(empty: IndexEntry())
    /// `Type/id` of resources with an id.
    private var literalIDs: Set<String> = []

    private struct IndexEntry {
        var count: Int32 = 0
        var ndjsonCount: Int32 = 0
        /// Upload step that writes it (bundles), and the transaction it is in (-1: none).
        var step: Int32 = -1
        var transaction: Int32 = -1
    }

    public init(folder: String, options: ValidationOptions = ValidationOptions()) {
        self.folder = folder.hasSuffix("/") && folder.count > 1 ? String(folder.dropLast()) : folder
        self.options = options
    }

    /// Runs every rule; throws `ValidationFailure` only when the folder cannot be read.
    public func run() throws -> ValidationReport {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationFailure(message: "\(folder): no such folder")
        }
        var ndjsonFiles: [String] = []
        let all = listFiles()
        for path in all where path.hasSuffix(".ndjson") && path != "rejects.ndjson" && !isJournal(path) { ndjsonFiles.append(path) }
        var steps: [[String]] = []
        if all.contains("manifest.json") {
            if let manifest = readManifest(files: all) {
                steps = manifest.steps.map(\.bundles)
            } else {
                steps = []
            }
        } else {
            let bundleFiles = all.filter { $0.hasSuffix(".json") }
            let grouped = Dictionary(grouping: bundleFiles, by: { ($0 as NSString).deletingLastPathComponent })
            steps = grouped.keys.sorted().map { grouped[$0]!.sorted() }
        }
        // One pass over the bundles in upload order: each bundle is indexed (so references within it resolve),
        // then checked; conditional references to targets not seen yet wait until the end.
        var transactionCounter: Int32 = 0
        for (s, files) in steps.enumerated() {
            for file in files {
                guard let (bundle, size) = parseJSON(file) else { continue }
                checkBundle(bundle, file: file, size: size, step: Int32(s), transactionCounter: &transactionCounter)
            }
        }
        resolvePending()
        for file in ndjsonFiles { scanNDJSON(file, checkStructure: steps.isEmpty) }
        // Listed files that the passes above did not read (rejects.ndjson, or files they could not use).
        for (path, listed) in unverified.sorted(by: { $0.key < $1.key }) {
            guard let digest = FileStreaming.digest(folder + "/" + path) else {
                findings.append(Finding(rule: .manifestMissingFile, file: "manifest.json", pointer: "/artifacts/\(listed.index)", message: "\(path) is listed but missing"))
                continue
            }
            checkDigest(path, sha256: digest.sha256, size: digest.size)
        }
        if !steps.isEmpty && !ndjsonFiles.isEmpty { compareNDJSONWithBundles() }
        if let expected = expectedCounts {
            for type in Set(expected.keys).union(bundleTypeCounts.keys).union(ndjsonTypeCounts.keys).sorted() {
                let want = expected[type] ?? 0
                if !steps.isEmpty && bundleTypeCounts[type] ?? 0 != want {
                    findings.append(Finding(rule: .manifestCounts, file: "manifest.json", pointer: "/resourceCounts/\(type)",
                                            message: "the bundles hold \(bundleTypeCounts[type] ?? 0) \(type), the manifest says \(want)"))
                }
                if !ndjsonFiles.isEmpty && ndjsonTypeCounts[type] ?? 0 != want {
                    findings.append(Finding(rule: .manifestCounts, file: "manifest.json", pointer: "/resourceCounts/\(type)",
                                            message: "the NDJSON files hold \(ndjsonTypeCounts[type] ?? 0) \(type), the manifest says \(want)"))
                }
            }
        }
        return ValidationReport(findings: findings, resources: resources, files: all.count)
    }

    // MARK: Files

    private func listFiles() -> [String] {
        var out: [String] = []
        guard let e = FileManager.default.enumerator(atPath: folder) else { return out }
        while let rel = e.nextObject() as? String {
            if (rel as NSString).pathComponents.contains(where: { $0.hasPrefix(".") }) { continue }
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: folder + "/" + rel, isDirectory: &isDir), !isDir.boolValue { out.append(rel) }
        }
        return out.sorted()
    }

    private func read(_ file: String) -> [UInt8]? {
        FileManager.default.contents(atPath: folder + "/" + file).map { Array($0) }
    }

    /// Reads and parses a JSON file, checking it against the manifest's checksum on the way (each file is read
    /// once); returns the value and the file's size.
    private func parseJSON(_ file: String, report: Bool = true) -> (JSONValue, Int)? {
        guard let bytes = read(file) else { return nil }
        if unverified[file] != nil { checkDigest(file, sha256: Hex.encode(SHA256.hash(data: bytes)), size: bytes.count) }
        do {
            return (try JSONParser.parse(bytes), bytes.count)
        } catch {
            if report {
                findings.append(Finding(rule: .jsonSyntax, file: file, line: error.line, message: "invalid JSON at column \(error.column): \(error.message)"))
            }
            return nil
        }
    }

    private func readManifest(files: [String]) -> Manifest? {
        guard let (json, _) = parseJSON("manifest.json") else { return nil }
        let manifest: Manifest
        do {
            manifest = try Manifest(json: json)
        } catch {
            findings.append(Finding(rule: .manifestInvalid, file: "manifest.json", pointer: error.pointer, message: error.message))
            return nil
        }
        var listed = Set<String>()
        for (i, artifact) in manifest.artifacts.enumerated() {
            listed.insert(artifact.path)
            // Checked when the passes read the file (or at the end, for files they do not read).
            unverified[artifact.path] = (i, artifact.bytes, artifact.sha256)
        }
        for file in files where file != "manifest.json" && !listed.contains(file) && !isJournal(file) {
            findings.append(Finding(rule: .manifestMissingFile, file: file, message: "the file is not listed in manifest.json"))
        }
        for (s, step) in manifest.steps.enumerated() {
            for (b, bundle) in step.bundles.enumerated() where !listed.contains(bundle) {
                findings.append(Finding(rule: .manifestMissingFile, file: "manifest.json", pointer: "/steps/\(s)/bundles/\(b)", message: "\(bundle) is not among the artifacts"))
            }
        }
        expectedCounts = manifest.resourceCounts
        // Size the identifier index once: about one identifier per resource, at most 70% full (rounded up to a
        // power of two, so 35-70%). It is the validator's only per-resource memory: 32 bytes a slot.
        let expected = manifest.resourceCounts.values.reduce(0, +)
        if expected > index.count { index = HashedKeyMap(empty: IndexEntry(), capacity: expected * 10 / 7 + 16) }
        return manifest
    }

    private var expectedCounts: [String: Int]?
    /// Manifest artifacts whose checksum has not been compared yet: path → (index in the manifest, size, sha256).
    private var unverified: [String: (index: Int, bytes: Int, sha256: String)] = [:]

    private func checkDigest(_ path: String, sha256: String, size: Int) {
        guard let listed = unverified.removeValue(forKey: path) else { return }
        if size != listed.bytes || sha256 != listed.sha256 {
            findings.append(Finding(rule: .manifestChecksum, file: path,
                                    message: "the file's size or SHA-256 differs from manifest.json (\(size) bytes, manifest says \(listed.bytes))"))
        }
    }

    /// Files the uploader keeps in the folder (its journal), which the manifest does not list.
    private func isJournal(_ file: String) -> Bool { file.hasPrefix("upload/") }

    // MARK: Pass 1

    /// Hashes of `Type|system|value` for the identifiers of a resource, built in one reused buffer (no String per
    /// key: every resource passes through here twice).
    private func identifierHashes(_ resource: JSONValue, type: String) -> [UInt128] {
        guard let identifiers = resource["identifier"]?.arrayValue else { return [] }
        var out: [UInt128] = []
        out.reserveCapacity(identifiers.count)
        for identifier in identifiers {
            guard let system = identifier["system"]?.stringValue, let value = identifier["value"]?.stringValue else { continue }
            let hash = identifierHash(type: type, system: system, value: value)
            if !out.contains(hash) { out.append(hash) }
        }
        return out
    }

    private var keyBuffer: [UInt8] = []

    private func identifierHash(type: String, system: String, value: String) -> UInt128 {
        keyBuffer.removeAll(keepingCapacity: true)
        keyBuffer.append(contentsOf: type.utf8)
        keyBuffer.append(UInt8(ascii: "|"))
        keyBuffer.append(contentsOf: system.utf8)
        keyBuffer.append(UInt8(ascii: "|"))
        keyBuffer.append(contentsOf: value.utf8)
        return keyBuffer.withUnsafeBufferPointer { FastHash.hash128($0) }
    }

    /// Records the identifiers of a resource written by `step` (in `transaction`, or -1).
    private func index(_ resource: JSONValue, type: String, step: Int32, transaction: Int32) -> [UInt128] {
        if let id = resource["id"]?.stringValue { literalIDs.insert(type + "/" + id) }
        let hashes = identifierHashes(resource, type: type)
        for hash in hashes {
            var e = index[hash] ?? IndexEntry()
            e.count += 1
            if e.step < 0 || step < e.step { e.step = step; e.transaction = transaction }
            index[hash] = e
        }
        return hashes
    }

    private func scanNDJSON(_ file: String, checkStructure: Bool) {
        var counts: [String: Int] = [:]
        let verify = unverified[file] != nil
        let digest = FileStreaming.forEachLine(folder + "/" + file, digest: verify) { line, bytes in
            if bytes.isEmpty { return }
            let resource: JSONValue
            do {
                // With bundles to check, NDJSON lines are only compared with them: build just what that needs.
                resource = checkStructure ? try JSONParser.parse(bytes)
                    : try JSONParser.parseMembers(bytes, keep: ["resourceType", "identifier"])
            } catch let error as JSONSyntaxError {
                findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "not one JSON resource (column \(error.column): \(error.message))"))
                return
            } catch {
                return
            }
            guard let type = resource["resourceType"]?.stringValue else {
                findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "the line is not a resource (no resourceType)"))
                return
            }
            counts[type, default: 0] += 1
            for hash in identifierHashes(resource, type: type) {
                var e = index[hash] ?? IndexEntry()
                e.ndjsonCount += 1
                if checkStructure {
                    e.count += 1
                    if e.count == 2 {
                        findings.append(Finding(rule: .identifierDuplicate, file: file, line: line, pointer: "/identifier",
                                                message: "another \(type) in the artifacts has the same identifier"))
                    }
                }
                index[hash] = e
            }
            if checkStructure {
                resources += 1
                var references: [FoundReference] = []
                checker.check(resource, file: file, line: line, pointer: "", references: &references)
                findings.append(contentsOf: checker.found)
                checker.found.removeAll(keepingCapacity: true)
                checkIdentifiersHaveSystems(resource, file: file, line: line, pointer: "")
            }
        }
        for (type, n) in counts { ndjsonTypeCounts[type, default: 0] += n }
        if verify, let digest { checkDigest(file, sha256: digest.sha256, size: digest.size) }
    }

    private var ndjsonTypeCounts: [String: Int] = [:]
    private var bundleTypeCounts: [String: Int] = [:]

    private func compareNDJSONWithBundles() {
        var mismatches = 0
        for (_, e) in index.entries where e.count != e.ndjsonCount { mismatches += 1 }
        if mismatches > 0 {
            findings.append(Finding(rule: .ndjsonBundleMismatch, file: "ndjson/", message: "\(mismatches) identifiers appear a different number of times in the NDJSON files and in the bundles"))
        }
    }

    // MARK: Pass 2

    private func checkBundle(_ bundle: JSONValue, file: String, size: Int, step: Int32, transactionCounter: inout Int32) {
        guard bundle["resourceType"]?.stringValue == "Bundle" else {
            findings.append(Finding(rule: .bundleType, file: file, pointer: "/resourceType", message: "the file is not a Bundle"))
            return
        }
        if size > options.limits.bundleBytes {
            findings.append(Finding(rule: .bundleBytes, file: file, message: "the bundle is \(size) bytes, more than \(options.limits.bundleBytes)"))
        }
        checkEntries(bundle, file: file, pointer: "", step: step, transactionCounter: &transactionCounter)
    }

    private func checkEntries(_ bundle: JSONValue, file: String, pointer: String, step: Int32, transactionCounter: inout Int32) {
        let type = bundle["type"]?.stringValue ?? ""
        guard type == "batch" || type == "transaction" else {
            findings.append(Finding(rule: .bundleType, file: file, pointer: pointer + "/type", message: "bundle type '\(type)' cannot be uploaded; use batch or transaction"))
            return
        }
        let isTransaction = type == "transaction"
        let transaction: Int32 = isTransaction ? transactionCounter : -1
        if isTransaction { transactionCounter += 1 }
        let entries = bundle["entry"]?.arrayValue ?? []
        if isTransaction {
            let conditional = entries.filter { ($0["request"]?["url"]?.stringValue ?? "").utf8.contains(UInt8(ascii: "?")) }.count
            let updates = entries.filter { ["PUT", "PATCH"].contains($0["request"]?["method"]?.stringValue ?? "") }.count
            if entries.count > options.limits.transactionEntries {
                findings.append(Finding(rule: .transactionEntries, file: file, pointer: pointer + "/entry", message: "the transaction has \(entries.count) entries, more than \(options.limits.transactionEntries)"))
            }
            if conditional > 0 && entries.count > options.limits.conditionalTransactionEntries {
                findings.append(Finding(rule: .conditionalTransactionEntries, file: file, pointer: pointer + "/entry",
                                        message: "the transaction has \(entries.count) entries with conditional operations, more than \(options.limits.conditionalTransactionEntries)"))
            }
            if updates > options.limits.transactionUpdates {
                findings.append(Finding(rule: .transactionUpdates, file: file, pointer: pointer + "/entry", message: "\(updates) update operations, more than \(options.limits.transactionUpdates)"))
            }
        } else if entries.count > options.limits.batchEntries {
            findings.append(Finding(rule: .batchEntries, file: file, pointer: pointer + "/entry", message: "the batch has \(entries.count) entries, more than \(options.limits.batchEntries)"))
        }
        // fullUrls of this bundle: unique (bdl-7), and the targets of urn:uuid references inside a transaction.
        var fullUrls: [String: String] = [:]
        var entryHashes: [[UInt128]] = Array(repeating: [], count: entries.count)
        for (i, entry) in entries.enumerated() {
            // Index first, so that references within this bundle resolve whatever the entry order.
            if let resource = entry["resource"], let type = resource["resourceType"]?.stringValue, type != "Bundle" {
                entryHashes[i] = index(resource, type: type, step: step, transaction: transaction)
            }
            guard let fullUrl = entry["fullUrl"]?.stringValue else { continue }
            let p = pointer + "/entry/\(i)/fullUrl"
            if fullUrls[fullUrl] != nil {
                findings.append(Finding(rule: .fullUrlDuplicate, file: file, pointer: p, message: "fullUrl \(fullUrl) appears twice in the bundle"))
            }
            if fullUrl.hasPrefix("urn:uuid:") && !PrimitiveFormats.isValid(fullUrl, type: "uuid") {
                findings.append(Finding(rule: .fullUrlInvalid, file: file, pointer: p, message: "'\(fullUrl)' is not a valid urn:uuid"))
            }
            fullUrls[fullUrl] = entry["resource"]?["resourceType"]?.stringValue ?? ""
        }
        for (i, entry) in entries.enumerated() {
            let p = pointer + "/entry/\(i)"
            let method = entry["request"]?["method"]?.stringValue
            let url = entry["request"]?["url"]?.stringValue
            guard let method, let url else {
                findings.append(Finding(rule: .entryRequest, file: file, pointer: p + "/request", message: "the entry has no request.method and request.url"))
                continue
            }
            guard let resource = entry["resource"] else { continue }
            let resourceType = resource["resourceType"]?.stringValue ?? ""
            if method == "POST" && url == "/" || (method == "POST" && resourceType == "Bundle") {
                guard !isTransaction, resourceType == "Bundle", resource["type"]?.stringValue == "transaction" else {
                    findings.append(Finding(rule: .batchOfTransactionsEntry, file: file, pointer: p, message: "an entry POSTed to / must be a transaction Bundle inside a batch"))
                    continue
                }
                checkEntries(resource, file: file, pointer: p + "/resource", step: step, transactionCounter: &transactionCounter)
                continue
            }
            let urlType = String(url.prefix { $0 != "?" && $0 != "/" })
            if urlType != resourceType {
                findings.append(Finding(rule: .entryResourceType, file: file, pointer: p + "/request/url", message: "request.url is for \(urlType) but the resource is a \(resourceType)"))
            }
            if method == "POST" {
                findings.append(Finding(rule: .notIdempotent, file: file, pointer: p + "/request", message: "POST \(url) creates a new \(resourceType) on every replay"))
            }
            if method == "PUT", let q = url.firstIndex(of: "?") {
                if resource["id"] != nil {
                    findings.append(Finding(rule: .idInConditionalUpdate, file: file, pointer: p + "/resource/id", message: "a conditional update body must not contain id"))
                }
                let query = String(url[url.index(after: q)...])
                if query.hasPrefix("identifier="), let (system, value) = parseToken(String(query.dropFirst("identifier=".count))) {
                    let carries = (resource["identifier"]?.arrayValue ?? []).contains { $0["system"]?.stringValue == system && $0["value"]?.stringValue == value }
                    if !carries {
                        findings.append(Finding(rule: .conditionalIdentifierMissing, file: file, pointer: p + "/resource/identifier",
                                                message: "the update searches for identifier \(system)|\(value), which the resource does not carry"))
                    }
                }
            }
            resources += 1
            bundleTypeCounts[resourceType, default: 0] += 1
            var references: [FoundReference] = []
            checker.check(resource, file: file, line: nil, pointer: p + "/resource", references: &references)
            findings.append(contentsOf: checker.found)
            checker.found.removeAll(keepingCapacity: true)
            checkIdentifiersHaveSystems(resource, file: file, line: nil, pointer: p + "/resource")
            for hash in entryHashes[i] where (index[hash]?.count ?? 0) > 1 {
                findings.append(Finding(rule: .identifierDuplicate, file: file, pointer: p + "/resource/identifier",
                                        message: "another \(resourceType) in the artifacts has the same identifier (system|value)"))
            }
            for reference in references {
                checkReference(reference, file: file, step: step, transaction: transaction, isTransaction: isTransaction, fullUrls: fullUrls)
            }
        }
    }

    private func checkIdentifiersHaveSystems(_ resource: JSONValue, file: String, line: Int?, pointer: String) {
        for (i, identifier) in (resource["identifier"]?.arrayValue ?? []).enumerated() where identifier["system"] == nil {
            findings.append(Finding(rule: .identifierNoSystem, file: file, line: line, pointer: pointer + "/identifier/\(i)", message: "the identifier has no system"))
        }
    }

    private func checkReference(_ reference: FoundReference, file: String, step: Int32, transaction: Int32, isTransaction: Bool, fullUrls: [String: String]) {
        let value = reference.value
        var targetType: String?
        if value.hasPrefix("urn:uuid:") || value.hasPrefix("urn:oid:") {
            guard isTransaction else {
                findings.append(Finding(rule: .urnInBatch, file: file, pointer: reference.pointer, message: "\(value) is a urn reference in a batch"))
                return
            }
            guard let type = fullUrls[value] else {
                findings.append(Finding(rule: .urnUnresolved, file: file, pointer: reference.pointer, message: "no entry of this transaction has fullUrl \(value)"))
                return
            }
            targetType = type
        } else if let q = value.utf8.firstIndex(of: UInt8(ascii: "?")), !value.utf8[..<q].contains(UInt8(ascii: "/")) {
            let type = String(value[..<q])
            targetType = type
            let query = String(value[value.index(after: q)...])
            guard query.hasPrefix("identifier="), let (system, token) = parseToken(String(query.dropFirst("identifier=".count))) else { return }
            if !options.knownIdentifiers.isEmpty && options.knownIdentifiers.contains(type + "|" + system + "|" + token) {
                return checkTarget(reference, targetType, file)
            }
            let hash = identifierHash(type: type, system: system, value: token)
            guard let e = index[hash], e.count > 0 else {
                // Perhaps written by a later bundle: decided once every bundle is indexed.
                pending.append(PendingReference(hash: hash, description: "\(system)|\(token)", type: type, step: step, transaction: transaction,
                                                file: file, pointer: reference.pointer))
                return checkTarget(reference, targetType, file)
            }
            checkConditional(e, description: "\(system)|\(token)", type: type, step: step, transaction: transaction, file: file, pointer: reference.pointer)
        } else if value.hasPrefix("#") || value.utf8.firstRange(of: "://".utf8) != nil {
            return  // contained, or an absolute URL outside these artifacts
        } else {
            let parts = value.split(separator: "/")
            if parts.count >= 2 {
                let literal = parts[parts.count - 2] + "/" + parts[parts.count - 1]
                targetType = String(parts[parts.count - 2])
                if !literalIDs.contains(String(literal)) && !options.knownIdentifiers.contains(String(literal)) {
                    pendingLiterals.append((String(literal), file, reference.pointer))  // perhaps in a later bundle
                }
            }
        }
        checkTarget(reference, targetType, file)
    }

    private struct PendingReference {
        let hash: UInt128
        let description: String
        let type: String
        let step: Int32
        let transaction: Int32
        let file: String
        let pointer: String
    }

    private var pending: [PendingReference] = []

    private func checkConditional(_ e: IndexEntry, description: String, type: String, step: Int32, transaction: Int32, file: String, pointer: String) {
        if e.count > 1 {
            findings.append(Finding(rule: .conditionalAmbiguous, file: file, pointer: pointer, message: "\(e.count) resources have identifier \(description)"))
        } else if !(e.step < step || (transaction >= 0 && e.transaction == transaction)) {
            findings.append(Finding(rule: .conditionalLaterStep, file: file, pointer: pointer,
                                    message: "the \(type) with identifier \(description) is written in \(e.step == step ? "the same step, outside this transaction" : "a later step")"))
        }
    }

    private var pendingLiterals: [(literal: String, file: String, pointer: String)] = []

    private func resolvePending() {
        for p in pendingLiterals where !literalIDs.contains(p.literal) {
            findings.append(Finding(rule: .literalUnresolved, file: p.file, pointer: p.pointer, message: "\(p.literal) is not among the artifacts nor declared known"))
        }
        pendingLiterals = []
        for p in pending {
            guard let e = index[p.hash], e.count > 0 else {
                findings.append(Finding(rule: .conditionalUnresolved, file: p.file, pointer: p.pointer, message: "no \(p.type) in the artifacts has identifier \(p.description)"))
                continue
            }
            checkConditional(e, description: p.description, type: p.type, step: p.step, transaction: p.transaction, file: p.file, pointer: p.pointer)
        }
        pending = []
    }

    private func checkTarget(_ reference: FoundReference, _ targetType: String?, _ file: String) {
        guard let targetType, !reference.targets.isEmpty, !reference.targets.contains("Resource") else { return }
        if !reference.targets.contains(targetType) {
            findings.append(Finding(rule: .referenceTarget, file: file, pointer: reference.pointer,
                                    message: "a \(targetType) cannot be referenced here; allowed: \(reference.targets.joined(separator: ", "))"))
        }
    }

    /// `system|value` of a token search, undoing percent-encoding and FHIR's backslash escapes.
    private func parseToken(_ token: String) -> (String, String)? {
        var bytes = Array(token.utf8)
        if bytes.contains(UInt8(ascii: "%")) {
            guard let decoded = token.removingPercentEncoding else { return nil }
            bytes = Array(decoded.utf8)
        }
        var system: [UInt8] = []
        var value: [UInt8] = []
        var inValue = false
        var escaped = false
        for b in bytes {
            if escaped {
                if inValue { value.append(b) } else { system.append(b) }
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "|") && !inValue {
                inValue = true
            } else if inValue {
                value.append(b)
            } else {
                system.append(b)
            }
        }
        return inValue ? (String(decoding: system, as: UTF8.self), String(decoding: value, as: UTF8.self)) : nil
    }

    /// Index keys are 128-bit hashes of `Type|system|value`: 16 bytes a resource.
    private func hash128(_ key: String) -> UInt128 {
        FastHash.hash128(key)
    }
}
