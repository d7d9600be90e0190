import FHIRModel
import Foundation

/// An HTTP request as the service sees it.
struct ServiceRequest {
    var method: String
    /// Path below the FHIR base, without a leading slash: "" for the base, "Patient", "Patient/123", "metadata".
    var path: String
    /// Decoded query parameters, in order.
    var query: [(name: String, value: String)]
    var body: [UInt8]
}

/// An HTTP response of the service.
struct ServiceResponse {
    var status: Int
    var headers: [(String, String)] = []
    var body: JSONValue?
    /// For a bundle request: how many entries it held.
    var bundleEntries: Int?
}

/// Limits the test server enforces, Medplum's by default.
public struct ServerLimits: Sendable {
    /// Entries in one transaction.
    public var transactionEntries = 20
    /// Entries in a transaction that holds conditional operations (Medplum's serializable transactions).
    public var conditionalTransactionEntries = 8
    /// Bytes of one request body (Medplum's `maxJsonSize`, 1 MB).
    public var bodyBytes = 1_000_000
    /// Whether a batch entry may be a nested transaction (`POST /` with a transaction Bundle), as on Medplum.
    public var nestedTransactions = true
    /// Whether conditional references in batch entries are resolved, as on Medplum; false stores them as written,
    /// as some servers do (FHIR requires their resolution in transactions only).
    public var resolvesBatchConditionalReferences = true
    /// The resource types its CapabilityStatement lists (each with update, create, conditional update and an
    /// `identifier` search); nil lists none, which a client cannot check against.
    public var offeredTypes: [String]?
    /// Medplum's FHIR interaction quota; nil for none.
    public var quota: InteractionQuota?
    /// Bytes of an asynchronous batch body (`Prefer: respond-async`; Medplum's `maxBatchSize`, 50 MB; body-parser
    /// reads "50mb" as 50 MiB).
    public var asyncBodyBytes = 50 << 20
    /// Whether an asynchronous `transaction` is refused, as Medplum refuses it when the project has the
    /// `transaction-bundles` feature (without it, Medplum runs it as a non-atomic batch).
    public var refusesAsyncTransactions = true
    /// Seconds an asynchronous job spends on each entry (a job that takes minutes has a large value).
    public var asyncSecondsPerEntry = 0.0
    /// Answer `GET Binary/id` with a Binary resource (base64 `data`) whatever the Accept header; by default, as
    /// Medplum does, the raw bytes unless Accept starts with `application/fhir+json`.
    public var binaryAsResource = false

    public init() {}
}

/// The FHIR behaviour of the test server, following Medplum's documentation: conditional create/update by
/// identifier (412 on several matches, `id` refused in a conditional PUT body), batches whose entries are
/// independent, all-or-nothing transactions with `urn:uuid:` and conditional references, nested transactions in
/// a batch, the transaction caps, identifier searches with OR lists and paging.
struct FHIRService {
    let store: ResourceStore
    let limits: ServerLimits
    let baseURL: String
    /// Spends quota points for the client; false when they are spent (see `InteractionQuota`).
    var charge: (Int) -> Bool = { _ in true }
    /// Counts an entry answered 429 after the quota ran out earlier in its batch.
    var throttledLater: () -> Void = {}

