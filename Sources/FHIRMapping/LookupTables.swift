import FHIRModel
import FHIRSources

#if canImport(Glibc)
import Glibc
#endif

/// The lookup tables of a mapping, filled from their sources (`Builder`) before the steps run, then only read.
///
/// A lookup holds a whole source in memory, so its rows are kept as bytes in one arena per table, with an
/// open-addressing index on the key: a row costs its bytes plus about 30, where a dictionary of String arrays cost
/// several hundred and an allocation per field. Only the columns the mapping reads are kept. Built, the tables are
/// constants (`Sendable`, checked by the compiler): reading them needs no lock and no exclusivity check.
public final class LookupTables: Sendable {
    private let tables: [LookupTable]

    /// The tables being filled: one thread fills them, then `build()` freezes them.
    public struct Builder {
        private var tables: [LookupTableStorage]

        /// Tables that keep every column (tests and tools that fill them by hand).
        public init(count: Int) {
            tables = (0..<count).map { _ in LookupTableStorage(keep: nil) }
        }

        /// Tables for `mapping`'s lookups, keeping only the columns its templates read.
        public init(mapping: CompiledMapping) {
            tables = mapping.lookups.map { LookupTableStorage(keep: $0.columnsRead) }
        }

        /// Adds a row to lookup `index`. Returns false when a single-row lookup already holds `key`.
        public mutating func add(index: Int, key: String, row: [FieldValue], multiple isMultiple: Bool) -> Bool {
            var record = RecordBytes()
            record.set(SourceRecord(line: 0, values: row))
            var key = key
            return key.withUTF8 { tables[index].add(key: $0, record: record, multiple: isMultiple) }
        }

        /// Adds `record` to lookup `index` under the values of its `keyColumns` (of a list, its first item). A key of
        /// several columns is stored as `LookupKey.composite` of their values; a row whose key columns are all empty
        /// cannot be found and is not kept.
        public mutating func add(index: Int, record: RecordBytes, keyColumns: [Int], multiple isMultiple: Bool) -> Added {
            guard keyColumns.count == 1 else {
                let parts = keyColumns.map { column in
                    record.lists.first(where: { $0.field == column }).map { $0.items.first ?? "" }
                        ?? record.withField(column) { String(decoding: $0, as: UTF8.self) }
                }
                if parts.allSatisfy(\.isEmpty) { return .emptyKey }
                var key = LookupKey.composite(parts)
                return key.withUTF8 { tables[index].add(key: $0, record: record, multiple: isMultiple) } ? .added : .duplicate(key: parts.joined(separator: ", "))
            }
            let keyColumn = keyColumns[0]
            if let list = record.lists.first(where: { $0.field == keyColumn }) {
                guard var key = list.items.first, !key.isEmpty else { return .emptyKey }
                return key.withUTF8 { tables[index].add(key: $0, record: record, multiple: isMultiple) } ? .added : .duplicate(key: key)
            }
            return record.withField(keyColumn) { key in
                if key.isEmpty { return .emptyKey }
                return tables[index].add(key: key, record: record, multiple: isMultiple)
                    ? .added : .duplicate(key: String(decoding: key, as: UTF8.self))
            }
        }

        /// The tables as they are now, to be read.
        public func build() -> LookupTables { LookupTables(tables.map(LookupTable.init)) }
    }

    /// What adding a record to a lookup did.
    public enum Added: Equatable {
        case added
        /// The key column is empty: the row cannot be found, so it is not kept.
        case emptyKey
        /// A single-row lookup already holds this key; the first row stays.
        case duplicate(key: String)
    }

    private init(_ tables: [LookupTable]) { self.tables = tables }

    func row(_ index: Int, _ key: String) -> LookupRow? {
        let table = tables[index]
        return table.storage.first(key).map { LookupRow(table: table, row: $0) }
    }

    func rows(_ index: Int, _ key: String) -> [LookupRow] {
        let table = tables[index]
        guard var row = table.storage.first(key) else { return [] }
        var out = [LookupRow(table: table, row: row)]
        while let next = table.storage.next(after: row) {
            out.append(LookupRow(table: table, row: next))
            row = next
        }
        return out
    }
}

/// How a key of several columns is stored and looked up: each part's byte count, a colon, its bytes. Unlike a
/// separator, no value can make two different keys look alike.
public enum LookupKey {
    public static func composite(_ parts: [String]) -> String {
        var key = ""
        for part in parts { key += "\(part.utf8.count):\(part)" }
        return key
    }
}

/// One row of a lookup table, as an expression value: its fields become Strings only when read.
struct LookupRow: Sendable {
    let table: LookupTable
    let row: Int

    func value(_ column: Int) -> Value { table.storage.value(row: row, column: column) }
}

/// A built lookup table: its storage, frozen. A class, so that expression values refer to it without copying it.
final class LookupTable: Sendable {
    let storage: LookupTableStorage

    init(_ storage: LookupTableStorage) { self.storage = storage }
}

