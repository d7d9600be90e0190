import FHIRArtifacts
import FHIRModel
import Foundation

/// Which part of a bundle file one request sends, when it is not the whole file.
public enum RequestPart: Sendable, Equatable {
    /// The k-th inner transaction of a batch-of-transactions (`--split-transactions`).
    case innerTransaction(Int)
    /// Entries `range` of a batch, sent as a transaction: for a server that stores the conditional references of
    /// batch entries unresolved (FHIR requires their resolution in transactions only).
    case transactionChunk(Int, Range<Int>)
}

/// One HTTP request of an upload: a bundle file, or a part of one (`RequestPart`).
public struct UploadRequest: Sendable {
    /// Stable id for the journal: the bundle path, plus `#k` for the k-th inner transaction or `~txk` for the
    /// k-th transaction chunk of a batch.
    public let id: String
    public let file: String
    public let part: RequestPart?
    public let entryCount: Int
    /// Resources it writes (the entries of nested transactions counted one by one).
    public let resourceCount: Int
    /// Hashes of the conditional URLs this request writes: two requests that write the same identifier must not be
    /// in flight together (servers can create duplicates when two conditional updates race).
    public let writes: [UInt128]
    /// True for a whole batch file whose plain entries hold conditional references (`Patient?identifier=…`):
    /// the requests whose links depend on the server resolving them in a batch.
    public let batchConditionalReferences: Bool
    /// A whole batch file without inner transactions: what `--async` sends as an asynchronous job (a job runs its
    /// entries one by one, so transactions, inner ones included, are sent synchronously to stay all or nothing).
    public var runsAsJob = false

    /// The body to POST to the server's base URL, read from the folder now (the plan keeps no bodies).
    public func loadBody(from files: VerifiedFiles) throws -> [UInt8] {
        let bytes = try files.contents(of: file)
        guard let part else { return bytes }
        return try UploadPlan.bodies(bytes, file: file, parts: [part])[partIndex(part)] ?? []
    }
}

/// Reads bundle files for sending, refusing any whose bytes are no longer those that manifest.json lists (and that
/// the validation checked at the start): a file edited while an earlier step was in flight is never sent, and what
/// is sent is exactly the bytes that were compared.
public struct VerifiedFiles: Sendable {
    public let folder: String
    private let expected: [String: Manifest.Artifact]

    public init(folder: String, manifest: Manifest) {
        self.folder = folder
        expected = Dictionary(manifest.artifacts.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
    }

    public func contents(of file: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: folder + "/" + file) else {
            throw UploadError.plan(file: file, message: "the bundle is missing")
        }
        let bytes = Array(data)
        guard let listed = expected[file] else { throw UploadError.changed(file: file, why: "it is not listed in manifest.json") }
        guard bytes.count == listed.bytes, sha256Hex(bytes) == listed.sha256 else {
            throw UploadError.changed(file: file, why: "its size or SHA-256 no longer matches manifest.json (\(bytes.count) bytes, manifest says \(listed.bytes))")
        }
        return bytes
    }
}

private func partIndex(_ part: RequestPart) -> Int {
    switch part {
    case .innerTransaction(let k), .transactionChunk(let k, _): return k
    }
}

/// The requests of an artifact folder, step by step in manifest order: each step must finish before the next
/// starts, because later steps refer to what earlier ones wrote.
public struct UploadPlan: Sendable {
    public let steps: [(name: String, requests: [UploadRequest])]
    /// What the plan asks of the server (for the preflight).
    public let needs: ServerNeeds

