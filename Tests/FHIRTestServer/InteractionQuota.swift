import Foundation

/// Medplum's FHIR interaction quota, scaled for tests: `points` per client per fixed window of `windowSeconds`.
///
/// What Medplum does, from its source (medplum/medplum, `packages/server/src/fhir/fhirquota.ts`, class
/// `FhirRateLimiter`; `packages/server/src/config/utils.ts`, `addDefaults`; `packages/fhir-router/src/repo.ts`):
/// - the default is `defaultFhirQuota = 50_000` points per user (membership) per 60 s (`RateLimiterRedis`,
///   `duration: 60`: a fixed window from the first use);
/// - `recordRead` costs 1, `recordSearch` 20, `recordWrite` 100 (create, update, delete, patch);
/// - a conditional update pays for its search too: `FhirRepository.conditionalUpdate` calls `searchResources`
///   (20) and then `updateResource`/`createResource` (100), and inside a batch `resolveModificationIdentity` runs
///   the search while preprocessing, so each conditional-update entry costs 120 points;
/// - every FHIR response carries `RateLimit: "fhirInteractions";r=REMAINING;t=SECONDS` (`attachRateLimitHeader`,
///   set in `fhir/routes.ts`), with no `Retry-After` and no `RateLimit-Policy`, 429s included;
/// - once the points are spent, `BatchProcessor.processNextEntry` (`fhir-router/src/batch.ts`) answers the failing
///   entry and every later entry of the batch with 429 and a `throttled` OperationOutcome, the batch itself 200;
///   a transaction, or a single request, is 429 as a whole;
/// - inside an asynchronous batch job the context is `async: true` and `consume` only sleeps: the job's entries
///   are not charged. The kickoff is a write (the AsyncJob, 100) and each status poll a read (1).
public struct InteractionQuota: Sendable {
    public var points: Int
    public var windowSeconds: Double

    public init(points: Int = 50_000, windowSeconds: Double = 60) {
        self.points = points
        self.windowSeconds = windowSeconds
    }

    public static let readCost = 1
    public static let searchCost = 20
    public static let writeCost = 100
    /// A conditional update or delete: the search that finds the target, then the write.
    public static let conditionalWriteCost = searchCost + writeCost
}

/// The points each client spent in its current window. Not thread-safe: used under the server's lock.
final class QuotaLedger {
    let quota: InteractionQuota
    private var windows: [String: (start: Date, used: Int)] = [:]
    /// Entries and requests refused because the quota was spent.
    private(set) var throttled = 0

    init(quota: InteractionQuota) {
        self.quota = quota
    }

    /// Spends `points` of `key`'s window; false (and nothing done) when they are spent already. As Medplum's
    /// limiter does, the points of a refused charge are still counted.
    func charge(_ key: String, _ points: Int, now: Date = Date()) -> Bool {
        var window = current(key, now: now)
        window.used += points
        windows[key] = window
        if window.used > quota.points {
            throttled += 1
            return false
        }
        return true
    }

    /// Counts an entry answered 429 because an earlier one found the quota spent.
    func countThrottled() {
        throttled += 1
    }

    /// `"fhirInteractions";r=…;t=…` for `key` now.
    func header(_ key: String, now: Date = Date()) -> String {
        let window = current(key, now: now)
        let remaining = max(0, quota.points - window.used)
        let reset = Int((window.start.addingTimeInterval(quota.windowSeconds).timeIntervalSince(now)).rounded(.up))
        return "\"fhirInteractions\";r=\(remaining);t=\(max(reset, 0))"
    }

    private func current(_ key: String, now: Date) -> (start: Date, used: Int) {
        if let window = windows[key], now.timeIntervalSince(window.start) < quota.windowSeconds { return window }
        return (now, 0)
    }
}
