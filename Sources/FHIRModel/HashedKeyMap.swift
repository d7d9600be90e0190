/// A map from 128-bit hashes to values: open addressing over plain arrays, no SipHash per lookup.
///
/// The keys are already well-mixed hashes (`FastHash`), so their low bits pick the slot; every resource of an
/// artifact set passes through such an index, which made Swift's `Dictionary` hashing a visible share of the time.
/// The key 0 marks an empty slot (a real key 0 is stored as 1: a 2^-128 collision).
@frozen
public struct HashedKeyMap<Value> {
    @usableFromInline var keys: [UInt128]
    @usableFromInline var values: [Value]
    @usableFromInline let empty: Value
    @usableFromInline var storedCount = 0
    public var count: Int { storedCount }

    /// `empty` fills unused slots; it is never returned.
    public init(empty: Value, capacity: Int = 1 << 12) {
        var c = 16
        while c < capacity { c <<= 1 }
        self.empty = empty
        keys = Array(repeating: 0, count: c)
        values = Array(repeating: empty, count: c)
    }

    @inlinable @inline(__always)
    func slot(_ key: UInt128) -> Int {
        let mask = keys.count - 1
        var i = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: key)) & mask
        while keys[i] != 0 && keys[i] != key { i = (i + 1) & mask }
        return i
    }

    @inlinable
    public subscript(key: UInt128) -> Value? {
        get {
            let k = key == 0 ? 1 : key
            let i = slot(k)
            return keys[i] == 0 ? nil : values[i]
        }
        set {
            guard let newValue else { return }  // removal is not needed by the indexes
            let k = key == 0 ? 1 : key
            if (storedCount + 1) * 4 > keys.count * 3 { grow() }
            let i = slot(k)
            if keys[i] == 0 {
                keys[i] = k
                storedCount += 1
            }
            values[i] = newValue
        }
    }

    /// Every key and value, in no particular order.
    @inlinable
    public var entries: [(key: UInt128, value: Value)] {
        keys.indices.compactMap { i in keys[i] == 0 ? nil : (keys[i], values[i]) }
    }

    @usableFromInline
    mutating func grow() {
        let oldKeys = keys
        let oldValues = values
        keys = Array(repeating: 0, count: oldKeys.count * 2)
        values = Array(repeating: empty, count: oldKeys.count * 2)
        for i in oldKeys.indices where oldKeys[i] != 0 {
            let j = slot(oldKeys[i])
            keys[j] = oldKeys[i]
            values[j] = oldValues[i]
        }
    }
}
