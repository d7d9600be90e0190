import AsyncHTTPClient
import FHIRModel
import Foundation
import NIOCore
import NIOHTTP1

/// How the uploader proves who it is. Secrets live only in memory: never printed, logged or journaled.
public enum Credentials: Sendable {
    case none
    /// A bearer token given by the user (from an environment variable or a file).
    case bearer(String)
    /// OAuth2 client credentials: a token is fetched from `tokenURL`, refreshed before it expires and on a 401.
    case clientCredentials(tokenURL: String, clientID: String, clientSecret: String)

    /// Who the server knows us as, for naming the journal, without contacting anyone: the client id, the
    /// identity claims of a bearer JWT, or "a bearer token" for an opaque one.
    public var principal: String {
        switch self {
        case .none: return "no credentials"
        case .bearer(let token): return BearerClaims.principal(ofToken: token)
        case .clientCredentials(_, let id, _): return "client \(id)"
        }
    }

    /// Medplum's token endpoint for a FHIR base: `https://api.medplum.com/fhir/R4` → `https://api.medplum.com/oauth2/token`
    /// (the part before `/fhir`, or the server's origin).
    public static func defaultTokenURL(forServer server: String) -> String {
        guard var components = URLComponents(string: server) else { return server + "/oauth2/token" }
        let path = components.path
        if let range = path.range(of: "/fhir") { components.path = String(path[..<range.lowerBound]) } else { components.path = "" }
        components.path += "/oauth2/token"
        components.query = nil
        return components.string ?? server + "/oauth2/token"
    }
}

/// Why the server cannot be talked to at all (as opposed to one entry failing). The run stops.
public enum ConnectionFailure: Error, CustomStringConvertible {
    case unauthorized(String)
    case tokenEndpoint(String)
    /// A redirect that is not followed (to another origin, or one that would change the method).
    case redirect(String)
    /// A URL the policy refuses (plain http to another machine, credentials in the URL).
    case refusedURL(String)

    public var description: String {
        switch self {
        case .unauthorized(let m): return "the server refused the credentials: \(m)"
        case .tokenEndpoint(let m): return "no access token: \(m)"
        case .redirect(let m): return m
        case .refusedURL(let m): return m
        }
    }
}

/// No complete response (headers and body) within the request's deadline. Retried like a dropped connection.
public struct RequestTimeout: Error, CustomStringConvertible {
    public var seconds: Double
    public var description: String { "no complete answer within \(Int(seconds)) s" }
}

/// A response, read whole.
struct FHIRResponse {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    var json: JSONValue? { try? JSONParser.parse(body) }
}

/// HTTP to one FHIR server with the user's credentials: adds the Authorization header, fetches and refreshes
/// OAuth2 tokens (one fetch at a time, renewed a minute before expiry), and on a 401 renews the token and
/// resends once. Shared by the upload and the verification.
///
/// Every request has one deadline for its headers and its whole body; redirects are decided by
/// `RedirectDecision` (never to another origin) and every URL contacted passes the `URLPolicy`.
final class FHIRClient: Sendable {
    let http: HTTPClient
    let base: String
    /// Masks the credentials in use in anything the server says.
    let redactor: Redactor
    private let credentials: Credentials
    let tokens: TokenCache
    private let timeout: Double
    private let policy: URLPolicy

