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
    /// The references of the server's copies, compared with what the folder wrote.
    public var links = LinkReport()
    /// Identities a delta deletes (`DELETE Type?identifier=…`), and those the server still holds.
    public var deletesExpected = 0
    public var stillPresent: [ExpectedIdentifier] = []

    public var isClean: Bool { missing.isEmpty && duplicated.isEmpty && links.isClean && stillPresent.isEmpty }
}

/// How the references the folder writes look on the server.
public struct LinkReport: Sendable {
    /// What can be wrong with one reference on the server.
    public enum Problem: String, Sendable, CaseIterable, Comparable {
        /// Still `Type?identifier=…` or `urn:uuid:…`: the server stored it without resolving it.
        case unresolved
        /// `Type/id` where no such resource exists.
        case dangling
        /// A reference to another resource type than the folder's.
        case wrongType = "wrong type"
        /// The folder writes a reference there; the server's copy has none.
        case dropped

        public static func < (a: Problem, b: Problem) -> Bool { a.rawValue < b.rawValue }
    }

    /// References checked (of resources found on the server).
    public var checked = 0
    /// Resources whose references were checked, and those left out by `--links N`.
    public var resourcesChecked = 0
    public var resourcesSkipped = 0
    /// Problem → "Observation.subject → Patient" → count.
    public var problems: [Problem: [String: Int]] = [:]
    /// The first few problems, as `Observation/<id> subject: …` (server ids only, no identifier values).
    public var examples: [String] = []

    public var problemCount: Int { problems.values.reduce(0) { $0 + $1.values.reduce(0, +) } }
    public var isClean: Bool { problemCount == 0 }

    mutating func add(_ problem: Problem, link: String, example: String) {
        problems[problem, default: [:]][link, default: 0] += 1
        if examples.count < 20 { examples.append(example) }
    }

    mutating func merge(_ other: LinkReport) {
        checked += other.checked
        resourcesChecked += other.resourcesChecked
        resourcesSkipped += other.resourcesSkipped
        for (problem, byLink) in other.problems {
            for (link, n) in byLink { problems[problem, default: [:]][link, default: 0] += n }
        }
        examples += other.examples.prefix(max(0, 20 - examples.count))
    }
}

/// Which references `verify` checks.
public enum LinkCheck: Sendable, Equatable {
    case none
    case all
    /// The references of the first N resources of each type.
    case sample(Int)
}

/// A reference the folder writes, as verify compares it: where it is in the resource and the type it targets.
struct FolderLink: Sendable {
    var pointer: String
    var targetType: String
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
    private let links: LinkCheck
    /// Resources whose links were checked, per type (for `LinkCheck.sample`).
    private let sampled = SampleCounter()

