// TEMPORARY compile stub, replaced by branch sources.
public struct XMLSourceConfig {
    public enum Format { case elements, mysql }
    public var recordPath: String
    public var namespaces: [String: String] = [:]
    public var fields: [(name: String, path: String)]? = nil
    public var format: Format = .elements
    public var schemaPath: String? = nil
    public init(recordPath: String) { self.recordPath = recordPath }
}
public final class XMLRecordReader: RecordReader {
    public init(path: String, config: XMLSourceConfig) throws {}
    public var fieldNames: [String] { [] }
    public func next() throws -> ReadResult? { nil }
    public var bytesRead: Int { 0 }
    public var sha256: String { "" }
}