/// The rows of one lookup: bytes in an arena, an index from key to first row, and a chain for multi-row keys.
/// A value: filled in a `LookupTables.Builder`, then read through a `LookupTable`'s constant.
struct LookupTableStorage: Sendable {
    /// Columns kept (nil: all); the others read as empty.
    private let keep: [Bool]?
    /// Key and kept fields of every row, back to back.
    private var bytes: [UInt8] = []
    /// Per row: where its key ends, then where each of its fields ends. A row starts where the one before ends.
    private var ends: [Int] = []
    private var width = -1
    /// List-valued fields (repeated XML children), by `row * width + column`; empty spans in `bytes`.
    private var lists: [Int: [String]] = [:]
    /// Open addressing: the high 32 bits of the key's hash, and the row + 1 (0 for an empty slot).
    private var slots: [UInt64] = Array(repeating: 0, count: 1 << 10)
    /// Rows with the same key, in order: `chain[row]` is the next row + 1, or 0; `tails` the last row per slot.
    private var chain: [UInt32] = []
    private var tails: [UInt32] = []
    private(set) var count = 0

    init(keep: Set<Int>?) {
        if let keep, let highest = keep.max() {
            self.keep = (0...highest).map { keep.contains($0) }
        } else {
            self.keep = keep == nil ? nil : []
        }
    }

    private func kept(_ column: Int) -> Bool {
        guard let keep else { return true }
        return column < keep.count && keep[column]
    }

    /// Stores the row under `key`; false (storing nothing) when the table is single-row and already holds the key.
    mutating func add(key: UnsafeBufferPointer<UInt8>, record: RecordBytes, multiple: Bool) -> Bool {
        if width < 0 { width = record.ends.count }
        precondition(record.ends.count == width, "every row of a source has the same fields")
        let hash = Self.hash(key)
        if (count + 1) * 4 > slots.count * 3 { grow() }
        let slot = find(key, hash: hash)
        let row = ends.count / (width + 1)
        if multiple && tails.count != slots.count { tails = Array(repeating: 0, count: slots.count) }
        if slots[slot] != 0 {
            guard multiple else { return false }
            let last = Int(tails[slot])
            chain[last] = UInt32(row + 1)
            tails[slot] = UInt32(row)
        } else {
            slots[slot] = (hash & 0xFFFF_FFFF_0000_0000) | UInt64(row + 1)
            if multiple { tails[slot] = UInt32(row) }
            count += 1
        }
        if multiple { chain.append(0) }
        bytes.append(contentsOf: key)
        ends.append(bytes.count)
        record.bytes.withUnsafeBufferPointer { p in
            var from = 0
            for (column, to) in record.ends.enumerated() {
                if kept(column) { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: p[from..<to])) }
                ends.append(bytes.count)
                from = to
            }
        }
        for list in record.lists where kept(list.field) { lists[row * width + list.field] = list.items }
        return true
    }

    /// The first row stored under `key`.
    func first(_ key: String) -> Int? {
        var key = key
        return key.withUTF8 { k in
            let slot = slots[find(k, hash: Self.hash(k))]
            return slot == 0 ? nil : Int(truncatingIfNeeded: slot & 0xFFFF_FFFF) - 1
        }
    }

    /// The next row with the same key as `row` (multi-row tables).
    func next(after row: Int) -> Int? {
        guard row < chain.count, chain[row] != 0 else { return nil }
        return Int(chain[row]) - 1
    }

    func value(row: Int, column: Int) -> Value {
        let at = row * (width + 1) + 1 + column
        let start = ends[at - 1]
        let end = ends[at]
        if start == end {
            if !lists.isEmpty, let items = lists[row * width + column] { return .list(items.map { $0.isEmpty ? .null : .string($0) }) }
            return .null
        }
        return bytes.withUnsafeBufferPointer { .string(String(decoding: UnsafeBufferPointer(rebasing: $0[start..<end]), as: UTF8.self)) }
    }

    /// The slot holding `key`, or the empty slot where it goes.
    private func find(_ key: UnsafeBufferPointer<UInt8>, hash: UInt64) -> Int {
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let slot = slots[i]
            if slot == 0 { return i }
            if slot & 0xFFFF_FFFF_0000_0000 == hash & 0xFFFF_FFFF_0000_0000 && keyEquals(row: Int(slot & 0xFFFF_FFFF) - 1, key) { return i }
            i = (i + 1) & mask
        }
    }

    private func keyEquals(row: Int, _ key: UnsafeBufferPointer<UInt8>) -> Bool {
        withKey(row: row) { stored in stored.count == key.count && (key.isEmpty || memcmp(stored.baseAddress!, key.baseAddress!, key.count) == 0) }
    }

    /// Calls `body` with the key bytes of `row`, in the arena.
    private func withKey<R>(row: Int, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        let at = row * (width + 1)
        let start = at == 0 ? 0 : ends[at - 1]
        return bytes.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[start..<ends[at]])) }
    }

    private mutating func grow() {
        let old = slots
        let oldTails = tails
        slots = Array(repeating: 0, count: old.count * 2)
        if !oldTails.isEmpty { tails = Array(repeating: 0, count: slots.count) }
        let mask = slots.count - 1
        for (i, slot) in old.enumerated() where slot != 0 {
            var j = Int(truncatingIfNeeded: withKey(row: Int(slot & 0xFFFF_FFFF) - 1) { Self.hash($0) }) & mask
            while slots[j] != 0 { j = (j + 1) & mask }
            slots[j] = slot
            if !oldTails.isEmpty { tails[j] = oldTails[i] }
        }
    }

    private static func hash(_ key: UnsafeBufferPointer<UInt8>) -> UInt64 {
        UInt64(truncatingIfNeeded: FastHash.hash128(key))
    }
}
