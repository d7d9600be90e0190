import Crypto
import FHIRModel
import ParallelWork

/// A JSON file made ready for the validating thread by a worker: read, hashed, parsed, and what its checks need
/// that depends on the file alone worked out (`BundleFacts`: the structure of its resources, their identifier hashes,
/// their references classified, their fullUrls).
///
/// What remains for the validating thread is what depends on the other files: the identifier index, references,
/// duplicates, counts. It takes the facts at the place where it would have worked them out, so the findings, and
/// their order, are those of a run on one thread.
struct PreparedFile: Sendable {
    enum Reading: Sendable { case read, unreadable, tooLarge(Int) }

    let file: String
    var reading: Reading
    var tape = JSONTape()
    var parsed = false
    /// SHA-256 of the bytes read, when the manifest lists the file.
    var sha256: String?
    /// The facts of its batch or transaction bundles, when prepared.
    var facts = BundleFacts()

    /// Reads, hashes (with `digest`), parses and prepares `file` of `folder` on a worker (with its tables and
    /// buffers, `worker`). `twins`: its bundles have NDJSON mirror lines (a folder with a manifest).
    init(file: String, folder: String, digest: Bool, maxBytes: Int, parse: Bool = true, twins: Bool = true, worker: inout PreparationWorker) {
        self.init(file: file, folder: folder, digest: digest, maxBytes: maxBytes, parse: parse)
        if parsed { facts.prepareFile(tape, file: file, twins: twins, worker: &worker) }
    }

    /// Reads, hashes (with `digest`) and parses (with `parse`) `file` of `folder`; the validating thread prepares its
    /// bundles as it checks them (see `ArtifactValidator.bundleFacts`).
    init(file: String, folder: String, digest: Bool, maxBytes: Int, parse: Bool = true) {
        self.file = file
        switch tape.read(folder + "/" + file, limit: maxBytes) {
        case .read: reading = .read
        case .unreadable: reading = .unreadable; return
        case .tooLarge(let size): reading = .tooLarge(size); return
        }
        if digest { sha256 = Hex.encode(SHA256.hash(data: tape.bytes)) }
        guard parse else { return }
        parsed = tape.parse()
    }
}

/// The JSON files of a validation, prepared ahead on worker threads, handed over in the order they are checked.
final class FilePreparation {
    private let map: OrderedParallelMap<Int, PreparedFile>

    init(files: [String], folder: String, digest: Set<String>, maxBytes: Int, twins: Bool, threads: Int) {
        map = OrderedParallelMap(threads: threads, window: 2 * threads + 2, count: files.count, workerState: { PreparationWorker() }) { worker, i in
            PreparedFile(file: files[i], folder: folder, digest: digest.contains(files[i]), maxBytes: maxBytes, twins: twins, worker: &worker)
        }
    }

    /// The next file, in the order given.
    func next() -> PreparedFile? { map.next() }

    func cancel() { map.cancel() }
}
