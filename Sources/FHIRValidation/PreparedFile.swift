import Crypto
import FHIRModel
import ParallelWork

/// A JSON file made ready for the validating thread by a worker: read, hashed, parsed, and the structure of its
/// resources checked (`ResourceChecker` needs nothing but the resource).
///
/// What remains for the validating thread is what depends on the other files: the identifier index, references,
/// duplicates, counts. It takes the worker's structure findings at the place where it would have checked the
/// resource itself, so the findings, and their order, are those of a run on one thread.
struct PreparedFile: Sendable {
    enum Reading: Sendable { case read, unreadable, tooLarge(Int) }

    let file: String
    var reading: Reading
    var tape = JSONTape()
    var parsed = false
    /// SHA-256 of the bytes read, when the manifest lists the file.
    var sha256: String?
    /// Structure checks done: a resource's by its token, a bundle envelope's (with its invariants) by `-1 - token`.
    var checked: [Int: CheckedStructure] = [:]
    /// The identifier hashes of the resources checked (`CheckedStructure.identifierHashes` ranges).
    var identifierHashes: [UInt128] = []

    /// Reads, hashes (with `digest`), parses (with `parse`) and checks (with `checkStructure`) `file` of `folder`.
    init(file: String, folder: String, digest: Bool, maxBytes: Int, parse: Bool = true, checkStructure: Bool = true) {
        self.file = file
        switch tape.read(folder + "/" + file, limit: maxBytes) {
        case .read: reading = .read
        case .unreadable: reading = .unreadable; return
        case .tooLarge(let size): reading = .tooLarge(size); return
        }
        if digest { sha256 = Hex.encode(SHA256.hash(data: tape.bytes)) }
        guard parse else { return }
        parsed = tape.parse()
        if parsed && checkStructure { checkBundle(0) }
    }

    /// The checks `ArtifactValidator.checkEntries` asks for, on a batch or transaction bundle and the transactions
    /// it holds; other shapes are left to the validating thread.
    private mutating func checkBundle(_ bundle: Int) {
        let tape = self.tape
        guard tape.kind(bundle) == .object, let type = tape.member(bundle, "resourceType"), tape.equals(type, "Bundle"),
              let kind = tape.member(bundle, "type"), tape.equals(kind, "batch") || tape.equals(kind, "transaction") else { return }
        let checker = ResourceChecker()
        var keys = IdentifierKeys()
        var done = CheckedStructure()
        checker.check(tape, root: bundle, pointerRoot: 0, file: file, line: nil, envelope: true, findings: &done.findings, references: &done.references)
        ArtifactValidator.checkInvariants(of: bundle, tape, file: file, into: &done.findings)
        checked[-1 - bundle] = done
        guard let list = tape.member(bundle, "entry"), tape.kind(list) == .array else { return }
        tape.forEachItem(list) { _, entry in
            guard let resource = tape.member(entry, "resource"), let request = tape.member(entry, "request"),
                  let method = tape.member(request, "method"), !tape.equals(method, "DELETE") else { return }
            if let url = tape.member(request, "url"), tape.equals(url, "/") {
                checkBundle(resource)
                return
            }
            var done = CheckedStructure()
            checker.check(tape, root: resource, pointerRoot: 0, file: file, line: nil, findings: &done.findings, references: &done.references)
            if let typeToken = tape.member(resource, "resourceType"), tape.kind(typeToken) == .string {
                let first = identifierHashes.count
                keys.hashes(tape, resource, typeToken: typeToken, into: &identifierHashes)
                done.identifierHashes = first..<identifierHashes.count
            }
            checked[resource] = done
        }
    }
}

/// What `ResourceChecker` found in one resource (or bundle envelope).
struct CheckedStructure: Sendable {
    var findings: [Finding] = []
    var references: [FoundReference] = []
    /// Its identifiers' hashes, in `PreparedFile.identifierHashes`.
    var identifierHashes: Range<Int>?
}

/// The JSON files of a validation, prepared ahead on worker threads, handed over in the order they are checked.
final class FilePreparation {
    private let map: OrderedParallelMap<Int, PreparedFile>

    init(files: [String], folder: String, digest: Set<String>, maxBytes: Int, threads: Int) {
        map = OrderedParallelMap(threads: threads, window: 2 * threads + 2, count: files.count) { i in
            PreparedFile(file: files[i], folder: folder, digest: digest.contains(files[i]), maxBytes: maxBytes)
        }
    }

    /// The next file, in the order given.
    func next() -> PreparedFile? { map.next() }

    func cancel() { map.cancel() }
}
