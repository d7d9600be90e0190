import FHIRDefinitions

/// How often each value of the coded elements at the top of the resources appears: `Patient.gender` → female 2,
/// `Encounter.class` → `…/v3-ActCode|AMB` 2, `Condition.clinicalStatus` → `…/condition-clinical|active` 3,
/// `Condition.code` → the code systems of its codings. For the review
/// report: counts and codes a reviewer signs off, no names or identifiers.
public struct CodedValues: Sendable, Equatable {
    /// Element (`Type.element`) → value → count.
    public private(set) var counts: [String: [String: Int]] = [:]
    /// Distinct values kept per element; the rest are counted together as `(other)`.
    public static let valuesPerElement = 30
    public static let other = "(other)"

    public init() {}

    mutating func add(_ element: String, _ value: String) {
        if counts[element]?[value] != nil || (counts[element]?.count ?? 0) < Self.valuesPerElement {
            counts[element, default: [:]][value, default: 0] += 1
        } else {
            counts[element]![Self.other, default: 0] += 1
        }
    }
}

/// The coded elements at the top of one resource type, as the census looks them up.
struct CodedElementPlan {
    /// A CodeableConcept bound to a required value set (a few codes: clinicalStatus) counts system|code; others
    /// (diagnoses, tests) count their code systems only.
    enum Kind { case code, coding, codeableConcept(codes: Bool) }
    let key: [UInt8]
    let label: String
    let kind: Kind

    /// The top-level elements of `type` whose type is code, Coding or CodeableConcept (choice types left out: their
    /// JSON keys vary); an empty list for an unknown type.
    static func plan(for type: String) -> [CodedElementPlan] {
        guard let definition = FHIRDefinitions.r4.type(named: type) else { return [] }
        return definition.elements.compactMap { element in
            guard !element.isChoice, element.types.count == 1 else { return nil }
            let kind: Kind
            switch element.types[0] {
            case "code": kind = .code
            case "Coding": kind = .coding
            case "CodeableConcept": kind = .codeableConcept(codes: element.requiredBinding != nil)
            default: return nil
            }
            let name = element.name.split(separator: ".").last.map(String.init) ?? element.name
            return CodedElementPlan(key: Array(name.utf8), label: "\(type).\(name)", kind: kind)
        }
    }
}

extension ArtifactValidator {
    /// Counts the coded elements of the resource at the root of the tape (of resource type index `type`).
    func countCodedValues(type: Int32, typeName: () -> String?) {
        if codedPlans[type] == nil { codedPlans[type] = typeName().map(CodedElementPlan.plan(for:)) ?? [] }
        let plan = codedPlans[type]!
        if plan.isEmpty { return }
        let tape = self.tape
        tape.forEachMember(0) { key, value in
            guard let element = tape.withString(key, { k in plan.first { $0.key.elementsEqual(k) } }) ?? nil else { return }
            func coding(_ c: Int, full: Bool) {
                guard tape.kind(c) == .object else { return }
                let system = tape.member(c, "system").flatMap { tape.string($0) } ?? "(no system)"
                if full {
                    let code = tape.member(c, "code").flatMap { tape.string($0) } ?? ""
                    codedValues.add(element.label, system + "|" + code)
                } else {
                    codedValues.add(element.label, system)
                }
            }
            func concept(_ c: Int, codes: Bool) {
                guard tape.kind(c) == .object, let codings = tape.member(c, "coding"), tape.kind(codings) == .array else { return }
                tape.forEachItem(codings) { _, item in coding(item, full: codes) }
            }
            let items: [Int]
            if tape.kind(value) == .array {
                var list: [Int] = []
                tape.forEachItem(value) { _, item in list.append(item) }
                items = list
            } else {
                items = [value]
            }
            for item in items {
                switch element.kind {
                case .code: if tape.kind(item) == .string, let s = tape.string(item) { codedValues.add(element.label, s) }
                case .coding: coding(item, full: true)
                case .codeableConcept(let codes): concept(item, codes: codes)
                }
            }
        }
    }
}
