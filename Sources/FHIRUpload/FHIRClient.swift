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

/// Why the server cannot be talked to at all (as opposed to one entry failing).
public enum ConnectionFailure: Error, CustomStringConvertible {
    case unauthorized(String)
    case tokenEndpoint(String)

    public var description: String {
        switch self {
        case .unauthorized(let m): return "the server refused the credentials: \(m)"
        case .tokenEndpoint(let m): return "no access token: \(m)"
        }
    }
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
final class FHIRClient: Sendable {
    let http: HTTPClient
    let base: String
    private let credentials: Credentials
    private let tokens: TokenCache
    private let timeout: Int64

    init(base: String, credentials: Credentials, timeout: Int64) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.base = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.credentials = credentials
        self.timeout = timeout
        tokens = TokenCache()
    }

    func shutdown() async {
        try? await http.shutdown()
    }

    /// Sends one request; throws only for transport errors and for credentials the server refuses.
    func send(method: HTTPMethod, url: String, body: [UInt8]? = nil) async throws -> FHIRResponse {
        var (response, token) = try await attempt(method: method, url: url, body: body, rejected: nil)
        if response.status == 401 {
            guard case .clientCredentials = credentials else {
                throw ConnectionFailure.unauthorized("401 Unauthorized for the bearer token given; check --token-env/--token-file")
            }
            (response, token) = try await attempt(method: method, url: url, body: body, rejected: token)
            if response.status == 401 {
                throw ConnectionFailure.unauthorized("401 Unauthorized even with a new token; check the client's access policy")
            }
        }
        return response
    }

    /// One request; returns the response and the OAuth2 token it carried.
    private func attempt(method: HTTPMethod, url: String, body: [UInt8]?, rejected: String?) async throws -> (FHIRResponse, String?) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Accept", value: "application/fhir+json")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/fhir+json")
            // Only the response statuses are needed, not the resources echoed back (less to send and to parse).
            request.headers.add(name: "Prefer", value: "return=minimal")
            request.body = .bytes(body)
        }
        var used: String?
        switch credentials {
        case .none: break
        case .bearer(let token): request.headers.add(name: "Authorization", value: "Bearer \(token)")
        case .clientCredentials(let tokenURL, let id, let secret):
            let http = self.http
            let token = try await tokens.token(rejected: rejected) { try await Self.fetchToken(http: http, url: tokenURL, id: id, secret: secret) }
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            used = token
        }
        let response = try await http.execute(request, timeout: .seconds(timeout))
        let buffer = try await response.body.collect(upTo: 256 << 20)
        return (FHIRResponse(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
                             body: Array(buffer.readableBytesView)), used)
    }

    /// `POST tokenURL` with `grant_type=client_credentials`; returns the token and its lifetime in seconds.
    private static func fetchToken(http: HTTPClient, url: String, id: String, secret: String) async throws -> (String, Double) {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        let form = "grant_type=client_credentials&client_id=\(formEncode(id))&client_secret=\(formEncode(secret))"
        request.body = .bytes(Array(form.utf8))
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: .seconds(30))
        } catch {
            throw ConnectionFailure.tokenEndpoint("\(url) cannot be reached (\(error))")
        }
        let body = try await response.body.collect(upTo: 1 << 20)
        let json = try? JSONParser.parse(Array(body.readableBytesView))
        guard response.status.code == 200, let token = json?["access_token"]?.stringValue, !token.isEmpty else {
            // OAuth2 errors (`error`, `error_description`) hold no secret; show them.
            let reason = [json?["error"]?.stringValue, json?["error_description"]?.stringValue].compactMap { $0 }.joined(separator: ": ")
            throw ConnectionFailure.tokenEndpoint("\(url) answered \(response.status.code)\(reason.isEmpty ? "" : " (\(reason))"); check --client-id and the secret")
        }
        var lifetime = 3600.0
        if case .number(let n)? = json?["expires_in"], let seconds = Double(n) { lifetime = seconds }
        return (token, lifetime)
    }

    private static func formEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

/// The current OAuth2 token: fetched once for all concurrent requests, renewed a minute (or a tenth of its
/// lifetime, if shorter) before it expires, or when the server refused it.
actor TokenCache {
    private var token: String?
    private var renewAt = Date.distantPast
    private var fetching: Task<(String, Double), any Error>?

    /// A valid token; `rejected` is a token the server answered 401 to (dropped if it is still the current one).
    func token(rejected: String?, fetch: @escaping @Sendable () async throws -> (String, Double)) async throws -> String {
        if let rejected, rejected == token { token = nil }
        if let token, Date() < renewAt { return token }
        let task: Task<(String, Double), any Error>
        if let fetching {
            task = fetching
        } else {
            task = Task { try await fetch() }
            fetching = task
        }
        do {
            let (value, lifetime) = try await task.value
            if fetching == task {
                fetching = nil
                token = value
                renewAt = Date().addingTimeInterval(max(0, lifetime - min(60, lifetime / 10)))
            }
            return value
        } catch {
            if fetching == task { fetching = nil }
            throw error
        }
    }
}
