import Dispatch
import FHIRArtifacts
import Foundation
import Synchronization

// The validator's fed mode: bundle files checked as they are written, the rest once the folder is complete.
extension ArtifactValidator {
    /// Checks a bundle file of upload step `step` that its writer has just closed, before the manifest exists. The
    /// file is read back from disk (what a reviewer receives), and its SHA-256 kept for the manifest's check.
    func checkWritten(_ file: String, step: Int) {
        if fedFiles.isEmpty {
            (limits, limitsOrigin) = options.effectiveLimits(manifest: nil)
            knownIdentifiers = options.knownIdentifiers
        }
        fedFiles.append(file)
        while stepTypeCounts.count <= step { stepTypeCounts.append(TypeCounts()) }
        let prepared = PreparedFile(file: file, folder: folder, digest: true, maxBytes: options.maxJSONBytes, checkStructure: false)
        if let sha256 = prepared.sha256 { writtenDigests[file] = (sha256, prepared.tape.bytes.count) }
        check(prepared, step: Int32(step))
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
/// own when `options.threads` > 1, else on the writer's, at once), the NDJSON files, manifest and cross-file
/// checks when `finish()` is called. The findings are the same, in the same order, whatever the number of threads;
/// the order differs from `ArtifactValidator.run()`'s (bundle findings come first), not the findings.
///
/// `convert` writes its steps one after the other, so the bundles come in upload order, as the validator's single
/// pass needs; the validation costs the conversion nothing but its share of the cores.
public final class ValidationWhileWriting: Sendable {
    private struct Queue {
        var files: [(file: String, step: Int)] = []
        var closed = false
        var abandoned = false
    }

    private let queue = Mutex(Queue())
    private let posted = DispatchSemaphore(value: 0)
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
            while true {
                posted.wait()
                let (files, closed, abandoned) = queue.withLock { q in
                    defer { q.files.removeAll() }
                    return (q.files, q.closed, q.abandoned)
                }
                if abandoned { break }
                for (file, step) in files { validator.checkWritten(file, step: step) }
                if closed {
                    let result = Result { try validator.finishWritten() }
                    outcome.withLock { $0 = result }
                    break
                }
            }
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Bundle file `file` (relative to the folder) of upload step `step` is complete and closed.
    public func written(_ file: String, step: Int) {
        if let inline {
            inline.validator.withLock { $0.checkWritten(file, step: step) }
            return
        }
        queue.withLock { $0.files.append((file, step)) }
        posted.signal()
    }

    /// The folder is complete (manifest included): finishes the validation and returns its report.
    public func finish() throws -> ValidationReport {
        if let inline { return try inline.validator.withLock { try $0.finishWritten() } }
        queue.withLock { $0.closed = true }
        posted.signal()
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// The folder will not be completed: stops the validation and waits for it (before the folder is removed).
    public func abandon() {
        guard inline == nil else { return }
        let running = queue.withLock { q -> Bool in
            defer { q.abandoned = true }
            return !q.abandoned && !q.closed
        }
        guard running else { return }
        posted.signal()
        done.wait()
    }
}
