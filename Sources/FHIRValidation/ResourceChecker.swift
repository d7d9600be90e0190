import FHIRDefinitions
import FHIRModel

/// A reference found in a resource: the token of its `reference` string, resolved later against the whole artifact
/// set, and the resource types its element allows.
struct FoundReference: Sendable {
    let token: Int
    /// Index of `StructureTables.targetLists` (an empty list: any type).
    let targets: Int32
}

/// Checks one resource against the FHIR R4 structure definitions: known types and elements, cardinality, JSON types
/// and formats of primitives, required code bindings, no empty values. Collects the references it meets.
///
/// It reads the resource in place on a `JSONTape`; JSON pointers and FHIR paths are worked out from token positions
/// only when there is something to report.
struct ResourceChecker {
    let tables: StructureTables
    init(tables: StructureTables = .r4) { self.tables = tables }

    /// Where the resource being checked is, for findings.
    private struct Place {
        let file: String
        let line: Int?
        /// Where JSON pointers start (the bundle's root, or the NDJSON line's resource).
        let pointerRoot: Int
        /// The resource: FHIR paths start at it.
        let root: Int
        let rootType: String
        /// Checking a Bundle's envelope only: its entries' resources are checked one by one, as they are indexed.
        let envelope: Bool
    }

    /// Checks the resource at token `root` of `file`, appending findings (JSON pointers from token `pointerRoot`)
    /// and references; with `envelope`, a Bundle without the resources of its entries.
    func check(_ tape: JSONTape, root: Int, pointerRoot: Int, file: String, line: Int?, envelope: Bool = false,
               findings: inout [Finding], references: inout [FoundReference]) {
        let base = { tape.pointer(to: root, from: pointerRoot) }
        guard tape.kind(root) == .object else {
            findings.append(Finding(rule: .ndjsonLine, file: file, line: line, pointer: base(), message: "a resource must be a JSON object"))
            return
        }
        guard let typeToken = tape.member(root, "resourceType"), tape.kind(typeToken) == .string else {
            findings.append(Finding(rule: .unknownResourceType, file: file, line: line, pointer: base(), message: "the resource has no resourceType"))
            return
        }
        guard let type = tables.resourceType(tape, typeToken) else {
            findings.append(Finding(rule: .unknownResourceType, file: file, line: line, pointer: base() + "/resourceType",
                                    message: "'\(tape.string(typeToken) ?? "")' is not a FHIR R4 resource type"))
            return
        }
        let place = Place(file: file, line: line, pointerRoot: pointerRoot, root: root, rootType: tables.types[Int(type)].name, envelope: envelope)
        checkObject(tape, root, type: type, isResource: true, place, &findings, &references)
    }

    private func add(_ rule: Rule, at token: Int, _ message: String, _ place: Place, _ tape: JSONTape, _ findings: inout [Finding]) {
        findings.append(Finding(rule: rule, file: place.file, line: place.line, pointer: tape.pointer(to: token, from: place.pointerRoot), message: message))
    }

    /// The FHIR path of a token (`Patient.name.given`), for messages.
    private func path(_ token: Int, _ place: Place, _ tape: JSONTape) -> String {
        ([place.rootType] + tape.keys(to: token, from: place.root)).joined(separator: ".")
    }

