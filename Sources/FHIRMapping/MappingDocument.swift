import Foundation
import Yams
import FHIRModel
import FHIRSources

/// A mapping file as written, before names are resolved: sources, lookups, value maps, constants and steps, each
/// with its place in the file so later checks can point at it.
public struct MappingDocument: Sendable {
    /// Path of the mapping file as given.
    public let path: String
    /// The folder that relative source paths start from.
    public let directory: String
    /// The file's bytes, for the manifest's checksum.
    public let bytes: [UInt8]
    public let constants: [Named<String>]
    public let sources: [SourceDeclaration]
    public let lookups: [LookupDeclaration]
    public let maps: [ValueMapDeclaration]
    public let steps: [StepDeclaration]
    /// Optional bundle limits declared in the mapping (nil: no limit); command-line options override them.
    public let limits: [Named<Int?>]

    /// Reads and checks the shape of the mapping file at `path`.
    public static func load(path: String) throws(MappingError) -> MappingDocument {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MappingError(file: path, line: 1, column: 1, message: "cannot read the mapping file (does it exist?)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw MappingError(file: path, line: 1, column: 1, message: "the mapping file is not UTF-8 text")
        }
        return try parse(text, path: path, bytes: Array(data))
    }

    /// Parses mapping YAML `text` as if read from `path`.
    public static func parse(_ text: String, path: String, bytes: [UInt8]? = nil) throws(MappingError) -> MappingDocument {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw MappingError(file: path, line: 1, column: 1, message: "the mapping file is empty")
            }
            root = node
        } catch let error as MappingError {
            throw error
        } catch let error as YamlError {
            throw MappingError(file: path, line: yamlLine(error) ?? 1, column: yamlColumn(error) ?? 1, message: "invalid YAML: \(yamlMessage(error))")
        } catch {
            throw MappingError(file: path, line: 1, column: 1, message: "invalid YAML: \(error)")
        }
        let reader = NodeReader(file: path)
        let top = try reader.mapping(root, what: "the mapping file", allowed: ["version", "description", "constants", "sources", "lookups", "maps", "steps", "limits"])
        if let version = top["version"] {
            guard try reader.string(version, what: "version") == "1" else {
                throw reader.error(version, "unsupported mapping version; this fhirbundle reads version 1")
            }
        }
        var constants: [Named<String>] = []
        if let node = top["constants"] {
            for (key, value) in try reader.pairs(node, what: "constants") {
                constants.append(Named(name: key.0, value: try reader.string(value, what: "constant '\(key.0)'"), location: key.1))
            }
        }
        var sources: [SourceDeclaration] = []
        if let node = top["sources"] {
            for (key, value) in try reader.pairs(node, what: "sources") {
                sources.append(try SourceDeclaration(name: key.0, location: key.1, node: value, reader: reader))
            }
        }
        var lookups: [LookupDeclaration] = []
        if let node = top["lookups"] {
            for (key, value) in try reader.pairs(node, what: "lookups") {
                lookups.append(try LookupDeclaration(name: key.0, location: key.1, node: value, reader: reader))
            }
        }
        var maps: [ValueMapDeclaration] = []
        if let node = top["maps"] {
            for (key, value) in try reader.pairs(node, what: "maps") {
                maps.append(try ValueMapDeclaration(name: key.0, location: key.1, node: value, reader: reader))
            }
        }
        var limits: [Named<Int?>] = []
        if let node = top["limits"] {
            for (key, value) in try reader.pairs(node, what: "limits") {
                guard BundleLimit(rawValue: key.0) != nil else {
                    throw MappingError(file: path, line: key.1.line, column: key.1.column,
                                       message: "unknown limit '\(key.0)'; known limits: \(BundleLimit.names)")
                }
                let text = try reader.string(value, what: "limit")
                if text == "none" {
                    limits.append(Named(name: key.0, value: nil, location: key.1))
                    continue
                }
                guard let n = Int(text, radix: 10), n > 0 else {
                    throw reader.error(value, "limit '\(key.0)' must be a positive whole number or none")
                }
                limits.append(Named(name: key.0, value: n, location: key.1))
            }
        }
        guard let stepsNode = top["steps"] else {
            throw MappingError(file: path, line: root.mark?.line ?? 1, column: 1, message: "the mapping has no 'steps': declare at least one step that writes resources")
        }
        guard let seq = stepsNode.sequence else { throw reader.error(stepsNode, "'steps' must be a list of steps") }
        var steps: [StepDeclaration] = []
        for item in seq {
            steps.append(try StepDeclaration(node: item, reader: reader))
        }
        if steps.isEmpty { throw reader.error(stepsNode, "'steps' is empty: declare at least one step") }
        let directory = (path as NSString).deletingLastPathComponent
        return MappingDocument(path: path, directory: directory.isEmpty ? "." : directory, bytes: bytes ?? Array(text.utf8),
                               constants: constants, sources: sources, lookups: lookups, maps: maps, steps: steps, limits: limits)
    }

    private static func yamlLine(_ e: YamlError) -> Int? {
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.line
        default: return nil
        }
    }

    private static func yamlColumn(_ e: YamlError) -> Int? {
        switch e {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): return mark.column
        default: return nil
        }
    }

    private static func yamlMessage(_ e: YamlError) -> String {
        switch e {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): return problem
        default: return "\(e)"
        }
    }
}

