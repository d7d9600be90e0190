import Dispatch
import FHIRArtifacts
import Foundation
import ParallelWork
import Synchronization

// The validator's fed mode: bundle files checked as they are written, the rest once the folder is complete.
extension ArtifactValidator {
    /// Checks a bundle file of upload step `step` that its writer has just closed, before the manifest exists. The
    /// file is read back from disk (what a reviewer receives), and its SHA-256 kept for the manifest's check.
    func checkWritten(_ file: String, step: Int, prepared: PreparedFile? = nil) {
        if fedFiles.isEmpty {
            (limits, limitsOrigin) = options.effectiveLimits(manifest: nil)
            knownIdentifiers = options.knownIdentifiers
        }
        fedFiles.append(file)
        while stepTypeCounts.count <= step { stepTypeCounts.append(TypeCounts()) }
        let prepared = prepared ?? PreparedFile(file: file, folder: folder, digest: true, maxBytes: options.maxJSONBytes)
        if let sha256 = prepared.sha256 { writtenDigests[file] = (sha256, prepared.tape.bytes.count) }
        check(prepared, step: Int32(step))
    }

    /// Checks an NDJSON file (the mirror of the bundles) that its writer has closed once every bundle holding its
    /// resources was checked, so each line meets its twin.
    func checkWrittenNDJSON(_ file: String) {
        fedNDJSON.insert(file)
        scanNDJSON(file, mirror: true, step: nil, whileWritten: true)
    }

    func check(_ written: ValidationWhileWriting.Written, prepared: PreparedFile? = nil) {
        switch written {
        case .bundle(let file, let step): checkWritten(file, step: step, prepared: prepared)
        case .ndjson(let file): checkWrittenNDJSON(file)
        }
    }

    /// The rest of the validation, once the folder is complete: the manifest (and the checksums of the files
    /// checked while written), any bundle it lists that was not checked yet, then the passes after the bundles.
    func finishWritten() throws -> ValidationReport {
        let listing = try list()
        for (file, digest) in writtenDigests.sorted(by: { $0.key < $1.key }) where unverified[file] != nil {
            checkDigest(file, sha256: digest.sha256, size: digest.size)
        }
        let checked = Set(fedFiles)
        var rest = listing
        rest.steps = listing.steps.map { $0.filter { !checked.contains($0) } }
        try checkBundles(of: rest)
        return try finish(listing)
    }
}

/// Validates an artifact folder while it is written: each bundle file as soon as it is closed (on a thread of its
/// own when `options.threads` > 1, else on the writer's, at once), each NDJSON file once it and the bundles of its
/// resources are closed, the manifest and the cross-file checks when `finish()` is called. The findings are the
/// same, in the same order, whatever the number of threads; their order differs from `ArtifactValidator.run()`'s
/// (bundle findings come first), not the findings.
///
/// `convert` writes its steps one after the other, so the bundles come in upload order, as the validator's single
/// pass needs, and an NDJSON file is complete after the last step that writes its type; the validation costs the
/// conversion nothing but its share of the cores. Every file is read back from disk.
public final class ValidationWhileWriting: Sendable {
    /// A file of the folder, complete and closed.
    public enum Written: Sendable {
        /// A bundle of upload step `step`.
        case bundle(String, step: Int)
        /// An NDJSON mirror file, after every bundle that holds its resources.
        case ndjson(String)
    }

    private let files = WrittenFiles()
    private let done = DispatchSemaphore(value: 0)
    private let outcome = Mutex<Result<ValidationReport, any Error>?>(nil)
    /// The validator, when it runs on the writer's thread.
    private let inline: InlineValidator?

    private final class InlineValidator: Sendable {
        let validator: Mutex<ArtifactValidator>
        init(_ validator: sending ArtifactValidator) { self.validator = Mutex(validator) }
    }

    public init(folder: String, options: ValidationOptions) {
        guard options.threads > 1 else {
            inline = InlineValidator(ArtifactValidator(folder: folder, options: options))
            return
        }
        inline = nil
        let thread = Thread { [self] in
            let validator = ArtifactValidator(folder: folder, options: options)
            // Workers read, hash, parse and structure-check each bundle as it comes; this thread checks them in
            // order against the others.
            let workers = max(1, options.threads - 1)
            let prepared = OrderedParallelMap<Written, (Written, PreparedFile?)>(
                threads: workers, window: 2 * workers + 2, source: files, produce: { $0.take() }, workerState: { PreparationWorker() },
                work: { worker, written in
                    guard case .bundle(let file, _) = written else { return (written, nil) }
                    return (written, PreparedFile(file: file, folder: folder, digest: true, maxBytes: options.maxJSONBytes, worker: &worker))
                })
            while let (written, file) = prepared.next() { validator.check(written, prepared: file) }
            let result: Result<ValidationReport, any Error> = files.isAbandoned ? .failure(ValidationCancelled()) : Result { try validator.finishWritten() }
            outcome.withLock { $0 = result }
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// `file` (relative to the folder) is complete and closed.
    public func written(_ file: Written) {
        if let inline {
            inline.validator.withLock { $0.check(file) }
            return
        }
        files.post(file)
    }

    /// The folder is complete (manifest included): finishes the validation and returns its report.
    public func finish() throws -> ValidationReport {
        if let inline { return try inline.validator.withLock { try $0.finishWritten() } }
        files.close()
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// The folder will not be completed: stops the validation and waits for it (before the folder is removed).
    public func abandon() {
        guard inline == nil, files.abandon() else { return }
        done.wait()
    }
}

/// The files written and not yet taken by the validation; `take()` waits for the next.
private final class WrittenFiles: Sendable {
    private struct State {
        var files: [ValidationWhileWriting.Written] = []
        var head = 0
        var closed = false
        var abandoned = false
    }

    private let state = Mutex(State())
    private let posted = DispatchSemaphore(value: 0)

    func post(_ file: ValidationWhileWriting.Written) {
        state.withLock { $0.files.append(file) }
        posted.signal()
    }

    /// No more files will come.
    func close() {
        state.withLock { $0.closed = true }
        posted.signal()
    }

    /// Stops the validation: `take()` returns nil from now on. False when it was already closed or abandoned.
    func abandon() -> Bool {
        let running = state.withLock { s -> Bool in
            defer { s.abandoned = true }
            return !s.abandoned && !s.closed
        }
        posted.signal()
        return running
    }

    var isAbandoned: Bool { state.withLock { $0.abandoned } }

    /// The next file, waiting for it; nil once closed and all taken, or abandoned.
    func take() -> ValidationWhileWriting.Written? {
        while true {
            let (file, over) = state.withLock { s -> (ValidationWhileWriting.Written?, Bool) in
                if s.abandoned { return (nil, true) }
                if s.head < s.files.count {
                    defer { s.head += 1 }
                    return (s.files[s.head], false)
                }
                return (nil, s.closed)
            }
            if file != nil || over { return file }
            posted.wait()
        }
    }
}
