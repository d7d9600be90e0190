import FHIRModel
import Foundation

// The NDJSON mirror of the bundles (folders with a manifest): each line is compared with its bundle twin, so that
// only what the twin's check did not cover is checked again.
extension ArtifactValidator {
    /// The bundle resources of one type, in bundle order, as their mirror lines should be. The converter writes both
    /// in the same order, so line n of a type is compared with its n-th resource, found without a table of every
    /// resource (a line out of order is checked whole, which costs only time). 64-bit hashes suffice: a line is
    /// compared with one twin, not looked up among millions.
    struct MirrorTwins {
        var hashes: [UInt64] = []
        /// The resources with urn:uuid references, in order: their mirror lines name the targets otherwise (by
        /// identifier), so only those references differ. `masked`: the hash of the bytes around them.
        var withURNs: [(position: Int32, masked: UInt64, references: Range<Int32>)] = []
        /// The next line's position, and the next of `withURNs` it may be.
        var position = 0
        var urnCursor = 0
    }

    /// A urn reference of a twin: its token's offset from the resource's, and its element's target types.
    struct TwinReference {
        let offset: Int32
        let targets: Int32
    }

    /// Records the bundle resource at token `resource`, checked with `references` found in it.
    func recordTwin(_ resource: Int, type: Int32, references: [FoundReference]) {
        let tape = self.tape
        let t = Int(type)
        mirrorTwins[t].hashes.append(UInt64(truncatingIfNeeded: tape.hashOfBytes(resource)))
        var urns = references.filter { tape.hasPrefix($0.token, "urn:") }
        guard !urns.isEmpty else { return }
        urns.sort { $0.token < $1.token }
        let start = Int32(twinReferences.count)
        for r in urns { twinReferences.append(TwinReference(offset: Int32(r.token - resource), targets: r.targets)) }
        let masked = maskedHash(tape, resource, twinReferences[Int(start)...].lazy.map { resource + Int($0.offset) })
        mirrorTwins[t].withURNs.append((Int32(mirrorTwins[t].hashes.count - 1), masked, start..<Int32(twinReferences.count)))
    }

    /// The hash of a resource's bytes without the values of string tokens `skipped` (in order).
    private func maskedHash(_ tape: JSONTape, _ resource: Int, _ skipped: some Sequence<Int>) -> UInt64 {
        var h: UInt64 = 0
        var from = tape.start(resource)
        for token in skipped {
            h = (h ^ UInt64(truncatingIfNeeded: tape.hashOfBytes(from..<tape.start(token)))) &* 0x9E37_79B9_7F4A_7C15
            from = tape.end(token)
        }
        return (h ^ UInt64(truncatingIfNeeded: tape.hashOfBytes(from..<tape.end(resource)))) &* 0x9E37_79B9_7F4A_7C15
    }

    /// Checks the mirror line on the tape (a resource of `type`) against its twin; true when that is all it needs:
    /// the very bytes of the twin, or the same but for the text of its urn references (whose new text is checked
    /// here, as data). False: the line must be checked whole.
    func checkAgainstTwin(type: Int32, file: String, line: Int) -> Bool {
        let tape = self.tape
        let t = Int(type)
        let n = mirrorTwins[t].position
        mirrorTwins[t].position += 1
        guard n < mirrorTwins[t].hashes.count else { return false }
        let exact = mirrorTwins[t].hashes[n] == UInt64(truncatingIfNeeded: tape.hashOfBytes(0))
        var c = mirrorTwins[t].urnCursor
        while c < mirrorTwins[t].withURNs.count && mirrorTwins[t].withURNs[c].position < n { c += 1 }
        mirrorTwins[t].urnCursor = c
        guard c < mirrorTwins[t].withURNs.count, mirrorTwins[t].withURNs[c].position == n else { return exact }
        let twin = mirrorTwins[t].withURNs[c]
        let references = twinReferences[Int(twin.references.lowerBound)..<Int(twin.references.upperBound)]
        for r in references where Int(r.offset) >= tape.tokenCount || tape.kind(Int(r.offset)) != .string { return false }
        guard exact || maskedHash(tape, 0, references.lazy.map { Int($0.offset) }) == twin.masked else { return false }
        let place = EntryPlace(step: 0, transaction: -1, bundle: -1, position: Int32(line), data: true)
        for r in references {
            let token = Int(r.offset)
            if tape.isEmptyString(token) {
                findings.append(Finding(rule: .emptyValue, file: file, line: line, pointer: tape.pointer(to: token, from: 0), message: "the reference is an empty string"))
            } else if let control = tape.forbiddenControlCharacter(token) {
                findings.append(Finding(rule: .primitiveFormat, file: file, line: line, pointer: tape.pointer(to: token, from: 0),
                                        message: "the reference holds the control character U+\(String(format: "%04X", control)); FHIR strings allow none but tab, line feed and carriage return"))
            } else {
                checkReference(FoundReference(token: token, targets: r.targets), file: file, line: line, place: place, isTransaction: false, fullUrls: [:])
            }
        }
        return true
    }
}