    /// Entry outcome overrides for fault injection: entry index → status that entry gets instead of being applied.
    func handle(_ request: ServiceRequest, entryFaults: [Int: Int] = [:]) -> ServiceResponse {
        if request.body.count > limits.bodyBytes {
            return failure(413, "too-costly", "The request body is \(request.body.count) bytes; the limit is \(limits.bodyBytes)")
        }
        switch (request.method, request.path) {
        case ("GET", "metadata"):
            var members = [
                JSONMember("resourceType", .string("CapabilityStatement")), JSONMember("status", .string("active")),
                JSONMember("kind", .string("instance")), JSONMember("fhirVersion", .string("4.0.1")),
            ]
            if let types = limits.offeredTypes {
                let codes: (String...) -> JSONValue = { .array($0.map { .object([JSONMember("code", .string($0))]) }) }
                members.append(JSONMember("rest", .array([.object([
                    JSONMember("mode", .string("server")),
                    JSONMember("resource", .array(types.map { type in
                        .object([JSONMember("type", .string(type)), JSONMember("interaction", codes("read", "update", "create", "delete", "search-type")),
                                 JSONMember("updateCreate", .bool(true)), JSONMember("conditionalCreate", .bool(true)),
                                 JSONMember("conditionalUpdate", .bool(true)), JSONMember("conditionalDelete", .string("single")),
                                 JSONMember("searchParam", .array([.object([JSONMember("name", .string("identifier")), JSONMember("type", .string("token"))])]))])
                    })),
                    JSONMember("interaction", codes("batch", "transaction")),
                ])])))
            }
            return ServiceResponse(status: 200, body: .object(members))
        case ("POST", ""):
            guard let bundle = try? JSONParser.parse(request.body) else { return failure(400, "invalid", "The body is not JSON") }
            guard bundle["resourceType"]?.stringValue == "Bundle" else { return failure(400, "invalid", "POST to the base takes a Bundle") }
            var response: ServiceResponse
            switch bundle["type"]?.stringValue {
            case "batch": response = batch(bundle, entryFaults: entryFaults)
            case "transaction":
                if !charge((bundle["entry"]?.arrayValue ?? []).reduce(0) { $0 + Self.cost(of: $1) }) {
                    return failure(429, "throttled", "Too Many Requests")  // a transaction is throttled whole
                }
                switch transaction(bundle) {
                case .success(let r): response = ServiceResponse(status: 200, body: r)
                case .failure(let error): response = failure(error.status, error.code, error.message)
                }
            default: response = failure(400, "invalid", "Bundle.type must be batch or transaction")
            }
            response.bundleEntries = bundle["entry"]?.arrayValue?.count ?? 0
            return response
        case ("GET", let path) where !path.contains("/"):
            guard charge(InteractionQuota.searchCost) else { return failure(429, "throttled", "Too Many Requests") }
            return search(type: path, query: request.query)
        case ("PUT", let path) where !path.contains("/"):
            guard charge(InteractionQuota.conditionalWriteCost) else { return failure(429, "throttled", "Too Many Requests") }
            guard let resource = try? JSONParser.parse(request.body) else { return failure(400, "invalid", "The body is not JSON") }
            let url = path + "?" + request.query.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
            switch conditionalUpdate(url: url, decodedQuery: request.query, resource: resource, ids: [:]) {
            case .success(let r): return ServiceResponse(status: r.status, headers: r.location.map { [("Location", $0)] } ?? [], body: nil)
            case .failure(let e): return failure(e.status, e.code, e.message)
            }
        case ("GET", let path):
            guard charge(InteractionQuota.readCost) else { return failure(429, "throttled", "Too Many Requests") }
            let parts = path.split(separator: "/").map(String.init)
            if parts.count == 2, let resource = store.read(type: parts[0], id: parts[1]) { return ServiceResponse(status: 200, body: resource) }
            return failure(404, "not-found", "No resource at \(path)")
        default:
            return failure(405, "not-supported", "\(request.method) \(request.path) is not supported by this test server")
        }
    }

    // MARK: Batch and transaction

    private func batch(_ bundle: JSONValue, entryFaults: [Int: Int]) -> ServiceResponse {
        var responses: [JSONValue] = []
        var throttled = false
        for (i, entry) in (bundle["entry"]?.arrayValue ?? []).enumerated() {
            if throttled {
                throttledLater()
                responses.append(throttledEntry())
                continue
            }
            if !charge(Self.cost(of: entry)) {
                // Medplum's BatchProcessor: the entry that found the quota spent and every later one get 429.
                throttled = true
                responses.append(throttledEntry())
                continue
            }
            if let status = entryFaults[i] {
                responses.append(responseEntry(status: status, outcome: outcome(status == 429 ? "throttled" : "exception", "Injected failure \(status)")))
                continue
            }
            responses.append(batchEntry(entry))
        }
        return ServiceResponse(status: 200, body: responseBundle("batch-response", responses))
    }

    /// What one batch entry costs against the quota: a conditional write pays for its search too.
    static func cost(of entry: JSONValue) -> Int {
        let url = entry["request"]?["url"]?.stringValue ?? ""
        if url == "/" || url.isEmpty {
            return (entry["resource"]?["entry"]?.arrayValue ?? []).reduce(0) { $0 + cost(of: $1) }
        }
        return url.contains("?") ? InteractionQuota.conditionalWriteCost : InteractionQuota.writeCost
    }

    private func throttledEntry() -> JSONValue {
        responseEntry(status: 429, outcome: outcome("throttled", "Too Many Requests"))
    }

