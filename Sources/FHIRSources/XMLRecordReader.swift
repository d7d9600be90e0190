import FileIO
internal import CXMLShim

#if canImport(Glibc)
import Glibc
#endif

/// How to find records and fields in an XML export.
public struct XMLSourceConfig: Sendable {
    public enum Format: Sendable {
        /// One element per record; fields are child elements and attributes.
        case elements
        /// `mysql --xml`: `<resultset><row><field name="...">value</field></row></resultset>`.
        case mysql
    }

    /// Absolute path of the repeating record element, e.g. `/export/patients/patient`. Steps match local names; a
    /// step with a prefix declared in `namespaces` (`/h:export/h:patient`) must also be in that namespace; a step may
    /// carry `[@attribute='value']` predicates. nil for `.mysql`: told by the root element (`<resultset>`:
    /// `/resultset/row`, `<mysqldump>` of one table: `/mysqldump/database/table_data/row`).
    public var recordPath: String?
    /// Prefix → namespace URI, for prefixed steps of `recordPath`.
    public var namespaces: [String: String] = [:]
    /// Field name → path relative to the record: `given` (child text), `name/given` (nested), `@id` (attribute of
    /// the record), `address/@use` (attribute of a child). Prefixes in field paths are ignored (local names match).
    /// nil: discovered from the first record (child elements and attributes, in document order).
    public var fields: [(name: String, path: String)]?
    public var format: Format = .elements
    /// An XSD the file is validated against while it is read.
    public var schemaPath: String?

    public init(recordPath: String?) {
        self.recordPath = recordPath
    }
}

/// Streams the records of an XML file through libxml2's reader, so memory stays flat whatever the file size.
///
/// DTDs are refused before libxml2 sees a byte of them (no external entities, no entity expansion: XXE and
/// "billion laughs" files are rejected with a clear error), and the network is never used.
public final class XMLRecordReader: RecordReader {
    public let path: String
    public private(set) var fieldNames: [String] = []
    private var fieldPaths: [String] = []
    private let config: XMLSourceConfig
    private let input: XMLInput
    private var reader: OpaquePointer?
    private let recordPath: String
    private let recordSteps: [RecordStep]
    /// The elements open above the reading position, outside any record.
    private var stack: [OpenElement] = []
    /// Until the first record: what the file holds, to explain a path that matches nothing.
    private var census: XMLPathCensus? = XMLPathCensus()
    private var pending: ReadResult?
    private static let xsiNamespace = "http://www.w3.org/2001/XMLSchema-instance"
    private static let xmlnsNamespace = "http://www.w3.org/2000/xmlns/"

    public var bytesRead: Int { input.bytesRead }
    public var sha256: String { input.digest ?? "" }

