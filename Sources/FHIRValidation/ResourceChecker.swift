import FHIRDefinitions
import FHIRModel

/// A reference found in a resource, resolved later against the whole artifact set.
struct FoundReference {
    let pointer: String
    let value: String
    /// Resource types the element allows (empty: any).
    let targets: [String]
}

/// Checks one resource against the FHIR R4 structure definitions: known types and elements, cardinality, JSON types
/// and formats of primitives, required code bindings, no empty values. Collects the references it meets.
final class ResourceChecker {
    private let definitions = FHIRDefinitions.r4
    /// Required elements per type, computed on first use.
    private var requiredCache: [String: [ElementDefinition]] = [:]

    /// Findings of the checks so far; the caller takes them.
    var found: [Finding] = []

    /// Checks `resource` (at `pointer` in `file`), adding to `found` and appending the references it meets.
    func check(_ resource: JSONValue, file: String, line: Int?, pointer: String, references: inout [FoundReference]) {
        let report: (Finding) -> Void = { [unowned self] in self.found.append($0) }
        guard case .object(let members) = resource else {
            report(Finding(rule: .ndjsonLine, file: file, line: line, pointer: pointer, message: "a resource must be a JSON object"))
            return
        }
        guard let typeName = members.first(where: { $0.key == "resourceType" })?.value.stringValue else {
            report(Finding(rule: .unknownResourceType, file: file, line: line, pointer: pointer, message: "the resource has no resourceType"))
            return
        }
        guard definitions.isResourceType(typeName), let type = definitions.type(named: typeName) else {
            report(Finding(rule: .unknownResourceType, file: file, line: line, pointer: pointer + "/resourceType",
                           message: "'\(typeName)' is not a FHIR R4 resource type"))
            return
        }
        var context = Walk(file: file, line: line, report: report, references: references)
        checkObject(members, type: type, pointer: pointer, path: typeName, isResource: true, context: &context)
        references = context.references
    }

    private struct Walk {
        let file: String
        let line: Int?
        let report: (Finding) -> Void
        var references: [FoundReference]

        func add(_ rule: Rule, _ pointer: String, _ message: String) {
            report(Finding(rule: rule, file: file, line: line, pointer: pointer, message: message))
        }
    }

    private func required(_ type: TypeDefinition) -> [ElementDefinition] {
        if let r = requiredCache[type.name] { return r }
        let r = type.elements.filter { $0.min > 0 }
        requiredCache[type.name] = r
        return r
    }

    private func checkObject(_ members: [JSONMember], type: TypeDefinition, pointer: String, path: String, isResource: Bool, context: inout Walk) {
        if members.isEmpty {
            context.add(.emptyValue, pointer, "\(path) is an empty object")
            return
        }
        for member in members {
            let key = member.key
            if isResource && key == "resourceType" { continue }
            let childPointer = pointer + "/" + escapePointer(key)
            guard let (element, typeName) = type.element(forJSONKey: key) else {
                context.add(.unknownElement, childPointer, "'\(key)' is not an element of \(type.name)")
                continue
            }
            let childPath = path + "." + key
            if key.hasPrefix("_") {
                // Extensions of a primitive: an object, or an array aligned with the primitive's array.
                continue
            }
            if element.isArray {
                guard case .array(let items) = member.value else {
                    context.add(.cardinality, childPointer, "\(childPath) repeats, so it must be an array")
                    continue
                }
                if items.isEmpty { context.add(.emptyValue, childPointer, "\(childPath) is an empty array") }
                if let max = element.max, items.count > max {
                    context.add(.cardinality, childPointer, "\(childPath) allows at most \(max) values, found \(items.count)")
                }
                for (i, item) in items.enumerated() {
                    checkValue(item, element: element, typeName: typeName, pointer: childPointer + "/\(i)", path: childPath, context: &context)
                }
            } else {
                if case .array = member.value {
                    context.add(.cardinality, childPointer, "\(childPath) takes one value, not an array")
                    continue
                }
                checkValue(member.value, element: element, typeName: typeName, pointer: childPointer, path: childPath, context: &context)
            }
        }
        for element in required(type) {
            let present: Bool
            if element.isChoice {
                let stem = element.name.dropLast(3)
                present = members.contains { $0.key.hasPrefix(stem) && type.element(forJSONKey: $0.key)?.element.name == element.name }
            } else {
                present = members.contains { $0.key == element.name }
            }
            if !present { context.add(.cardinality, pointer, "\(path) requires '\(element.name)'") }
        }
    }

