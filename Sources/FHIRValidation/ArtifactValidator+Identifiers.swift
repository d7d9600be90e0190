import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// The identifier index: what each identifier is written by, where, and whether it must be unique.
extension ArtifactValidator {
    /// What the index knows of one identifier, in 16 bytes (with its 16-byte key, a 32-byte slot): counts and step
    /// saturate far beyond any real folder.
    struct IndexEntry {
        private var storedCount: UInt16 = 0
        private var storedNDJSONCount: UInt16 = 0
        private var storedStep: UInt16 = .max
        private var storedCreates: UInt16 = 0
        /// The bundle (batch or transaction, numbered in reading order) whose entry writes it first.
        var bundle: Int32 = -1
        private var storedPosition: UInt16 = 0
        private var flags: UInt8 = 0

        var count: Int32 {
            get { Int32(storedCount) }
            set { storedCount = UInt16(clamping: newValue) }
        }
        var ndjsonCount: Int32 {
            get { Int32(storedNDJSONCount) }
            set { storedNDJSONCount = UInt16(clamping: newValue) }
        }
        /// Upload step that writes it (bundles); -1: none.
        var step: Int32 {
            get { storedStep == .max ? -1 : Int32(storedStep) }
            set { storedStep = newValue < 0 ? .max : UInt16(clamping: min(newValue, 65_534)) }
        }
        /// The transaction it is written in (its bundle's number), or -1.
        var transaction: Int32 {
            get { flags & 2 != 0 ? bundle : -1 }
            set { flags = newValue >= 0 ? flags | 2 : flags & ~2 }
        }
        /// Its entry's position in that bundle.
        var position: Int32 {
            get { Int32(storedPosition) }
            set { storedPosition = UInt16(clamping: newValue) }
        }
        /// Carriers written by a conditional create (`ifNoneExist`) on this identifier.
        var conditionalCreates: Int32 {
            get { Int32(storedCreates) }
            set { storedCreates = UInt16(clamping: newValue) }
        }
        /// Used as the key of a conditional update or create, or as the target of a conditional reference: then
        /// it must be unique.
        var used: Bool {
            get { flags & 1 != 0 }
            set { flags = newValue ? flags | 1 : flags & ~1 }
        }
    }

    /// Where a bundle entry is read: for the order of references inside one batch.
    struct EntryPlace {
        var step: Int32
        var transaction: Int32
        var bundle: Int32
        var position: Int32
        /// A data bundle or file (collection, searchset, a single resource, NDJSON): not an upload, so references
        /// need only resolve, in any order.
        var data: Bool
    }

    /// A resource that shares an identifier with an earlier one; judged at the end, once it is known whether a
    /// conditional operation uses the identifier.
    struct DuplicateSighting {
        let hash: UInt128
        let file: String
        let line: Int?
        let pointer: String
        let type: String
        let identifier: String
    }

    /// Resource counts by type: by type index of the R4 tables (no String per resource), other names by name.
    struct TypeCounts {
        var known: [Int] = Array(repeating: 0, count: StructureTables.r4.types.count)
        var other: [String: Int] = [:]

        mutating func add(_ tape: JSONTape, typeToken: Int?) {
            add(typeToken.flatMap { StructureTables.r4.resourceType(tape, $0) }, tape, typeToken: typeToken)
        }

        /// Counts a resource whose type index (`StructureTables.resourceType`) is known: `type`, nil when none.
        mutating func add(_ type: Int32?, _ tape: JSONTape, typeToken: Int?) {
            if let type {
                known[Int(type)] += 1
            } else {
                other[typeToken.flatMap { tape.string($0) } ?? "", default: 0] += 1
            }
        }

        var byName: [String: Int] {
            var out = other
            for (i, n) in known.enumerated() where n > 0 { out[StructureTables.r4.types[i].name, default: 0] += n }
            return out
        }
    }

