import FHIRModel
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A fault the test server injects into one bundle request (a POST to the base).
public enum Fault: Sendable, Equatable {
    /// No fault: answer normally (to aim a later fault at a later request).
    case pass
    /// Close the connection before doing anything (a network drop).
    case dropConnection
    /// Apply the bundle, then close the connection without answering: the client cannot know it was written.
    case dropAfterApplying
    /// Answer the whole request with this status (500, 503, 429, ...) and an OperationOutcome, writing nothing.
    case status(Int, retryAfter: Int? = nil)
    /// Medplum's rate limit inside a batch: entries from `index` on get 429 and are not written, with a
    /// `RateLimit` header (`"requests";r=0;t=resetSeconds`) and no Retry-After.
    case rateLimitFromEntry(Int, resetSeconds: Int = 1)
    /// These entries of a batch fail with `status` (retryable or not); the others are written.
    case failEntries([Int], status: Int)
    /// Answer 200 with a page that is not FHIR (a misconfigured proxy), writing nothing.
    case notFHIR
    /// Answer normally after a delay.
    case slow(seconds: Double)
    /// Every token issued so far expires now, and this request gets 401 (a token expiring server-side early).
    case expireTokens
    /// The server dies: every connection closes, nothing listens for `downFor` seconds, then it comes back with
    /// its data (what was committed before the crash).
    case crash(downFor: Double)
    /// Apply the bundle, answer 200 with the full Content-Length, send the first `bytes` of the body, then
    /// nothing more (the connection stays open).
    case stallBody(afterBytes: Int)
    /// Apply the bundle and send the answer one byte every `interval` seconds.
    case trickle(interval: Double)
    /// Refuse with `status` and an OperationOutcome that repeats the request's Authorization header.
    case echoAuthorization(status: Int)
    /// Apply the batch, then answer its entries in reverse order (a server bug a client can see).
    case reverseResponses
}

/// A fault the test server injects into one asynchronous batch job, in the order jobs are submitted.
public enum JobFault: Sendable, Equatable {
    /// No fault (to aim a later fault at a later job).
    case pass
    /// After applying `afterEntries` entries, the job ends in `error` with an OperationOutcome saying `message`
    /// (Medplum's `AsyncJobExecutor.failJob`; the server does not retry it).
    case fail(afterEntries: Int, message: String)
    /// Each entry of this job takes `secondsPerEntry` (a job that runs for minutes).
    case slow(secondsPerEntry: Double)
    /// After `afterEntries` entries the server forgets the job: its status URL answers 404.
    case forget(afterEntries: Int)
}

/// A redirect the test server answers with instead of handling a request.
public struct Redirect: Sendable {
    /// The request path it applies to, exactly (no query): `/fhir/R4`, `/oauth2/token`, `/fhir/R4/Patient`.
    public var path: String
    public var status: Int
    /// The Location header.
    public var location: String

    public init(path: String, status: Int, location: String) {
        self.path = path
        self.status = status
        self.location = location
    }
}

/// A small FHIR R4 server for the uploader's tests, on 127.0.0.1, that behaves as Medplum documents (see
/// `FHIRService`), can require OAuth2 client-credentials tokens, and injects faults on demand.
public final class FHIRTestServer: @unchecked Sendable {  // mutable state behind `lock`
    /// The port it listens on (fixed at start, kept across a simulated crash).
    public private(set) var port = 0
    /// The FHIR base URL, e.g. `http://127.0.0.1:PORT/fhir/R4`.
    public var baseURL: String { "http://127.0.0.1:\(port)/fhir/R4" }
    public var tokenURL: String { "http://127.0.0.1:\(port)/oauth2/token" }

    private let group: MultiThreadedEventLoopGroup
    let lock = NSLock()
    let store = ResourceStore()
    let limits: ServerLimits
    private var channel: (any Channel)?
    private var connections: [ObjectIdentifier: any Channel] = [:]
    private var faults: [Fault] = []
    private var chaos: (rate: Double, generator: SeededGenerator, kinds: [Fault])?
    var stats = Statistics()
    /// OAuth2: accepted client id and secret; nil when the server needs no token.
    private var client: (id: String, secret: String)?
    private var tokenLifetime = 3600
    private var tokens: [String: Date] = [:]
    private var redirects: [Redirect] = []
    private var echoSecret = false
    let ledger: QuotaLedger?
    var jobs: [String: AsyncJobState] = [:]
    var jobFaults: [JobFault] = []
    var binaries: [String: [UInt8]] = [:]
    /// True while a simulated crash keeps the server down (jobs pause, as Medplum's workers do).
    var down = false
    private var triggers: [(condition: @Sendable (Statistics) -> Bool, action: @Sendable () -> Void)] = []