/// A named value with the place its name was written.
public struct Named<Value: Sendable>: Sendable {
    public let name: String
    public let value: Value
    public let location: MappingLocation
}

/// `sources.<name>`: one input file.
public struct SourceDeclaration: Sendable {
    public enum Format: String, Sendable { case csv, xml, mysqlXML = "mysql-xml", fixedWidth = "fixed-width" }

    public let name: String
    public let location: MappingLocation
    public let file: String
    public let format: Format
    /// CSV field delimiter (one byte).
    public let delimiter: UInt8
    /// XML: absolute path of the repeating record element.
    public let record: String?
    /// XML: prefix → namespace URI.
    public let namespaces: [String: String]
    /// XML: declared fields (name → path relative to the record); nil to discover them from the first record.
    public let fields: [(name: String, path: String)]?
    /// XML: an XSD to validate the file against before conversion.
    public let schema: String?
    /// CSV and fixed-width: the file's character encoding; nil when not declared (UTF-8, and a CSV file that is not
    /// stops the run with an error naming the likely encoding). XML files declare theirs themselves.
    public let encoding: SourceEncoding?
    /// Fixed-width: the columns, in the mapping's order, and the header lines to skip.
    public let columns: [FixedWidthColumn]
    public let headerLines: Int

    init(name: String, location: MappingLocation, node: Node, reader: NodeReader) throws(MappingError) {
        self.name = name
        self.location = location
        let m = try reader.mapping(node, what: "source '\(name)'", allowed: ["file", "format", "delimiter", "encoding", "record", "namespaces", "fields", "schema", "columns", "header"])
        guard let fileNode = m["file"] else { throw reader.error(node, "source '\(name)' needs 'file': the path of the export, relative to the mapping file") }
        file = try reader.string(fileNode, what: "file")
        if let f = m["format"] {
            let s = try reader.string(f, what: "format")
            guard let v = Format(rawValue: s) else { throw reader.error(f, "unknown format '\(s)'; use csv, xml, mysql-xml or fixed-width") }
            format = v
        } else {
            format = file.lowercased().hasSuffix(".xml") ? .xml : .csv
        }
        if let d = m["delimiter"] {
            let s = try reader.string(d, what: "delimiter")
            let resolved = s == "\\t" || s == "tab" ? "\t" : s
            guard resolved.utf8.count == 1, let byte = resolved.utf8.first else {
                throw reader.error(d, "delimiter must be one character (',' ';' '|' or '\\t')")
            }
            delimiter = byte
        } else {
            delimiter = UInt8(ascii: ",")
        }
        record = try m["record"].map { (n) throws(MappingError) in try reader.string(n, what: "record") }
        var ns: [String: String] = [:]
        if let n = m["namespaces"] {
            for (k, v) in try reader.pairs(n, what: "namespaces") { ns[k.0] = try reader.string(v, what: "namespace") }
        }
        namespaces = ns
        if let f = m["fields"] {
            var list: [(String, String)] = []
            if let seq = f.sequence {
                for item in seq {
                    let s = try reader.string(item, what: "field")
                    list.append((s, s))
                }
            } else {
                for (k, v) in try reader.pairs(f, what: "fields") { list.append((k.0, try reader.string(v, what: "field path"))) }
            }
            fields = list
        } else {
            fields = nil
        }
        schema = try m["schema"].map { (n) throws(MappingError) in try reader.string(n, what: "schema") }
        if let e = m["encoding"] {
            let s = try reader.string(e, what: "encoding")
            guard let declared = SourceEncoding(declared: s) else {
                throw reader.error(e, "unknown encoding '\(s)'; use one of \(SourceEncoding.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if format != .csv && format != .fixedWidth {
                throw reader.error(e, "XML files say their encoding themselves (a byte order mark or <?xml encoding=\"…\"?>), as the XML specification asks; remove 'encoding' from source '\(name)'")
            }
            encoding = declared
        } else {
            encoding = nil
        }
        var columns: [FixedWidthColumn] = []
        if let c = m["columns"] {
            guard format == .fixedWidth else { throw reader.error(c, "'columns' apply to sources with format: fixed-width") }
            for ((column, _), spec) in try reader.pairs(c, what: "columns") {
                let what = "column '\(column)'"
                let s = try reader.mapping(spec, what: what, allowed: ["start", "width", "end"])
                func number(_ key: String) throws(MappingError) -> Int? {
                    guard let n = s[key] else { return nil }
                    guard let v = Int(try reader.string(n, what: key)), v >= 1 else { throw reader.error(n, "\(key) of \(what) must be a whole number from 1") }
                    return v
                }
                guard let start = try number("start") else { throw reader.error(spec, "\(what) needs 'start': its first character, counting from 1") }
                let width = try number("width"), end = try number("end")
                switch (width, end) {
                case (let w?, nil): columns.append(FixedWidthColumn(name: column, start: start, width: w))
                case (nil, let e?) where e >= start: columns.append(FixedWidthColumn(name: column, start: start, width: e - start + 1))
                case (nil, _?): throw reader.error(spec, "\(what) ends before it starts")
                default: throw reader.error(spec, "\(what) needs either 'width' or 'end' (the last character, inclusive)")
                }
            }
        }
        self.columns = columns
        if let h = m["header"] {
            guard format == .fixedWidth else { throw reader.error(h, "'header' applies to sources with format: fixed-width (a CSV file's first row is its header)") }
            guard let n = Int(try reader.string(h, what: "header")), n >= 0 else { throw reader.error(h, "header must be the number of lines to skip before the first record") }
            headerLines = n
        } else {
            headerLines = 0
        }
        if format == .fixedWidth && columns.isEmpty {
            throw reader.error(node, "fixed-width source '\(name)' needs 'columns': each field's name with its start and width (or end)")
        }
        if format == .fixedWidth && (record != nil || fields != nil || schema != nil || m["delimiter"] != nil) {
            throw reader.error(node, "source '\(name)' is fixed-width: 'record', 'fields', 'schema' and 'delimiter' do not apply")
        }
        if format == .csv && (record != nil || fields != nil || schema != nil) {
            throw reader.error(node, "source '\(name)' is CSV: 'record', 'fields' and 'schema' apply to XML sources only")
        }
        if format == .xml && record == nil {
            throw reader.error(node, "XML source '\(name)' needs 'record': the path of the repeating element, e.g. /export/patients/patient")
        }
        if let record, let recordNode = m["record"] {
            // The path is read again when the file is opened; its mistakes are found here, at their column.
            let path: XMLRecordPath
            do {
                path = try XMLRecordPath(parsing: record)
            } catch {
                let l = reader.location(recordNode)
                let quoted = recordNode.scalar.map { $0.style == .singleQuoted || $0.style == .doubleQuoted } ?? false
                throw MappingError(file: reader.file, line: l.line, column: l.column + error.offset + (quoted ? 1 : 0),
                                   message: "record path '\(record)': \(error.message)")
            }
            if let prefix = path.prefixes.first(where: { namespaces[$0] == nil }) {
                throw reader.error(recordNode, "the record path uses prefix '\(prefix)', which 'namespaces' does not declare")
            }
        }
    }
}

/// `lookups.<name>`: an in-memory index of another source by one of its columns, or by several together
/// (`key: [PATIENT, CODE]`).
public struct LookupDeclaration: Sendable {
    public let name: String
    public let location: MappingLocation
    public let source: Named<String>
    /// The key columns, in the order expressions give the key's parts.
    public let keys: [Named<String>]
    /// Several rows per key (an array of rows) instead of exactly one.
    public let multiple: Bool
    /// What a single lookup does when the key is absent: reject the row (default) or give nothing.
    public let rejectWhenMissing: Bool

