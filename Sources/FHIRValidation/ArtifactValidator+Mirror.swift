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
        /// Twins without urn references whose mirror line had their very bytes. Their identifiers were counted for
        /// the NDJSON files when the twin was read (see `recordTwin`); `settleMirrorCredit` checks every one came.
        var matchedPlain = 0
        /// Twins with urn references whose mirror line had their bytes but for those references.
        var matchedWithURNs = 0

        var plainCount: Int { hashes.count - withURNs.count }
    }

    /// How a mirror line compares with its twin.
    enum TwinMatch {
        /// The twin's very bytes, and the twin has no urn references: nothing more to check or count.
        case plain
        /// The twin's bytes but for the text of its urn references, which were checked.
        case sameButURNs
    }

    /// A urn reference of a twin: its token's offset from the resource's, and its element's target types.
    struct TwinReference {
        let offset: Int32
        let targets: Int32
    }

    /// Records the bundle resource at token `resource`, with its facts (the hash of its bytes, its urn references).
    ///
    /// A twin without urn references credits its `identifiers` to the NDJSON counts at once, as its mirror line
    /// will have them: a line with the twin's very bytes is then neither parsed again (`mirrorLineIsTwin`) nor
    /// counted, and `settleMirrorCredit` rescans the NDJSON files should any such twin miss its line.
    func recordTwin(_ resource: Int, type: Int32, facts twin: ResourceFacts, identifiers: ArraySlice<UInt128>) {
        let t = Int(type)
        mirrorTwins[t].hashes.append(twin.bytesHash)
        // Its mirror line has the same coded values (only references may differ): counted here, once.
        if creditsCodedValues && options.countCodedValues {
            countCodedValues(type: type, root: resource) { tables.types[t].name }
        }
        guard !twin.urns.isEmpty else {
            if creditsMirror {
                for hash in identifiers { index.update(hash, startingAt: IndexEntry()) { $0.ndjsonCount += 1 } }
            }
            return
        }
        let start = Int32(twinReferences.count)
        for r in facts.urns[twin.urns] { twinReferences.append(TwinReference(offset: Int32(r.token - resource), targets: r.targets)) }
        mirrorTwins[t].withURNs.append((Int32(mirrorTwins[t].hashes.count - 1), twin.maskedHash, start..<Int32(twinReferences.count)))
    }

    /// The hash of a resource's bytes without the values of string tokens `skipped` (in order).
    static func maskedHash(_ tape: JSONTape, _ resource: Int, _ skipped: some Sequence<Int>) -> UInt64 {
        var h: UInt64 = 0
        var from = tape.start(resource)
        for token in skipped {
            h = (h ^ UInt64(truncatingIfNeeded: tape.hashOfBytes(from..<tape.start(token)))) &* 0x9E37_79B9_7F4A_7C15
            from = tape.end(token)
        }
        return (h ^ UInt64(truncatingIfNeeded: tape.hashOfBytes(from..<tape.end(resource)))) &* 0x9E37_79B9_7F4A_7C15
    }

    /// Checks the mirror line on the tape (a resource of `type`) against its twin: `.plain` or `.sameButURNs` when
    /// that is all it needs (the very bytes of the twin, or the same but for the text of its urn references, whose
    /// new text is checked here, as data); nil when the line must be checked whole. `lineHash`: the line's
    /// `ParallelLines.trimmedHash` when known, the hash of the resource's bytes (the line parsed as one object).
    func checkAgainstTwin(type: Int32, file: String, line: Int, lineHash: UInt64?) -> TwinMatch? {
        let tape = self.tape
        let t = Int(type)
        let n = mirrorTwins[t].position
        mirrorTwins[t].position += 1
        guard n < mirrorTwins[t].hashes.count else { return nil }
        let exact = mirrorTwins[t].hashes[n] == lineHash ?? UInt64(truncatingIfNeeded: tape.hashOfBytes(0))
        var c = mirrorTwins[t].urnCursor
        while c < mirrorTwins[t].withURNs.count && mirrorTwins[t].withURNs[c].position < n { c += 1 }
        mirrorTwins[t].urnCursor = c
        guard c < mirrorTwins[t].withURNs.count, mirrorTwins[t].withURNs[c].position == n else {
            guard exact else { return nil }
            if creditsMirror { mirrorTwins[t].matchedPlain += 1 }
            return .plain
        }
        let twin = mirrorTwins[t].withURNs[c]
        let references = twinReferences[Int(twin.references.lowerBound)..<Int(twin.references.upperBound)]
        for r in references where Int(r.offset) >= tape.tokenCount || tape.kind(Int(r.offset)) != .string { return nil }
        guard exact || Self.maskedHash(tape, 0, references.lazy.map { Int($0.offset) }) == twin.masked else { return nil }
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
        if creditsMirror { mirrorTwins[t].matchedWithURNs += 1 }
        return .sameButURNs
    }

    /// True when NDJSON line `bytes`, not parsed, is the very bytes of the next twin of `type` and that twin has no
    /// urn references: its resource was checked in its bundle and its identifiers counted then (`recordTwin`).
    /// `hash`: the line's `ParallelLines.trimmedHash`.
    func mirrorLineIsTwin(_ bytes: UnsafeBufferPointer<UInt8>, hash: UInt64, type: Int32) -> Bool {
        let t = Int(type)
        let n = mirrorTwins[t].position
        guard n < mirrorTwins[t].hashes.count else { return false }
        var c = mirrorTwins[t].urnCursor
        while c < mirrorTwins[t].withURNs.count && mirrorTwins[t].withURNs[c].position < n { c += 1 }
        mirrorTwins[t].urnCursor = c
        if c < mirrorTwins[t].withURNs.count && mirrorTwins[t].withURNs[c].position == n { return false }
        guard hash == mirrorTwins[t].hashes[n] else { return false }
        mirrorTwins[t].position += 1
        mirrorTwins[t].matchedPlain += 1
        return true
    }

    /// After the NDJSON pass: the twins' credit stands only if each twin met its line (every twin without urn
    /// references, for the identifier counts; every twin, for the coded values). Otherwise (an edited, reordered or
    /// partial mirror) the credit is taken back and the NDJSON lines are counted again, line by line (the lines
    /// themselves were checked: a line that was not its twin's bytes was parsed and checked whole).
    func settleMirrorCredit(ndjsonFiles: [String]) {
        guard creditsMirror else { return }
        let identifiers = mirrorTwins.contains { $0.matchedPlain != $0.plainCount }
        let coded = options.countCodedValues && mirrorTwins.contains { $0.matchedPlain + $0.matchedWithURNs != $0.hashes.count }
        creditsMirror = false
        creditsCodedValues = false
        guard identifiers || coded else { return }
        if identifiers {
            for (key, var e) in index.entries where e.ndjsonCount != 0 {
                e.ndjsonCount = 0
                index[key] = e
            }
        }
        if coded {
            codedCounter = CodedValueCounter()
            codedPlans = []
        }
        var hashes: [UInt128] = []
        for file in ndjsonFiles {
            FileStreaming.forEachLine(folder + "/" + file, maxLine: options.maxJSONBytes) { _, bytes in
                guard !NDJSONLine.isBlank(bytes), tape.parse(copying: bytes), tape.kind(0) == .object,
                      let typeToken = tape.member(0, "resourceType"), tape.kind(typeToken) == .string else { return }
                if coded, let type = tables.resourceType(tape, typeToken) { countCodedValues(type: type) { tape.string(typeToken) } }
                guard identifiers else { return }
                hashes.removeAll(keepingCapacity: true)
                identifierKeys.hashes(tape, 0, typeToken: typeToken, into: &hashes)
                for hash in hashes { index.update(hash, startingAt: IndexEntry()) { $0.ndjsonCount += 1 } }
            }
        }
    }
}