    init(base: String, credentials: Credentials, timeout: Double, policy: URLPolicy = URLPolicy()) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        // Redirects are decided here, one by one (AsyncHTTPClient would follow them to any origin).
        configuration.redirectConfiguration = .disallow
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .milliseconds(Int64(min(timeout, 10) * 1000)),
                                                                 read: .milliseconds(Int64(timeout * 1000)))
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.base = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.credentials = credentials
        self.timeout = timeout
        self.policy = policy
        tokens = TokenCache()
        switch credentials {
        case .none: redactor = Redactor()
        case .bearer(let token): redactor = Redactor(secrets: [token])
        case .clientCredentials(_, _, let secret): redactor = Redactor(secrets: [secret])
        }
    }

    func shutdown() async {
        try? await http.shutdown()
    }

    /// Sends one request; throws only for transport errors, timeouts, refused redirects and for credentials the
    /// server refuses.
    /// `prefer` replaces the default `Prefer: return=minimal` of a request with a body; `accept` the default
    /// `Accept: application/fhir+json`.
    func send(method: HTTPMethod, url: String, body: [UInt8]? = nil, prefer: String? = nil, accept: String? = nil) async throws -> FHIRResponse {
        let headers = RequestHeaders(prefer: prefer, accept: accept)
        var (response, token) = try await attempt(method: method, url: url, body: body, headers: headers, rejected: nil)
        if response.status == 401 {
            guard case .clientCredentials = credentials else {
                throw ConnectionFailure.unauthorized("401 Unauthorized for the bearer token given; check --token-env/--token-file")
            }
            (response, token) = try await attempt(method: method, url: url, body: body, headers: headers, rejected: token)
            if response.status == 401 {
                throw ConnectionFailure.unauthorized("401 Unauthorized even with a new token; check the client's access policy")
            }
        }
        return response
    }

    /// One request; returns the response and the OAuth2 token it carried.
    private struct RequestHeaders {
        var prefer: String?
        var accept: String?
    }

    private func attempt(method: HTTPMethod, url: String, body: [UInt8]?, headers chosen: RequestHeaders, rejected: String?) async throws -> (FHIRResponse, String?) {
        var headers = HTTPHeaders()
        headers.add(name: "Accept", value: chosen.accept ?? "application/fhir+json")
        if body != nil {
            headers.add(name: "Content-Type", value: "application/fhir+json")
            // Only the response statuses are needed, not the resources echoed back (less to send and to parse).
            headers.add(name: "Prefer", value: chosen.prefer ?? "return=minimal")
        }
        var used: String?
        switch credentials {
        case .none: break
        case .bearer(let token): headers.add(name: "Authorization", value: "Bearer \(token)")
        case .clientCredentials:
            let token = try await currentToken(rejected: rejected)
            headers.add(name: "Authorization", value: "Bearer \(token)")
            used = token
        }
        let response = try await execute(method: method, url: url, headers: headers, body: body, timeout: timeout)
        return (response, used)
    }

    private func currentToken(rejected: String?) async throws -> String {
        guard case .clientCredentials(let tokenURL, let id, let secret) = credentials else { return "" }
        return try await tokens.token(rejected: rejected) { [self] in
            let fetched = try await fetchToken(url: tokenURL, id: id, secret: secret)
            redactor.add(fetched.token)
            return fetched
        }
    }

    /// Sends a request, following only the redirects `RedirectDecision` allows, each hop within its own deadline
    /// for headers and body together.
    private func execute(method: HTTPMethod, url: String, headers: HTTPHeaders, body: [UInt8]?, timeout: Double,
                         bodyLimit: Int = 256 << 20) async throws -> FHIRResponse {
        var current = url
        var hops = 0
        while true {
            if let refusal = policy.refusal(of: current) { throw ConnectionFailure.refusedURL(refusal) }
            var request = HTTPClientRequest(url: current)
            request.method = method
            request.headers = headers
            if let body { request.body = .bytes(body) }
            let http = self.http
            let prepared = request
            let response = try await withDeadline(seconds: timeout) {
                let response = try await http.execute(prepared, timeout: .milliseconds(Int64(timeout * 1000)))
                let buffer = try await response.body.collect(upTo: bodyLimit)
                return FHIRResponse(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                                    body: Array(buffer.readableBytesView))
            }
            let location = response.headers.first { $0.name.lowercased() == "location" }?.value
            switch RedirectDecision.decide(method: method.rawValue, url: current, status: response.status, location: location,
                                           hops: hops, policy: policy) {
            case .none: return response
            case .follow(let next):
                current = next
                hops += 1
            case .refuse(let message): throw ConnectionFailure.redirect(message)
            }
        }
    }

    /// `POST tokenURL` with `grant_type=client_credentials`; returns the token, its lifetime in seconds and the
    /// project the answer names (Medplum's `project.reference`).
    private func fetchToken(url: String, id: String, secret: String) async throws -> FetchedToken {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        headers.add(name: "Accept", value: "application/json")
        let form = "grant_type=client_credentials&client_id=\(Self.formEncode(id))&client_secret=\(Self.formEncode(secret))"
        let response: FHIRResponse
        do {
            response = try await execute(method: .POST, url: url, headers: headers, body: Array(form.utf8), timeout: min(timeout, 30),
                                         bodyLimit: 1 << 20)
        } catch let failure as ConnectionFailure {
            throw ConnectionFailure.tokenEndpoint(failure.description)
        } catch {
            throw ConnectionFailure.tokenEndpoint("\(URLPolicy.shown(url)) cannot be reached (\(redactor.redact("\(error)")))")
        }
        let json = response.json
        guard response.status == 200, let token = json?["access_token"]?.stringValue, !token.isEmpty else {
            // OAuth2 errors (`error`, `error_description`) should hold no secret; a server may still echo one.
            let reason = [json?["error"]?.stringValue, json?["error_description"]?.stringValue].compactMap { $0 }.joined(separator: ": ")
            throw ConnectionFailure.tokenEndpoint(redactor.redact(
                "\(URLPolicy.shown(url)) answered \(response.status)\(reason.isEmpty ? "" : " (\(reason))"); check --client-id and the secret"))
        }
        var lifetime = 3600.0
        if case .number(let n)? = json?["expires_in"], let seconds = Double(n) { lifetime = seconds }
        return FetchedToken(token: token, lifetime: lifetime, project: json?["project"]?["reference"]?.stringValue)
    }

    private static func formEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

