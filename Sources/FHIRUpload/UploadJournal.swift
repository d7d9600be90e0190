import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The uploader's memory across runs, for one server (`UploadTarget`): an append-only, fsync'd (group commit, see
/// `record`) NDJSON file in the target's folder (`DIR/upload/<target>/journal.ndjson`) recording each request's
/// entry outcomes.
///
/// A rerun skips entries that succeeded, so killing the uploader at any moment loses at most the requests in
/// flight, and those are safe to resend: every write is a conditional update. A torn last line (a kill during a
/// write) is ignored. Credentials and resource contents are never written here.
public final class UploadJournal: @unchecked Sendable {  // state behind `lock`
    public static let fileName = "journal.ndjson"

    public let path: String
    private let lock = NSLock()
    private var fd: Int32
    /// Request id → indexes of entries that succeeded.
    private var succeeded: [String: Set<Int>] = [:]
    /// Request id → entries that failed permanently, with their outcome.
    private var failed: [String: [Int: EntryOutcome]] = [:]
    /// Request id → the asynchronous job submitted for it and not known to have ended, with the entries it holds.
    private var pendingJobs: [String: PendingJob] = [:]

    /// An asynchronous batch job (`fhirupload --async`): its status URL and the request's entries it was sent.
    public struct PendingJob: Sendable, Equatable {
        public var url: String
        public var entries: [Int]
    }

    /// Opens (or creates) the journal in `directory` (a target's folder) and reads what earlier runs recorded.
    /// `exclusive` (an upload) locks it, so that two uploaders never work on one folder and server at once (they
    /// would race on the same identifiers); the lock goes with the process, however it ends.
    public init(directory: String, exclusive: Bool = true) throws {
        path = directory + "/" + UploadJournal.fileName
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw UploadError.journal(path: directory, message: "the folder cannot be created (\(Self.reason(error))); give the journal another place with --journal-dir")
        }
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if fd < 0 { throw UploadError.journal(path: path, message: String(cString: strerror(errno))) }
        if exclusive && flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            close(fd)
            throw busy ? UploadError.busy(folder: directory) : UploadError.journal(path: path, message: reason)
        }
        if let data = FileManager.default.contents(atPath: path) {
            for line in data.split(separator: 0x0A) {
                guard let record = try? JSONParser.parse(Array(line)) else { continue }  // a torn last line
                apply(record)
            }
            // End a torn last line, so the next record starts on a line of its own.
            if let last = data.last, last != 0x0A {
                var newline: UInt8 = 0x0A
                _ = write(fd, &newline, 1)
            }
        }
    }

    deinit {
        if unsynced { fsync(fd) }
        close(fd)
    }

    /// Forgets every earlier run (`--restart`): safe, because a replay of conditional updates changes nothing.
    public func restart() throws {
        lock.lock()
        defer { lock.unlock() }
        if ftruncate(fd, 0) != 0 { throw UploadError.journal(path: path, message: String(cString: strerror(errno))) }
        succeeded = [:]
        failed = [:]
        pendingJobs = [:]
    }

    /// The job an earlier run submitted for `request` and did not see end: a rerun polls it instead of sending
    /// the entries again.
    public func pendingJob(of request: String) -> PendingJob? {
        lock.withLock { pendingJobs[request] }
    }

    /// Records, as soon as the server names it, the job that now holds `entries` of `request`; synced at once.
    public func recordJob(request: String, url: String, entries: [Int]) throws {
        try append(.object([JSONMember("request", .string(request)), JSONMember("job", .string(url)),
                            JSONMember("entries", .array(Self.ranges(entries).map { .array([.number(String($0.lowerBound)), .number(String($0.upperBound))]) }))]),
                   sync: true)
    }

    /// Records that the job at `url` ended (completed, failed, cancelled or unknown to the server): not polled again.
    public func recordJobEnded(request: String, url: String, how: String) throws {
        try append(.object([JSONMember("request", .string(request)), JSONMember("jobEnded", .string(url)), JSONMember("how", .string(how))]), sync: false)
    }

    /// `[0, 1, 2, 5]` → `[0..<3, 5..<6]`: a job's entries, short in the journal.
    static func ranges(_ indexes: [Int]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        for i in indexes {
            if let last = out.last, last.upperBound == i { out[out.count - 1] = last.lowerBound..<(i + 1) } else { out.append(i..<(i + 1)) }
        }
        return out
    }

    /// How many entries earlier runs wrote, over all requests.
    public var succeededCount: Int {
        lock.withLock { succeeded.values.reduce(0) { $0 + $1.count } }
    }

    /// Indexes of the entries of `request` that an earlier run already wrote.
    public func succeededEntries(of request: String) -> Set<Int> {
        lock.lock()
        defer { lock.unlock() }
        return succeeded[request] ?? []
    }

    /// Entries of `request` that failed permanently in the last run that tried them.
    public func failedEntries(of request: String) -> [Int: EntryOutcome] {
        lock.lock()
        defer { lock.unlock() }
        return failed[request] ?? [:]
    }

    /// Longest time a record stays unsynced. A group commit: one fsync covers every record since the last one.
    static let syncInterval = 0.05
    private var lastSync = Date()
    private var unsynced = false

    /// Forces every record to disk (the uploader calls it at the end of each step and of the run).
    public func sync() throws {
        lock.lock()
        defer { lock.unlock() }
        try syncLocked()
    }

    private func syncLocked() throws {
        guard unsynced else { return }
        if fsync(fd) != 0 { throw UploadError.journal(path: path, message: String(cString: strerror(errno))) }
        unsynced = false
        lastSync = Date()
    }

    /// Appends the outcomes of one attempt at `request`. The record is written at once, so a killed process loses
    /// nothing; it is fsync'd together with the records around it (at most `syncInterval` after the previous fsync,
    /// and at the end of each step), so a power failure loses at most the last few records: their entries are then
    /// sent again, which is harmless since every write is a conditional update.
    public func record(request: String, outcomes: [(index: Int, outcome: EntryOutcome)]) throws {
        let record = JSONValue.object([
            JSONMember("request", .string(request)),
            JSONMember("entries", .array(outcomes.map { item in
                var m = [JSONMember("index", .number(String(item.index))), JSONMember("status", .number(String(item.outcome.status)))]
                if let location = item.outcome.location { m.append(JSONMember("location", .string(location))) }
                if !item.outcome.issues.isEmpty { m.append(JSONMember("issues", .array(item.outcome.issues.map { .string($0) }))) }
                return .object(m)
            })),
        ])
        try append(record, sync: false)
    }

    /// Writes one record at once; fsync'd now with `sync`, else with the group commit.
    private func append(_ record: JSONValue, sync: Bool) throws {
        var bytes = JSONWriter().bytes(record)
        bytes.append(0x0A)
        lock.lock()
        defer { lock.unlock() }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        guard written == bytes.count else { throw UploadError.journal(path: path, message: String(cString: strerror(errno))) }
        unsynced = true
        if sync || Date().timeIntervalSince(lastSync) >= Self.syncInterval { try syncLocked() }
        apply(record)
    }

    private func apply(_ record: JSONValue) {
        guard let request = record["request"]?.stringValue else { return }
        if let url = record["job"]?.stringValue {
            var entries: [Int] = []
            for pair in record["entries"]?.arrayValue ?? [] {
                guard let bounds = pair.arrayValue, bounds.count == 2, case .number(let a) = bounds[0], case .number(let b) = bounds[1],
                      let lower = Int(a), let upper = Int(b), lower <= upper else { continue }
                entries += Array(lower..<upper)
            }
            pendingJobs[request] = PendingJob(url: url, entries: entries)
            return
        }
        if let url = record["jobEnded"]?.stringValue {
            if pendingJobs[request]?.url == url { pendingJobs[request] = nil }
            return
        }
        for entry in record["entries"]?.arrayValue ?? [] {
            guard case .number(let i)? = entry["index"], let index = Int(i), case .number(let s)? = entry["status"], let status = Int(s) else { continue }
            let outcome = EntryOutcome(status: status, location: entry["location"]?.stringValue,
                                       issues: entry["issues"]?.arrayValue?.compactMap(\.stringValue) ?? [])
            if outcome.succeeded {
                succeeded[request, default: []].insert(index)
                failed[request]?[index] = nil
            } else if !outcome.isRetryable {
                failed[request, default: [:]][index] = outcome
            }
        }
    }
}

extension UploadJournal {
    /// A file system error in plain words ("Read-only file system"), not Foundation's domain and code.
    static func reason(_ error: any Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        if ns.domain == NSCocoaErrorDomain && ns.code == NSFileWriteVolumeReadOnlyError { return "the volume is read-only" }
        if ns.domain == NSCocoaErrorDomain && ns.code == NSFileWriteNoPermissionError { return "permission denied" }
        return ns.localizedDescription
    }
}

/// Why an upload cannot go on.
public enum UploadError: Error, CustomStringConvertible {
    case journal(path: String, message: String)
    case plan(file: String, message: String)
    case busy(folder: String)
    /// A bundle's bytes changed after the upload started; it was not sent.
    case changed(file: String, why: String)

    public var description: String {
        switch self {
        case .busy(let folder): return "another fhirupload is uploading this folder to the same server right now (journal \(folder)); wait for it to end (two at once would race on the same identifiers)"
        case .journal(let path, let message): return "\(path): the journal cannot be written: \(message)"
        case .plan(let file, let message): return "\(file): \(message)"
        case .changed(let file, let why):
            return "\(file) changed after the upload started: \(why). It was not sent; the run stopped. Restore or regenerate the folder, then run the same command again (what was written is in the journal)."
        }
    }
}