    /// What the server saw.
    public struct Statistics: Sendable {
        /// Bundle requests (POST to the base) received, faults included.
        public var bundleRequests = 0
        public var tokenRequests = 0
        public var unauthorized = 0
        public var faultsInjected = 0
        /// Entries of each bundle request answered, in arrival order (the first 10,000).
        public var bundleEntryCounts: [Int] = []
        /// Every request received (token and metadata requests included).
        public var requests = 0
        /// Requests answered with a redirect.
        public var redirected = 0
        /// Trickled answers the client hung up on before their last byte.
        public var tricklesAbandoned = 0
        /// Asynchronous batch jobs accepted (202), status polls, cancels (DELETE on a status URL) and
        /// asynchronous kickoffs refused (a transaction, a body over the limit).
        public var asyncJobs = 0
        public var asyncPolls = 0
        public var asyncCancels = 0
        public var asyncRefused = 0
        /// Entries and requests answered 429 because the interaction quota was spent.
        public var throttled = 0
        /// Result reads (`GET Binary/id`).
        public var binaryReads = 0
    }

    /// Starts a server on a free port of 127.0.0.1.
    public static func start(limits: ServerLimits = ServerLimits(), threads: Int = 2) async throws -> FHIRTestServer {
        let server = FHIRTestServer(group: MultiThreadedEventLoopGroup(numberOfThreads: threads), limits: limits)
        server.port = try await server.bind(port: 0)
        return server
    }

    private init(group: MultiThreadedEventLoopGroup, limits: ServerLimits) {
        self.group = group
        self.limits = limits
        ledger = limits.quota.map(QuotaLedger.init)
    }