    private func checkObject(_ tape: JSONTape, _ object: Int, type: Int32, isResource: Bool, _ place: Place,
                             _ findings: inout [Finding], _ references: inout [FoundReference]) {
        if tape.count(object) == 0 {
            add(.emptyValue, at: object, "\(path(object, place, tape)) is an empty object", place, tape, &findings)
            return
        }
        var present: UInt64 = 0
        var seen: UInt64 = 0
        var choices: UInt64 = 0
        var resourceTypes = 0
        tape.forEachMember(object) { keyToken, value in
            if isResource && tape.equals(keyToken, "resourceType") {
                resourceTypes += 1
                if resourceTypes == 2 { duplicateKey(tape, keyToken, value, place, &findings) }
                return
            }
            guard let key = tables.key(tape, keyToken, in: type) else {
                add(.unknownElement, at: value, "'\(tape.string(keyToken) ?? "")' is not an element of \(tables.types[Int(type)].name)", place, tape, &findings)
                return
            }
            let seenBit: UInt64 = 1 << UInt64(key.seenBit)
            if seen & seenBit != 0 && isRepeated(tape, keyToken, in: object) {
                duplicateKey(tape, keyToken, value, place, &findings)
                return
            }
            seen |= seenBit
            if key.choiceBit >= 0 {
                let choiceBit: UInt64 = 1 << UInt64(key.choiceBit)
                if choices & choiceBit != 0, let other = otherChoice(tape, keyToken, key.choiceBit, in: object, type: type) {
                    add(.cardinality, at: value, "\(path(value, place, tape)) and \(other) are two types of one choice element, which takes one value: keep one",
                        place, tape, &findings)
                }
                choices |= choiceBit
            }
            if key.requiredBit >= 0 { present |= 1 << UInt64(key.requiredBit) }
            if key.isUnderscore {
                checkUnderscore(tape, value, key: keyToken, in: object, key, place, &findings, &references)
                return
            }
            if key.isArray {
                guard tape.kind(value) == .array else {
                    add(.cardinality, at: value, "\(path(value, place, tape)) repeats, so it must be an array", place, tape, &findings)
                    return
                }
                let count = tape.count(value)
                if count == 0 { add(.emptyValue, at: value, "\(path(value, place, tape)) is an empty array", place, tape, &findings) }
                if key.max >= 0 && count > Int(key.max) {
                    add(.cardinality, at: value, "\(path(value, place, tape)) allows at most \(key.max) values, found \(count)", place, tape, &findings)
                }
                tape.forEachItem(value) { position, item in
                    // A null holds the place of a value that has only extensions, in the `_given` twin.
                    if tape.kind(item) == .null && key.primitive >= 0,
                       let twin = tape.twin(in: object, of: keyToken), let extensions = tape.item(twin, position), tape.kind(extensions) == .object {
                        return
                    }
                    checkValue(tape, item, key, place, &findings, &references)
                }
            } else {
                if tape.kind(value) == .array {
                    add(.cardinality, at: value, "\(path(value, place, tape)) takes one value, not an array", place, tape, &findings)
                    return
                }
                checkValue(tape, value, key, place, &findings, &references)
            }
        }
        let missing = tables.requiredMasks[Int(type)] & ~present
        if missing != 0 {
            for (bit, name) in tables.types[Int(type)].required where missing & (1 << UInt64(bit)) != 0 {
                add(.cardinality, at: object, "\(path(object, place, tape)) requires '\(name)'", place, tape, &findings)
            }
        }
    }

    private func duplicateKey(_ tape: JSONTape, _ keyToken: Int, _ value: Int, _ place: Place, _ findings: inout [Finding]) {
        add(.duplicateKey, at: value, "the key '\(tape.string(keyToken) ?? "")' appears twice in one object; JSON parsers disagree on which one counts (JavaScript's, as on Medplum, takes the last)",
            place, tape, &findings)
    }

    /// Whether key token `keyToken` repeats a key of an earlier member of `object`.
    private func isRepeated(_ tape: JSONTape, _ keyToken: Int, in object: Int) -> Bool {
        var repeated = false
        tape.forEachMember(object) { k, _ in
            if k < keyToken && !repeated && tape.sameString(k, keyToken) { repeated = true }
        }
        return repeated
    }

    /// An earlier member of `object` that is another type of the same choice element (`valueString` beside
    /// `valueQuantity`; `_valueString` beside `valueString` is its twin, not another type).
    private func otherChoice(_ tape: JSONTape, _ keyToken: Int, _ choiceBit: Int8, in object: Int, type: Int32) -> String? {
        let name = (tape.string(keyToken) ?? "").drop { $0 == "_" }
        var other: String?
        tape.forEachMember(object) { k, _ in
            guard k < keyToken, other == nil, let key = tables.key(tape, k, in: type), key.choiceBit == choiceBit else { return }
            let otherName = (tape.string(k) ?? "").drop { $0 == "_" }
            if otherName != name { other = String(otherName) }
        }
        return other
    }

