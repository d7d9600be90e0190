import FHIRDefinitions

/// The compiler's view of the official FHIR R4 definitions.
struct R4Catalog: FHIRTypeCatalog {
    static let shared = R4Catalog()
    let definitions = FHIRDefinitions.r4

    func isResourceType(_ name: String) -> Bool {
        definitions.isResourceType(name)
    }

    func hasType(_ typeName: String) -> Bool {
        definitions.type(named: typeName) != nil
    }

    func element(of typeName: String, jsonKey: String) -> ElementInfo? {
        guard let type = definitions.type(named: typeName),
              let (element, concrete) = type.element(forJSONKey: jsonKey),
              let order = type.order(ofJSONKey: jsonKey)
        else { return nil }
        let kind: LeafKind?
        if jsonKey.hasPrefix("_") {
            // `_birthDate` carries the id and extensions of a primitive: an Element, not a value.
            return ElementInfo(order: order, typeName: "Element", isArray: element.isArray, primitiveKind: nil)
        }
        if let primitive = definitions.primitive(named: concrete) {
            switch primitive.name {
            case "boolean": kind = .boolean
            case "integer", "positiveInt", "unsignedInt", "integer64": kind = .integer
            case "decimal": kind = .decimal
            default: kind = .string
            }
        } else {
            kind = nil
        }
        var info = ElementInfo(order: order, typeName: concrete, isArray: element.isArray, primitiveKind: kind)
        if concrete == "Reference" { info.referenceTargets = element.referenceTargets }
        info.binding = element.requiredBinding
        return info
    }

    func requiredElements(of typeName: String) -> [RequiredElement] {
        guard let type = definitions.type(named: typeName) else { return [] }
        return type.elements.filter { $0.min > 0 }.map { e in
            let keys = e.isChoice ? e.types.map { String(e.name.dropLast(3)) + $0.prefix(1).uppercased() + $0.dropFirst() } : [e.name]
            return RequiredElement(name: e.name, jsonKeys: keys + keys.map { "_" + $0 }, min: e.min)
        }
    }

    func elementNames(of typeName: String) -> [String] {
        definitions.type(named: typeName)?.elements.map(\.name) ?? []
    }
}
