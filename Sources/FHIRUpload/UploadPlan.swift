import FHIRArtifacts
import FHIRModel
import Foundation

/// One HTTP request of an upload: a bundle file, or one inner transaction of a batch-of-transactions bundle when
/// the server does not take nested bundles (`--split-transactions`).
public struct UploadRequest: Sendable {
    /// Stable id for the journal: the bundle path, plus `#k` for the k-th inner transaction.
    public let id: String
    public let file: String
    /// For a split batch-of-transactions: which entry of the file's bundle this inner transaction is.
    public let innerIndex: Int?
    public let entryCount: Int
    /// Resources it writes (the entries of nested transactions counted one by one).
    public let resourceCount: Int
    /// Hashes of the conditional URLs this request writes: two requests that write the same identifier must not be
    /// in flight together (servers can create duplicates when two conditional updates race).
    public let writes: [UInt128]

    /// The body to POST to the server's base URL, read from the folder now (the plan keeps no bodies).
    public func loadBody(folder: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: folder + "/" + file) else {
            throw UploadError.plan(file: file, message: "the bundle is missing")
        }
        guard let innerIndex else { return Array(data) }
        return try UploadPlan.innerTransactions(Array(data), file: file)[innerIndex] ?? []
    }
}

/// The requests of an artifact folder, step by step in manifest order: each step must finish before the next
/// starts, because later steps refer to what earlier ones wrote.
public struct UploadPlan: Sendable {
    public let steps: [(name: String, requests: [UploadRequest])]

    /// Reads the manifest's steps and their bundle files from `folder`.
    public static func make(folder: String, manifest: Manifest, splitTransactions: Bool) throws -> UploadPlan {
        var steps: [(String, [UploadRequest])] = []
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
                    for (k, entry) in entries.enumerated() {
                        guard let inner = entry["resource"] else { continue }
                        let innerEntries = inner["entry"]?.arrayValue ?? []
                        requests.append(UploadRequest(id: "\(file)#\(k)", file: file, innerIndex: k, entryCount: innerEntries.count,
                                                      resourceCount: innerEntries.count, writes: writes(innerEntries)))
                    }
                } else {
                    let all = entries.flatMap { entry -> [JSONValue] in
                        entry["request"]?["url"]?.stringValue == "/" ? (entry["resource"]?["entry"]?.arrayValue ?? []) : [entry]
                    }
                    requests.append(UploadRequest(id: file, file: file, innerIndex: nil, entryCount: entries.count,
                                                  resourceCount: all.count, writes: writes(all)))
                }
            }
            steps.append((step.name, requests))
        }
        return UploadPlan(steps: steps)
    }

    /// The inner transaction bodies of a batch-of-transactions bundle, by entry index.
    static func innerTransactions(_ bytes: [UInt8], file: String) throws -> [Int: [UInt8]] {
        let bundle: JSONValue
        do { bundle = try JSONParser.parse(bytes) } catch {
            throw UploadError.plan(file: file, message: "invalid JSON at line \(error.line): \(error.message)")
        }
        var bodies: [Int: [UInt8]] = [:]
        for (k, entry) in (bundle["entry"]?.arrayValue ?? []).enumerated() {
            guard let inner = entry["resource"] else { continue }
            var body = JSONWriter().bytes(inner)
            body.append(0x0A)
            bodies[k] = body
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
    private let folder: String
    private let lock = NSLock()
    private var split: [String: (bodies: [Int: [UInt8]], pending: Int)] = [:]
    private var siblings: [String: Int] = [:]

    init(folder: String, plan: UploadPlan) {
        self.folder = folder
        for step in plan.steps {
            for request in step.requests where request.innerIndex != nil { siblings[request.file, default: 0] += 1 }
        }
    }

    func body(of request: UploadRequest) throws -> [UInt8] {
        guard let k = request.innerIndex else { return try request.loadBody(folder: folder) }
        if let cached = lock.withLock({ split[request.file]?.bodies[k] }) { return cached }
        guard let data = FileManager.default.contents(atPath: folder + "/" + request.file) else {
            throw UploadError.plan(file: request.file, message: "the bundle is missing")
        }
        let bodies = try UploadPlan.innerTransactions(Array(data), file: request.file)
        return lock.withLock {
            if split[request.file] == nil { split[request.file] = (bodies, siblings[request.file] ?? 0) }
            return bodies[k] ?? []
        }
    }

    /// Forgets a split file's bodies once all its inner transactions are done.
    func finished(_ request: UploadRequest) {
        guard request.innerIndex != nil else { return }
        lock.withLock {
            guard var entry = split[request.file] else { return }
            entry.pending -= 1
            split[request.file] = entry.pending <= 0 ? nil : entry
        }
    }
}
