import FHIRDefinitions
import FHIRModel

#if canImport(Glibc)
import Glibc
#endif

/// The FHIR R4 structure definitions compiled for the validator's hot path: element lookups by the JSON key's
/// bytes (one FNV hash and one comparison, no `String`, no SipHash), answers as plain values (no reference counting).
///
/// Built once from `FHIRDefinitions.r4`, following element types from the resource types, so every type a resource
/// can contain is numbered.
final class StructureTables: Sendable {
    // Built by `init` into constants: shared by the validator's threads, read without exclusivity checks.
    static let r4 = StructureTables(FHIRDefinitions.r4)

    /// A copy of its own for a worker thread. The tables are immutable, but reading a shared instance retains and
    /// releases it and its arrays, and threads that share those reference counts stall each other (measured: a
    /// third of the workers' reference counting time when two shared one instance).
    static func r4Copy() -> StructureTables { StructureTables(FHIRDefinitions.r4) }

    /// What a JSON key of a type stands for.
    struct Key {
        /// `_birthDate`: the primitive's id and extensions.
        var isUnderscore = false
        var isArray = false
        /// Most values allowed (-1: unbounded).
        var max: Int32 = -1
        /// The concrete type, as an index of `types` (-1 when it has no definition).
        var type: Int32 = -1
        /// The concrete type's name, as an index of `names` (for messages).
        var typeName: Int32 = 0
        /// Index of `primitives` when the concrete type is a primitive (-1 otherwise).
        var primitive: Int32 = -1
        /// Index of `bindings` for a required binding (-1: none).
        var binding: Int32 = -1
        /// Index of `targetLists`: the resource types a Reference may point at.
        var targets: Int32 = 0
        /// Bit of a required element in its type's `requiredMask` (-1: optional).
        var requiredBit: Int8 = -1
        /// The type is `Resource` (contained resources, `Bundle.entry.resource`).
        var holdsResource = false
        var isReference = false
        /// Bit of the choice element (`value[x]`) this key is one type of, among its type's choices (-1: none): an
        /// object may hold one type of each choice.
        var choiceBit: Int8 = -1
        /// The key's position among its type's keys, modulo 64: an object whose members set a bit twice may hold
        /// a key twice, which is then checked byte by byte.
        var seenBit: UInt8 = 0
        /// A required binding on a Coding or CodeableConcept (`binding` then applies to its system and code).
        var coded: Coded = .none

        enum Coded: UInt8 { case none, coding, codeableConcept }
    }

    struct TypeInfo {
        let name: String
        let requiredMask: UInt64
        /// Required elements in FHIR order: their bit and name.
        let required: [(bit: Int, name: String)]
    }

    /// What the hot path reads of a primitive type: plain values, so that reading one retains nothing (its name is
    /// in `primitiveNames`, read only for messages).
    struct PrimitiveInfo {
        let json: PrimitiveDefinition.JSONKind
        let format: PrimitiveFormats.Format
        let isDecimal: Bool
    }

    let types: [TypeInfo]
    let names: [String]
    let primitives: [PrimitiveInfo]
    let primitiveNames: [String]
    /// `types[i].requiredMask`, apart: copying a `TypeInfo` (its name, its list) costs a retain per object checked.
    let requiredMasks: [UInt64]
    let bindings: [Binding]
    /// `bindings[i].codes` as hashes of their bytes: a code of every resource (status, request.method) is looked up
    /// without making a String of it.
    let bindingCodes: [HashedKeyMap<Void>?]
    let targetLists: [[String]]
    private let keys: [Key]
    /// (owner type, key bytes) → index of `keys`; owner -1 holds the concrete resource type names → type index.
    private let keyTable: KeyTable