    /// `_birthDate` (an Element: id and extensions), or `_given` (an array aligned with `given`, null where a value
    /// has no id nor extension).
    private func checkUnderscore(_ tape: JSONTape, _ value: Int, key keyToken: Int, in object: Int, _ key: StructureTables.Key, _ place: Place,
                                 _ findings: inout [Finding], _ references: inout [FoundReference]) {
        guard key.isArray else {
            guard tape.kind(value) == .object else {
                add(.primitiveType, at: value, "\(path(value, place, tape)) holds the id and extensions of a value, so it must be a JSON object", place, tape, &findings)
                return
            }
            if key.type >= 0 { checkObject(tape, value, type: key.type, isResource: false, place, &findings, &references) }
            return
        }
        guard tape.kind(value) == .array else {
            add(.cardinality, at: value, "\(path(value, place, tape)) must be an array aligned with the values it extends", place, tape, &findings)
            return
        }
        let values = tape.twin(in: object, of: keyToken).flatMap { tape.kind($0) == .array ? $0 : nil }
        if let values, tape.count(values) != tape.count(value) {
            add(.cardinality, at: value, "\(path(value, place, tape)) has \(tape.count(value)) items and its values \(tape.count(values)): the two arrays must align", place, tape, &findings)
        }
        tape.forEachItem(value) { position, item in
            switch tape.kind(item) {
            case .null:
                let hasValue = values.flatMap { tape.item($0, position) }.map { tape.kind($0) != .null } ?? false
                if !hasValue { add(.emptyValue, at: item, "\(path(item, place, tape)) is null and so is its value: leave the item out", place, tape, &findings) }
            case .object:
                if key.type >= 0 { checkObject(tape, item, type: key.type, isResource: false, place, &findings, &references) }
            default:
                add(.primitiveType, at: item, "\(path(item, place, tape)) holds the id and extensions of a value, so it must be a JSON object or null", place, tape, &findings)
            }
        }
    }

    private func checkValue(_ tape: JSONTape, _ value: Int, _ key: StructureTables.Key, _ place: Place,
                            _ findings: inout [Finding], _ references: inout [FoundReference]) {
        let kind = tape.kind(value)
        if kind == .null {
            add(.emptyValue, at: value, "\(path(value, place, tape)) is null", place, tape, &findings)
            return
        }
        if key.primitive >= 0 {
            checkPrimitive(tape, value, Int(key.primitive), binding: key.binding, place, &findings)
            return
        }
        guard kind == .object else {
            add(.primitiveType, at: value, "\(path(value, place, tape)) is a \(tables.names[Int(key.typeName)]), so it must be a JSON object", place, tape, &findings)
            return
        }
        if key.holdsResource {
            if place.envelope { return }
            // contained resources, Bundle.entry.resource
            guard let typeToken = tape.member(value, "resourceType"), let inner = tables.resourceType(tape, typeToken) else {
                add(.unknownResourceType, at: value, "\(path(value, place, tape)) holds no FHIR R4 resource (resourceType missing or unknown)", place, tape, &findings)
                return
            }
            checkObject(tape, value, type: inner, isResource: true, place, &findings, &references)
            return
        }
        guard key.type >= 0 else { return }
        checkObject(tape, value, type: key.type, isResource: false, place, &findings, &references)
        if key.coded != .none { checkCoded(tape, value, key, place, &findings) }
        if key.isReference, let reference = tape.member(value, "reference"), tape.kind(reference) == .string {
            references.append(FoundReference(token: reference, targets: key.targets))
        }
    }

