import FHIRArtifacts
import FHIRModel
import Foundation

/// One identifier the artifacts write: the server should hold exactly one `type` resource carrying it.
public struct ExpectedIdentifier: Hashable, Sendable, Comparable {
    public var type: String
    public var system: String
    public var value: String

    public var searchURL: String { ConditionalURL.identifier(type: type, system: system, value: value) }

    public static func < (a: ExpectedIdentifier, b: ExpectedIdentifier) -> Bool {
        (a.type, a.system, a.value) < (b.type, b.system, b.value)
    }
}

/// What the server holds compared with what the artifacts write.
public struct VerifyReport: Sendable {
    public var expected = 0
    /// Identifiers no resource on the server carries.
    public var missing: [ExpectedIdentifier] = []
    /// Identifiers that several resources carry (a conditional update on them now fails with 412).
    public var duplicated: [(identifier: ExpectedIdentifier, count: Int)] = []
    /// Entries that are not a conditional update by one identifier, so cannot be looked up.
    public var unverifiable = 0
    public var searches = 0
    public var seconds = 0.0

    public var isClean: Bool { missing.isEmpty && duplicated.isEmpty }
}

public enum VerifyError: Error, CustomStringConvertible {
    case search(url: String, message: String)

    public var description: String {
        switch self {
        case .search(let url, let message): return "the search \(url) failed: \(message)"
        }
    }
}

/// Reconciles a server with an artifact folder after an upload: searches the server for every identifier the
/// bundles write (many per search: `identifier=a,b,c`, paged) and reports the missing and the duplicated.
public final class Verifier: Sendable {
    private let folder: String
    private let options: UploadOptions
    /// Identifiers per search: keeps URLs well under the 8 KB many proxies allow.
    private let batchSize: Int

    public init(folder: String, options: UploadOptions, batchSize: Int = 50) {
        self.folder = folder
        self.options = options
        self.batchSize = batchSize
    }

    /// Reads the manifest (its steps name the bundles to read).
    private func readManifest() throws -> Manifest {
        guard let data = FileManager.default.contents(atPath: folder + "/manifest.json") else {
            throw UploadRefusal.manifest("\(folder)/manifest.json is missing: verify takes a folder written by fhirbundle convert")
        }
        do { return try Manifest(json: JSONParser.parse(Array(data))) } catch {
            throw UploadRefusal.manifest("\(folder)/manifest.json cannot be read: \(error)")
        }
    }

    /// The identifiers one bundle file writes (from its conditional-update URLs), and how many of its entries are
    /// not conditional updates by one identifier.
    private func identifiers(inBundle file: String) throws -> (identifiers: [ExpectedIdentifier], unverifiable: Int) {
        guard let bytes = FileManager.default.contents(atPath: folder + "/" + file), let bundle = try? JSONParser.parse(Array(bytes)) else {
            throw UploadError.plan(file: file, message: "the bundle is missing or not JSON")
        }
        var identifiers: [ExpectedIdentifier] = []
        var unverifiable = 0
        for entry in bundle["entry"]?.arrayValue ?? [] {
            let inner = entry["request"]?["url"]?.stringValue == "/" ? (entry["resource"]?["entry"]?.arrayValue ?? []) : [entry]
            for e in inner {
                if e["request"]?["method"]?.stringValue == "PUT", let url = e["request"]?["url"]?.stringValue,
                   let parsed = ConditionalURL.parseIdentifier(url) {
                    identifiers.append(ExpectedIdentifier(type: parsed.type, system: parsed.system, value: parsed.value))
                } else {
                    unverifiable += 1
                }
            }
        }
        return (identifiers, unverifiable)
    }

