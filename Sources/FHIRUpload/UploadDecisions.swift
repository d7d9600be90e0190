/// Where one request stands: which of its entries are left, which to send next, and what an answer means.
///
/// A plain value, so its rules are tested without a network: a batch resends only its entries that failed
/// retryably; a transaction is resent whole (what is left of it); a transaction that fhirbundle made up itself
/// (`divisible`: entries grouped only to have the server resolve their references) and that the server refuses
/// as a whole is then sent entry by entry, so that one bad entry does not fail the others.
struct RequestProgress: Sendable {
    let entryCount: Int
    let isTransaction: Bool
    let divisible: Bool
    /// Entries not settled yet, in order.
    private(set) var remaining: [Int]
    /// Sending one entry per request (after a divisible transaction was refused whole).
    private(set) var perEntry = false
    /// Attempts at the current entries (reset for each entry when sending one by one).
    private(set) var attempt = 0
    private(set) var lastProblem = ""
    private var current: Int?

    init(entryCount: Int, alreadyWritten: Set<Int>, isTransaction: Bool, divisible: Bool) {
        self.entryCount = entryCount
        self.isTransaction = isTransaction
        self.divisible = divisible
        remaining = (0..<entryCount).filter { !alreadyWritten.contains($0) }
    }

    var isDone: Bool { remaining.isEmpty }

    /// The entries to send in the next attempt.
    mutating func nextAttempt() -> [Int] {
        let sent = perEntry ? [remaining[0]] : remaining
        if perEntry && current != sent[0] {
            current = sent[0]
            attempt = 0
        }
        attempt += 1
        return sent
    }

    /// An attempt cut short to fit the server's quota was settled: the next part is a new attempt, not a retry.
    mutating func partSettled() {
        attempt = 0
    }

    /// What the server answered to an attempt.
    enum Answer {
        /// No usable answer (connection error, timeout, a body that is not the response bundle): retry.
        case none(problem: String)
        /// An answer for each entry sent, in order.
        case outcomes([EntryOutcome])
        /// The whole request refused for good, with the server's issues.
        case refused(status: Int, issues: [String])
    }

    /// What to do with an answer: outcomes to journal, entries that succeeded and entries that failed for good.
    struct Settlement {
        var journal: [(index: Int, outcome: EntryOutcome)] = []
        var succeeded: [(index: Int, outcome: EntryOutcome)] = []
        var failed: [(index: Int, outcome: EntryOutcome)] = []
        /// The transaction was refused whole and is now sent entry by entry: resend at once.
        var split = false
    }

    mutating func receive(_ answer: Answer, for sent: [Int]) -> Settlement {
        var settlement = Settlement()
        switch answer {
        case .none(let problem):
            lastProblem = problem
            return settlement
        case .refused(let status, let issues):
            lastProblem = "HTTP \(status)" + issues.map { "; " + $0 }.joined()
            if divisible && isTransaction && sent.count > 1 {
                // Refused as a whole: which entry is at fault is found by sending them one by one.
                perEntry = true
                settlement.split = true
                return settlement
            }
            let outcome = EntryOutcome(status: status, location: nil, issues: issues)
            settlement.journal = sent.map { ($0, outcome) }
            settlement.failed = settlement.journal
        case .outcomes(let outcomes):
            settlement.journal = zip(sent, outcomes).map { ($0, $1) }
            settlement.succeeded = settlement.journal.filter { $0.outcome.succeeded }
            settlement.failed = settlement.journal.filter { !$0.outcome.succeeded && !$0.outcome.isRetryable }
            if let retryable = outcomes.first(where: { $0.isRetryable }) { lastProblem = "the entry's status was \(retryable.status)" }
        }
        let settled = Set(settlement.succeeded.map(\.index) + settlement.failed.map(\.index))
        remaining.removeAll { settled.contains($0) }
        return settlement
    }

    /// The entries of the last attempt that are given up on (attempts exhausted), as failures with the last problem.
    mutating func giveUp(_ sent: [Int]) -> [(index: Int, outcome: EntryOutcome)] {
        let outcome = EntryOutcome(status: 0, location: nil, issues: ["gave up after \(attempt) attempts; last: \(lastProblem)"])
        let given = Set(sent)
        remaining.removeAll { given.contains($0) }
        return sent.map { ($0, outcome) }
    }
}

/// Which requests of a step may be in flight together: at most `concurrency`, and never two that write the same
/// identifier (a server can create duplicates when two conditional updates of one identifier race). Requests
/// start in plan order; one held back by a conflict starts as soon as the conflict ends.
struct StepScheduler: Sendable {
    private var pending: ArraySlice<UploadRequest>
    private var waiting: [UploadRequest] = []
    private var inFlight: [Int: Set<UInt128>] = [:]
    private var nextID = 0
    let concurrency: Int

    init(_ requests: [UploadRequest], concurrency: Int) {
        pending = requests[...]
        self.concurrency = max(1, concurrency)
    }

    var isIdle: Bool { inFlight.isEmpty }
    var isFinished: Bool { inFlight.isEmpty && pending.isEmpty && waiting.isEmpty }

    /// The next request to start now, with its ticket for `finished`, or nil when none may start.
    mutating func start() -> (ticket: Int, request: UploadRequest)? {
        guard inFlight.count < concurrency else { return nil }
        let busy = inFlight.values.reduce(into: Set<UInt128>()) { $0.formUnion($1) }
        var chosen: UploadRequest?
        if let i = waiting.firstIndex(where: { busy.isDisjoint(with: $0.writes) }) {
            chosen = waiting.remove(at: i)
        } else {
            while let r = pending.popFirst() {
                if busy.isDisjoint(with: r.writes) {
                    chosen = r
                    break
                }
                waiting.append(r)
            }
        }
        guard let chosen else { return nil }
        let ticket = nextID
        nextID += 1
        inFlight[ticket] = Set(chosen.writes)
        return (ticket, chosen)
    }

    mutating func finished(_ ticket: Int) {
        inFlight[ticket] = nil
    }
}