    /// Hash of `Type|system|value`, built in one reused buffer.
    func identifierHash(type: UnsafeBufferPointer<UInt8>, system: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> UInt128 {
        identifierKeys.hash(type: type, system: system, value: value)
    }

    /// Records the identifiers (`hashes`, see `IdentifierKeys.hashes`) of a resource written at `place`.
    func index(_ resource: Int, typeToken: Int, place: EntryPlace, hashes: ArraySlice<UInt128>) {
        let tape = self.tape
        let step = place.step, transaction = place.transaction
        if let id = tape.member(resource, "id"), let idText = tape.string(id), let type = tape.string(typeToken) {
            literalIDs.insert(type + "/" + idText)
        }
        for hash in hashes {
            index.update(hash, startingAt: IndexEntry()) { e in
                e.count += 1
                if e.count > 1 { repeatedIdentifiers += 1 }
                if e.step < 0 || step < e.step {
                    e.step = step
                    e.bundle = place.bundle
                    e.transaction = transaction
                    e.position = place.position
                }
            }
        }
    }

    func checkIdentifiersHaveSystems(_ resource: Int, file: String, line: Int?) {
        Self.checkIdentifiersHaveSystems(tape, resource, file: file, line: line, into: &findings)
    }

    static func checkIdentifiersHaveSystems(_ tape: JSONTape, _ resource: Int, file: String, line: Int?, into findings: inout [Finding]) {
        tape.forEachIdentifier(of: resource) { identifier in
            if tape.member(identifier, "system") == nil {
                findings.append(Finding(rule: .identifierNoSystem, file: file, line: line, pointer: tape.pointer(to: identifier, from: 0), message: "the identifier has no system"))
            }
        }
    }

    /// Notes a resource that carries an identifier an earlier one has.
    func sightDuplicate(_ hash: UInt128, resource: Int, typeToken: Int, file: String, line: Int?) {
        let tape = self.tape
        var description = ""
        tape.forEachIdentifier(of: resource) { identifier in
            guard description.isEmpty, let system = tape.member(identifier, "system"), let value = tape.member(identifier, "value") else { return }
            let h: UInt128? = tape.withString(typeToken) { t in
                tape.withString(system) { s in tape.withString(value) { v in identifierHash(type: t, system: s, value: v) } } ?? nil
            } ?? nil
            if h == hash { description = (tape.string(system) ?? "") + "|" + (tape.string(value) ?? "") }
        }
        duplicates.append(DuplicateSighting(hash: hash, file: file, line: line, pointer: line == nil ? pointer(resource) + "/identifier" : "/identifier",
                                            type: typeName(typeToken), identifier: description))
    }

    /// A shared identifier is an error where a conditional operation depends on it being unique, a warning otherwise.
    func judgeDuplicates() {
        for d in duplicates {
            let e = index[d.hash] ?? IndexEntry()
            if e.conditionalCreates == e.count {
                findings.append(Finding(rule: .identifierShared, file: d.file, line: d.line, pointer: d.pointer,
                                        message: "\(e.count) \(d.type) are conditional creates (ifNoneExist) of identifier \(d.identifier): the server keeps the first one that arrives"))
            } else if e.used || foreign {
                guard e.used else {
                    findings.append(Finding(rule: .identifierShared, file: d.file, line: d.line, pointer: d.pointer,
                                            message: "\(e.count) \(d.type) share identifier \(d.identifier); no conditional operation uses it"))
                    continue
                }
                findings.append(Finding(rule: .identifierDuplicate, file: d.file, line: d.line, pointer: d.pointer,
                                        message: "another \(d.type) in the artifacts has identifier \(d.identifier), which a conditional update or reference uses"))
            }
            // In a folder with a manifest every write and reference goes by its key identifiers, checked above: an
            // identifier no conditional operation uses may be shared (a claim group, a family id).
        }
        duplicates = []
    }
}

/// The hashes of `Type|system|value` that index resources by identifier, built in one reused buffer.
struct IdentifierKeys {
    private var buffer: [UInt8] = []

    mutating func hash(type: UnsafeBufferPointer<UInt8>, system: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) -> UInt128 {
        buffer.removeAll(keepingCapacity: true)
        buffer.append(contentsOf: type)
        buffer.append(UInt8(ascii: "|"))
        buffer.append(contentsOf: system)
        buffer.append(UInt8(ascii: "|"))
        buffer.append(contentsOf: value)
        return buffer.withUnsafeBufferPointer { FastHash.hash128($0) }
    }

    /// Appends the hashes of the identifiers of the resource at token `resource` (each once) to `out`.
    mutating func hashes(_ tape: JSONTape, _ resource: Int, typeToken: Int, into out: inout [UInt128]) {
        guard let identifiers = tape.member(resource, "identifier") else { return }
        let first = out.count
        func add(_ identifier: Int) {
            guard let system = tape.member(identifier, "system"), let value = tape.member(identifier, "value") else { return }
            let hash: UInt128? = tape.withString(typeToken) { t in
                tape.withString(system) { s in tape.withString(value) { v in self.hash(type: t, system: s, value: v) } } ?? nil
            } ?? nil
            if let hash, !out[first...].contains(hash) { out.append(hash) }
        }
        // An array, or one Identifier (Bundle.identifier, and a few other resources' single identifier).
        if tape.kind(identifiers) == .object {
            add(identifiers)
        } else if tape.kind(identifiers) == .array {
            tape.forEachItem(identifiers) { _, identifier in add(identifier) }
        }
    }
}