    init(name: String, location: MappingLocation, node: Node, reader: NodeReader) throws(MappingError) {
        self.name = name
        self.location = location
        let m = try reader.mapping(node, what: "lookup '\(name)'", allowed: ["source", "key", "multiple", "missing"])
        guard let s = m["source"] else { throw reader.error(node, "lookup '\(name)' needs 'source': the source to index") }
        guard let k = m["key"] else { throw reader.error(node, "lookup '\(name)' needs 'key': the column to index by") }
        source = Named(name: try reader.string(s, what: "source"), value: "", location: reader.location(s))
        if let list = k.sequence {
            var keys: [Named<String>] = []
            for item in list {
                let name = try reader.string(item, what: "key")
                if keys.contains(where: { $0.name == name }) { throw reader.error(item, "column '\(name)' appears twice in the key of lookup '\(self.name)'") }
                keys.append(Named(name: name, value: "", location: reader.location(item)))
            }
            guard !keys.isEmpty else { throw reader.error(k, "lookup '\(name)' needs at least one key column") }
            self.keys = keys
        } else {
            keys = [Named(name: try reader.string(k, what: "key"), value: "", location: reader.location(k))]
        }
        multiple = try m["multiple"].map { (n) throws(MappingError) in try reader.bool(n, what: "multiple") } ?? false
        if let miss = m["missing"] {
            switch try reader.string(miss, what: "missing") {
            case "reject": rejectWhenMissing = true
            case "empty": rejectWhenMissing = false
            default: throw reader.error(miss, "'missing' must be 'reject' (the row becomes a reject) or 'empty' (the lookup gives nothing)")
            }
        } else {
            rejectWhenMissing = !multiple
        }
    }
}

/// `maps.<name>`: a table of source codes to FHIR codes.
public struct ValueMapDeclaration: Sendable {
    public let name: String
    public let location: MappingLocation
    public let entries: [(String, String)]
    public let defaultValue: String?