    /// One entry of a batch, applied on its own (a nested transaction all or nothing); its response entry.
    func batchEntry(_ entry: JSONValue, nestedAsBatch: Bool = false) -> JSONValue {
        let url = entry["request"]?["url"]?.stringValue ?? ""
        let method = entry["request"]?["method"]?.stringValue ?? ""
        if method == "POST" && (url == "/" || url.isEmpty), let inner = entry["resource"], inner["type"]?.stringValue == "transaction" {
            guard limits.nestedTransactions else {
                return responseEntry(status: 400, outcome: outcome("not-supported", "Nested transactions are not supported"))
            }
            if nestedAsBatch {
                // Medplum's batch worker routes an inner bundle through a FhirRouter without `config.transactions`
                // (workers/batch.ts, execBatchJob; fhir-router batch.ts, isTransaction): entry by entry, not atomic.
                let responses = (inner["entry"]?.arrayValue ?? []).map { batchEntry($0) }
                return .object([JSONMember("resource", responseBundle("batch-response", responses)),
                                JSONMember("response", .object([JSONMember("status", .string("200 OK"))]))])
            }
            switch transaction(inner) {
            case .success(let response):
                return .object([JSONMember("resource", response), JSONMember("response", .object([JSONMember("status", .string("200 OK"))]))])
            case .failure(let e):
                return responseEntry(status: e.status, outcome: outcome(e.code, e.message))
            }
        }
        store.beginTransaction()
        switch apply(entry, ids: [:], resolveConditional: limits.resolvesBatchConditionalReferences) {
        case .success(let r):
            store.commit()
            return responseEntry(status: r.status, location: r.location)
        case .failure(let e):
            store.rollback()
            return responseEntry(status: e.status, outcome: outcome(e.code, e.message))
        }
    }

    /// All or nothing: ids are assigned first (so `urn:uuid:` references to any entry resolve), then every
    /// entry is written; the first failure rolls everything back.
    private func transaction(_ bundle: JSONValue) -> Result<JSONValue, EntryError> {
        let entries = bundle["entry"]?.arrayValue ?? []
        let conditional = entries.contains { ($0["request"]?["url"]?.stringValue ?? "").contains("?") || $0["request"]?["ifNoneExist"] != nil }
        if entries.count > limits.transactionEntries {
            return .failure(EntryError(400, "too-costly", "The transaction has \(entries.count) entries; the limit is \(limits.transactionEntries)"))
        }
        if conditional && entries.count > limits.conditionalTransactionEntries {
            return .failure(EntryError(400, "too-costly",
                "A transaction with conditional operations may hold \(limits.conditionalTransactionEntries) entries; this one has \(entries.count)"))
        }
        var ids: [String: String] = [:]  // fullUrl → Type/id
        for (i, entry) in entries.enumerated() {
            guard let fullUrl = entry["fullUrl"]?.stringValue, let type = entry["resource"]?["resourceType"]?.stringValue else { continue }
            let url = entry["request"]?["url"]?.stringValue ?? ""
            if let q = url.firstIndex(of: "?") {
                let matches = store.search(type: type, identifierParameters: identifierParameters(Self.decodeQuery(String(url[url.index(after: q)...]))))
                if matches.count > 1 { return .failure(EntryError(412, "duplicate", "entry \(i): \(url) matches \(matches.count) resources")) }
                ids[fullUrl] = "\(type)/\(matches.first ?? store.newID())"
            } else if url.contains("/") {
                ids[fullUrl] = url
            } else {
                ids[fullUrl] = "\(type)/\(store.newID())"
            }
        }
        store.beginTransaction()
        var responses: [JSONValue] = []
        for (i, entry) in entries.enumerated() {
            switch apply(entry, ids: ids) {
            case .success(let r): responses.append(responseEntry(status: r.status, location: r.location))
            case .failure(let e):
                store.rollback()
                return .failure(EntryError(e.status, e.code, "entry \(i): \(e.message)"))
            }
        }
        store.commit()
        return .success(responseBundle("transaction-response", responses))
    }

    private struct Written {
        var status: Int
        var location: String?
    }

    struct EntryError: Error {
        var status: Int
        var code: String
        var message: String
        init(_ status: Int, _ code: String, _ message: String) {
            self.status = status
            self.code = code
            self.message = message
        }
    }

