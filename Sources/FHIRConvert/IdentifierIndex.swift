/// The identifiers written so far (type, system and value hashed to 128 bits) with the line that wrote each.
///
/// An open-addressing table of plain integers: about 24 bytes a resource and no per-lookup hashing beyond the
/// 128-bit key itself, because every resource of a run passes through it.
struct IdentifierIndex {
    private var high: [UInt64]
    private var low: [UInt64]
    private var lines: [Int32]
    private(set) var count = 0

    init(capacity: Int = 1 << 12) {
        high = Array(repeating: 0, count: capacity)
        low = Array(repeating: 0, count: capacity)
        lines = Array(repeating: 0, count: capacity)
    }

    /// The line that first wrote `key`, or nil.
    func line(of key: UInt128) -> Int? {
        let (h, l) = split(key)
        let mask = high.count - 1
        var i = Int(truncatingIfNeeded: l) & mask
        while lines[i] != 0 {
            if high[i] == h && low[i] == l { return Int(lines[i]) }
            i = (i + 1) & mask
        }
        return nil
    }

    /// Records `key` as written by `line` (≥ 1).
    mutating func insert(_ key: UInt128, line: Int) {
        if (count + 1) * 4 > high.count * 3 { grow() }
        let (h, l) = split(key)
        let mask = high.count - 1
        var i = Int(truncatingIfNeeded: l) & mask
        while lines[i] != 0 {
            if high[i] == h && low[i] == l { return }
            i = (i + 1) & mask
        }
        high[i] = h
        low[i] = l
        lines[i] = Int32(clamping: max(line, 1))
        count += 1
    }

    private func split(_ key: UInt128) -> (UInt64, UInt64) {
        (UInt64(truncatingIfNeeded: key >> 64), UInt64(truncatingIfNeeded: key))
    }

    private mutating func grow() {
        let old = (high, low, lines)
        let capacity = high.count * 2
        high = Array(repeating: 0, count: capacity)
        low = Array(repeating: 0, count: capacity)
        lines = Array(repeating: 0, count: capacity)
        count = 0
        for i in old.2.indices where old.2[i] != 0 {
            insert(UInt128(old.0[i]) << 64 | UInt128(old.1[i]), line: Int(old.2[i]))
        }
    }
}
