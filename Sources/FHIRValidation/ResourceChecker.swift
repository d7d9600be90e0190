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
        var context = Walk(file: file, line: line, base: pointer, resourceType: typeName, report: report, references: references)
        checkObject(members, type: type, isResource: true, context: &context)
        references = context.references
    }

    /// Where the walk is, kept as a stack of keys and indexes: pointer and path strings are built only for findings.
    private struct Walk {
        enum Step { case key(String), index(Int) }

        let file: String
        let line: Int?
        let base: String
        let resourceType: String
        let report: (Finding) -> Void
        var references: [FoundReference]
        var steps: [Step] = []

        var pointer: String {
            var s = base
            for step in steps {
                switch step {
                case .key(let k): s += "/" + escapePointer(k)
                case .index(let i): s += "/\(i)"
                }
            }
            return s
        }

        /// The FHIR path (`Patient.name.given`), for messages.
        var path: String {
            var s = resourceType
            for case .key(let k) in steps { s += "." + k }
            return s
        }

        func add(_ rule: Rule, _ message: String) {
            report(Finding(rule: rule, file: file, line: line, pointer: pointer, message: message))
        }
    }

    private func required(_ type: TypeDefinition) -> [ElementDefinition] {
        if let r = requiredCache[type.name] { return r }
        let r = type.elements.filter { $0.min > 0 }
        requiredCache[type.name] = r
        return r
    }

    private func checkObject(_ members: [JSONMember], type: TypeDefinition, isResource: Bool, context: inout Walk) {
        if members.isEmpty {
            context.add(.emptyValue, "\(context.path) is an empty object")
            return
        }
        for member in members {
            let key = member.key
            if isResource && key == "resourceType" { continue }
            context.steps.append(.key(key))
            defer { context.steps.removeLast() }
            guard let (element, typeName, primitive) = type.resolve(jsonKey: key) else {
                context.add(.unknownElement, "'\(key)' is not an element of \(type.name)")
                continue
            }
            if key.hasPrefix("_") {
                // Extensions of a primitive: an object, or an array aligned with the primitive's array.
                continue
            }
            if element.isArray {
                guard case .array(let items) = member.value else {
                    context.add(.cardinality, "\(context.path) repeats, so it must be an array")
                    continue
                }
                if items.isEmpty { context.add(.emptyValue, "\(context.path) is an empty array") }
                if let max = element.max, items.count > max {
                    context.add(.cardinality, "\(context.path) allows at most \(max) values, found \(items.count)")
                }
                for (i, item) in items.enumerated() {
                    context.steps.append(.index(i))
                    checkValue(item, element: element, typeName: typeName, primitive: primitive, context: &context)
                    context.steps.removeLast()
                }
            } else {
                if case .array = member.value {
                    context.add(.cardinality, "\(context.path) takes one value, not an array")
                    continue
                }
                checkValue(member.value, element: element, typeName: typeName, primitive: primitive, context: &context)
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
            if !present { context.add(.cardinality, "\(context.path) requires '\(element.name)'") }
        }
    }

    private func checkValue(_ value: JSONValue, element: ElementDefinition, typeName: String, primitive: PrimitiveDefinition?, context: inout Walk) {
        if case .null = value {
            context.add(.emptyValue, "\(context.path) is null")
            return
        }
        if let primitive {
            checkPrimitive(value, primitive: primitive, binding: element.requiredBinding, context: &context)
            return
        }
        guard case .object(let members) = value else {
            context.add(.primitiveType, "\(context.path) is a \(typeName), so it must be a JSON object")
            return
        }
        if typeName == "Resource" {
            // contained resources, Bundle.entry.resource
            guard let inner = members.first(where: { $0.key == "resourceType" })?.value.stringValue,
                  definitions.isResourceType(inner), let t = definitions.type(named: inner) else {
                context.add(.unknownResourceType, "\(context.path) holds no FHIR R4 resource (resourceType missing or unknown)")
                return
            }
            checkObject(members, type: t, isResource: true, context: &context)
            return
        }
        guard let type = definitions.type(named: typeName) else { return }
        checkObject(members, type: type, isResource: false, context: &context)
        if typeName == "Reference", let reference = members.first(where: { $0.key == "reference" })?.value.stringValue {
            context.references.append(FoundReference(pointer: context.pointer + "/reference", value: reference, targets: element.referenceTargets))
        }
    }

    private func checkPrimitive(_ value: JSONValue, primitive: PrimitiveDefinition, binding: Binding?, context: inout Walk) {
        switch primitive.json {
        case .boolean:
            guard case .bool = value else {
                context.add(.primitiveType, "\(context.path) is a boolean: write true or false without quotes")
                return
            }
        case .number:
            guard case .number(let n) = value else {
                context.add(.primitiveType, "\(context.path) is a \(primitive.name): write a JSON number without quotes")
                return
            }
            if primitive.name != "decimal" {
                guard let i = Int(n), i >= Int(Int32.min), i <= Int(Int32.max) else {
                    context.add(.primitiveFormat, "\(context.path) is a \(primitive.name): a whole number is expected")
                    return
                }
                if primitive.name == "positiveInt" && i < 1 || primitive.name == "unsignedInt" && i < 0 {
                    context.add(.primitiveFormat, "\(context.path) is a \(primitive.name), so \(primitive.name == "positiveInt" ? "at least 1" : "at least 0")")
                }
            }
        case .string:
            guard case .string(let s) = value else {
                context.add(.primitiveType, "\(context.path) is a \(primitive.name): write it as a JSON string")
                return
            }
            if s.isEmpty {
                context.add(.emptyValue, "\(context.path) is an empty string")
                return
            }
            if !PrimitiveFormats.isValid(s, type: primitive.name) {
                context.add(.primitiveFormat, "\(context.path) is not a valid FHIR \(primitive.name)")
            }
            if let binding, let codes = binding.codes, !codes.contains(s) {
                context.add(.requiredBinding, "\(context.path) must be a code of \(binding.valueSet)")
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
