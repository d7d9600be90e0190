import FHIRMapping
import FHIRModel
import FHIRSources

/// Gathers the rows of a grouping step (`group:` in the mapping) into groups: rows with equal values in the group
/// columns, each within `window` rows of the group's previous row. Exports are mostly written group by group, but
/// not always (Synthea interleaves a few blood-pressure pairs of two encounters), so a group stays open until
/// `window` rows have passed since its last row. Memory holds the open groups' rows and, to tell a late row, 16
/// bytes per closed group (as the identifier index keeps per resource), never the file's rows.
///
/// Groups come out in the order of their last row, which depends only on the input: artifacts stay deterministic.
struct RowGrouper {
    /// What adding a row (or the end of the file) produced.
    enum Outcome {
        /// A complete group, its rows in file order.
        case group([SourceRecord])
        /// A row whose group was already closed (written) at `firstLine`: it came too late to join it.
        case late(SourceRecord, firstLine: Int)
        /// A row beyond the largest group kept in memory.
        case tooLarge(SourceRecord)
    }

    static let maxRowsPerGroup = 100_000

    let columns: [Int]
    let window: Int
    private var open: [UInt128: [SourceRecord]] = [:]
    /// Position of each open group's last row.
    private var lastPosition: [UInt128: Int] = [:]
    /// (group, position) for every row still inside the window, oldest first; `head` is the first live entry.
    private var queue: [(key: UInt128, position: Int)] = []
    private var head = 0
    private var closed = IdentifierIndex()
    private var position = 0

    init(columns: [Int], window: Int) {
        self.columns = columns
        self.window = window
    }

    /// Adds a row that joins a group; returns the groups that closed because the window moved past them.
    mutating func add(_ record: SourceRecord) -> [Outcome] {
        position += 1
        let key = Self.key(record.values, columns)
        var out: [Outcome] = []
        if let firstLine = closed.line(of: key) {
            out.append(.late(record, firstLine: firstLine))
        } else if open[key, default: []].count >= Self.maxRowsPerGroup {
            out.append(.tooLarge(record))
        } else {
            open[key, default: []].append(record)
            lastPosition[key] = position
            queue.append((key, position))
        }
        while head < queue.count, queue[head].position <= position - window {
            if let group = close(queue[head]) { out.append(.group(group)) }
            head += 1
        }
        if head > 4096 && head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return out
    }

    /// The groups still open at the end of the file, in the order of their last row.
    mutating func finish() -> [Outcome] {
        var out: [Outcome] = []
        for entry in queue[head...] {
            if let group = close(entry) { out.append(.group(group)) }
        }
        queue = []
        head = 0
        return out
    }

    /// Closes the entry's group when the entry is its last row.
    private mutating func close(_ entry: (key: UInt128, position: Int)) -> [SourceRecord]? {
        guard lastPosition[entry.key] == entry.position, let rows = open.removeValue(forKey: entry.key) else { return nil }
        lastPosition[entry.key] = nil
        closed.insert(entry.key, line: rows[0].line)
        return rows
    }

    private static func key(_ values: [FieldValue], _ columns: [Int]) -> UInt128 {
        FastHash.hash128(LookupKey.composite(columns.map { c in
            switch values[c] {
            case .single(let s): s
            case .list(let items): items.joined(separator: "\u{1F}")
            }
        }))
    }
}
