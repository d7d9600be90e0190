/// One value of a source field: CSV cells are always `.single`; repeated XML children become `.list`.
public enum FieldValue: Sendable, Equatable {
    case single(String)
    case list([String])
}

/// One record read from a source file: a CSV row or one repeating XML element.
public struct SourceRecord: Sendable, Equatable {
    /// 1-based line in the source file where the record starts.
    public var line: Int
    /// One value per entry of the reader's `fieldNames`; absent, empty and `xsi:nil` fields are `.single("")`.
    public var values: [FieldValue]

    public init(line: Int, values: [FieldValue]) {
        self.line = line
        self.values = values
    }
}

/// What a reader yields for each record: the record, or a reject that names the line and the reason.
public enum ReadResult: Sendable, Equatable {
    case record(SourceRecord)
    /// A record that could not be read (wrong field count, invalid UTF-8, ...). The run goes on.
    case reject(line: Int, reason: String)
}

/// One record as UTF-8 bytes rather than Strings, for readers that keep a whole table in memory (lookups): the
/// fields back to back in `bytes`, and where each ends. Reused from record to record, so reading allocates nothing.
public struct RecordBytes: Sendable {
    /// 1-based line in the source file where the record starts.
    public var line = 0
    /// The fields' bytes, back to back.
    public var bytes: [UInt8] = []
    /// Where each field ends in `bytes` (one per field name).
    public var ends: [Int] = []
    /// Fields that are lists (repeated XML children), by field index; their span in `bytes` is empty. Usually none.
    public var lists: [(field: Int, items: [String])] = []

    public init() {}

    /// Refills from a record of Strings.
    public mutating func set(_ record: SourceRecord) {
        line = record.line
        bytes.removeAll(keepingCapacity: true)
        ends.removeAll(keepingCapacity: true)
        lists.removeAll(keepingCapacity: true)
        for (i, value) in record.values.enumerated() {
            switch value {
            case .single(let s): bytes.append(contentsOf: s.utf8)
            case .list(let items): lists.append((i, items))
            }
            ends.append(bytes.count)
        }
    }

    /// The bytes of field `i` (empty for a list field).
    public func withField<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let start = i == 0 ? 0 : ends[i - 1]
        return try bytes.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[start..<ends[i]])) }
    }

    /// Field `i` as a value.
    public func value(_ i: Int) -> FieldValue {
        if let list = lists.first(where: { $0.field == i }) { return .list(list.items) }
        return withField(i) { .single(String(decoding: $0, as: UTF8.self)) }
    }
}

/// What `RecordReader.next(into:)` yields: a record (in the caller's `RecordBytes`) or a reject.
public enum BytesReadResult: Sendable, Equatable {
    case record
    case reject(line: Int, reason: String)
}

/// A streaming reader of records. Memory stays flat whatever the file size.
public protocol RecordReader: AnyObject {
    /// Names of the fields, in the order of `SourceRecord.values`.
    var fieldNames: [String] { get }
    /// The next record or reject, or nil at the end of the file. Throws only on errors that stop the file
    /// (unreadable file, malformed XML, a DTD or external entity).
    func next() throws -> ReadResult?
    /// Bytes of the file consumed so far (for progress).
    var bytesRead: Int { get }
    /// SHA-256 (lowercase hex) of every byte of the file; valid once `next()` has returned nil.
    var sha256: String { get }
    /// Like `next()`, but a record is written into `record` as bytes: the same records and rejects, without a
    /// String per field.
    func next(into record: inout RecordBytes) throws -> BytesReadResult?
}

extension RecordReader {
    /// Through `next()`, for readers that make Strings anyway.
    public func next(into record: inout RecordBytes) throws -> BytesReadResult? {
        switch try next() {
        case nil: return nil
        case .reject(let line, let reason): return .reject(line: line, reason: reason)
        case .record(let r):
            record.set(r)
            return .record
        }
    }
}