    /// Opens `path`, checks it has no DTD, and learns the field names (from `config.fields` or the first record).
    public init(path: String, config: XMLSourceConfig) throws {
        self.path = path
        self.config = config
        input = try XMLInput(path: path)
        let root = try input.checkProlog()
        let recordPath: String
        if let declared = config.recordPath {
            recordPath = declared
        } else if config.format == .mysql && root == "mysqldump" {
            try Self.checkOneTable(path: path)
            recordPath = "/mysqldump/database/table_data/row"
        } else if config.format == .mysql {
            recordPath = "/resultset/row"
        } else {
            throw SourceError(file: path, line: 1, message: "no record path: give the path of the repeating element, e.g. record: /export/patient")
        }
        self.recordPath = recordPath
        let parsed: XMLRecordPath
        do {
            parsed = try XMLRecordPath(parsing: recordPath)
        } catch {
            throw SourceError(file: path, line: 1, message: "record path '\(recordPath)', at character \(error.offset + 1): \(error.message)")
        }
        recordSteps = try parsed.steps.map { step in
            guard let prefix = step.prefix else { return RecordStep(uri: nil, local: step.local, predicates: step.predicates) }
            guard let uri = config.namespaces[prefix] else {
                throw SourceError(file: path, line: 1, message: "the record path uses prefix '\(prefix)', which 'namespaces' does not declare")
            }
            return RecordStep(uri: uri, local: step.local, predicates: step.predicates)
        }
        // A one-step path's records' parent is the document itself.
        census?.recordParentSeen = recordSteps.count == 1
        let context = Unmanaged.passUnretained(input).toOpaque()
        guard let r = cxml_reader_open(xmlInputRead, context, path) else {
            throw SourceError(file: path, line: 1, message: "libxml2 could not create a reader")
        }
        reader = r
        if let schema = config.schemaPath {
            let xsd: [UInt8]
            do {
                xsd = try FileReader.contents(of: schema)
            } catch {
                throw SourceError(file: schema, line: 1, message: "cannot read the XSD: \(error.reason)")
            }
            let status = xsd.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { cxml_reader_use_schema(r, $0.baseAddress, Int32($0.count)) }
            }
            if status != 0 {
                throw SourceError(file: schema, line: Int(cxml_reader_error_line(r)), message: "the XSD cannot be used: \(cxml_reader_error(r).map { String(cString: $0) } ?? "invalid schema")")
            }
        }
        if let fields = config.fields {
            fieldNames = fields.map(\.name)
            fieldPaths = fields.map { f in
                f.path.split(separator: "/").map { step in String(step.split(separator: ":").last ?? step) }.joined(separator: "/")
            }
            fieldSlots = FieldSlots(paths: fieldPaths)
        } else {
            if config.format == .elements, let root, root == "mysqldump" || root == "resultset" {
                throw SourceError(file: path, line: 1, message: "this is MySQL's XML (<\(root)>): read it with format: mysql-xml, where a field named x is <field name=\"x\">")
            }
            // Learn the fields from the first record, and hand that record out first.
            var first = DiscoveredRecord()
            if let line = try readRecord(into: &first) {
                fieldNames = first.paths
                fieldPaths = first.paths
                fieldSlots = FieldSlots(paths: fieldPaths)
                for (key, value) in first.pairs { fieldSlots.add(key, value) }
                pending = .record(SourceRecord(line: line, values: fieldSlots.take()))
            } else {
                fieldNames = try fieldsOfEmptyFile()
                fieldPaths = fieldNames
                fieldSlots = FieldSlots(paths: fieldPaths)
                census = nil
            }
        }
    }

    /// One step of the record path, its prefix resolved to a namespace URI.
    private struct RecordStep {
        var uri: String?
        var local: String
        var predicates: [XMLRecordPath.Predicate]
    }

    private struct OpenElement {
        var local: String
        /// This element and all above it match the record path's first steps.
        var onPath: Bool
        /// Its path in the census; -1 when not counted.
        var censusPath: Int32
    }

    deinit {
        if let reader { cxml_reader_free(reader) }
    }

    public func next() throws -> ReadResult? {
        if let p = pending {
            pending = nil
            return p
        }
        guard let line = try readRecord(into: &fieldSlots) else {
            if census != nil {
                // The file ended before a record: an empty table, or a path that matches nothing.
                _ = try fieldsOfEmptyFile()
                census = nil
            }
            return nil
        }
        return .record(SourceRecord(line: line, values: fieldSlots.take()))
    }

    /// At the end of a file without a record: the fields it is read with as a source of zero rows (the declared ones,
    /// or an empty mysqldump table's columns from its `<table_structure>`), or the error that explains why not.
    private func fieldsOfEmptyFile() throws -> [String] {
        let census = census ?? XMLPathCensus()
        let fileName = path.split(separator: "/").last.map(String.init) ?? path
        guard census.recordParentSeen && !census.recordParentHasOtherChildren else {
            throw SourceError(file: path, line: census.rootLine, message: census.noMatchMessage(recordPath: recordPath, fileName: fileName))
        }
        if let fields = config.fields { return fields.map(\.name) }
        if config.format == .mysql && census.root == "mysqldump" {
            let named = recordSteps.first { $0.local == "table_data" }?.predicates.first { $0.attribute == "name" }?.value
            if let table = named ?? (census.tables.count == 1 ? census.tables[0] : nil),
               let columns = census.columnsOfTable[table], !columns.isEmpty {
                return columns
            }
        }
        let parent = recordSteps.dropLast().last.map { "<\($0.local)>" } ?? "the document"
        throw SourceError(file: path, line: census.rootLine, message: "\(fileName) holds no <\(recordSteps.last!.local)> in \(parent) (record path '\(recordPath)'): an empty table, whose fields nothing tells; declare its fields to read it as a source of zero rows")
    }

    /// A mysqldump read without a record path must hold one table: reads the file through once (skipping each
    /// table's content) and refuses one of several tables, naming them.
    private static func checkOneTable(path: String) throws {
        let input = try XMLInput(path: path)
        _ = try input.checkProlog()
        let context = Unmanaged.passUnretained(input).toOpaque()
        guard let r = cxml_reader_open(xmlInputRead, context, path) else {
            throw SourceError(file: path, line: 1, message: "libxml2 could not create a reader")
        }
        defer { cxml_reader_free(r) }
        var tables: [(database: String, table: String)] = []
        var database = ""
        func attribute(_ name: String) -> String {
            var value = ""
            while cxml_reader_next_attribute(r) == 1 {
                if let local = cxml_reader_local_name(r), String(cString: local) == name, let v = cxml_reader_value(r) { value = String(cString: v) }
            }
            cxml_reader_to_element(r)
            return value
        }
        var status = cxml_reader_read(r)
        while status == 1 {
            let depth = cxml_reader_depth(r)
            if cxml_reader_node_type(r) == Int32(CXML_ELEMENT) && depth >= 1 {
                let local = cxml_reader_local_name(r).map { String(cString: $0) } ?? ""
                if depth == 1 && local == "database" {
                    database = attribute("name")
                } else if depth == 2 {
                    if local == "table_data" && tables.count < XMLPathCensus.tableLimit { tables.append((database, attribute("name"))) }
                    status = cxml_reader_skip_subtree(r)
                    continue
                }
            }
            status = cxml_reader_read(r)
        }
        if status < 0 {
            if let refusal = input.refusal { throw refusal }
            // The main reader reports the malformed XML with its line.
            return
        }
        guard tables.count > 1 else { return }
        let databases = Set(tables.map(\.database))
        let names = tables.map { databases.count > 1 ? "\($0.database).\($0.table)" : $0.table }
        let example = databases.count > 1
            ? "/mysqldump/database[@name='\(tables[0].database)']/table_data[@name='\(tables[0].table)']/row"
            : "/mysqldump/database/table_data[@name='\(tables[0].table)']/row"
        throw SourceError(file: path, line: 1, message: "this mysqldump file holds \(tables.count) tables (\(names.joined(separator: ", "))) and a source reads one: name it in the record path, e.g. record: \"\(example)\"")
    }

    /// Where a record's values go while it is read.
    private protocol RecordSink {
        mutating func add(_ key: String, _ value: String)
    }

    /// The first record when the fields are discovered: its values in document order.
    private struct DiscoveredRecord: RecordSink {
        var pairs: [(key: String, value: String)] = []

        mutating func add(_ key: String, _ value: String) { pairs.append((key, value)) }

        /// The relative paths met, each once, in document order.
        var paths: [String] {
            var seen = Set<String>()
            return pairs.map(\.key).filter { seen.insert($0).inserted }
        }
    }

    /// The values of the mapped fields of one record, by field position: no dictionary per record. A field met once
    /// is a single value, more than once a list (empty values left out), never a missing one.
    private struct FieldSlots: RecordSink {
        /// Path → its slot; fields that share a path share a slot.
        let index: [String: Int]
        /// Field position → slot, when some fields share a path (nil: field i is slot i).
        let slotOfField: [Int]?
        var values: [FieldValue]
        var seen: [Int32]

        init(paths: [String]) {
            var index: [String: Int] = [:]
            var slots: [Int] = []
            for p in paths {
                if index[p] == nil { index[p] = index.count }
                slots.append(index[p]!)
            }
            self.index = index
            slotOfField = index.count == paths.count ? nil : slots
            values = Array(repeating: .single(""), count: index.count)
            seen = Array(repeating: 0, count: index.count)
        }

        mutating func add(_ key: String, _ value: String) {
            guard let i = index[key] else { return }
            seen[i] += 1
            switch seen[i] {
            case 1: values[i] = .single(value)
            case 2:
                guard case .single(let first) = values[i] else { return }
                values[i] = .list([first, value].filter { !$0.isEmpty })
            default:
                if !value.isEmpty, case .list(var list) = values[i] {
                    values[i] = .single("")  // release the list's storage so the append does not copy it
                    list.append(value)
                    values[i] = .list(list)
                }
            }
        }

        /// This record's values; the slots are cleared for the next one.
        mutating func take() -> [FieldValue] {
            let out = slotOfField.map { $0.map { values[$0] } } ?? values
            for i in values.indices where seen[i] > 0 {
                values[i] = .single("")
                seen[i] = 0
            }
            return out
        }
    }

    private var fieldSlots = FieldSlots(paths: [])

    private func fail() -> SourceError {
        let r = reader!
        if let dtd = input.refusal { return dtd }
        let message = cxml_reader_error(r).map { String(cString: $0) } ?? "the XML is not well-formed"
        let line = Int(cxml_reader_error_line(r))
        let column = Int(cxml_reader_error_column(r))
        return SourceError(file: path, line: line > 0 ? line : Int(cxml_reader_line(r)), column: column > 0 ? column : nil,
                           message: "invalid XML: \(message)")
    }

    private func string(_ p: UnsafePointer<CChar>?) -> String? { p.map { String(cString: $0) } }

    /// Whether the current element, at `depth` under an element on the path, is the path's step at that depth.
    private func matchesStep(_ depth: Int, uri: String?, local: String) -> Bool {
        guard depth < recordSteps.count else { return false }
        let step = recordSteps[depth]
        guard step.local == local, step.uri == nil || step.uri == uri else { return false }
        if step.predicates.isEmpty { return true }
        let attrs = attributes().list
        return step.predicates.allSatisfy { p in attrs.contains { $0.0 == p.attribute && $0.1 == p.value } }
    }

    /// The value of the current element's attribute `name` (local name), empty when absent.
    private func attribute(_ name: String) -> String {
        attributes().list.first { $0.0 == name }?.1 ?? ""
    }

    /// Counts the element just entered (before the first record), and notes a mysqldump's tables and columns.
    private func noteInCensus(depth: Int, local: String, parentOnPath: Bool, onPath: Bool) -> Int32 {
        guard census != nil else { return -1 }
        let line = Int(cxml_reader_line(reader!))
        let id = census!.enter(local, parent: depth == 0 ? nil : stack.count == depth ? stack[depth - 1].censusPath : -1, line: line)
        if onPath && depth == recordSteps.count - 2 { census!.recordParentSeen = true }
        if parentOnPath && !onPath && depth == recordSteps.count - 1 { census!.recordParentHasOtherChildren = true }
        if config.format == .mysql && depth >= 2 && stack.count == depth && stack[0].local == "mysqldump" && stack[1].local == "database" {
            if depth == 2 && local == "table_data" {
                census!.noteTable(attribute("name"))
            } else if depth == 2 && local == "table_structure" {
                census!.enterStructure(attribute("name"))
            } else if depth == 3 && local == "field" && stack[2].local == "table_structure" {
                census!.noteColumn(attribute("Field"))
            }
        }
        return id
    }

    /// Attributes of the current element as (local name, value), skipping namespace declarations and xsi:*; also
    /// whether it carries `xsi:nil="true"`.
    private func attributes() -> (list: [(String, String)], isNil: Bool) {
        let r = reader!
        var list: [(String, String)] = []
        var isNil = false
        while cxml_reader_next_attribute(r) == 1 {
            let uri = string(cxml_reader_namespace_uri(r))
            let local = string(cxml_reader_local_name(r)) ?? ""
            let value = string(cxml_reader_value(r)) ?? ""
            if uri == XMLRecordReader.xmlnsNamespace || local == "xmlns" { continue }
            if uri == XMLRecordReader.xsiNamespace {
                if local == "nil" && (value == "true" || value == "1") { isNil = true }
                continue
            }
            list.append((local, value))
        }
        cxml_reader_to_element(r)
        return (list, isNil)
    }

    /// Reads the next record into `sink`; returns its line, nil at the end of the file.
    private func readRecord<Sink: RecordSink>(into sink: inout Sink) throws -> Int? {
        guard let r = reader else { return nil }
        while true {
            let status = cxml_reader_read(r)
            if status < 0 { throw fail() }
            if status == 0 {
                if let refusal = input.refusal { throw refusal }
                return nil
            }
            switch Int(cxml_reader_node_type(r)) {
            case Int(CXML_ELEMENT):
                let depth = Int(cxml_reader_depth(r))
                if stack.count > depth { stack.removeLast(stack.count - depth) }
                let local = string(cxml_reader_local_name(r)) ?? ""
                let parentOnPath = depth == 0 || (stack.count == depth && stack[depth - 1].onPath)
                let onPath = parentOnPath && matchesStep(depth, uri: string(cxml_reader_namespace_uri(r)), local: local)
                let censusPath = noteInCensus(depth: depth, local: local, parentOnPath: parentOnPath, onPath: onPath)
                let empty = cxml_reader_is_empty_element(r) == 1
                if onPath && depth == recordSteps.count - 1 {
                    census = nil
                    let line = Int(cxml_reader_line(r))
                    try collectRecord(depth: depth, empty: empty, into: &sink)
                    return line
                }
                if !empty { stack.append(OpenElement(local: local, onPath: onPath, censusPath: censusPath)) }
            case Int(CXML_END_ELEMENT):
                if !stack.isEmpty { stack.removeLast() }
            case Int(CXML_DOCUMENT_TYPE):
                throw SourceError(file: path, line: Int(cxml_reader_line(r)), message: DTDRefusal.message)
            default:
                continue
            }
        }
    }

    /// Reads the current record element to its end.
    private func collectRecord<Sink: RecordSink>(depth: Int, empty: Bool, into record: inout Sink) throws {
        let r = reader!
        for (name, value) in attributes().list { record.add("@" + name, value) }
        if empty { return }
        // Open elements inside the record: relative path, collected text, xsi:nil.
        var open: [(path: String, text: String, isNil: Bool)] = []
        while true {
            let status = cxml_reader_read(r)
            if status < 0 { throw fail() }
            if status == 0 { throw fail() }
            switch Int(cxml_reader_node_type(r)) {
            case Int(CXML_ELEMENT):
                let d = Int(cxml_reader_depth(r))
                let local = string(cxml_reader_local_name(r)) ?? ""
                let (attrs, isNil) = attributes()
                var key: String
                if config.format == .mysql && d == depth + 1 && local == "field" {
                    key = attrs.first { $0.0 == "name" }?.1 ?? "field"
                } else {
                    key = open.last.map { $0.path + "/" + local } ?? local
                    for (name, value) in attrs { record.add(key + "/@" + name, value) }
                }
                if cxml_reader_is_empty_element(r) == 1 {
                    record.add(key, "")
                } else {
                    open.append((key, "", isNil))
                }
            case Int(CXML_TEXT), Int(CXML_CDATA), Int(CXML_SIGNIFICANT_WHITESPACE):
                if !open.isEmpty, let text = string(cxml_reader_value(r)) { open[open.count - 1].text += text }
            case Int(CXML_END_ELEMENT):
                if Int(cxml_reader_depth(r)) == depth { return }
                if let element = open.popLast() {
                    let blank = element.text.utf8.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
                    record.add(element.path, element.isNil || blank ? "" : element.text)
                }
            default:
                continue
            }
        }
    }
}