/// Runs `operation`, or throws `RequestTimeout` when it has not finished after `seconds` (and cancels it).
func withDeadline<T: Sendable>(seconds: Double, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1_000_000_000))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw CancellationError() }
        guard let value = first else { throw RequestTimeout(seconds: seconds) }
        return value
    }
}

/// An OAuth2 token endpoint's answer.
struct FetchedToken: Sendable {
    var token: String
    var lifetime: Double
    var project: String?
}

/// The identity claims of a bearer token that is a JSON Web Token (read, not verified: they only name the journal).
enum BearerClaims {
    /// "token of ISS, subject SUB (login L)" from the claims that name who the server sees, or "a bearer token"
    /// for an opaque token.
    static func principal(ofToken token: String) -> String {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let claims = decode(parts[1]) else { return "a bearer token" }
        var named: [String] = []
        for key in ["iss", "sub", "client_id", "azp", "login_id", "project"] {
            if let value = claims[key]?.stringValue, !value.isEmpty { named.append("\(key) \(value)") }
        }
        return named.isEmpty ? "a bearer token" : "a bearer token with " + named.joined(separator: ", ")
    }

    private static func decode(_ segment: Substring) -> JSONValue? {
        var text = segment.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while text.count % 4 != 0 { text += "=" }
        guard let data = Data(base64Encoded: text) else { return nil }
        return try? JSONParser.parse(Array(data))
    }
}

/// The current OAuth2 token: fetched once for all concurrent requests, renewed a minute (or a tenth of its
/// lifetime, if shorter) before it expires, or when the server refused it.
actor TokenCache {
    private var token: String?
    private var renewAt = Date.distantPast
    private var fetching: Task<FetchedToken, any Error>?
    /// The project the last token answer named, if any.
    private(set) var project: String?

    /// A valid token; `rejected` is a token the server answered 401 to (dropped if it is still the current one).
    func token(rejected: String?, fetch: @escaping @Sendable () async throws -> FetchedToken) async throws -> String {
        if let rejected, rejected == token { token = nil }
        if let token, Date() < renewAt { return token }
        let task: Task<FetchedToken, any Error>
        if let fetching {
            task = fetching
        } else {
            task = Task { try await fetch() }
            fetching = task
        }
        do {
            let fetched = try await task.value
            let (value, lifetime) = (fetched.token, fetched.lifetime)
            if fetching == task {
                fetching = nil
                token = value
                project = fetched.project ?? project
                renewAt = Date().addingTimeInterval(max(0, lifetime - min(60, lifetime / 10)))
            }
            return value
        } catch {
            if fetching == task { fetching = nil }
            throw error
        }
    }
}

/// The final answer of `FHIRClient.read`.
enum ReadOutcome {
    /// A 200 whose body is a resource of the type asked for.
    case found(JSONValue)
    /// Any other answer that retrying will not change, described (status and the OperationOutcome's issues).
    case refused(status: Int, problem: String)
    /// Every attempt failed retryably; the last problem, and how many attempts.
    case gaveUp(problem: String, attempts: Int)
}

extension FHIRClient {
    /// GETs `url` until a final answer, retrying connection errors, timeouts, 408, 429 and 5xx as `retry` says,
    /// as the upload does. Throws `ConnectionFailure` (refused credentials, redirects) and cancellation.
    func read(_ url: String, type: String, retry: RetryPolicy) async throws -> ReadOutcome {
        var attempt = 0
        while true {
            attempt += 1
            var headers: [(name: String, value: String)] = []
            var problem: String
            do {
                let response = try await send(method: .GET, url: url)
                if response.status == 200, let json = response.json, json["resourceType"]?.stringValue == type { return .found(json) }
                headers = response.headers
                problem = "HTTP \(response.status)" + EntryOutcome.operationOutcomeIssues(response.json).map { "; " + redactor.redact($0) }.joined()
                if !RetryPolicy.isRetryable(status: response.status) { return .refused(status: response.status, problem: problem) }
            } catch let error as ConnectionFailure {
                throw error
            } catch let error as CancellationError {
                throw error
            } catch {
                problem = redactor.redact("\(error)")
            }
            guard case .retry(let delay, _) = retry.decision(afterAttempt: attempt, headers: headers) else {
                return .gaveUp(problem: problem, attempts: attempt)
            }
            try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
        }
    }
}