    private func apply(_ entry: JSONValue, ids: [String: String], resolveConditional: Bool = true) -> Result<Written, EntryError> {
        guard let method = entry["request"]?["method"]?.stringValue, let url = entry["request"]?["url"]?.stringValue else {
            return .failure(EntryError(400, "required", "The entry has no request.method or request.url"))
        }
        if method == "DELETE" { return conditionalDelete(url: url) }
        guard let resource = entry["resource"], let type = resource["resourceType"]?.stringValue else {
            return .failure(EntryError(400, "required", "The entry has no resource"))
        }
        let resolved: JSONValue
        switch resolveReferences(resource, ids: ids, conditional: resolveConditional) {
        case .success(let r): resolved = r
        case .failure(let e): return .failure(e)
        }
        let fullUrl = entry["fullUrl"]?.stringValue
        switch method {
        case "PUT":
            if let q = url.firstIndex(of: "?") {
                guard String(url[..<q]) == type else { return .failure(EntryError(400, "invalid", "\(url) does not match resourceType \(type)")) }
                let query = Self.decodeQuery(String(url[url.index(after: q)...]))
                return conditionalUpdate(url: url, decodedQuery: query, resource: resolved, ids: ids, fullUrl: fullUrl)
            }
            let parts = url.split(separator: "/").map(String.init)
            guard parts.count == 2, parts[0] == type else { return .failure(EntryError(400, "invalid", "\(url) is not Type/id")) }
            let existed = store.read(type: type, id: parts[1]) != nil
            let version = store.write(type: type, id: parts[1], resource: resolved)
            return .success(Written(status: existed ? 200 : 201, location: "\(type)/\(parts[1])/_history/\(version)"))
        case "POST":
            guard url == type else { return .failure(EntryError(400, "invalid", "POST \(url) does not match resourceType \(type)")) }
            let id = fullUrl.flatMap { ids[$0] }?.split(separator: "/").last.map(String.init) ?? store.newID()
            let version = store.write(type: type, id: id, resource: resolved)
            return .success(Written(status: 201, location: "\(type)/\(id)/_history/\(version)"))
        default:
            return .failure(EntryError(405, "not-supported", "\(method) is not supported in a bundle by this test server"))
        }
    }

    /// `DELETE Type?identifier=…`: removes the one match; no match is success too (a replayed delete finds the
    /// resource gone), several are 412, as FHIR R4 allows and HAPI and Medplum do.
    private func conditionalDelete(url: String) -> Result<Written, EntryError> {
        guard let q = url.firstIndex(of: "?") else { return .failure(EntryError(400, "invalid", "DELETE \(url): only conditional deletes are supported")) }
        let type = String(url[..<q])
        let parameters = identifierParameters(Self.decodeQuery(String(url[url.index(after: q)...])))
        guard !parameters.isEmpty else { return .failure(EntryError(400, "invalid", "\(url): only identifier searches are supported")) }
        let matches = store.search(type: type, identifierParameters: parameters)
        if matches.count > 1 { return .failure(EntryError(412, "multiple-matches", "Multiple resources found matching condition")) }
        for id in matches { store.remove(type: type, id: id) }
        return .success(Written(status: 204, location: nil))
    }

    private func conditionalUpdate(url: String, decodedQuery: [(name: String, value: String)], resource: JSONValue, ids: [String: String],
                                   fullUrl: String? = nil) -> Result<Written, EntryError> {
        guard let type = resource["resourceType"]?.stringValue else { return .failure(EntryError(400, "required", "The resource has no resourceType")) }
        if resource["id"] != nil {
            return .failure(EntryError(400, "invalid", "A conditional update body must not carry an id"))
        }
        let parameters = identifierParameters(decodedQuery)
        guard !parameters.isEmpty else { return .failure(EntryError(400, "invalid", "\(url): only identifier searches are supported")) }
        let matches = store.search(type: type, identifierParameters: parameters)
        if matches.count > 1 { return .failure(EntryError(412, "duplicate", "Multiple resources found matching condition")) }
        let id = matches.first ?? fullUrl.flatMap { ids[$0] }?.split(separator: "/").last.map(String.init) ?? store.newID()
        let version = store.write(type: type, id: id, resource: resource)
        return .success(Written(status: matches.isEmpty ? 201 : 200, location: "\(type)/\(id)/_history/\(version)"))
    }