    @discardableResult
    private func bind(port: Int) async throws -> Int {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(HTTPHandler(server: self))
                }
            }
        let channel = try await bootstrap.bind(host: "127.0.0.1", port: port).get()
        lock.withLock { self.channel = channel }
        return channel.localAddress?.port ?? port
    }

    /// Stops listening and closes every connection.
    public func shutdown() async throws {
        let (listener, open) = lock.withLock { () -> ((any Channel)?, [any Channel]) in
            defer { channel = nil; connections = [:] }
            return (channel, Array(connections.values))
        }
        try? await listener?.close()
        for c in open { try? await c.close() }
        try await group.shutdownGracefully()
    }

    // MARK: Configuration (tests)

    /// Queues faults for the next bundle requests, one each, in order.
    public func inject(_ faults: [Fault]) {
        lock.withLock { self.faults.append(contentsOf: faults) }
    }

    /// Runs `action` once, on the server's thread, as soon as the statistics meet `condition` (checked as each
    /// request arrives): a test that kills a client at the Nth request then does not depend on its own task being
    /// scheduled in time on a loaded machine.
    public func when(_ condition: @escaping @Sendable (Statistics) -> Bool, _ action: @escaping @Sendable () -> Void) {
        lock.withLock { triggers.append((condition, action)) }
    }

    /// Queues faults for the next asynchronous jobs, one each, in order of submission.
    public func inject(jobFaults: [JobFault]) {
        lock.withLock { self.jobFaults.append(contentsOf: jobFaults) }
    }

    /// The server goes down now (every connection closed, nothing listening, running jobs paused) and comes back
    /// after `downFor` seconds with its data; a running job resumes from its last checkpoint, so entries since then
    /// are applied again (Medplum's re-entrant batch worker is at-least-once per entry).
    public func restart(downFor: Double) {
        crash(downFor: downFor)
    }

    /// Asynchronous jobs by status ("accepted", "completed", "error", "cancelled").
    public var jobStatuses: [String: Int] {
        lock.withLock { jobs.values.reduce(into: [:]) { $0[$1.status, default: 0] += 1 } }
    }

    /// From now on, each bundle request without a queued fault gets one of `kinds` with probability `rate`
    /// (seeded, so a failing run can be reproduced).
    public func chaos(rate: Double, seed: UInt64, kinds: [Fault]) {
        lock.withLock { chaos = (rate, SeededGenerator(seed: seed), kinds) }
    }

    /// Requires `Authorization: Bearer` tokens issued by `/oauth2/token` to this client, valid for `lifetime` s.
    public func requireClientCredentials(id: String, secret: String, tokenLifetime: Int = 3600) {
        lock.withLock {
            self.client = (id, secret)
            self.tokenLifetime = tokenLifetime
        }
    }

    /// A refused token request's `error_description` repeats the secret it was sent (a careless server).
    public func echoSecretInTokenErrors() {
        lock.withLock { echoSecret = true }
    }

    /// Answers requests for `redirect.path` with that redirect from now on (several can be set).
    public func redirect(_ redirect: Redirect) {
        lock.withLock { redirects.append(redirect) }
    }

    public var statistics: Statistics {
        return lock.withLock {
            var s = stats
            s.throttled = ledger?.throttled ?? 0
            return s
        }
    }

    // MARK: Inspection (tests)

    /// Every stored resource of `type`.
    public func resources(ofType type: String) -> [JSONValue] {
        return lock.withLock { (store.resources[type] ?? [:]).keys.sorted().map { store.resources[type]![$0]! } }
    }

    public var resourceCounts: [String: Int] {
        return lock.withLock { store.resources.mapValues(\.count).filter { $0.value > 0 } }
    }

    /// `system|value` identifiers that more than one resource of a type carries ("Type system|value" → count).
    public func duplicatedIdentifiers() -> [String: Int] {
        return lock.withLock {
            var seen: [String: Int] = [:]
            for (type, byID) in store.resources {
                for resource in byID.values {
                    for identifier in ResourceStore.identifiers(of: resource) { seen["\(type) \(identifier.system)|\(identifier.value)", default: 0] += 1 }
                }
            }
            return seen.filter { $0.value > 1 }
        }
    }

    /// Stores a resource directly, bypassing conditional updates (to plant a duplicate).
    public func insertDirectly(_ resource: JSONValue) {
        lock.withLock {
            let type = resource["resourceType"]?.stringValue ?? "Basic"
            store.write(type: type, id: store.newID(), resource: resource)
        }
    }

    /// Deletes every resource of `type` carrying `system|value`.
    public func delete(type: String, system: String, value: String) {
        lock.withLock {
            for id in store.search(type: type, identifierParameters: [[SearchToken(system: system, value: value)]]) {
                store.remove(type: type, id: id)
            }
        }
    }

    // MARK: Request handling

    enum Action {
        case respond(status: Int, headers: [(String, String)], body: [UInt8], delay: Double)
        /// Headers with the full Content-Length, then only the first `sent` bytes of the body.
        case stall(status: Int, headers: [(String, String)], body: [UInt8], sent: Int)
        /// The answer one byte every `interval` seconds.
        case trickle(status: Int, headers: [(String, String)], body: [UInt8], interval: Double)
        case drop
        case crash(downFor: Double)
    }

    fileprivate func connectionOpened(_ channel: any Channel) {
        lock.withLock { connections[ObjectIdentifier(channel)] = channel }
    }

    fileprivate func connectionClosed(_ channel: any Channel) {
        lock.withLock { connections[ObjectIdentifier(channel)] = nil }
    }

    fileprivate func handle(method: String, uri: String, headers: HTTPHeaders, body: [UInt8]) -> Action {
        let (path, rawQuery) = Self.split(uri)
        let redirect = lock.withLock { () -> Redirect? in
            stats.requests += 1
            guard let r = redirects.first(where: { $0.path == path }) else { return nil }
            stats.redirected += 1
            return r
        }
        if let redirect {
            return .respond(status: redirect.status, headers: [("Location", redirect.location)], body: [], delay: 0)
        }
        if path == "/oauth2/token" && method == "POST" { return token(headers: headers, body: body) }
        guard path == "/fhir/R4" || path.hasPrefix("/fhir/R4/") else {
            return reply(FHIRService(store: store, limits: limits, baseURL: "").failure(404, "not-found", "No FHIR endpoint at \(path)"))
        }
        let relative = String(path.dropFirst("/fhir/R4".count).drop(while: { $0 == "/" }))
        let request = ServiceRequest(method: method, path: relative, query: FHIRService.decodeQuery(rawQuery), body: body)
        let fired = lock.withLock { () -> [@Sendable () -> Void] in
            var due: [@Sendable () -> Void] = []
            triggers.removeAll { trigger in
                guard trigger.condition(stats) else { return false }
                due.append(trigger.action)
                return true
            }
            return due
        }
        for action in fired { action() }
        return lock.withLock { () -> Action in
            // Medplum keys its quota by membership: here, the client (all tokens are its), or one anonymous user.
            let key = client?.id ?? "anonymous"
            let action = route(method: method, relative: relative, request: request, headers: headers, key: key)
            guard let ledger, relative != "metadata" else { return action }
            return Self.adding(("RateLimit", ledger.header(key)), to: action)
        }
    }

    /// A service whose charges go to `key`'s quota (nil: nothing is charged, as inside an asynchronous job).
    func service(chargingTo key: String?) -> FHIRService {
        var service = FHIRService(store: store, limits: limits, baseURL: baseURL)
        if let ledger, let key {
            service.charge = { ledger.charge(key, $0) }
            service.throttledLater = { ledger.countThrottled() }
        }
        return service
    }

    private static func adding(_ header: (String, String), to action: Action) -> Action {
        switch action {
        case .respond(let status, let headers, let body, let delay): return .respond(status: status, headers: headers + [header], body: body, delay: delay)
        case .stall(let status, let headers, let body, let sent): return .stall(status: status, headers: headers + [header], body: body, sent: sent)
        case .trickle(let status, let headers, let body, let interval): return .trickle(status: status, headers: headers + [header], body: body, interval: interval)
        case .drop, .crash: return action
        }
    }

    /// Handles one FHIR request under the lock.
    private func route(method: String, relative: String, request: ServiceRequest, headers: HTTPHeaders, key: String) -> Action {
        let service = self.service(chargingTo: key)
        if client != nil && relative != "metadata" {
            let auth = headers.first(name: "Authorization") ?? ""
            let token = auth.hasPrefix("Bearer ") ? String(auth.dropFirst(7)) : ""
            guard let expiry = tokens[token], expiry > Date() else {
                stats.unauthorized += 1
                var response = service.failure(401, "login", "Unauthorized")
                response.headers.append(("WWW-Authenticate", "Bearer"))
                return reply(response)
            }
        }
        if relative.hasPrefix("job/") { return reply(jobRequest(method: method, path: relative, service: service)) }
        if method == "GET" && relative.hasPrefix("Binary/") { return binary(String(relative.dropFirst(7)), accept: headers.first(name: "Accept") ?? "", service: service) }
        guard method == "POST" && relative.isEmpty else { return reply(service.handle(request)) }
        stats.bundleRequests += 1
        // Medplum's asyncBatchHandler takes over only when the header is exactly this (async-batch.ts).
        let isAsync = headers.first(name: "Prefer") == "respond-async"
        let process = { (entryFaults: [Int: Int], reverse: Bool) -> ServiceResponse in
            isAsync ? self.kickoff(request.body, service: service, entryFaults: entryFaults, reverse: reverse)
                : service.handle(request, entryFaults: entryFaults)
        }
        var fault = faults.isEmpty ? nil : faults.removeFirst()
        if fault == nil, var c = chaos {
            if Double.random(in: 0..<1, using: &c.generator) < c.rate { fault = c.kinds.randomElement(using: &c.generator) }
            chaos = c
        }
        if fault != nil && fault != .pass { stats.faultsInjected += 1 }
        switch fault {
        case nil, .pass?:
            return reply(process([:], false))
        case .dropConnection:
            return .drop
        case .dropAfterApplying:
            _ = process([:], false)
            return .drop
        case .status(let status, let retryAfter)?:
            var response = service.failure(status, status == 429 ? "throttled" : "transient", "Injected \(status)")
            if let retryAfter { response.headers.append(("Retry-After", String(retryAfter))) }
            return reply(response)
        case .rateLimitFromEntry(let first, let reset)?:
            let count = (try? JSONParser.parse(request.body))?["entry"]?.arrayValue?.count ?? 0
            var response = process(Dictionary(uniqueKeysWithValues: (first..<max(first, count)).map { ($0, 429) }), false)
            response.headers.append(("RateLimit", "\"requests\";r=0;t=\(reset)"))
            return reply(response)
        case .failEntries(let indexes, let status)?:
            return reply(process(Dictionary(uniqueKeysWithValues: indexes.map { ($0, status) }), false))
        case .slow(let seconds)?:
            if case .respond(let s, let h, let b, _) = reply(process([:], false)) { return .respond(status: s, headers: h, body: b, delay: seconds) }
            return .drop
        case .crash(let downFor)?:
            return .crash(downFor: downFor)
        case .notFHIR?:
            return .respond(status: 200, headers: [("Content-Type", "text/html")], body: Array("<html><body>Welcome</body></html>".utf8), delay: 0)
        case .stallBody(let bytes)?:
            guard case .respond(let s, let h, let b, _) = reply(process([:], false)) else { return .drop }
            return .stall(status: s, headers: h, body: b, sent: min(bytes, b.count))
        case .trickle(let interval)?:
            guard case .respond(let s, let h, let b, _) = reply(process([:], false)) else { return .drop }
            return .trickle(status: s, headers: h, body: b, interval: interval)
        case .echoAuthorization(let status)?:
            let auth = headers.first(name: "Authorization") ?? "(none)"
            var response = service.failure(status, "forbidden", "Access denied for Authorization: \(auth) (token \(auth.split(separator: " ").last ?? ""))")
            response.headers.append(("X-Echo", auth))
            return reply(response)
        case .reverseResponses?:
            if isAsync { return reply(process([:], true)) }
            var response = service.handle(request)
            if case .object(var members)? = response.body, let i = members.firstIndex(where: { $0.key == "entry" }),
               case .array(let entries) = members[i].value {
                members[i].value = .array(entries.reversed())
                response.body = .object(members)
            }
            return reply(response)
        case .expireTokens?:
            tokens = [:]
            stats.unauthorized += 1
            var response = service.failure(401, "login", "Token expired")
            response.headers.append(("WWW-Authenticate", "Bearer"))
            return reply(response)
        }
    }

    /// `POST /oauth2/token` with `grant_type=client_credentials` and the client's id and secret, in the form body
    /// or as HTTP Basic (both are accepted by Medplum).
    private func token(headers: HTTPHeaders, body: [UInt8]) -> Action {
        let form = Dictionary(FHIRService.decodeQuery(String(decoding: body, as: UTF8.self).replacingOccurrences(of: "+", with: "%20")),
                              uniquingKeysWith: { a, _ in a })
        var id = form["client_id"]
        var secret = form["client_secret"]
        if let basic = headers.first(name: "Authorization"), basic.hasPrefix("Basic "),
           let decoded = Data(base64Encoded: String(basic.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
           let colon = decoded.firstIndex(of: ":") {
            id = String(decoded[..<colon])
            secret = String(decoded[decoded.index(after: colon)...])
        }
        return lock.withLock {
            stats.tokenRequests += 1
            guard form["grant_type"] == "client_credentials", let client, id == client.id, secret == client.secret else {
                let description = echoSecret ? "Invalid client or secret '\(secret ?? "")'" : "Invalid client or secret"
                let error = JSONValue.object([JSONMember("error", .string("invalid_client")),
                                              JSONMember("error_description", .string(description))])
                return .respond(status: 400, headers: [("Content-Type", "application/json")], body: JSONWriter().bytes(error), delay: 0)
            }
            let token = UUID().uuidString
            tokens[token] = Date().addingTimeInterval(Double(tokenLifetime))
            let response = JSONValue.object([
                JSONMember("access_token", .string(token)), JSONMember("token_type", .string("Bearer")),
                JSONMember("expires_in", .number(String(tokenLifetime))),
            ])
            return .respond(status: 200, headers: [("Content-Type", "application/json")], body: JSONWriter().bytes(response), delay: 0)
        }
    }

    func reply(_ response: ServiceResponse) -> Action {
        if let n = response.bundleEntries, stats.bundleEntryCounts.count < 10_000 { stats.bundleEntryCounts.append(n) }
        var headers = response.headers
        var body: [UInt8] = []
        if let json = response.body {
            headers.append(("Content-Type", "application/fhir+json"))
            body = JSONWriter().bytes(json)
        }
        return .respond(status: response.status, headers: headers, body: body, delay: 0)
    }

    fileprivate func trickleAbandoned() {
        lock.withLock { stats.tricklesAbandoned += 1 }
    }

    /// Closes everything, stays down for `downFor` seconds, then listens again on the same port.
    fileprivate func crash(downFor: Double) {
        let (listener, open) = lock.withLock { () -> ((any Channel)?, [any Channel]) in
            defer { channel = nil; connections = [:] }
            return (channel, Array(connections.values))
        }
        listener?.close(promise: nil)
        for c in open { c.close(promise: nil) }
        lock.withLock {
            down = true
            for job in jobs.values { job.rewindToCheckpoint() }
        }
        Task {
            try await Task.sleep(nanoseconds: UInt64(downFor * 1_000_000_000))
            for _ in 0..<50 {
                if (try? await self.bind(port: self.port)) != nil {
                    self.lock.withLock { self.down = false }
                    return
                }
                try await Task.sleep(nanoseconds: 100_000_000)
            }
        }
    }

    private static func split(_ uri: String) -> (path: String, query: String) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, "") }
        return (String(uri[..<q]), String(uri[uri.index(after: q)...]))
    }
}