/// Why DTDs are refused, in one place.
enum DTDRefusal {
    static let message = "the XML file declares a DTD (<!DOCTYPE>); DTDs and entities are refused for safety (they can read local files or expand without bound). Export the data without a DOCTYPE."
}

/// The file behind libxml2: read in large chunks, hashed as read, and checked for a DTD before libxml2 parses it.
final class XMLInput {
    let path: String
    private let file: HashedFile
    private var prefetched: [UInt8] = []
    private var prefetchOffset = 0
    var bytesRead: Int { file.bytesRead }
    var digest: String? { file.digest }
    /// Set when the input refused to go on (a DTD, an element with too many attributes): libxml2 then sees an I/O
    /// error, and the reader reports this.
    var refusal: SourceError?
    private var attributeCounter = XMLAttributeCounter()

    init(path: String) throws {
        self.path = path
        file = try HashedFile(path: path)
    }

    /// How the file's bytes map to characters, as far as the prolog scan and the attribute count need: ASCII
    /// characters are single bytes, or UTF-16 code units in one byte order.
    enum Layout: Equatable { case asciiCompatible, utf16(littleEndian: Bool) }
    private(set) var layout = Layout.asciiCompatible

    /// Encodings an XML declaration may name here: those libxml2 decodes reliably and whose ASCII characters are
    /// the bytes the DTD scan looks for (or UTF-16, which it reads as such). Others (UTF-7, EBCDIC, UTF-32, …)
    /// could hide a DOCTYPE from the scan and are refused.
    static let declaredEncodings: Set<String> = ["utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1", "iso-8859-15", "windows-1252", "cp1252", "utf-16", "utf-16le", "utf-16be"]

