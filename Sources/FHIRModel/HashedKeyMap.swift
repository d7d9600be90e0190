/// A map from 128-bit hashes to values: open addressing over one array of slots, no SipHash per lookup.
///
/// The keys are already well-mixed hashes (`FastHash`), so their low bits pick the slot. A probe touches one cache
/// line: a hit here reads its value, so key and value share a slot (where only the key is read on most probes, as
/// in convert's `IdentifierIndex`, the keys are an array of their own). Every resource of an artifact set passes through
/// such an index. The key 0 marks an empty slot (a real key 0 is stored as 1: a 2^-128 collision).
@frozen
public struct HashedKeyMap<Value> {
    @usableFromInline
    struct Slot {
        @usableFromInline var key: UInt128
        @usableFromInline var value: Value

        @inlinable init(key: UInt128, value: Value) {
            self.key = key
            self.value = value
        }
    }

    @usableFromInline var slots: [Slot]
    @usableFromInline let empty: Value
    @usableFromInline var storedCount = 0
    public var count: Int { storedCount }

    /// `empty` fills unused slots; it is never returned.
    public init(empty: Value, capacity: Int = 1 << 12) {
        var c = 16
        while c < capacity { c <<= 1 }
        self.empty = empty
        slots = LargeTables.array(repeating: Slot(key: 0, value: empty), count: c)
    }

    @inlinable @inline(__always)
    func slot(_ key: UInt128) -> Int {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: UInt64(truncatingIfNeeded: key)) & mask
        while slots[i].key != 0 && slots[i].key != key { i = (i + 1) & mask }
        return i
    }

    @inlinable
    public subscript(key: UInt128) -> Value? {
        get {
            let i = slot(key == 0 ? 1 : key)
            return slots[i].key == 0 ? nil : slots[i].value
        }
        set {
            guard let newValue else { return }  // removal is not needed by the indexes
            let k = key == 0 ? 1 : key
            if (storedCount + 1) * 4 > slots.count * 3 { grow() }
            let i = slot(k)
            if slots[i].key == 0 {
                slots[i].key = k
                storedCount += 1
            }
            slots[i].value = newValue
        }
    }

    /// Changes the value of `key` in place, starting from `initial` when the key is new: one probe where a read
    /// followed by a write takes two.
    @inlinable
    public mutating func update<R>(_ key: UInt128, startingAt initial: Value, _ body: (inout Value) -> R) -> R {
        let k = key == 0 ? 1 : key
        if (storedCount + 1) * 4 > slots.count * 3 { grow() }
        let i = slot(k)
        if slots[i].key == 0 {
            slots[i].key = k
            slots[i].value = initial
            storedCount += 1
        }
        return body(&slots[i].value)
    }

    /// Every key and value, in no particular order.
    @inlinable
    public var entries: [(key: UInt128, value: Value)] {
        slots.compactMap { $0.key == 0 ? nil : ($0.key, $0.value) }
    }

    /// How many values satisfy `predicate`, without a copy of the entries (an index of a million identifiers is 32 MB).
    @inlinable
    public func count(where predicate: (Value) -> Bool) -> Int {
        var n = 0
        for s in slots where s.key != 0 && predicate(s.value) { n += 1 }
        return n
    }

    /// Inlinable so that it is specialized for `Value` where it is used: unspecialized, every slot was copied
    /// through the generic value witnesses (a memmove call per slot: 3% of a conversion with validation).
    @inlinable
    mutating func grow() {
        let old = slots
        slots = LargeTables.array(repeating: Slot(key: 0, value: empty), count: old.count * 2)
        for s in old where s.key != 0 {
            slots[slot(s.key)] = s
        }
    }
}

extension HashedKeyMap: Sendable where Value: Sendable {}
extension HashedKeyMap.Slot: Sendable where Value: Sendable {}
