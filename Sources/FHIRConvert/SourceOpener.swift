import FHIRMapping
import FHIRSources

/// Opens the reader a source declaration asks for.
enum SourceOpener {
    static func open(_ declaration: SourceDeclaration, path: String, directory: String) throws -> any RecordReader {
        switch declaration.format {
        case .csv:
            return try CSVRecordReader(path: path, delimiter: declaration.delimiter, encoding: declaration.encoding)
        case .fixedWidth:
            return try FixedWidthRecordReader(path: path, columns: declaration.columns, headerLines: declaration.headerLines,
                                              encoding: declaration.encoding)
        case .xml, .mysqlXML:
            var config = XMLSourceConfig(recordPath: declaration.record)
            config.namespaces = declaration.namespaces
            config.fields = declaration.fields
            config.format = declaration.format == .mysqlXML ? .mysql : .elements
            config.schemaPath = declaration.schema.map { $0.hasPrefix("/") ? $0 : directory + "/" + $0 }
            return try XMLRecordReader(path: path, config: config)
        }
    }
}
