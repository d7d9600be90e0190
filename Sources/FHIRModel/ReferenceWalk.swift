import Foundation

/// The references inside a resource, found by walking its JSON (every `reference` string of an object).
public enum ReferenceWalk {
    /// One reference: where it is (JSON pointer from the resource) and what it says.
    public struct Found: Sendable, Equatable {
        public var pointer: String
        public var reference: String
    }

    /// True for `Type?search`: a conditional reference, resolved by the server when it stores the resource.
    public static func isConditional(_ reference: String) -> Bool {
        !reference.hasPrefix("#") && !reference.hasPrefix("urn:") && reference.contains("?")
    }

    public static func hasConditionalReference(_ resource: JSONValue) -> Bool {
        references(in: resource).contains { isConditional($0.reference) }
    }

    /// Every reference of `value`, in document order.
    public static func references(in value: JSONValue) -> [Found] {
        var found: [Found] = []
        walk(value, pointer: "", into: &found)
        return found
    }

    private static func walk(_ value: JSONValue, pointer: String, into found: inout [Found]) {
        switch value {
        case .object(let members):
            for member in members {
                let path = pointer + "/" + member.key
                if member.key == "reference", let reference = member.value.stringValue {
                    found.append(Found(pointer: path, reference: reference))
                } else {
                    walk(member.value, pointer: path, into: &found)  // contained resources' references too
                }
            }
        case .array(let items):
            for (i, item) in items.enumerated() { walk(item, pointer: pointer + "/\(i)", into: &found) }
        default:
            break
        }
    }

    /// The value at `pointer` (as `references` writes them: no escaping needed for FHIR element names).
    public static func value(at pointer: String, in root: JSONValue) -> JSONValue? {
        var current: JSONValue? = root
        for token in pointer.split(separator: "/", omittingEmptySubsequences: true) {
            guard let c = current else { return nil }
            if let i = Int(token), case .array(let items) = c { current = i < items.count ? items[i] : nil } else { current = c[String(token)] }
        }
        return current
    }
}


extension JSONValue {
    /// This value with the values at several pointers replaced, in one walk that descends only where a pointer
    /// leads (pointers as `ReferenceWalk` writes them; one that leads nowhere changes nothing).
    public func replacing(_ replacements: [String: JSONValue]) -> JSONValue {
        if replacements.isEmpty { return self }
        var tree = ReplacementTree()
        for (pointer, value) in replacements {
            tree.insert(pointer.split(separator: "/", omittingEmptySubsequences: true).map(String.init)[...], value)
        }
        return tree.apply(to: self)
    }

    /// This value with the value at `pointer` (as `ReferenceWalk` writes them) replaced; unchanged when the pointer
    /// leads nowhere.
    public func setting(_ pointer: String, to newValue: JSONValue) -> JSONValue {
        let tokens = pointer.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        return Self.set(self, tokens[...], newValue)
    }

    private static func set(_ value: JSONValue, _ tokens: ArraySlice<String>, _ newValue: JSONValue) -> JSONValue {
        guard let first = tokens.first else { return newValue }
        switch value {
        case .object(var members):
            guard let i = members.firstIndex(where: { $0.key == first }) else { return value }
            members[i].value = set(members[i].value, tokens.dropFirst(), newValue)
            return .object(members)
        case .array(var items):
            guard let i = Int(first), i < items.count else { return value }
            items[i] = set(items[i], tokens.dropFirst(), newValue)
            return .array(items)
        default:
            return value
        }
    }
}

/// The pointers of a `replacing` call as a tree of path steps.
private struct ReplacementTree {
    var value: JSONValue?
    var children: [String: ReplacementTree] = [:]

    mutating func insert(_ tokens: ArraySlice<String>, _ newValue: JSONValue) {
        guard let first = tokens.first else {
            value = newValue
            return
        }
        children[first, default: ReplacementTree()].insert(tokens.dropFirst(), newValue)
    }

    func apply(to node: JSONValue) -> JSONValue {
        if let value { return value }
        switch node {
        case .object(var members):
            for i in members.indices {
                if let child = children[members[i].key] { members[i].value = child.apply(to: members[i].value) }
            }
            return .object(members)
        case .array(var items):
            for (key, child) in children {
                if let i = Int(key), i < items.count { items[i] = child.apply(to: items[i]) }
            }
            return .array(items)
        default:
            return node
        }
    }
}