    /// Reads the manifest's steps and their bundle files from `folder`. With `batchesAsTransactions`, a batch
    /// file whose entries hold conditional references becomes transactions of `transactionSize` entries.
    public static func make(folder: String, manifest: Manifest, splitTransactions: Bool, batchesAsTransactions: Bool = false,
                            transactionSize: Int? = nil) throws -> UploadPlan {
        let chunk = max(1, transactionSize ?? manifest.limits.conditionalTransactionEntries)
        var steps: [(String, [UploadRequest])] = []
        var needs = ServerNeeds()
        for step in manifest.steps {
            var requests: [UploadRequest] = []
            for file in step.bundles {
                guard let data = FileManager.default.contents(atPath: folder + "/" + file) else {
                    throw UploadError.plan(file: file, message: "the bundle is missing")
                }
                let bytes = Array(data)
                let bundle: JSONValue
                do { bundle = try JSONParser.parse(bytes) } catch {
                    throw UploadError.plan(file: file, message: "invalid JSON at line \(error.line): \(error.message)")
                }
                let entries = bundle["entry"]?.arrayValue ?? []
                let nested = entries.contains { $0["request"]?["url"]?.stringValue == "/" }
                if splitTransactions && nested {
                    for entry in entries { if let inner = entry["resource"] { needs.add(bundle: inner) } }
                } else {
                    needs.add(bundle: bundle)
                }
                let conditional = !nested && bundle["type"]?.stringValue == "batch"
                    && entries.contains { $0["resource"].map(ReferenceWalk.hasConditionalReference) ?? false }
                if splitTransactions && nested {
                    for (k, entry) in entries.enumerated() {
                        guard let inner = entry["resource"] else { continue }
                        let innerEntries = inner["entry"]?.arrayValue ?? []
                        requests.append(UploadRequest(id: "\(file)#\(k)", file: file, part: .innerTransaction(k), entryCount: innerEntries.count,
                                                      resourceCount: innerEntries.count, writes: writes(innerEntries), batchConditionalReferences: false))
                    }
                } else if batchesAsTransactions && conditional {
                    for (k, start) in stride(from: 0, to: entries.count, by: chunk).enumerated() {
                        let range = start..<min(entries.count, start + chunk)
                        let slice = Array(entries[range])
                        requests.append(UploadRequest(id: "\(file)~tx\(k)", file: file, part: .transactionChunk(k, range), entryCount: slice.count,
                                                      resourceCount: slice.count, writes: writes(slice), batchConditionalReferences: false))
                    }
                } else {
                    let all = entries.flatMap { entry -> [JSONValue] in
                        entry["request"]?["url"]?.stringValue == "/" ? (entry["resource"]?["entry"]?.arrayValue ?? []) : [entry]
                    }
                    var request = UploadRequest(id: file, file: file, part: nil, entryCount: entries.count,
                                                resourceCount: all.count, writes: writes(all), batchConditionalReferences: conditional)
                    request.runsAsJob = !nested && bundle["type"]?.stringValue == "batch"
                    requests.append(request)
                }
            }
            steps.append((step.name, requests))
        }
        return UploadPlan(steps: steps, needs: needs)
    }

    /// The bodies of `parts` of one bundle file, by part index; the file is parsed once for all of them.
    static func bodies(_ bytes: [UInt8], file: String, parts: [RequestPart]) throws -> [Int: [UInt8]] {
        let bundle: JSONValue
        do { bundle = try JSONParser.parse(bytes) } catch {
            throw UploadError.plan(file: file, message: "invalid JSON at line \(error.line): \(error.message)")
        }
        let entries = bundle["entry"]?.arrayValue ?? []
        var bodies: [Int: [UInt8]] = [:]
        for part in parts {
            var body: [UInt8]
            switch part {
            case .innerTransaction(let k):
                guard k < entries.count, let inner = entries[k]["resource"] else { continue }
                body = JSONWriter().bytes(inner)
            case .transactionChunk(_, let range):
                guard range.upperBound <= entries.count else {
                    throw UploadError.plan(file: file, message: "the bundle has fewer entries than planned")
                }
                body = JSONWriter().bytes(.object([JSONMember("resourceType", .string("Bundle")), JSONMember("type", .string("transaction")),
                                                   JSONMember("entry", .array(Array(entries[range])))]))
            }
            body.append(0x0A)
            bodies[partIndex(part)] = body
        }
        return bodies
    }

    private static func writes(_ entries: [JSONValue]) -> [UInt128] {
        entries.compactMap { entry in
            guard let url = entry["request"]?["url"]?.stringValue, url.utf8.contains(UInt8(ascii: "?")) else { return nil }
            return FastHash.hash128(url)
        }
    }
}

/// Reads request bodies as they are sent, so the uploader's memory does not grow with the folder: a bundle file
/// is read when its request starts; a split file is parsed once and its inner transactions are kept only until
/// the last of them has been sent.
final class RequestBodies: @unchecked Sendable {  // state behind `lock`
    private let files: VerifiedFiles
    private let lock = NSLock()
    private var cached: [String: (bodies: [Int: [UInt8]], pending: Int)] = [:]
    /// The parts of each file that the plan sends as separate requests.
    private var parts: [String: [RequestPart]] = [:]

    init(files: VerifiedFiles, requests: [UploadRequest]) {
        self.files = files
        for request in requests {
            if let part = request.part { parts[request.file, default: []].append(part) }
        }
    }

    func body(of request: UploadRequest) throws -> [UInt8] {
        guard let part = request.part else { return try request.loadBody(from: files) }
        let k = partIndex(part)
        if let body = lock.withLock({ cached[request.file]?.bodies[k] }) { return body }
        let siblings = parts[request.file] ?? [part]
        let bodies = try UploadPlan.bodies(files.contents(of: request.file), file: request.file, parts: siblings)
        return lock.withLock {
            if cached[request.file] == nil { cached[request.file] = (bodies, siblings.count) }
            return bodies[k] ?? []
        }
    }

    /// Forgets a file's part bodies once all its parts are done.
    func finished(_ request: UploadRequest) {
        guard request.part != nil else { return }
        lock.withLock {
            guard var entry = cached[request.file] else { return }
            entry.pending -= 1
            cached[request.file] = entry.pending <= 0 ? nil : entry
        }
    }
}