    private init(_ definitions: FHIRDefinitions) {
        var types: [TypeInfo] = []
        var names: [String] = []
        var primitives: [PrimitiveInfo] = []
        var primitiveNames: [String] = []
        var requiredMasks: [UInt64] = []
        var bindings: [Binding] = []
        var bindingCodes: [HashedKeyMap<Void>?] = []
        var targetLists: [[String]] = [[]]
        var keys: [Key] = []
        var typeIndex: [String: Int32] = [:]
        var order: [String] = []
        func number(_ name: String) -> Int32? {
            if let i = typeIndex[name] { return i }
            guard definitions.type(named: name) != nil else { return nil }
            typeIndex[name] = Int32(order.count)
            order.append(name)
            return typeIndex[name]
        }
        for name in definitions.resourceTypes { _ = number(name) }
        var nameIndex: [String: Int32] = [:]
        func name(_ s: String) -> Int32 {
            if let i = nameIndex[s] { return i }
            nameIndex[s] = Int32(names.count)
            names.append(s)
            return Int32(names.count - 1)
        }
        var primitiveIndex: [String: Int32] = [:]
        var bindingIndex: [String: Int32] = [:]
        var targetIndex: [[String]: Int32] = [[]: 0]
        var pending: [(owner: Int32, key: String, info: Key)] = []
        var t = 0
        while t < order.count {  // `order` grows as element types are met
            let type = definitions.type(named: order[t])!
            var required: [(Int, String)] = []
            var mask: UInt64 = 0
            var choices = 0
            // The spec's `id` format applies to a resource's id, which the definitions type as a plain string
            // (System.String); an element's id (Element.id) stays a string.
            let isResource = definitions.isResourceType(type.name)
            for element in type.elements {
                var bit: Int8 = -1
                if element.min > 0 {
                    precondition(required.count < 64, "more than 64 required elements in \(type.name)")
                    bit = Int8(required.count)
                    mask |= 1 << UInt64(required.count)
                    required.append((required.count, element.name))
                }
                var choiceBit: Int8 = -1
                if element.isChoice {
                    precondition(choices < 64, "more than 64 choice elements in \(type.name)")
                    choiceBit = Int8(choices)
                    choices += 1
                }
                let concrete: [(key: String, type: String)] = element.isChoice
                    ? element.types.map { (String(element.name.dropLast(3)) + $0.prefix(1).uppercased() + $0.dropFirst(), $0) }
                    : [(element.name, isResource && element.name == "id" ? "id" : element.types.first ?? "Element")]
                for (key, typeName) in concrete {
                    var info = Key()
                    info.isArray = element.isArray
                    info.max = element.max.map { Int32(clamping: $0) } ?? -1
                    info.requiredBit = bit
                    info.typeName = name(typeName)
                    info.holdsResource = typeName == "Resource"
                    info.isReference = typeName == "Reference"
                    info.choiceBit = choiceBit
                    if let p = definitions.primitive(named: typeName) {
                        if primitiveIndex[typeName] == nil {
                            primitiveIndex[typeName] = Int32(primitives.count)
                            primitives.append(PrimitiveInfo(json: p.json, format: PrimitiveFormats.Format(type: p.name), isDecimal: p.name == "decimal"))
                            primitiveNames.append(p.name)
                        }
                        info.primitive = primitiveIndex[typeName]!
                    } else if let n = number(typeName) {
                        info.type = n
                    }
                    if let b = element.requiredBinding {
                        let id = b.valueSet
                        if bindingIndex[id] == nil {
                            bindingIndex[id] = Int32(bindings.count)
                            bindings.append(b)
                            bindingCodes.append(b.codes.map { codes in
                                var hashes = HashedKeyMap<Void>(empty: (), capacity: codes.count * 2)
                                for code in codes { hashes[FastHash.hash128(code)] = () }
                                return hashes
                            })
                        }
                        info.binding = bindingIndex[id]!
                        info.coded = typeName == "Coding" ? .coding : typeName == "CodeableConcept" ? .codeableConcept : .none
                    }
                    if targetIndex[element.referenceTargets] == nil {
                        targetIndex[element.referenceTargets] = Int32(targetLists.count)
                        targetLists.append(element.referenceTargets)
                    }
                    info.targets = targetIndex[element.referenceTargets]!
                    pending.append((Int32(t), key, info))
                    // `_birthDate`: the primitive's id and extensions, an Element (an array aligned with the values
                    // for a repeating primitive). It alone gives a required element (a value absent, with a reason).
                    var underscore = Key()
                    underscore.isUnderscore = true
                    underscore.isArray = element.isArray
                    underscore.requiredBit = bit
                    underscore.choiceBit = choiceBit
                    underscore.typeName = name("Element")
                    underscore.type = number("Element") ?? -1
                    pending.append((Int32(t), "_" + key, underscore))
                }
            }
            types.append(TypeInfo(name: type.name, requiredMask: mask, required: required))
            requiredMasks.append(mask)
            t += 1
        }
        var capacity = 16
        while capacity < (pending.count + definitions.resourceTypes.count) * 2 { capacity <<= 1 }
        var table = KeyTable(capacity: capacity)
        // As in `TypeDefinition`, a key defined twice means its last definition.
        var keysOfOwner: [Int32: Int] = [:]
        for (owner, key, var info) in pending.reversed() where table.lookup(owner, Array(key.utf8)) == nil {
            info.seenBit = UInt8(keysOfOwner[owner, default: 0] & 63)
            keysOfOwner[owner, default: 0] += 1
            keys.append(info)
            table.insert(owner, key, value: Int32(keys.count - 1))
        }
        for name in definitions.resourceTypes { table.insert(-1, name, value: typeIndex[name]!) }
        (self.types, self.names, self.primitives, self.primitiveNames) = (types, names, primitives, primitiveNames)
        (self.requiredMasks, self.bindings, self.bindingCodes, self.targetLists) = (requiredMasks, bindings, bindingCodes, targetLists)
        (self.keys, keyTable) = (keys, table)
    }