    public init(folder: String, options: UploadOptions, batchSize: Int = 50, links: LinkCheck = .all) {
        self.folder = folder
        self.options = options
        self.batchSize = batchSize
        self.links = links
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

    /// The identifiers one bundle file writes (from its conditional-update URLs) with the references each entry's
    /// resource holds, and how many of its entries are not conditional updates by one identifier.
    private func identifiers(inBundle file: String) throws -> (items: [ExpectedItem], deletes: [ExpectedIdentifier], unverifiable: Int) {
        guard let bytes = FileManager.default.contents(atPath: folder + "/" + file), let bundle = try? JSONParser.parse(Array(bytes)) else {
            throw UploadError.plan(file: file, message: "the bundle is missing or not JSON")
        }
        var items: [ExpectedItem] = []
        var deletes: [ExpectedIdentifier] = []
        var unverifiable = 0
        for entry in bundle["entry"]?.arrayValue ?? [] {
            let inner = entry["request"]?["url"]?.stringValue == "/" ? (entry["resource"]?["entry"]?.arrayValue ?? []) : [entry]
            // urn:uuid references point at entries of the same (inner) bundle.
            var urnTypes: [String: String] = [:]
            for e in inner {
                if let fullUrl = e["fullUrl"]?.stringValue, let type = e["resource"]?["resourceType"]?.stringValue { urnTypes[fullUrl] = type }
            }
            for e in inner {
                if e["request"]?["method"]?.stringValue == "PUT", let url = e["request"]?["url"]?.stringValue,
                   let parsed = ConditionalURL.parseIdentifier(url) {
                    let identifier = ExpectedIdentifier(type: parsed.type, system: parsed.system, value: parsed.value)
                    let folderLinks = links == .none ? [] : Self.folderLinks(e["resource"], urnTypes: urnTypes)
                    items.append(ExpectedItem(identifier: identifier, links: folderLinks))
                } else if e["request"]?["method"]?.stringValue == "DELETE", let url = e["request"]?["url"]?.stringValue,
                          let parsed = ConditionalURL.parseIdentifier(url) {
                    deletes.append(ExpectedIdentifier(type: parsed.type, system: parsed.system, value: parsed.value))
                } else {
                    unverifiable += 1
                }
            }
        }
        return (items, deletes, unverifiable)
    }

    /// The references of a resource the folder writes, with the type each targets (unknown ones left out).
    static func folderLinks(_ resource: JSONValue?, urnTypes: [String: String]) -> [FolderLink] {
        guard let resource else { return [] }
        return ReferenceWalk.references(in: resource).compactMap { found in
            let reference = found.reference
            if reference.hasPrefix("urn:") { return urnTypes[reference].map { FolderLink(pointer: found.pointer, targetType: $0) } }
            if ReferenceWalk.isConditional(reference) {
                return FolderLink(pointer: found.pointer, targetType: String(reference[..<reference.firstIndex(of: "?")!]))
            }
            let parts = reference.split(separator: "/")
            if parts.count == 2, parts[0].first?.isUppercase == true { return FolderLink(pointer: found.pointer, targetType: String(parts[0])) }
            return nil
        }
    }

    /// Streams: bundles are read one at a time and their identifiers searched in batches as they fill, so memory
    /// does not grow with the folder, except for link checking, which keeps the server ids it has seen and those
    /// referenced (a few dozen bytes a resource) to look up the references at the end. `progress` gets the
    /// identifiers checked so far and the manifest's resource count.
    public func run(progress: @escaping @Sendable (_ done: Int, _ total: Int) -> Void = { _, _ in }) async throws -> VerifyReport {
        let started = Date()
        let manifest = try readManifest()
        let total = manifest.resourceCounts.values.reduce(0, +)
        if let refusal = options.urlPolicy.refusal(of: options.server) { throw ConnectionFailure.refusedURL(refusal) }
        let client = FHIRClient(base: options.server, credentials: options.credentials, timeout: options.timeout, policy: options.urlPolicy)
        var report = VerifyReport()
        var seen = Set<String>()        // "Type/id" of every resource found
        var referenced: [String: Referrers] = [:]  // "Type/id" referenced → by which links, how often
        var deletes: [ExpectedIdentifier] = []
        do {
            try await withThrowingTaskGroup(of: BatchResult.self) { group in
                var open: [String: [ExpectedItem]] = [:]  // type → identifiers waiting for a full batch
                var inFlight = 0
                var checked = 0
                func absorb(_ result: BatchResult) {
                    report.missing += result.missing
                    report.duplicated += result.duplicated
                    report.searches += result.searches
                    report.links.merge(result.links)
                    seen.formUnion(result.seen)
                    for (target, referrers) in result.referenced { referenced[target, default: Referrers()].merge(referrers) }
                    checked += result.checked
                    inFlight -= 1
                    progress(checked, total)
                }
                var files = manifest.steps.flatMap(\.bundles)[...]
                while true {
                    var ready: [[ExpectedItem]] = []
                    if let file = files.popFirst() {
                        let (items, deleted, unverifiable) = try self.identifiers(inBundle: file)
                        deletes += deleted
                        report.unverifiable += unverifiable
                        report.expected += items.count
                        for item in items {
                            let type = item.identifier.type
                            open[type, default: []].append(item)
                            if open[type]!.count == batchSize { ready.append(open.removeValue(forKey: type)!) }
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
            // A delta's deletes: each identity must be gone.
            report.deletesExpected = deletes.count
            for (_, gone) in Dictionary(grouping: deletes, by: \.type).sorted(by: { $0.key < $1.key }) {
                let sorted = gone.sorted()
                for start in stride(from: 0, to: sorted.count, by: batchSize) {
                    let batch = sorted[start..<min(sorted.count, start + batchSize)].map { ExpectedItem(identifier: $0, links: []) }
                    let result = try await check(batch, client: client)
                    report.searches += result.searches
                    let absent = Set(result.missing)
                    report.stillPresent += batch.map(\.identifier).filter { !absent.contains($0) }
                }
            }
            // References to resources the verification did not meet: do they exist?
            let unseen = referenced.filter { !seen.contains($0.key) }
            let (existing, searches) = try await existingResources(Set(unseen.keys), client: client)
            report.searches += searches
            for (target, referrers) in unseen.sorted(by: { $0.key < $1.key }) where !existing.contains(target) {
                for (link, count) in referrers.counts.sorted(by: { $0.key < $1.key }) {
                    for _ in 0..<count { report.links.add(.dangling, link: link, example: "\(referrers.example): no \(target) on the server") }
                }
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

    /// One identifier to look up, with the references the folder's resource holds.
    struct ExpectedItem: Sendable {
        var identifier: ExpectedIdentifier
        var links: [FolderLink]
    }

    private struct BatchResult: Sendable {
        var missing: [ExpectedIdentifier] = []
        var duplicated: [(identifier: ExpectedIdentifier, count: Int)] = []
        var searches = 0
        var checked = 0
        var links = LinkReport()
        /// "Type/id" of the resources found.
        var seen: [String] = []
        /// "Type/id" referenced by them → which links refer to it.
        var referenced: [String: Referrers] = [:]
    }

    /// The references to one target: how many per link, and one place, for a dangling report.
    struct Referrers: Sendable {
        var counts: [String: Int] = [:]
        var example = ""

        mutating func merge(_ other: Referrers) {
            for (link, n) in other.counts { counts[link, default: 0] += n }
            if example.isEmpty { example = other.example }
        }
    }

    /// Searches one batch and keeps only what is wrong with it, plus what link checking needs.
    private func check(_ batch: [ExpectedItem], client: FHIRClient) async throws -> BatchResult {
        let type = batch[0].identifier.type
        let wanted = Dictionary(batch.map { ($0.identifier, $0.links) }, uniquingKeysWith: { a, _ in a })
        let elements = Set(batch.flatMap { $0.links.map { String($0.pointer.split(separator: "/").first ?? "") } }).sorted()
        var result = BatchResult(checked: batch.count)
        var counts: [ExpectedIdentifier: Int] = [:]
        var linksDone = Set<ExpectedIdentifier>()
        let tokens = batch.map { ConditionalURL.encodeToken($0.identifier.system) + "|" + ConditionalURL.encodeToken($0.identifier.value) }
        var url: String? = "\(client.base)/\(type)?identifier=\(tokens.joined(separator: ","))&_count=\(max(100, batch.count * 2))"
            + "&_elements=" + (["identifier"] + elements).joined(separator: ",")
        while let current = url {
            let page = try await search(current, client: client)
            result.searches += 1
            for entry in page["entry"]?.arrayValue ?? [] where entry["search"]?["mode"]?.stringValue ?? "match" == "match" {
                guard let resource = entry["resource"], resource["resourceType"]?.stringValue == type else { continue }
                let id = resource["id"]?.stringValue
                if let id { result.seen.append("\(type)/\(id)") }
                var counted = Set<ExpectedIdentifier>()
                // An array, or one Identifier (Composition, QuestionnaireResponse and a few other types have one).
                for identifier in resource["identifier"].map({ $0.arrayValue ?? [$0] }) ?? [] {
                    let key = ExpectedIdentifier(type: type, system: identifier["system"]?.stringValue ?? "", value: identifier["value"]?.stringValue ?? "")
                    guard let folderLinks = wanted[key], counted.insert(key).inserted else { continue }
                    counts[key, default: 0] += 1
                    if !folderLinks.isEmpty && linksDone.insert(key).inserted {
                        if sampled.take(type: type, limit: links) {
                            compare(folderLinks, with: resource, type: type, id: id ?? "?", client: client, into: &result)
                        } else {
                            result.links.resourcesSkipped += 1
                        }
                    }
                }
            }
            url = (page["link"]?.arrayValue ?? []).first { $0["relation"]?.stringValue == "next" }?["url"]?.stringValue
            if let next = url, Origin(next) != Origin(client.base) {
                throw VerifyError.search(url: "\(type)?identifier=…", message: "the server's next link points elsewhere (\(URLPolicy.shown(next))); not followed")
            }
        }
        for item in batch {
            let n = counts[item.identifier] ?? 0
            if n == 0 { result.missing.append(item.identifier) } else if n > 1 { result.duplicated.append((item.identifier, n)) }
        }
        return result
    }

    /// Which of the folder's known identifiers (`known-identifiers.txt`: resources its references expect on the
    /// server) the server does not hold: `Type|system|value` searched by identifier, `Type/id` by `_id`, many per
    /// search. A duplicated identifier counts as missing too: a conditional reference to it cannot resolve.
    func missingKnownIdentifiers(_ known: Set<String>, client: FHIRClient) async throws -> (missing: [String], searches: Int) {
        var byType: [String: [ExpectedItem]] = [:]
        var literals = Set<String>()
        for line in known {
            let parts = line.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
            if parts.count == 3 {
                byType[parts[0], default: []].append(ExpectedItem(identifier: ExpectedIdentifier(type: parts[0], system: parts[1], value: parts[2]), links: []))
            } else if line.split(separator: "/").count == 2 {
                literals.insert(line)
            }
        }
        var missing: [String] = []
        var searches = 0
        for (_, items) in byType.sorted(by: { $0.key < $1.key }) {
            let sorted = items.sorted { $0.identifier < $1.identifier }
            for start in stride(from: 0, to: sorted.count, by: batchSize) {
                let result = try await check(Array(sorted[start..<min(sorted.count, start + batchSize)]), client: client)
                searches += result.searches
                for m in result.missing { missing.append("\(m.type)|\(m.system)|\(m.value)") }
                for d in result.duplicated { missing.append("\(d.identifier.type)|\(d.identifier.system)|\(d.identifier.value) (\(d.count) resources)") }
            }
        }
        if !literals.isEmpty {
            let (existing, n) = try await existingResources(literals, client: client)
            searches += n
            missing += literals.subtracting(existing).sorted()
        }
        return (missing.sorted(), searches)
    }

    /// Compares the references the folder wrote with the server's copy of the resource.
    private func compare(_ folderLinks: [FolderLink], with resource: JSONValue, type: String, id: String, client: FHIRClient,
                         into result: inout BatchResult) {
        result.links.resourcesChecked += 1
        for link in folderLinks {
            result.links.checked += 1
            let path = type + "." + link.pointer.split(separator: "/").filter { Int($0) == nil && $0 != "reference" }.joined(separator: ".")
            let name = "\(path) → \(link.targetType)"
            let example = "\(type)/\(id) \(link.pointer.dropFirst())"
            guard let stored = ReferenceWalk.value(at: link.pointer, in: resource)?.stringValue else {
                result.links.add(.dropped, link: name, example: "\(example): missing on the server")
                continue
            }
            if ReferenceWalk.isConditional(stored) || stored.hasPrefix("urn:") {
                result.links.add(.unresolved, link: name, example: "\(example): stored unresolved (\(stored.hasPrefix("urn:") ? "urn:uuid:…" : stored.prefix { $0 != "?" } + "?…"))")
                continue
            }
            guard let target = Self.literalTarget(stored, base: client.base) else { continue }  // another server's URL: not ours to check
            if !target.hasPrefix(link.targetType + "/") {
                result.links.add(.wrongType, link: name, example: "\(example): refers to \(target)")
                continue
            }
            result.referenced[target, default: Referrers()].merge(Referrers(counts: [name: 1], example: example))
        }
    }

    /// `Type/id` for a relative reference or an absolute one below `base`; nil for anything else.
    static func literalTarget(_ reference: String, base: String) -> String? {
        var relative = Substring(reference)
        if Origin(reference) != nil {
            guard reference.hasPrefix(base + "/") else { return nil }
            relative = relative.dropFirst(base.count + 1)
        }
        if let h = relative.range(of: "/_history/") { relative = relative[..<h.lowerBound] }
        let parts = relative.split(separator: "/")
        guard parts.count == 2, parts[0].first?.isUppercase == true else { return nil }
        return parts.joined(separator: "/")
    }

    /// Which of `targets` ("Type/id") exist on the server: `_id` searches, `batchSize` ids each.
    private func existingResources(_ targets: Set<String>, client: FHIRClient) async throws -> (Set<String>, Int) {
        var byType: [String: [String]] = [:]
        for target in targets {
            let parts = target.split(separator: "/", maxSplits: 1)
            byType[String(parts[0]), default: []].append(String(parts[1]))
        }
        var existing = Set<String>()
        var searches = 0
        for (type, ids) in byType.sorted(by: { $0.key < $1.key }) {
            let sorted = ids.sorted()
            for start in stride(from: 0, to: sorted.count, by: batchSize) {
                let chunk = sorted[start..<min(sorted.count, start + batchSize)]
                var url: String? = "\(client.base)/\(type)?_id=\(chunk.map(ConditionalURL.encodeToken).joined(separator: ","))&_count=\(max(100, chunk.count * 2))&_elements=id"
                while let current = url {
                    let page = try await search(current, client: client)
                    searches += 1
                    for entry in page["entry"]?.arrayValue ?? [] {
                        if entry["resource"]?["resourceType"]?.stringValue == type, let id = entry["resource"]?["id"]?.stringValue { existing.insert("\(type)/\(id)") }
                    }
                    url = (page["link"]?.arrayValue ?? []).first { $0["relation"]?.stringValue == "next" }?["url"]?.stringValue
                    if let next = url, Origin(next) != Origin(client.base) { url = nil }
                }
            }
        }
        return (existing, searches)
    }

    /// GET of a search page, with the upload's retries.
    private func search(_ url: String, client: FHIRClient) async throws -> JSONValue {
        switch try await client.read(url, type: "Bundle", retry: options.retry) {
        case .found(let page): return page
        case .refused(_, let problem): throw VerifyError.search(url: Self.redacted(url), message: problem)
        case .gaveUp(let problem, let attempts): throw VerifyError.search(url: Self.redacted(url), message: "\(problem) (gave up after \(attempts) attempts)")
        }
    }

    /// The search URL without its identifier values (they can be health data, e.g. a medical record number).
    private static func redacted(_ url: String) -> String {
        guard let q = url.firstIndex(of: "?") else { return url }
        return String(url[..<q]) + "?identifier=…"
    }

}

/// How many resources of each type have had their links checked (for `LinkCheck.sample`).
final class SampleCounter: @unchecked Sendable {  // `counts` behind `lock`
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    /// True when one more resource of `type` is to be checked under `limit`.
    func take(type: String, limit: LinkCheck) -> Bool {
        switch limit {
        case .none: return false
        case .all: return true
        case .sample(let n):
            return lock.withLock {
                guard counts[type, default: 0] < n else { return false }
                counts[type, default: 0] += 1
                return true
            }
        }
    }
}
