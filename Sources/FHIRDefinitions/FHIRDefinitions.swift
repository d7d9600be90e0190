// TEMPORARY compile stub, replaced by the generated definitions (branch defs).
public struct FHIRDefinitions: Sendable {
    public static let r4 = FHIRDefinitions()
    public func isResourceType(_ name: String) -> Bool { true }
    public func type(named: String) -> TypeDefinition? { nil }
    public func primitive(named: String) -> PrimitiveDefinition? { nil }
}
public struct PrimitiveDefinition: Sendable { public let name: String }
public struct TypeDefinition: Sendable {
    public let elements: [ElementDefinition]
    public func element(forJSONKey key: String) -> (element: ElementDefinition, typeName: String)? { nil }
    public func order(ofJSONKey key: String) -> Int? { nil }
}
public struct ElementDefinition: Sendable {
    public let name: String
    public var isArray: Bool { false }
}