    /// What JSON key `key` (a string token of `tape`) means in type `type`; nil when it is not one of its elements.
    func key(_ tape: JSONTape, _ token: Int, in type: Int32) -> Key? {
        guard let k = tape.withString(token, { keyTable.find(type, $0) }) ?? nil else { return nil }
        return keys[Int(k)]
    }

    /// The type index of the concrete resource type named by string token `token` (nil when it names none).
    func resourceType(_ tape: JSONTape, _ token: Int) -> Int32? {
        tape.withString(token) { keyTable.find(-1, $0) } ?? nil
    }

    /// The name of the resource type that string token `token` names: the tables' own string for R4 types (no
    /// allocation), else the token's text.
    func typeName(_ tape: JSONTape, _ token: Int) -> String {
        if let i = resourceType(tape, token) { return types[Int(i)].name }
        return tape.string(token) ?? ""
    }
}

/// Open-addressing table over (owner type, key bytes): entry indexes, -1 when empty.
private struct KeyTable {
    private var slots: [Int32]
    private var entries: [(owner: Int32, start: Int32, length: Int32, value: Int32)] = []
    private var keyBytes: [UInt8] = []

    init(capacity: Int) { slots = Array(repeating: -1, count: capacity) }

    mutating func insert(_ owner: Int32, _ key: String, value: Int32) {
        let bytes = Array(key.utf8)
        var i = bytes.withUnsafeBufferPointer { hash(owner, $0) } & (slots.count - 1)
        while slots[i] >= 0 { i = (i + 1) & (slots.count - 1) }
        slots[i] = Int32(entries.count)
        entries.append((owner, Int32(keyBytes.count), Int32(bytes.count), value))
        keyBytes.append(contentsOf: bytes)
    }

    @inline(__always)
    private func hash(_ owner: Int32, _ p: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(UInt32(bitPattern: owner))
        for b in p { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }

    func lookup(_ owner: Int32, _ key: [UInt8]) -> Int32? {
        key.withUnsafeBufferPointer { find(owner, $0) }
    }

    func find(_ owner: Int32, _ p: UnsafeBufferPointer<UInt8>) -> Int32? {
        let mask = slots.count - 1
        var i = hash(owner, p) & mask
        return keyBytes.withUnsafeBufferPointer { stored in
            while slots[i] >= 0 {
                let e = entries[Int(slots[i])]
                if e.owner == owner && Int(e.length) == p.count
                    && (p.count == 0 || memcmp(stored.baseAddress! + Int(e.start), p.baseAddress!, p.count) == 0) {
                    return e.value
                }
                i = (i + 1) & mask
            }
            return nil
        }
    }
}
