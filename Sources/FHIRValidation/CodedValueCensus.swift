import FHIRDefinitions
import FHIRModel

#if canImport(Glibc)
import Glibc
#endif

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

    mutating func set(_ element: String, _ value: String, _ count: Int) {
        counts[element, default: [:]][value, default: 0] += count
    }
}

/// The counting behind `CodedValues`, per resource: values are found by a hash of their bytes and their element,
/// so a value seen before costs one lookup and no String.
struct CodedValueCounter {
    private var slots = HashedKeyMap<Int32>(empty: -1, capacity: 1 << 10)
    private var entries: [(element: Int32, value: String, count: Int)] = []
    private var labels: [String] = []
    private var labelIndex: [String: Int32] = [:]
    private var distinct: [Int] = []

    mutating func element(_ label: String) -> Int32 {
        if let i = labelIndex[label] { return i }
        labelIndex[label] = Int32(labels.count)
        labels.append(label)
        distinct.append(0)
        return Int32(labels.count - 1)
    }

    /// Counts `value` (its unescaped bytes, then `suffix` when given) for `element`.
    mutating func add(_ element: Int32, _ value: UnsafeBufferPointer<UInt8>, suffix: UnsafeBufferPointer<UInt8>? = nil) {
        var key = FastHash.hash128(value) &* 0x9E37_79B9_7F4A_7C15 ^ UInt128(UInt32(bitPattern: element))
        if let suffix { key = (key &* 0xC2B2_AE3D_27D4_EB4F) ^ FastHash.hash128(suffix) }
        if let slot = slots[key] {
            entries[Int(slot)].count += 1
            return
        }
        var text = String(decoding: value, as: UTF8.self)
        if let suffix { text += "|" + String(decoding: suffix, as: UTF8.self) }
        if distinct[Int(element)] >= CodedValues.valuesPerElement { text = CodedValues.other }
        if let existing = entries.firstIndex(where: { $0.element == element && $0.value == text }) {
            slots[key] = Int32(existing)
            entries[existing].count += 1
            return
        }
        distinct[Int(element)] += 1
        slots[key] = Int32(entries.count)
        entries.append((element, text, 1))
    }

    var values: CodedValues {
        var out = CodedValues()
        for e in entries { out.set(labels[Int(e.element)], e.value, e.count) }
        return out
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
    /// The element's number in the counter.
    var element: Int32 = 0

    /// Whether `key` (a member name's bytes) names this element.
    func matches(_ key: UnsafeBufferPointer<UInt8>) -> Bool {
        key.count == self.key.count && self.key.withUnsafeBufferPointer { memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }
    }

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
    func countCodedValues(type: Int32, root: Int = 0, typeName: () -> String?) {
        let t = Int(type)
        if t >= codedPlans.count { codedPlans.append(contentsOf: repeatElement(nil, count: t + 1 - codedPlans.count)) }
        if codedPlans[t] == nil {
            var plan = typeName().map(CodedElementPlan.plan(for:)) ?? []
            for i in plan.indices { plan[i].element = codedCounter.element(plan[i].label) }
            codedPlans[t] = plan
        }
        let plan = codedPlans[t]!
        if plan.isEmpty { return }
        let tape = self.tape
        let none: StaticString = "(no system)"
        let empty: [UInt8] = []
        tape.forEachMember(root) { key, value in
            guard let element = tape.withString(key, { k in plan.first { $0.matches(k) } }) ?? nil else { return }
            func coding(_ c: Int, full: Bool) {
                guard tape.kind(c) == .object else { return }
                func withSystem(_ body: (UnsafeBufferPointer<UInt8>) -> Void) {
                    if let s = tape.member(c, "system"), tape.kind(s) == .string, tape.withString(s, body) != nil { return }
                    body(UnsafeBufferPointer(start: none.utf8Start, count: none.utf8CodeUnitCount))
                }
                withSystem { system in
                    guard full else { return codedCounter.add(element.element, system) }
                    if let code = tape.member(c, "code"), tape.kind(code) == .string,
                       tape.withString(code, { codedCounter.add(element.element, system, suffix: $0) }) != nil { return }
                    empty.withUnsafeBufferPointer { codedCounter.add(element.element, system, suffix: $0) }
                }
            }
            func count(_ item: Int) {
                switch element.kind {
                case .code: if tape.kind(item) == .string { tape.withString(item) { codedCounter.add(element.element, $0) } }
                case .coding: coding(item, full: true)
                case .codeableConcept(let codes):
                    guard tape.kind(item) == .object, let codings = tape.member(item, "coding"), tape.kind(codings) == .array else { return }
                    tape.forEachItem(codings) { _, c in coding(c, full: codes) }
                }
            }
            if tape.kind(value) == .array {
                tape.forEachItem(value) { _, item in count(item) }
            } else {
                count(value)
            }
        }
    }
}