    /// Reads up to the root element's start tag and refuses a DOCTYPE before it, whatever the encoding: the encoding
    /// comes from the byte order mark or the first bytes (UTF-16 with or without a mark, as the XML specification's
    /// appendix F detects them) and the XML declaration. Only the prolog is scanned: a DTD can stand nowhere else.
    /// Returns the root element's local name (ASCII characters only; nil when the prolog is not followed by one).
    func checkProlog() throws -> String? {
        var scan: [UInt8] = []  // the prolog as ASCII: one byte per character, 'x' for any other character
        var projected = 0  // raw bytes turned into `scan` so far
        var i = 0
        var line = 1
        func project() {
            switch layout {
            case .asciiCompatible:
                scan.append(contentsOf: prefetched[projected...])
                projected = prefetched.count
            case .utf16(let little):
                while projected + 1 < prefetched.count {
                    let unit = little ? UInt16(prefetched[projected]) | UInt16(prefetched[projected + 1]) << 8
                        : UInt16(prefetched[projected]) << 8 | UInt16(prefetched[projected + 1])
                    scan.append(unit < 0x80 ? UInt8(unit) : UInt8(ascii: "x"))
                    projected += 2
                }
            }
        }
        func more() throws -> Bool {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = try rawRead(&chunk)
            if n == 0 { return false }
            prefetched.append(contentsOf: chunk[0..<n])
            project()
            return true
        }
        func has(_ count: Int) throws -> Bool {
            while scan.count - i < count { if try !more() { return false } }
            return true
        }
        func starts(_ s: String) throws -> Bool {
            let b = Array(s.utf8)
            guard try has(b.count) else { return false }
            return Array(scan[i..<i + b.count]) == b
        }
        func skip(to terminator: String) throws {
            let t = Array(terminator.utf8)
            while true {
                guard try has(t.count) else { return }
                if Array(scan[i..<i + t.count]) == t { i += t.count; return }
                if scan[i] == 0x0A { line += 1 }
                i += 1
            }
        }
        func refuse(_ message: String) -> SourceError {
            refusal = SourceError(file: path, line: line, message: message)
            return refusal!
        }
        // The first four bytes tell the encoding family (XML 1.0, appendix F).
        while prefetched.count < 4 {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = try rawRead(&chunk)
            if n == 0 { break }
            prefetched.append(contentsOf: chunk[0..<n])
        }
        let head = Array(prefetched.prefix(4)) + [UInt8](repeating: 0xAA, count: max(0, 4 - prefetched.count))
        switch (head[0], head[1], head[2], head[3]) {
        case (0x00, 0x00, 0xFE, 0xFF), (0xFF, 0xFE, 0x00, 0x00), (0x00, 0x00, 0x00, 0x3C), (0x3C, 0x00, 0x00, 0x00):
            throw refuse("the file is UTF-32, which is not read here; convert it to UTF-8 or UTF-16")
        case (0x4C, 0x6F, 0xA7, 0x94):
            throw refuse("the file is EBCDIC, which is not read here; convert it to UTF-8")
        case (0xFF, 0xFE, _, _):
            layout = .utf16(littleEndian: true)
            projected = 2
        case (0xFE, 0xFF, _, _):
            layout = .utf16(littleEndian: false)
            projected = 2
        case (0x3C, 0x00, 0x3F, 0x00):
            layout = .utf16(littleEndian: true)
        case (0x00, 0x3C, 0x00, 0x3F):
            layout = .utf16(littleEndian: false)
        case (0xEF, 0xBB, 0xBF, _):
            projected = 3
        default:
            break
        }
        project()
        if try starts("<?xml") {
            let declStart = i
            try skip(to: "?>")
            let declaration = String(decoding: scan[declStart..<i], as: UTF8.self)
            if let encoding = Self.declaredEncoding(in: declaration), !Self.declaredEncodings.contains(encoding.lowercased()) {
                throw refuse("the XML declaration names the encoding \(encoding), which is not read here (it could hide markup from the safety checks); convert the file to UTF-8")
            }
        }
        while try has(1) {
            let b = scan[i]
            if b == 0x0A { line += 1; i += 1; continue }
            if b == 0x20 || b == 0x09 || b == 0x0D { i += 1; continue }
            if try starts("<?") { try skip(to: "?>"); continue }
            if try starts("<!--") { try skip(to: "-->"); continue }
            if try starts("<!") { throw refuse(DTDRefusal.message) }
            // The root element (or text libxml2 will reject).
            guard b == UInt8(ascii: "<") else { return nil }
            i += 1
            var name: [UInt8] = []
            while try has(1), name.count < 256 {
                let c = scan[i]
                if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == UInt8(ascii: ">") || c == UInt8(ascii: "/") { break }
                name.append(c)
                i += 1
            }
            let qualified = String(decoding: name, as: UTF8.self)
            return qualified.split(separator: ":").last.map(String.init) ?? qualified
        }
        return nil
    }