    private func checkValue(_ value: JSONValue, element: ElementDefinition, typeName: String, pointer: String, path: String, context: inout Walk) {
        if case .null = value {
            context.add(.emptyValue, pointer, "\(path) is null")
            return
        }
        if let primitive = definitions.primitive(named: typeName) {
            checkPrimitive(value, primitive: primitive, binding: element.requiredBinding, pointer: pointer, path: path, context: &context)
            return
        }
        guard case .object(let members) = value else {
            context.add(.primitiveType, pointer, "\(path) is a \(typeName), so it must be a JSON object")
            return
        }
        if typeName == "Resource" {
            // contained resources, Bundle.entry.resource
            guard let inner = members.first(where: { $0.key == "resourceType" })?.value.stringValue,
                  definitions.isResourceType(inner), let t = definitions.type(named: inner) else {
                context.add(.unknownResourceType, pointer, "\(path) holds no FHIR R4 resource (resourceType missing or unknown)")
                return
            }
            checkObject(members, type: t, pointer: pointer, path: inner, isResource: true, context: &context)
            return
        }
        guard let type = definitions.type(named: typeName) else { return }
        checkObject(members, type: type, pointer: pointer, path: path, isResource: false, context: &context)
        if typeName == "Reference", let reference = members.first(where: { $0.key == "reference" })?.value.stringValue {
            context.references.append(FoundReference(pointer: pointer + "/reference", value: reference, targets: element.referenceTargets))
        }
    }

    private func checkPrimitive(_ value: JSONValue, primitive: PrimitiveDefinition, binding: Binding?, pointer: String, path: String, context: inout Walk) {
        switch primitive.json {
        case .boolean:
            guard case .bool = value else {
                context.add(.primitiveType, pointer, "\(path) is a boolean: write true or false without quotes")
                return
            }
        case .number:
            guard case .number(let n) = value else {
                context.add(.primitiveType, pointer, "\(path) is a \(primitive.name): write a JSON number without quotes")
                return
            }
            if primitive.name != "decimal" {
                guard let i = Int(n), i >= Int(Int32.min), i <= Int(Int32.max) else {
                    context.add(.primitiveFormat, pointer, "\(path) is a \(primitive.name): a whole number is expected")
                    return
                }
                if primitive.name == "positiveInt" && i < 1 || primitive.name == "unsignedInt" && i < 0 {
                    context.add(.primitiveFormat, pointer, "\(path) is a \(primitive.name), so \(primitive.name == "positiveInt" ? "at least 1" : "at least 0")")
                }
            }
        case .string:
            guard case .string(let s) = value else {
                context.add(.primitiveType, pointer, "\(path) is a \(primitive.name): write it as a JSON string")
                return
            }
            if s.isEmpty {
                context.add(.emptyValue, pointer, "\(path) is an empty string")
                return
            }
            if !PrimitiveFormats.isValid(s, type: primitive.name) {
                context.add(.primitiveFormat, pointer, "\(path) is not a valid FHIR \(primitive.name)")
            }
            if let binding, let codes = binding.codes, !codes.contains(s) {
                context.add(.requiredBinding, pointer, "\(path) must be a code of \(binding.valueSet)")
            }
        }
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
func escapePointer(_ key: String) -> String {
    guard key.utf8.contains(where: { $0 == UInt8(ascii: "~") || $0 == UInt8(ascii: "/") }) else { return key }
    return key.replacingAll("~", "~0").replacingAll("/", "~1")
}

extension String {
    func replacingAll(_ target: String, _ replacement: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
