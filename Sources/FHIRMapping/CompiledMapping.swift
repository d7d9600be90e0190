import FHIRDefinitions
import FHIRModel
import FHIRSources

/// A mapping whose names are all resolved against the sources' columns: ready to turn rows into resources.
public struct CompiledMapping: Sendable {
    public let document: MappingDocument
    /// Sources in declaration order, with paths resolved against the mapping's folder.
    public let sources: [CompiledSource]
    public let lookups: [CompiledLookup]
    /// Steps in upload order: every step comes after the steps it refers to.
    public let steps: [CompiledStep]
    /// Limits declared in the mapping, applied over the defaults.
    public let limits: BundleLimits
    /// Per source, the columns no expression reads (their data goes nowhere), in the file's order.
    public let unusedColumns: [UnusedColumns]
    /// Per source, every column: whether the mapping reads it, and which template elements it fills.
    public let columnUses: [SourceColumns]
    let maps: [ValueMap]
}

extension CompiledMapping {
    /// The same mapping compiled again, sharing no template, expression or resource instance with this one: for a
    /// worker thread. Rows evaluated on two cores retain and release the instances they read; shared ones bounce
    /// between the cores' caches (measured, Medplum's example on 2 workers: 6% less CPU with a copy each).
    /// Compiling is deterministic and already succeeded from the same document and columns, so it cannot fail here;
    /// if it did, this mapping itself is returned.
    public func compiledAgain() -> CompiledMapping {
        let fieldNames = Dictionary(sources.map { ($0.name, $0.fieldNames) }, uniquingKeysWith: { first, _ in first })
        return (try? MappingCompiler.compile(document, fieldNames: fieldNames)) ?? self
    }
}

/// The columns of one source and where they go, for the review report.
public struct SourceColumns: Sendable {
    public let source: String
    public let file: String
    /// In the file's order. `used` without paths: read as a key, a condition or a group column only.
    public let columns: [(name: String, used: Bool, paths: [String])]
}

/// Columns of a source that the mapping never reads: a middle name left out is lost silently otherwise.
public struct UnusedColumns: Sendable, Equatable {
    public let source: String
    public let file: String
    public let columns: [String]

    public init(source: String, file: String, columns: [String]) {
        self.source = source
        self.file = file
        self.columns = columns
    }
}

/// One source file and how to read it.
public struct CompiledSource: Sendable {
    public let name: String
    public let path: String
    public let declaration: SourceDeclaration
    public let fieldNames: [String]
}

/// An index of one source by a key column, filled before the steps run.
public struct CompiledLookup: Sendable {
    public let name: String
    public let sourceIndex: Int
    /// The key columns: one, or several whose values together are the key.
    public let keyColumns: [Int]
    public let multiple: Bool
    public let rejectWhenMissing: Bool
    /// The columns of the source that templates read through this lookup (the others need not be kept in memory).
    public internal(set) var columnsRead: Set<Int> = []
}

/// How a step's resources travel to the server.
public enum BundleKind: String, Sendable {
    /// Independent conditional PUTs in batch bundles.
    case batch
    /// Each row's resources land together; several rows' groups may share one transaction.
    case transaction
    /// A batch whose entries are inner transactions (`POST /`), one per row (Medplum's batch of transactions).
    case batchOfTransactions = "batch-of-transactions"
}

/// One step: a source whose rows each become a group of resources.
public struct CompiledStep: Sendable {
    public let name: String
    public let sourceIndex: Int
    public let bundle: BundleKind
    public let resources: [CompiledResource]
    /// Whether templates use `uuid(...)`, so NDJSON output must swap `urn:uuid:` references for conditional ones.
    public let usesLocalReferences: Bool
    /// Whether an expression calls `occurrence()`: its value depends on the rows before, so the rows are evaluated
    /// in file order on one thread (other steps may evaluate rows on several).
    public let countsOccurrences: Bool
    /// Indexes of the steps this one refers to with `ref(...)`.
    public let dependsOn: [Int]
    /// Set when rows with equal values in the group columns become one group of resources.
    public let group: CompiledGroup?
    let location: MappingLocation
}

/// How a step groups rows: by the values of `columns`, the rows seen by templates through alias `slot`.
public struct CompiledGroup: Sendable {
    public let columns: [Int]
    public let columnNames: [String]
    let slot: Int
    /// Rows (of those joining groups) after which a group with no new row is complete (`within:`).
    public let window: Int
    /// `where:`: which rows join groups (nil: all).
    let condition: CompiledExpression?
}

/// One resource template of a step. A class: rows read it many times, and a reference costs one retain where a
/// copy of its fields would cost one each.
public final class CompiledResource: Sendable {
    public let name: String
    public let resourceType: String
    /// The system of the identifier that conditional updates and references match on.
    public let identifierSystem: String
    /// `Type?identifier=system|`, to which the encoded identifier value is appended.
    let conditionalURLPrefix: String
    let identifierValue: TemplateNode
    let condition: CompiledExpression?
    let template: TemplateNode
    /// Whether the template uses `uuid(...)`: its NDJSON form then differs from its bundle form.
    let usesLocalReferences: Bool