    private func checkPrimitive(_ tape: JSONTape, _ value: Int, _ primitiveIndex: Int, binding: Int32,
                                _ place: Place, _ findings: inout [Finding]) {
        let primitive = tables.primitives[primitiveIndex]
        var name: String { tables.primitiveNames[primitiveIndex] }
        let kind = tape.kind(value)
        switch primitive.json {
        case .boolean:
            guard kind == .true || kind == .false else {
                add(.primitiveType, at: value, "\(path(value, place, tape)) is a boolean: write true or false without quotes", place, tape, &findings)
                return
            }
        case .number:
            guard kind == .number else {
                add(.primitiveType, at: value, "\(path(value, place, tape)) is a \(name): write a JSON number without quotes", place, tape, &findings)
                return
            }
            if !primitive.isDecimal {
                guard let i = wholeNumber(tape, value) else {
                    add(.primitiveFormat, at: value, "\(path(value, place, tape)) is a \(name): a whole number is expected", place, tape, &findings)
                    return
                }
                if name == "positiveInt" && i < 1 || name == "unsignedInt" && i < 0 {
                    add(.primitiveFormat, at: value, "\(path(value, place, tape)) is a \(name), so \(name == "positiveInt" ? "at least 1" : "at least 0")",
                        place, tape, &findings)
                }
            }
        case .string:
            guard kind == .string else {
                add(.primitiveType, at: value, "\(path(value, place, tape)) is a \(name): write it as a JSON string", place, tape, &findings)
                return
            }
            if tape.isEmptyString(value) {
                add(.emptyValue, at: value, "\(path(value, place, tape)) is an empty string", place, tape, &findings)
                return
            }
            if let control = tape.forbiddenControlCharacter(value) {
                add(.primitiveFormat, at: value, "\(path(value, place, tape)) holds the control character U+\(String(format: "%04X", control)); FHIR strings allow none but tab, line feed and carriage return: remove it at the source",
                    place, tape, &findings)
            }
            if binding < 0 && (primitive.format == .nonEmpty || primitive.format == .any) { return }  // nothing more to check
            if primitive.format == .xhtml {
                if let problem = tape.withString(value, { NarrativeChecker.problem($0) }) ?? nil {
                    add(.primitiveFormat, at: value, "\(path(value, place, tape)) is not a valid FHIR narrative: it \(problem)", place, tape, &findings)
                }
            } else if tape.withString(value, { PrimitiveFormats.check($0, primitive.format) }) == false {
                add(.primitiveFormat, at: value, "\(path(value, place, tape)) is not a valid FHIR \(name)", place, tape, &findings)
            }
            if binding >= 0, let codes = tables.bindingCodes[Int(binding)], tape.withString(value, { codes[FastHash.hash128($0)] == nil }) == true {
                add(.requiredBinding, at: value, "\(path(value, place, tape)) must be a code of \(tables.bindings[Int(binding)].valueSet)", place, tape, &findings)
            }
        }
    }

    /// A Coding or CodeableConcept bound to a required value set: the Coding, or one coding of the concept, must be
    /// one of the set's (system and code); a concept with only text is not from the set.
    private func checkCoded(_ tape: JSONTape, _ value: Int, _ key: StructureTables.Key, _ place: Place, _ findings: inout [Finding]) {
        let binding = tables.bindings[Int(key.binding)]
        guard let codings = binding.codings else { return }
        var fromSet = false
        func test(_ coding: Int) {
            guard !fromSet, let system = tape.member(coding, "system").flatMap({ tape.string($0) }),
                  let code = tape.member(coding, "code").flatMap({ tape.string($0) }) else { return }
            fromSet = codings.contains(system + "|" + code)
        }
        if key.coded == .coding {
            test(value)
        } else if let list = tape.member(value, "coding"), tape.kind(list) == .array {
            tape.forEachItem(list) { _, coding in test(coding) }
        }
        if !fromSet {
            let example = codings.sorted().prefix(3).joined(separator: ", ")
            add(.requiredBinding, at: value, "\(path(value, place, tape)) must \(key.coded == .coding ? "be" : "have") a coding (system and code) from \(binding.valueSet), such as \(example)",
                place, tape, &findings)
        }
    }

    /// A JSON number token as a 32-bit whole number (nil for fractions, exponents and out-of-range values).
    private func wholeNumber(_ tape: JSONTape, _ token: Int) -> Int? {
        guard let text = tape.numberText(token), let i = Int(text), i >= Int(Int32.min), i <= Int(Int32.max) else { return nil }
        return i
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