    /// Rewrites `urn:uuid:` references (from the transaction's fullUrls) and conditional references
    /// (`Type?identifier=...`, which must match exactly one resource) into `Type/id`.
    private func resolveReferences(_ value: JSONValue, ids: [String: String], conditional: Bool = true) -> Result<JSONValue, EntryError> {
        switch value {
        case .object(let members):
            var out: [JSONMember] = []
            out.reserveCapacity(members.count)
            for member in members {
                if member.key == "reference", let reference = member.value.stringValue {
                    if reference.hasPrefix("urn:uuid:") {
                        guard let target = ids[reference] else {
                            return .failure(EntryError(400, "invalid", "The reference \(reference) matches no entry of this transaction"))
                        }
                        out.append(JSONMember("reference", .string(target)))
                    } else if conditional, let q = reference.firstIndex(of: "?") {
                        let type = String(reference[..<q])
                        let matches = store.search(type: type, identifierParameters: identifierParameters(Self.decodeQuery(String(reference[reference.index(after: q)...]))))
                        guard matches.count == 1 else {
                            return .failure(EntryError(400, "invalid", "The conditional reference \(type)?… matches \(matches.count) resources"))
                        }
                        out.append(JSONMember("reference", .string("\(type)/\(matches[0])")))
                    } else {
                        out.append(member)
                    }
                } else {
                    switch resolveReferences(member.value, ids: ids, conditional: conditional) {
                    case .success(let v): out.append(JSONMember(member.key, v))
                    case .failure(let e): return .failure(e)
                    }
                }
            }
            return .success(.object(out))
        case .array(let items):
            var out: [JSONValue] = []
            for item in items {
                switch resolveReferences(item, ids: ids, conditional: conditional) {
                case .success(let v): out.append(v)
                case .failure(let e): return .failure(e)
                }
            }
            return .success(.array(out))
        default:
            return .success(value)
        }
    }

    // MARK: Search

    private func search(type: String, query: [(name: String, value: String)]) -> ServiceResponse {
        let count = min(1000, max(0, query.last(where: { $0.name == "_count" }).flatMap { Int($0.value) } ?? 20))
        let offset = max(0, query.last(where: { $0.name == "_offset" }).flatMap { Int($0.value) } ?? 0)
        var ids = store.search(type: type, identifierParameters: identifierParameters(query))
        for parameter in query where parameter.name == "_id" {
            let wanted = Set(parameter.value.split(separator: ",").map(String.init))
            ids = ids.filter { wanted.contains($0) }
        }
        let page = ids.dropFirst(offset).prefix(count)
        var members = [JSONMember("resourceType", .string("Bundle")), JSONMember("type", .string("searchset")),
                       JSONMember("total", .number(String(ids.count)))]
        if offset + count < ids.count {
            var next = query.filter { $0.name != "_offset" }
            next.append(("_offset", String(offset + count)))
            let q = next.map { "\($0.name)=\($0.value.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")" }.joined(separator: "&")
            members.append(JSONMember("link", .array([.object([JSONMember("relation", .string("next")),
                                                               JSONMember("url", .string("\(baseURL)/\(type)?\(q)"))])])))
        }
        members.append(JSONMember("entry", .array(page.map { id in
            .object([JSONMember("fullUrl", .string("\(baseURL)/\(type)/\(id)")), JSONMember("resource", store.read(type: type, id: id)!)])
        })))
        return ServiceResponse(status: 200, body: .object(members))
    }

    private func identifierParameters(_ query: [(name: String, value: String)]) -> [[SearchToken]] {
        query.filter { $0.name == "identifier" }.map { SearchToken.parseList($0.value) }
    }

    static func decodeQuery(_ query: String) -> [(name: String, value: String)] {
        query.split(separator: "&").map { item in
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            let name = kv[0].removingPercentEncoding ?? kv[0]
            let value = kv.count > 1 ? (kv[1].removingPercentEncoding ?? kv[1]) : ""
            return (name, value)
        }
    }

    // MARK: Responses

    func responseBundle(_ type: String, _ entries: [JSONValue]) -> JSONValue {
        .object([JSONMember("resourceType", .string("Bundle")), JSONMember("type", .string(type)), JSONMember("entry", .array(entries))])
    }

    private func responseEntry(status: Int, location: String? = nil, outcome: JSONValue? = nil) -> JSONValue {
        var response = [JSONMember("status", .string("\(status) \(Self.reason(status))"))]
        if let location { response.append(JSONMember("location", .string(location))) }
        if let outcome { response.append(JSONMember("outcome", outcome)) }
        return .object([JSONMember("response", .object(response))])
    }

    func outcome(_ code: String, _ diagnostics: String) -> JSONValue {
        .object([JSONMember("resourceType", .string("OperationOutcome")), JSONMember("issue", .array([.object([
            JSONMember("severity", .string("error")), JSONMember("code", .string(code)), JSONMember("diagnostics", .string(diagnostics)),
        ])]))])
    }

    func failure(_ status: Int, _ code: String, _ diagnostics: String) -> ServiceResponse {
        ServiceResponse(status: status, body: outcome(code, diagnostics))
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 404: return "Not Found"
        case 408: return "Request Timeout"
        case 412: return "Precondition Failed"
        case 413: return "Payload Too Large"
        case 429: return "Too Many Requests"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }
}