    /// Streams: bundles are read one at a time and their identifiers searched in batches as they fill, so memory
    /// does not grow with the folder (only the missing and duplicated are kept). `progress` gets the identifiers
    /// checked so far and the manifest's resource count.
    public func run(progress: @escaping @Sendable (_ done: Int, _ total: Int) -> Void = { _, _ in }) async throws -> VerifyReport {
        let started = Date()
        let manifest = try readManifest()
        let total = manifest.resourceCounts.values.reduce(0, +)
        let client = FHIRClient(base: options.server, credentials: options.credentials, timeout: options.timeout)
        var report = VerifyReport()
        do {
            try await withThrowingTaskGroup(of: BatchResult.self) { group in
                var open: [String: [ExpectedIdentifier]] = [:]  // type → identifiers waiting for a full batch
                var inFlight = 0
                var checked = 0
                func absorb(_ result: BatchResult) {
                    report.missing += result.missing
                    report.duplicated += result.duplicated
                    report.searches += result.searches
                    checked += result.checked
                    inFlight -= 1
                    progress(checked, total)
                }
                var files = manifest.steps.flatMap(\.bundles)[...]
                while true {
                    var ready: [[ExpectedIdentifier]] = []
                    if let file = files.popFirst() {
                        let (identifiers, unverifiable) = try self.identifiers(inBundle: file)
                        report.unverifiable += unverifiable
                        report.expected += identifiers.count
                        for identifier in identifiers {
                            open[identifier.type, default: []].append(identifier)
                            if open[identifier.type]!.count == batchSize { ready.append(open.removeValue(forKey: identifier.type)!) }
                        }
                    } else {
                        ready = open.keys.sorted().map { open[$0]! }
                        open = [:]
                    }
                    for batch in ready {
                        if inFlight >= options.concurrency, let result = try await group.next() { absorb(result) }
                        group.addTask { try await self.check(batch, client: client) }
                        inFlight += 1
                    }
                    if files.isEmpty && open.isEmpty { break }
                }
                while let result = try await group.next() { absorb(result) }
            }
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
        report.missing.sort()
        report.duplicated.sort { $0.identifier < $1.identifier }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    private struct BatchResult: Sendable {
        var missing: [ExpectedIdentifier] = []
        var duplicated: [(identifier: ExpectedIdentifier, count: Int)] = []
        var searches = 0
        var checked = 0
    }

    /// Searches one batch and keeps only what is wrong with it.
    private func check(_ batch: [ExpectedIdentifier], client: FHIRClient) async throws -> BatchResult {
        let (counts, searches) = try await count(batch, client: client)
        var result = BatchResult(searches: searches, checked: batch.count)
        for identifier in batch {
            let n = counts[identifier] ?? 0
            if n == 0 { result.missing.append(identifier) } else if n > 1 { result.duplicated.append((identifier, n)) }
        }
        return result
    }

    /// How many resources carry each identifier of `batch` (one type), following the search's next links.
    private func count(_ batch: [ExpectedIdentifier], client: FHIRClient) async throws -> ([ExpectedIdentifier: Int], Int) {
        let type = batch[0].type
        let wanted = Set(batch)
        let tokens = batch.map { ConditionalURL.encodeToken($0.system) + "|" + ConditionalURL.encodeToken($0.value) }
        var url: String? = "\(client.base)/\(type)?identifier=\(tokens.joined(separator: ","))&_count=\(max(100, batch.count * 2))&_elements=identifier"
        var counts: [ExpectedIdentifier: Int] = [:]
        var requests = 0
        while let current = url {
            let page = try await search(current, client: client)
            requests += 1
            for entry in page["entry"]?.arrayValue ?? [] where entry["search"]?["mode"]?.stringValue ?? "match" == "match" {
                guard let resource = entry["resource"], resource["resourceType"]?.stringValue == type else { continue }
                var seen = Set<ExpectedIdentifier>()
                for identifier in resource["identifier"]?.arrayValue ?? [] {
                    let key = ExpectedIdentifier(type: type, system: identifier["system"]?.stringValue ?? "", value: identifier["value"]?.stringValue ?? "")
                    if wanted.contains(key) && seen.insert(key).inserted { counts[key, default: 0] += 1 }
                }
            }
            url = (page["link"]?.arrayValue ?? []).first { $0["relation"]?.stringValue == "next" }?["url"]?.stringValue
            if let next = url, !Self.sameOrigin(next, client.base) {
                throw VerifyError.search(url: "\(type)?identifier=…", message: "the server's next link points elsewhere (\(next)); not followed")
            }
        }
        return (counts, requests)
    }

    /// GET with retries (connection errors, 408, 429, 5xx), as the upload does.
    private func search(_ url: String, client: FHIRClient) async throws -> JSONValue {
        var attempt = 0
        while true {
            attempt += 1
            var headers: [(name: String, value: String)] = []
            var problem: String
            do {
                let response = try await client.send(method: .GET, url: url)
                if response.status == 200, let json = response.json, json["resourceType"]?.stringValue == "Bundle" { return json }
                headers = response.headers
                problem = "HTTP \(response.status)" + EntryOutcome.operationOutcomeIssues(response.json).map { "; " + $0 }.joined()
                if !RetryPolicy.isRetryable(status: response.status) { throw VerifyError.search(url: Self.redacted(url), message: problem) }
            } catch let error as ConnectionFailure {
                throw error
            } catch let error as VerifyError {
                throw error
            } catch {
                problem = "\(error)"
            }
            guard let delay = options.retry.delay(afterAttempt: attempt, headers: headers) else {
                throw VerifyError.search(url: Self.redacted(url), message: "\(problem) (gave up after \(attempt) attempts)")
            }
            try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
        }
    }

    /// The search URL without its identifier values (they can be health data, e.g. a medical record number).
    private static func redacted(_ url: String) -> String {
        guard let q = url.firstIndex(of: "?") else { return url }
        return String(url[..<q]) + "?identifier=…"
    }

    private static func sameOrigin(_ a: String, _ b: String) -> Bool {
        guard let x = URLComponents(string: a), let y = URLComponents(string: b) else { return false }
        return x.scheme == y.scheme && x.host == y.host && x.port == y.port
    }
}
