import Foundation

/// Sends just fast enough for a server's interaction quota, so that a steady run never meets a 429.
///
/// Medplum answers every FHIR request with `RateLimit: "fhirInteractions";r=REMAINING;t=SECONDS` (points left in
/// a fixed window, and when it resets) and charges 120 points for a conditional update (a search and a write).
/// Each request asks `admit` for the points it is expected to cost: it goes at once while the points left, less
/// those of requests still in flight, cover it; otherwise it waits for answers in flight, or for the window to
/// reset. A server that sends no `fhirInteractions` policy is never paced.
actor QuotaPacer {
    static let policyName = "fhirInteractions"

    /// Points left in the window, as last reported, and when the window resets.
    private var remaining: Int?
    private var resetAt = Date.distantPast
    /// Points of the requests admitted and not answered yet.
    private var inFlight = 0
    /// The most points seen left in a window: what a fresh window holds at least.
    private var windowPoints: Int?
    /// Points one entry costs: Medplum's conditional update, raised when a request alone in flight measures more or
    /// entries meet a 429 (never lowered: an underestimate is what causes 429s).
    private(set) var pointsPerEntry = 120.0
    /// Seconds requests spent waiting for the quota, summed over requests.
    private(set) var waited = 0.0
    /// Whether an answer told yet if the server has a quota: until then one request goes at a time.
    private var known = false
    private var quota = false

    /// The points a request writing `entries` resources is expected to cost.
    func estimate(entries: Int) -> Int {
        Int((Double(entries) * pointsPerEntry).rounded(.up))
    }

    /// Waits until `points` can be spent without exceeding the quota; returns them, to be given back to `settle`.
    func admit(points: Int) async throws -> Int {
        let started = Date()
        defer { waited += Date().timeIntervalSince(started) }
        while true {
            if !known && inFlight > 0 {
                try await Task.sleep(nanoseconds: 20_000_000)  // the first answer says whether there is a quota
                continue
            }
            guard known, quota, let left = remaining else {
                inFlight += points
                return points
            }
            let now = Date()
            if now >= resetAt {
                // A new window: one request goes, and its answer tells what the window holds.
                if inFlight == 0 {
                    inFlight += points
                    return points
                }
                try await Task.sleep(nanoseconds: 20_000_000)
                continue
            }
            if left - inFlight >= points || (inFlight == 0 && points > (windowPoints ?? 0)) {
                inFlight += points
                return points
            }
            let pause = inFlight > 0 ? 0.02 : max(0.02, resetAt.timeIntervalSince(now) + 0.05)
            try await Task.sleep(nanoseconds: UInt64(min(pause, 60) * 1_000_000_000))
        }
    }

    /// The answer to a request admitted with `points` (`headers` empty when it got none) and what it says of the
    /// quota; `points` 0 for a request that was not admitted (a poll), whose answer still reports the quota.
    func settle(points: Int, entries: Int, headers: [(name: String, value: String)]) {
        let alone = inFlight == points
        inFlight = max(0, inFlight - points)
        let policy = Self.policy(headers)
        if !known && !headers.isEmpty {
            known = true
            quota = policy != nil
        }
        guard let policy else { return }
        quota = true
        known = true
        // Two reports measure a cost only when both surely fall in one window (`t` is rounded up to whole seconds).
        let previous = Date() < resetAt.addingTimeInterval(-1) ? remaining : nil
        if let left = remaining, Date() < resetAt {
            // Same window as far as we know: answers can come out of order, so the lowest count holds.
            remaining = min(left, policy.remaining)
        } else {
            remaining = policy.remaining
            resetAt = Date().addingTimeInterval(Double(policy.secondsUntilReset))
        }
        windowPoints = max(windowPoints ?? 0, policy.remaining)
        if alone, entries > 0, let previous, previous > policy.remaining {
            let measured = Double(previous - policy.remaining) / Double(entries)
            if measured > pointsPerEntry { pointsPerEntry = measured }
        }
    }

    /// How many of the entries (resources per entry, in order) can be sent now: those the points left in this
    /// window cover, or, when not even one is covered, those a fresh window will (at least one); nil when no quota
    /// is known.
    func entriesFitting(_ resourcesPerEntry: [Int]) -> Int? {
        guard quota, let windowPoints else { return nil }
        let live = Date() < resetAt ? (remaining ?? windowPoints) - inFlight : windowPoints
        let first = Double(resourcesPerEntry.first ?? 0) * pointsPerEntry
        let budget = Double(live) >= first ? Double(live) : Double(windowPoints)
        var points = 0.0
        for (n, resources) in resourcesPerEntry.enumerated() {
            points += Double(resources) * pointsPerEntry
            if points > budget { return max(1, n) }
        }
        return resourcesPerEntry.count
    }

    /// Entries met a 429 although they were admitted: the cost per entry was underestimated.
    func throttled() {
        pointsPerEntry *= 1.25
    }

    /// The `fhirInteractions` policy of a response's `RateLimit` headers.
    static func policy(_ headers: [(name: String, value: String)]) -> RateLimitPolicy? {
        for (name, value) in headers where name.lowercased() == "ratelimit" {
            if let policy = RateLimitPolicy.parse(value).first(where: { $0.name == policyName }) { return policy }
        }
        return nil
    }
}
