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
}
