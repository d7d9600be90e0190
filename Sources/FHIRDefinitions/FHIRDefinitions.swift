/// The FHIR R4 structure tables: resource and data types with their elements in FHIR JSON order, cardinality,
/// reference targets, required code bindings and primitive formats.
///
/// Generated from the official `hl7.fhir.r4.core` package by `scripts/derive-fhir-definitions.py` (never written by
/// hand) and parsed once, lazily, from a compact text table embedded in the binary.
public struct FHIRDefinitions: Sendable {
    /// FHIR R4 4.0.1.
    public static let r4 = FHIRDefinitions(table: r4Table)

    private let types: [String: TypeDefinition]
    private let primitives: [String: PrimitiveDefinition]
    /// Concrete resource types (not the abstract Resource and DomainResource), sorted.
    public let resourceTypes: [String]

    /// Parses the embedded table.
    init(table: String) {
        var types: [String: TypeDefinition] = [:]
        var primitives: [String: PrimitiveDefinition] = [:]
        var bindings: [Binding] = []
        var current: (name: String, kind: TypeDefinition.Kind, elements: [ElementDefinition])?
        func close() {
            if let c = current { types[c.name] = TypeDefinition(name: c.name, kind: c.kind, elements: c.elements, primitives: primitives) }
        }
        for line in table.split(separator: "\n", omittingEmptySubsequences: true) {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            switch f[0] {
            case "P":
                primitives[f[1]] = PrimitiveDefinition(name: f[1], json: PrimitiveDefinition.JSONKind(rawValue: f[2]) ?? .string, regex: f[3].isEmpty ? nil : f[3])
            case "V":
                let codes = f[2] == "*" ? nil : f[2].split(separator: "|", omittingEmptySubsequences: false).map(String.init)
                // The codes' systems, as runs `N*system` in code order.
                var systems: [String] = []
                for run in f.count > 3 ? f[3].split(separator: "|") : [] {
                    guard let star = run.firstIndex(of: "*"), let n = Int(run[..<star]) else { continue }
                    systems += repeatElement(String(run[run.index(after: star)...]), count: n)
                }
                bindings.append(Binding(valueSet: f[1], codes: codes.map(Set.init),
                                        codings: codes.flatMap { c in c.count == systems.count ? Set(zip(systems, c).map { $0 + "|" + $1 }) : nil }))
            case "T":
                close()
                current = (f[1], TypeDefinition.Kind(rawValue: f[2]) ?? .complexType, [])
            case "E":
                current?.elements.append(ElementDefinition(
                    name: f[1], min: Int(f[2]) ?? 0, max: f[3] == "*" ? nil : Int(f[3]),
                    types: f[4].split(separator: ",").map(String.init),
                    referenceTargets: f[5].split(separator: ",").map(String.init),
                    requiredBinding: f[6].isEmpty ? nil : bindings[Int(f[6])!]))
            default:
                continue
            }
        }
        close()
        self.types = types
        self.primitives = primitives
        resourceTypes = types.values.filter { $0.kind == .resource }.map(\.name).sorted()
    }

    /// Whether `name` is a concrete resource type (`Patient`, not `DomainResource`).
    public func isResourceType(_ name: String) -> Bool {
        types[name]?.kind == .resource
    }

    /// A resource type, complex data type (`HumanName`) or backbone element (`Encounter.participant`).
    public func type(named name: String) -> TypeDefinition? {
        types[name]
    }

    /// A primitive type (`date`, `boolean`, ...).
    public func primitive(named name: String) -> PrimitiveDefinition? {
        primitives[name]
    }
}

/// A resource, complex type or backbone element, with its elements in FHIR JSON order.
public struct TypeDefinition: Sendable {
    public enum Kind: String, Sendable {
        case resource, abstract
        case complexType = "complex"
        case backbone
    }

    public let name: String
    public let kind: Kind
    public let elements: [ElementDefinition]
    /// JSON key → (element index, concrete type, its primitive definition), including every choice form
    /// (`valueQuantity`) and `_x` keys.
    private let keys: [String: (index: Int, type: String, primitive: PrimitiveDefinition?)]

    init(name: String, kind: Kind, elements: [ElementDefinition], primitives: [String: PrimitiveDefinition]) {
        self.name = name
        self.kind = kind
        self.elements = elements
        var keys: [String: (Int, String, PrimitiveDefinition?)] = [:]
        for (i, e) in elements.enumerated() {
            if e.isChoice {
                let stem = String(e.name.dropLast(3))
                for t in e.types {
                    let key = stem + t.prefix(1).uppercased() + t.dropFirst()
                    keys[key] = (i, t, primitives[t])
                    keys["_" + key] = (i, "Element", nil)
                }
            } else {
                let t = e.types.first ?? "Element"
                keys[e.name] = (i, t, primitives[t])
                keys["_" + e.name] = (i, "Element", nil)
            }
        }
        self.keys = keys
    }

    /// Like `element(forJSONKey:)`, with the primitive definition when the concrete type is a primitive, in one
    /// lookup (the validator's hot path).
    public func resolve(jsonKey key: String) -> (element: ElementDefinition, typeName: String, primitive: PrimitiveDefinition?)? {
        guard let k = keys[key] else { return nil }
        return (elements[k.index], k.type, k.primitive)
    }

    /// The element a JSON property name belongs to, and the concrete type that name implies (`valueQuantity` →
    /// `value[x]`, `Quantity`; `_birthDate` → `birthDate`, `Element`).
    public func element(forJSONKey key: String) -> (element: ElementDefinition, typeName: String)? {
        guard let k = keys[key] else { return nil }
        return (elements[k.index], k.type)
    }

    /// The position of a JSON property in FHIR element order, for sorting.
    public func order(ofJSONKey key: String) -> Int? {
        keys[key]?.index
    }
}

/// One element of a type.
public struct ElementDefinition: Sendable {
    /// As in the definition: `birthDate`, or `value[x]` for a choice.
    public let name: String
    public let min: Int
    /// nil when unbounded.
    public let max: Int?
    /// Type codes; a backbone element's type is its path (`Encounter.participant`).
    public let types: [String]
    /// For `Reference`: the resource types it may point at (empty: any).
    public let referenceTargets: [String]
    public let requiredBinding: Binding?

    public var isChoice: Bool { name.hasSuffix("[x]") }
    /// Whether the element repeats (a JSON array).
    public var isArray: Bool { max.map { $0 > 1 } ?? true }
}

/// A required value set binding.
public struct Binding: Sendable {
    public let valueSet: String
    /// Allowed codes; nil when the package cannot enumerate the value set (then codes are not checked).
    public let codes: Set<String>?
    /// Allowed codings as `system|code` (for Coding and CodeableConcept elements); nil when not enumerable.
    public let codings: Set<String>?
}

/// A primitive type.
public struct PrimitiveDefinition: Sendable {
    public enum JSONKind: String, Sendable { case string, number, boolean }

    public let name: String
    public let json: JSONKind
    /// The value's regular expression as published (to be matched against the whole value).
    public let regex: String?
}
