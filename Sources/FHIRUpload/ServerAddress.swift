import Foundation

/// The scheme, host and port of a URL: what "the same server" means for credentials and health data.
public struct Origin: Hashable, Sendable, CustomStringConvertible {
    public var scheme: String
    public var host: String
    public var port: Int

    /// The origin of an absolute http(s) URL; nil for anything else.
    public init?(_ url: String) {
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = components.host?.lowercased(), !host.isEmpty else { return nil }
        self.scheme = scheme
        self.host = host
        port = components.port ?? (scheme == "https" ? 443 : 80)
    }

    public var description: String {
        let defaultPort = scheme == "https" ? 443 : 80
        let shownHost = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "\(scheme)://\(shownHost)\(port == defaultPort ? "" : ":\(port)")"
    }

    /// True for this machine: traffic to it never crosses a network.
    public var isLoopback: Bool {
        ["localhost", "127.0.0.1", "::1", "[::1]"].contains(host) || host.hasPrefix("127.")
    }
}

/// Which URLs the uploader may contact: http(s) only, no user name or password in the URL, and plain `http://`
/// only to this machine unless the user allowed it. Applied to every URL contacted, redirects included.
public struct URLPolicy: Sendable {
    public var allowInsecureHTTP: Bool

    public init(allowInsecureHTTP: Bool = false) {
        self.allowInsecureHTTP = allowInsecureHTTP
    }

    /// Nil when `url` may be contacted, else why not (with what to do).
    public func refusal(of url: String) -> String? {
        guard let origin = Origin(url), let components = URLComponents(string: url) else {
            return "\(Self.shown(url)) is not an http(s) URL such as https://api.medplum.com/fhir/R4"
        }
        if components.user != nil || components.password != nil {
            return "\(origin) is given with a user name or password in the URL; give credentials with --token-env, --token-file or --client-id"
        }
        if origin.scheme == "http" && !origin.isLoopback && !allowInsecureHTTP {
            return "\(origin) is plain http:// to another machine (credentials and health data would travel unencrypted); use https:// or --allow-insecure-http"
        }
        return nil
    }

    /// A URL as it may be shown: its origin and path, without user, password, query or fragment (a query can hold
    /// identifier values, which are health data).
    public static func shown(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return "an unreadable URL" }
        components.user = nil
        components.password = nil
        let hadQuery = components.query != nil
        components.query = nil
        components.fragment = nil
        return (components.string ?? "an unreadable URL") + (hadQuery ? "?…" : "")
    }
}

/// What to do with a redirect: a decision made from the request and the response alone, so it is tested without
/// a network.
///
/// A redirect to another origin is never followed: the request would carry the bearer token, the client secret
/// or health data there. On the same origin, GET and HEAD follow any redirect; other methods follow only 307 and
/// 308, which keep the method and body (301, 302 and 303 would turn a POST into a GET and lose the bundle).
public enum RedirectDecision: Equatable, Sendable {
    /// Not a redirect: use the response.
    case none
    /// Send the same request to this absolute URL.
    case follow(String)
    /// Stop: the message says which redirect and why.
    case refuse(String)

    /// Redirects followed for one request at most.
    public static let maxHops = 5

    public static func decide(method: String, url: String, status: Int, location: String?, hops: Int,
                              policy: URLPolicy) -> RedirectDecision {
        guard [301, 302, 303, 307, 308].contains(status) else { return .none }
        let what = "\(method) \(URLPolicy.shown(url)) was redirected (\(status))"
        guard let location, let base = URL(string: url), let target = URL(string: location, relativeTo: base)?.absoluteURL else {
            return .refuse("\(what) without a usable Location; the server's address may be wrong (check --server)")
        }
        let next = target.absoluteString
        guard let from = Origin(url), let to = Origin(next) else {
            return .refuse("\(what) to \(URLPolicy.shown(next)), which is not an http(s) URL; not followed")
        }
        if from != to {
            return .refuse("\(what) to another origin, \(URLPolicy.shown(next)); not followed, so neither credentials nor health data went there. If the server moved, give its new address with --server")
        }
        if let refusal = policy.refusal(of: next) { return .refuse("\(what): \(refusal)") }
        if method != "GET" && method != "HEAD" && status != 307 && status != 308 {
            return .refuse("\(what) to \(URLPolicy.shown(next)) with a status that would turn the \(method) into a GET and drop its body; not followed. Give that address with --server")
        }
        if hops >= maxHops { return .refuse("\(what) more than \(maxHops) times; not followed further") }
        return .follow(next)
    }
}