/// Reads whole requests and hands them to the server; writes its answer (possibly late, or not at all).
private final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: FHIRTestServer
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(server: FHIRTestServer) {
        self.server = server
    }

    func channelActive(context: ChannelHandlerContext) {
        server.connectionOpened(context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        server.connectionClosed(context.channel)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
        case .body(let buffer):
            body.append(contentsOf: buffer.readableBytesView)
        case .end:
            guard let head else { return }
            let action = server.handle(method: head.method.rawValue, uri: head.uri, headers: head.headers, body: body)
            body = []
            switch action {
            case .drop:
                context.close(promise: nil)
            case .crash(let downFor):
                server.crash(downFor: downFor)
            case .stall(let status, let headers, let bytes, let sent):
                var h = HTTPHeaders(headers)
                h.add(name: "Content-Length", value: String(bytes.count))
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: status), headers: h))), promise: nil)
                var buffer = context.channel.allocator.buffer(capacity: sent)
                buffer.writeBytes(bytes.prefix(sent))
                context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            case .trickle(let status, let headers, let bytes, let interval):
                var h = HTTPHeaders(headers)
                h.add(name: "Content-Length", value: String(bytes.count))
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: status), headers: h))), promise: nil)
                trickle(bytes[...], interval: interval, context: context)
            case .respond(let status, let headers, let bytes, let delay):
                let keepAlive = head.isKeepAlive
                let write = { [self] (context: ChannelHandlerContext) in
                    // A delayed answer to a client that gave up (timed out) goes nowhere.
                    guard context.channel.isActive else { return }
                    var h = HTTPHeaders(headers)
                    h.add(name: "Content-Length", value: String(bytes.count))
                    if !keepAlive { h.add(name: "Connection", value: "close") }
                    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: status), headers: h))), promise: nil)
                    var buffer = context.channel.allocator.buffer(capacity: bytes.count)
                    buffer.writeBytes(bytes)
                    context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                    let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
                    if !keepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
                }
                if delay > 0 {
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay * 1000))) { write(context) }
                } else {
                    write(context)
                }
            }
        }
    }
}

extension HTTPHandler {
    /// Writes `rest` one byte per `interval`, then ends the response; stops when the client has gone.
    fileprivate func trickle(_ rest: ArraySlice<UInt8>, interval: Double, context: ChannelHandlerContext) {
        guard context.channel.isActive else {
            server.trickleAbandoned()
            return
        }
        guard let byte = rest.first else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 1)
        buffer.writeInteger(byte)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(interval * 1000))) { [self] in
            trickle(rest.dropFirst(), interval: interval, context: context)
        }
    }
}

/// A small deterministic random generator (SplitMix64) for reproducible chaos.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