    init(name: String, resourceType: String, identifierSystem: String, conditionalURLPrefix: String,
         identifierValue: TemplateNode, condition: CompiledExpression?, template: TemplateNode, usesLocalReferences: Bool) {
        self.name = name
        self.resourceType = resourceType
        self.identifierSystem = identifierSystem
        self.conditionalURLPrefix = conditionalURLPrefix
        self.identifierValue = identifierValue
        self.condition = condition
        self.template = template
        self.usesLocalReferences = usesLocalReferences
    }
}

/// A value map: source code → FHIR code.
struct ValueMap: Sendable {
    let name: String
    let table: [String: String]
    let defaultValue: String?
}

/// How a leaf string is written into JSON, from the FHIR primitive type of its element.
enum LeafKind: Sendable {
    case string, integer, decimal, boolean
}

/// A compiled template: FHIR JSON with expressions in the leaves, keys already in FHIR element order.
indirect enum TemplateNode: Sendable {
    /// A subtree without expressions, pruned and ordered once at compile time, with its JSON bytes.
    case literal(JSONValue, bytes: [UInt8])
    case leaf(Leaf)
    /// Members with their `"key":` bytes, ready to copy.
    case object([ObjectMember], condition: CompiledExpression?)
    case array([ArrayItem])

    static func constant(_ value: JSONValue) -> TemplateNode {
        .literal(value, bytes: JSONWriter().bytes(value))
    }

    var isLiteral: Bool {
        if case .literal = self { return true }
        return false
    }
}

/// A member of a template object.
struct ObjectMember: Sendable {
    let key: String
    /// `"key":`, serialised once.
    let keyBytes: [UInt8]
    let node: TemplateNode

    init(key: String, node: TemplateNode) {
        self.key = key
        var bytes: [UInt8] = []
        JSONWriter.writeString(key, into: &bytes)
        bytes.append(UInt8(ascii: ":"))
        keyBytes = bytes
        self.node = node
    }
}

/// A leaf: one expression (keeps lists, which fill arrays) or text with embedded expressions. A class: rendering
/// takes each leaf of the template for every row, and a reference costs one retain where a copy costs one a field.
final class Leaf: Sendable {
    let parts: [CompiledPart]
    /// The expression when the leaf is exactly one (`"{{ birth_date }}"`), the common case.
    let single: CompiledExpression?
    let kind: LeafKind
    /// FHIR path of the element, for reject reasons (`Patient.birthDate`).
    let path: String
    /// The format a string value must have (`.any`: none to check), and the FHIR type it comes from.
    let format: PrimitiveFormats.Format
    let typeName: String
    /// A `code` element's required value set, when the definitions enumerate it.
    let requiredCodes: (valueSet: String, codes: Set<String>)?

    init(parts: [CompiledPart], kind: LeafKind, path: String, format: PrimitiveFormats.Format = .any, typeName: String = "string",
         requiredCodes: (valueSet: String, codes: Set<String>)? = nil) {
        self.parts = parts
        if parts.count == 1, case .expression(let e) = parts[0] { single = e } else { single = nil }
        self.kind = kind
        self.path = path
        self.format = format
        self.typeName = typeName
        self.requiredCodes = requiredCodes
    }

    /// Whether the leaf's values are checked row by row.
    var checksValues: Bool { format != .any || requiredCodes != nil }
}

enum CompiledPart: Sendable {
    case text(String)
    case expression(CompiledExpression)
}

/// An item of a template array: a node, or `$each` which repeats `body` for every element of a list.
enum ArrayItem: Sendable {
    case node(TemplateNode)
    case each(list: CompiledExpression, slot: Int, body: TemplateNode)
}

/// A compiled expression with names resolved to column indexes, lookups and functions.
indirect enum CompiledExpression: Sendable {
    case literal(Value)
    case column(Int, name: String)
    case alias(slot: Int)
    case field(CompiledExpression, column: Int, name: String)
    /// One expression per key column of the lookup.
    case lookup(Int, keys: [CompiledExpression])
    case call(Function, [CompiledExpression])
}

/// A runtime value of an expression.
enum Value: Sendable {
    case null
    case string(String)
    case bool(Bool)
    case list([Value])
    case record(LookupRow)
    /// A row of the step's own source: one of a group's rows.
    case row([FieldValue])
}

/// Built-in functions; arguments that must be known when the mapping is checked are resolved into the case.
enum Function: Sendable {
    /// Formats tried in order, and how the value is named in a reject.
    case date([DateFormat], String)
    case dateTime([DateFormat], String, offset: String?)
    case map(Int)
    /// A conditional reference: `Type?identifier=system|` and the key.
    case ref(prefix: String)
    case uuid(member: Int)
    case hashID, occurrence
    case concat, upper, lower, trim, replace, split, join
    case coalesce, ifThen, eq, ne, not, and, or, empty, present
    /// Exact decimal arithmetic and comparisons (`ExactDecimal`).
    case greater, greaterOrEqual, less, lessOrEqual
    case add, subtract, multiply
    case divide(places: Int), round(places: Int)
}
