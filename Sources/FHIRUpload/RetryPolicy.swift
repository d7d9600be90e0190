/// When and how long to wait before resending a request.
///
/// Connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff and full jitter; a server's
/// `Retry-After` wins, and so does the reset time of Medplum's `RateLimit` header (draft-ietf-httpapi-ratelimit-
/// headers: `"requests";r=0;t=60`), since Medplum sends no `Retry-After` on 429. A server that asks for more than
/// `maxServerWait` is not waited for: the run stops and says so, rather than stalling silently.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    /// First backoff, in seconds; doubles each attempt up to `maxDelay`.
    public var baseDelay: Double
    public var maxDelay: Double
    /// The longest wait a server may ask for (`Retry-After`, `RateLimit`), in seconds.
    public var maxServerWait: Double

    public init(maxAttempts: Int = 8, baseDelay: Double = 0.5, maxDelay: Double = 60, maxServerWait: Double = 300) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxServerWait = maxServerWait
    }

    /// What to do after a failed attempt.
    public enum Decision: Equatable, Sendable {
        /// Wait this many seconds, then resend; `serverAsked` when the server's headers set the wait.
        case retry(after: Double, serverAsked: Bool)
        /// Every attempt has been made.
        case exhausted
        /// The server asks for a wait longer than `maxServerWait` (seconds asked).
        case serverWaitTooLong(Double)
    }

    /// Whether an HTTP status is worth retrying (the request may succeed later unchanged).
    public static func isRetryable(status: Int) -> Bool {
        status == 408 || status == 429 || (500...599).contains(status)
    }

    /// The decision after attempt `attempt` (counting from 1). `random` gives a value in 0..<1 (injected so tests
    /// are deterministic).
    public func decision(afterAttempt attempt: Int, headers: [(name: String, value: String)] = [],
                         random: () -> Double = { Double.random(in: 0..<1) }) -> Decision {
        guard attempt < maxAttempts else { return .exhausted }
        if let serverDelay = RetryPolicy.serverDelay(headers) {
            return serverDelay > maxServerWait ? .serverWaitTooLong(serverDelay) : .retry(after: serverDelay, serverAsked: true)
        }
        let exponential = min(maxDelay, baseDelay * Double(1 << min(attempt - 1, 30)))
        return .retry(after: exponential * random(), serverAsked: false)  // full jitter: spreads concurrent workers apart
    }

    /// Seconds to wait before attempt `attempt + 1`, or nil when the request should not be resent.
    public func delay(afterAttempt attempt: Int, headers: [(name: String, value: String)] = [],
                      random: () -> Double = { Double.random(in: 0..<1) }) -> Double? {
        if case .retry(let seconds, _) = decision(afterAttempt: attempt, headers: headers, random: random) { return seconds }
        return nil
    }

    /// The wait a response asks for: `Retry-After` (seconds), else the largest reset among exhausted `RateLimit`
    /// policies.
    public static func serverDelay(_ headers: [(name: String, value: String)]) -> Double? {
        for (name, value) in headers where name.lowercased() == "retry-after" {
            if let seconds = Double(value.trimmingSpaces), seconds >= 0 { return seconds }
        }
        var wait: Double?
        for (name, value) in headers where name.lowercased() == "ratelimit" {
            for policy in RateLimitPolicy.parse(value) where policy.remaining <= 0 {
                wait = max(wait ?? 0, Double(policy.secondsUntilReset))
            }
        }
        return wait
    }
}

/// One policy of a `RateLimit` header: `"requests";r=0;t=60`.
public struct RateLimitPolicy: Sendable, Equatable {
    public var name: String
    public var remaining: Int
    public var secondsUntilReset: Int

    public init(name: String, remaining: Int, secondsUntilReset: Int) {
        self.name = name
        self.remaining = remaining
        self.secondsUntilReset = secondsUntilReset
    }

    /// Parses a `RateLimit` field value (a list of policies); malformed items are skipped.
    public static func parse(_ value: String) -> [RateLimitPolicy] {
        var out: [RateLimitPolicy] = []
        for item in value.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingSpaces }
            guard let first = parts.first, !first.isEmpty else { continue }
            let name = first.hasPrefix("\"") && first.hasSuffix("\"") && first.count >= 2 ? String(first.dropFirst().dropLast()) : first
            var remaining: Int?
            var reset = 0
            for p in parts.dropFirst() {
                let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2, let n = Int(kv[1]) else { continue }
                if kv[0] == "r" { remaining = n }
                if kv[0] == "t" { reset = n }
            }
            if let remaining { out.append(RateLimitPolicy(name: name, remaining: remaining, secondsUntilReset: reset)) }
        }
        return out
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