    init(name: String, location: MappingLocation, node: Node, reader: NodeReader) throws(MappingError) {
        self.name = name
        self.location = location
        guard let m = node.mapping else { throw reader.error(node, "map '\(name)' must be a table of source value: FHIR value") }
        let longForm = m["values"]?.mapping != nil && m.allSatisfy { ["values", "default"].contains($0.key.string ?? "") }
        let table = longForm ? m["values"]! : node
        var entries: [(String, String)] = []
        var seen: Set<String> = []
        for (k, v) in try reader.pairs(table, what: "map '\(name)'") {
            guard seen.insert(k.0).inserted else {
                throw MappingError(file: reader.file, line: k.1.line, column: k.1.column, message: "map '\(name)' lists '\(k.0)' twice")
            }
            entries.append((k.0, try reader.string(v, what: "map value")))
        }
        self.entries = entries
        defaultValue = longForm ? try m["default"].map { (n) throws(MappingError) in try reader.string(n, what: "default") } : nil
    }
}

/// One entry of `steps`: which source it reads, which resources each row becomes, and how they are bundled.
// Yams nodes are immutable once composed; they are only read after parsing.
public struct StepDeclaration: @unchecked Sendable {
    public let name: String
    public let location: MappingLocation
    public let source: Named<String>
    public let bundle: Named<String>
    /// Resource templates in declaration order: name → YAML template.
    public let resources: [(name: String, location: MappingLocation, template: Node)]
    /// Rows that together become one group of resources (`group:`), or nil: each row is a group.
    public let group: GroupDeclaration?

    init(node: Node, reader: NodeReader) throws(MappingError) {
        let m = try reader.mapping(node, what: "a step", allowed: ["name", "source", "bundle", "resource", "resources", "group", "description"])
        guard let n = m["name"] else { throw reader.error(node, "every step needs a 'name' (it names the bundle folder)") }
        name = try reader.string(n, what: "name")
        guard name.range(of: "^[A-Za-z0-9][A-Za-z0-9_-]*$", options: .regularExpression) != nil else {
            throw reader.error(n, "step name '\(name)' must be letters, digits, '-' or '_' (it becomes a folder name)")
        }
        location = reader.location(n)
        guard let s = m["source"] else { throw reader.error(node, "step '\(name)' needs 'source': the source whose rows it converts") }
        source = Named(name: try reader.string(s, what: "source"), value: "", location: reader.location(s))
        guard let b = m["bundle"] else {
            throw reader.error(node, "step '\(name)' needs 'bundle': batch, transaction or batch-of-transactions")
        }
        bundle = Named(name: try reader.string(b, what: "bundle"), value: "", location: reader.location(b))
        var resources: [(String, MappingLocation, Node)] = []
        if let single = m["resource"] {
            resources.append((name, reader.location(single), single))
        }
        if let many = m["resources"] {
            for (k, v) in try reader.pairs(many, what: "resources") { resources.append((k.0, k.1, v)) }
        }
        if resources.isEmpty { throw reader.error(node, "step '\(name)' needs 'resource' (one template) or 'resources' (named templates)") }
        if m["resource"] != nil && m["resources"] != nil { throw reader.error(node, "step '\(name)': use either 'resource' or 'resources', not both") }
        self.resources = resources
        let stepName = name
        group = try m["group"].map { (g) throws(MappingError) in try GroupDeclaration(node: g, step: stepName, reader: reader) }
    }
}

/// `group:` of a step: rows with the same values in `by`, near each other in the file (`within`), become one group,
/// whose rows the templates see as the list `as` (for `$each`); plain column names give the first row's values.
public struct GroupDeclaration: @unchecked Sendable {
    public let location: MappingLocation
    public let columns: [Named<String>]
    public let alias: Named<String>
    /// Optional `where:` condition: only rows for which it holds join groups; the others are filtered.
    public let condition: Node?
    /// `within:`: a group is complete once this many rows joined other groups since its last row (default 10,000).
    public let window: Int