    /// The value of `encoding="…"` in an XML declaration, if any.
    static func declaredEncoding(in declaration: String) -> String? {
        guard let r = declaration.range(of: "encoding") else { return nil }
        var rest = declaration[r.upperBound...].drop { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard rest.first == "=" else { return nil }
        rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard let quote = rest.first, quote == "\"" || quote == "'" else { return nil }
        return String(rest.dropFirst().prefix { $0 != quote })
    }

    /// Fills `buffer` for libxml2 (the prefetched prolog first), refusing an element with more attributes than
    /// libxml2 handles in reasonable time before it sees them.
    func read(into buffer: UnsafeMutablePointer<CChar>, length: Int) -> Int32 {
        let n = fill(buffer, length: length)
        guard n > 0 else { return n }
        let chunk = UnsafeRawBufferPointer(start: buffer, count: Int(n))
        let found: Int?
        switch layout {
        case .asciiCompatible: found = attributeCounter.scan(chunk)
        case .utf16(let little): found = attributeCounter.scanUTF16(chunk, littleEndian: little)
        }
        if let tag = found {
            refusal = SourceError(file: path, line: line(atOffset: tag),
                                  message: "an element has more than \(attributeCounter.limit) attributes; it is refused (the XML library's time grows with the square of their number). Export such data as child elements")
            return -1
        }
        return n
    }

    /// The 1-based line of byte `offset` (of UTF-16 code unit `offset`, for UTF-16), counted again from the start of
    /// the file (only for an error message).
    private func line(atOffset units: Int) -> Int {
        if case .utf16(let little) = layout {
            var line = 1
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            var position = 0
            let end = units * 2
            while position < end {
                let n = chunk.withUnsafeMutableBytes { file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<min($0.count, end - position)]), at: position) }
                if n <= 1 { break }
                for k in stride(from: 0, to: n - 1, by: 2) where (little ? chunk[k] : chunk[k + 1]) == 0x0A && (little ? chunk[k + 1] : chunk[k]) == 0 { line += 1 }
                position += n & ~1
            }
            return line
        }
        let offset = units
        var line = 1
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var position = 0
        while position < offset {
            let n = chunk.withUnsafeMutableBytes { file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<min($0.count, offset - position)]), at: position) }
            if n <= 0 { break }
            for b in chunk[0..<n] where b == 0x0A { line += 1 }
            position += n
        }
        return line
    }

    private func fill(_ buffer: UnsafeMutablePointer<CChar>, length: Int) -> Int32 {
        if refusal != nil { return -1 }
        if prefetchOffset < prefetched.count {
            let n = min(length, prefetched.count - prefetchOffset)
            prefetched.withUnsafeBytes { p in
                UnsafeMutableRawPointer(buffer).copyMemory(from: p.baseAddress! + prefetchOffset, byteCount: n)
            }
            prefetchOffset += n
            if prefetchOffset == prefetched.count { prefetched = [] ; prefetchOffset = 0 }
            return Int32(n)
        }
        do {
            // Straight into libxml2's buffer: no array per callback.
            return Int32(try rawRead(into: UnsafeMutableRawBufferPointer(start: buffer, count: length)))
        } catch {
            refusal = error as? SourceError
            return -1
        }
    }


    private func rawRead(_ chunk: inout [UInt8]) throws -> Int {
        try chunk.withUnsafeMutableBytes { p in try rawRead(into: p) }
    }

    /// Reads the next bytes of the file into `p`, hashing them; 0 at the end.
    private func rawRead(into p: UnsafeMutableRawBufferPointer) throws -> Int {
        try file.read(into: p, line: 1)
    }
}

/// libxml2's read callback: forwards to the `XMLInput` passed as context.
private let xmlInputRead: cxml_read_fn = { context, buffer, length in
    guard let context, let buffer else { return -1 }
    let input = Unmanaged<XMLInput>.fromOpaque(context).takeUnretainedValue()
    return input.read(into: buffer, length: Int(length))
}
