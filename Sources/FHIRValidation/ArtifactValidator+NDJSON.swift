import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// The NDJSON pass: data files of their own, or the mirror of the bundles.
extension ArtifactValidator {
    /// An NDJSON file: the mirror of the bundles in a folder with a manifest (`mirror`: counted against the bundles,
    /// its resources and references checked, not indexed again), or data of its own (checked, indexed and its
    /// references resolved; in upload step `step` of a folder without a manifest).
    ///
    /// `whileWritten`: the folder is still being written (see `checkWrittenNDJSON`): the file's SHA-256 is kept for
    /// the manifest, which comes later.
    func scanNDJSON(_ file: String, mirror: Bool, step: Int32?, whileWritten: Bool = false) {
        var counts = TypeCounts()
        var hashes: [UInt128] = []
        var references: [FoundReference] = []
        let verify = whileWritten || unverified[file] != nil
        // A mirror line with its twin's very bytes needs no parse (`mirrorLineIsTwin`): the twin's identifiers and
        // coded values were counted with its bundle. The type of the line before is the one tried (a file holds one).
        let skipsTwins = mirror && creditsMirror
        var lastType: Int32 = -1
        let tooLong = { (line: Int) in
            self.findings.append(Finding(rule: .fileTooLarge, file: file, line: line,
                                         message: "the line is longer than the \(self.options.maxJSONBytes) bytes a resource may have; it is not checked. Raise --max-json-bytes if it is one resource"))
        }
        // A line's hash comes from the workers that read ahead (with more than one thread), else it is worked out here.
        func check(_ line: Int, _ bytes: UnsafeBufferPointer<UInt8>, _ hash: UInt64?) {
            if line & 0xFFF == 0 && !cancelled { cancelled = options.isCancelled() }
            if cancelled || NDJSONLine.isBlank(bytes) { return }
            if skipsTwins && lastType >= 0 && mirrorLineIsTwin(bytes, hash: hash ?? ParallelLines.trimmedHash(bytes), type: lastType) {
                counts.known[Int(lastType)] += 1
                return
            }
            guard tape.parse(copying: bytes), tape.kind(0) == .object else {
                do throws(JSONSyntaxError) {
                    _ = try JSONParser.parse(bytes)
                    findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "not one JSON resource"))
                } catch {
                    findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "not one JSON resource (column \(error.column): \(error.message))"))
                }
                return
            }
            guard let typeToken = tape.member(0, "resourceType"), tape.kind(typeToken) == .string else {
                findings.append(Finding(rule: .ndjsonLine, file: file, line: line, message: "the line is not a resource (no resourceType)"))
                return
            }
            counts.add(tape, typeToken: typeToken)
            let type = tables.resourceType(tape, typeToken)
            if let type { lastType = type }
            let twin = mirror ? type.flatMap { checkAgainstTwin(type: $0, file: file, line: line, lineHash: hash) } : nil
            // A twin's coded values were counted when its bundle was read.
            if options.countCodedValues, let type, !(twin != nil && creditsCodedValues) { countCodedValues(type: type) { tape.string(typeToken) } }
            hashes.removeAll(keepingCapacity: true)
            identifierKeys.hashes(tape, 0, typeToken: typeToken, into: &hashes)
            // A plain twin's identifiers were counted when its bundle was read.
            if !(twin == .plain && creditsMirror) {
                for hash in hashes {
                    let shared = index.update(hash, startingAt: IndexEntry()) { e -> Bool in
                        e.ndjsonCount += 1
                        guard !mirror else { return false }
                        e.count += 1
                        if e.count > 1 { repeatedIdentifiers += 1 }
                        if e.step < 0, let step { e.step = step }
                        return e.count >= 2
                    }
                    if shared { sightDuplicate(hash, resource: 0, typeToken: typeToken, file: file, line: line) }
                }
            }
            if !mirror {
                resources += 1
                if let id = tape.member(0, "id"), let idText = tape.string(id), let type = tape.string(typeToken) { literalIDs.insert(type + "/" + idText) }
            }
            if twin != nil { return }
            references.removeAll(keepingCapacity: true)
            checker.check(tape, root: 0, pointerRoot: 0, file: file, line: line, findings: &findings, references: &references)
            if !mirror { checkIdentifiersHaveSystems(0, file: file, line: line) }
            // Data need only resolve, in any order: NDJSON is loaded as a whole (or mirrors bundles checked in order).
            let place = EntryPlace(step: step ?? 0, transaction: -1, bundle: -1, position: Int32(line), data: true)
            for reference in references { checkReference(reference, file: file, line: line, place: place, isTransaction: false, fullUrls: [:]) }
        }
        let path = folder + "/" + file
        let digest = options.threads > 1
            ? ParallelLines.forEachLine(path, digest: verify, maxLine: options.maxJSONBytes, threads: options.threads - 1, tooLong: tooLong) { check($0, $1, $2) }
            : FileStreaming.forEachLine(path, digest: verify, maxLine: options.maxJSONBytes, tooLong: tooLong) { check($0, $1, nil) }
        for (type, n) in counts.byName { ndjsonTypeCounts[type, default: 0] += n }
        if whileWritten, let digest {
            writtenDigests[file] = digest
        } else if verify, let digest {
            checkDigest(file, sha256: digest.sha256, size: digest.size)
        }
    }
}