    init(node: Node, step: String, reader: NodeReader) throws(MappingError) {
        location = reader.location(node)
        let m = try reader.mapping(node, what: "the group of step '\(step)'", allowed: ["by", "as", "where", "within"])
        guard let by = m["by"] else { throw reader.error(node, "group needs 'by': the columns whose values make a group, e.g. by: [PATIENT, DATE]") }
        var columns: [Named<String>] = []
        for item in by.sequence.map(Array.init) ?? [by] {
            let name = try reader.string(item, what: "a group column")
            if columns.contains(where: { $0.name == name }) { throw reader.error(item, "column '\(name)' appears twice in group.by") }
            columns.append(Named(name: name, value: "", location: reader.location(item)))
        }
        guard !columns.isEmpty else { throw reader.error(by, "group.by needs at least one column") }
        self.columns = columns
        guard let a = m["as"] else { throw reader.error(node, "group needs 'as': the name its rows go by, e.g. as: readings, used as $each: \"{{ readings }}\"") }
        alias = Named(name: try reader.string(a, what: "group.as"), value: "", location: reader.location(a))
        condition = m["where"]
        if let w = m["within"] {
            guard let n = Int(try reader.string(w, what: "group.within")), n >= 1 else {
                throw reader.error(w, "group.within must be a whole number of rows from 1")
            }
            window = n
        } else {
            window = 10_000
        }
    }
}

/// Reads Yams nodes with errors that carry the mapping file's line and column.
struct NodeReader {
    let file: String

    func location(_ node: Node) -> MappingLocation {
        MappingLocation(line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
    }

    func error(_ node: Node, _ message: String) -> MappingError {
        let l = location(node)
        return MappingError(file: file, line: l.line, column: l.column, message: message)
    }

    func mapping(_ node: Node, what: String, allowed: Set<String>) throws(MappingError) -> [String: Node] {
        var out: [String: Node] = [:]
        for (k, v) in try pairs(node, what: what) {
            guard allowed.contains(k.0) else {
                throw MappingError(file: file, line: k.1.line, column: k.1.column,
                                   message: "unknown key '\(k.0)' in \(what); expected one of: \(allowed.sorted().joined(separator: ", "))")
            }
            out[k.0] = v
        }
        return out
    }

    /// The key/value pairs of a YAML mapping in file order, rejecting duplicate keys.
    func pairs(_ node: Node, what: String) throws(MappingError) -> [((String, MappingLocation), Node)] {
        guard let m = node.mapping else { throw error(node, "\(what) must be a mapping of keys to values") }
        var out: [((String, MappingLocation), Node)] = []
        var seen: Set<String> = []
        for (k, v) in m {
            guard let key = k.scalar?.string else { throw error(k, "keys in \(what) must be plain text") }
            guard seen.insert(key).inserted else { throw error(k, "'\(key)' appears twice in \(what)") }
            out.append(((key, location(k)), v))
        }
        return out
    }

    func string(_ node: Node, what: String) throws(MappingError) -> String {
        guard let s = node.scalar?.string else { throw error(node, "\(what) must be a single value, not a list or mapping") }
        return s
    }

    func bool(_ node: Node, what: String) throws(MappingError) -> Bool {
        switch try string(node, what: what) {
        case "true", "yes": return true
        case "false", "no": return false
        default: throw error(node, "\(what) must be true or false")
        }
    }
}
