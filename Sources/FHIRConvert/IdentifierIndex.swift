/// The identifiers written so far (type, system and value hashed to 128 bits) with the line that wrote each.
///
/// An open-addressing table of plain integers, about 20 bytes a resource. The project's hash tables follow one
/// rule: a probe touches one cache line, so what every probe reads is stored together. Here every resource probes
/// the keys and the line is read back only for a duplicate, so the keys are an array of their own (20 bytes a slot;
/// `FHIRModel.HashedKeyMap`'s key-with-value slots would take 32), where the validator's index reads its value on
/// every hit and keeps key and value in one slot.
struct IdentifierIndex {
    /// 0 marks an empty slot; a real key 0 is stored as 1 (a 2^-128 collision).
    private var keys: [UInt128]
    private var lines: [Int32]
    private(set) var count = 0

    init(capacity: Int = 1 << 12) {
        keys = Array(repeating: 0, count: capacity)
        lines = Array(repeating: 0, count: capacity)
    }

    /// The line that first wrote `key`, or nil.
    func line(of key: UInt128) -> Int? {
        let i = slot(of: key == 0 ? 1 : key)
        return keys[i] == 0 ? nil : Int(lines[i])
    }

    /// Records `key` as written by `line` (≥ 1); a key already present keeps its first line.
    mutating func insert(_ key: UInt128, line: Int) {
        if (count + 1) * 4 > keys.count * 3 { grow() }
        let k = key == 0 ? 1 : key
        let i = slot(of: k)
        guard keys[i] == 0 else { return }
        keys[i] = k
        lines[i] = Int32(clamping: max(line, 1))
        count += 1
    }

    /// The slot holding `key`, or the empty slot where it goes.
    @inline(__always)
    private func slot(of key: UInt128) -> Int {
        let mask = keys.count - 1
        var i = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: key)) & mask
        while keys[i] != 0 && keys[i] != key { i = (i + 1) & mask }
        return i
    }

    private mutating func grow() {
        let (oldKeys, oldLines) = (keys, lines)
        keys = Array(repeating: 0, count: oldKeys.count * 2)
        lines = Array(repeating: 0, count: oldKeys.count * 2)
        for i in oldKeys.indices where oldKeys[i] != 0 {
            let j = slot(of: oldKeys[i])
            keys[j] = oldKeys[i]
            lines[j] = oldLines[i]
        }
    }
}
