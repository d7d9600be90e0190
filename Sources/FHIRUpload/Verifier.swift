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

    /// The identifiers the folder's bundles write, from their conditional-update URLs, and the count of entries
    /// that are not conditional updates by one identifier.
    public func expectedIdentifiers() throws -> (identifiers: [ExpectedIdentifier], unverifiable: Int) {
        guard let data = FileManager.default.contents(atPath: folder + "/manifest.json") else {
            throw UploadRefusal.manifest("\(folder)/manifest.json is missing: verify takes a folder written by fhirbundle convert")
        }
        let manifest: Manifest
        do { manifest = try Manifest(json: JSONParser.parse(Array(data))) } catch {
            throw UploadRefusal.manifest("\(folder)/manifest.json cannot be read: \(error)")
        }
        var identifiers = Set<ExpectedIdentifier>()
        var unverifiable = 0
        for step in manifest.steps {
            for file in step.bundles {
                guard let bytes = FileManager.default.contents(atPath: folder + "/" + file), let bundle = try? JSONParser.parse(Array(bytes)) else {
                    throw UploadError.plan(file: file, message: "the bundle is missing or not JSON")
                }
                for entry in bundle["entry"]?.arrayValue ?? [] {
                    let inner = entry["request"]?["url"]?.stringValue == "/" ? (entry["resource"]?["entry"]?.arrayValue ?? []) : [entry]
                    for e in inner {
                        if e["request"]?["method"]?.stringValue == "PUT", let url = e["request"]?["url"]?.stringValue,
                           let parsed = ConditionalURL.parseIdentifier(url) {
                            identifiers.insert(ExpectedIdentifier(type: parsed.type, system: parsed.system, value: parsed.value))
                        } else {
                            unverifiable += 1
                        }
                    }
                }
            }
        }
        return (identifiers.sorted(), unverifiable)
    }

    public func run(progress: @escaping @Sendable (_ done: Int, _ total: Int) -> Void = { _, _ in }) async throws -> VerifyReport {
        let started = Date()
        let (identifiers, unverifiable) = try expectedIdentifiers()
        var batches: [[ExpectedIdentifier]] = []
        for (_, group) in Dictionary(grouping: identifiers, by: \.type).sorted(by: { $0.key < $1.key }) {
            var i = 0
            while i < group.count {
                batches.append(Array(group[i..<min(group.count, i + batchSize)]))
                i += batchSize
            }
        }
        let client = FHIRClient(base: options.server, credentials: options.credentials, timeout: options.timeout)
        var counts: [ExpectedIdentifier: Int] = [:]
        var searches = 0
        do {
            try await withThrowingTaskGroup(of: ([ExpectedIdentifier: Int], Int).self) { group in
                var next = 0
                var done = 0
                while next < min(batches.count, options.concurrency) {
                    let batch = batches[next]
                    group.addTask { try await self.count(batch, client: client) }
                    next += 1
                }
                while let (found, requests) = try await group.next() {
                    counts.merge(found, uniquingKeysWith: +)
                    searches += requests
                    done += 1
                    progress(done, batches.count)
                    if next < batches.count {
                        let batch = batches[next]
                        group.addTask { try await self.count(batch, client: client) }
                        next += 1
                    }
                }
            }
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
        var report = VerifyReport(expected: identifiers.count, unverifiable: unverifiable, searches: searches)
        for identifier in identifiers {
            let n = counts[identifier] ?? 0
            if n == 0 { report.missing.append(identifier) } else if n > 1 { report.duplicated.append((identifier, n)) }
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
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
