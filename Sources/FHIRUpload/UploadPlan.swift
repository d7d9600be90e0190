import FHIRArtifacts
import FHIRModel
import Foundation

/// One HTTP request of an upload: a bundle file, or one inner transaction of a batch-of-transactions bundle when
/// the server does not take nested bundles (`--split-transactions`).
public struct UploadRequest: Sendable {
    /// Stable id for the journal: the bundle path, plus `#k` for the k-th inner transaction.
    public let id: String
    public let file: String
    /// The body to POST to the server's base URL.
    public let body: [UInt8]
    public let entryCount: Int
    /// Resources it writes (the entries of nested transactions counted one by one).
    public let resourceCount: Int
    /// Hashes of the conditional URLs this request writes: two requests that write the same identifier must not be
    /// in flight together (servers can create duplicates when two conditional updates race).
    public let writes: [UInt128]
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
                        var body = JSONWriter().bytes(inner)
                        body.append(0x0A)
                        let innerEntries = inner["entry"]?.arrayValue ?? []
                        requests.append(UploadRequest(id: "\(file)#\(k)", file: file, body: body, entryCount: innerEntries.count,
                                                      resourceCount: innerEntries.count, writes: writes(innerEntries)))
                    }
                } else {
                    let all = entries.flatMap { entry -> [JSONValue] in
                        entry["request"]?["url"]?.stringValue == "/" ? (entry["resource"]?["entry"]?.arrayValue ?? []) : [entry]
                    }
                    requests.append(UploadRequest(id: file, file: file, body: bytes, entryCount: entries.count,
                                                  resourceCount: all.count, writes: writes(all)))
                }
            }
            steps.append((step.name, requests))
        }
        return UploadPlan(steps: steps)
    }

    private static func writes(_ entries: [JSONValue]) -> [UInt128] {
        entries.compactMap { entry in
            guard let url = entry["request"]?["url"]?.stringValue, url.utf8.contains(UInt8(ascii: "?")) else { return nil }
            return FastHash.hash128(url)
        }
    }
}
