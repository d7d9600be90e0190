import FHIRDefinitions
import FHIRTestSupport
import Foundation
import Testing

private let r4 = FHIRDefinitions.r4

struct FHIRDefinitionsTests {
    @Test func patientElementsComeInFHIRJSONOrder() throws {
        let patient = try #require(r4.type(named: "Patient"))
        #expect(patient.elements.prefix(12).map(\.name) == [
            "id", "meta", "implicitRules", "language", "text", "contained", "extension", "modifierExtension",
            "identifier", "active", "name", "telecom",
        ])
        #expect(patient.order(ofJSONKey: "name")! < patient.order(ofJSONKey: "birthDate")!)
    }

    @Test func genderHasARequiredBindingWithItsFourCodes() throws {
        let gender = try #require(r4.type(named: "Patient")?.element(forJSONKey: "gender"))
        #expect(gender.element.requiredBinding?.codes == ["male", "female", "other", "unknown"])
    }

    @Test func choiceElementsResolveByTheirTypedJSONName() throws {
        let observation = try #require(r4.type(named: "Observation"))
        let value = try #require(observation.element(forJSONKey: "valueQuantity"))
        #expect(value.element.name == "value[x]")
        #expect(value.typeName == "Quantity")
        #expect(observation.element(forJSONKey: "valueFoo") == nil)
        #expect(observation.element(forJSONKey: "_status")?.typeName == "Element")
    }

    @Test func referenceTargetsComeFromTheDefinition() throws {
        let subject = try #require(r4.type(named: "Condition")?.element(forJSONKey: "subject"))
        #expect(subject.element.referenceTargets == ["Group", "Patient"])
    }

    @Test func backboneElementsAreTypesOfTheirOwn() throws {
        let participant = try #require(r4.type(named: "Encounter")?.element(forJSONKey: "participant"))
        #expect(participant.typeName == "Encounter.participant")
        #expect(participant.element.isArray)
        #expect(r4.type(named: "Encounter.participant")?.elements.map(\.name).contains("individual") == true)
        #expect(r4.type(named: "Encounter")?.element(forJSONKey: "class")?.typeName == "Coding")
    }

    @Test func bundleRequestMethodsAreEnumerated() throws {
        let method = try #require(r4.type(named: "Bundle.entry.request")?.element(forJSONKey: "method"))
        #expect(method.element.requiredBinding?.codes == ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])
    }

    @Test func primitiveRegexesAreThoseOfTheSpecification() throws {
        let date = try #require(r4.primitive(named: "date")?.regex)
        let regex = try Regex("^(" + date + ")$")
        #expect("2023-06-15".wholeMatch(of: regex) != nil)
        #expect("2023".wholeMatch(of: regex) != nil)
        #expect("2023-13-01".wholeMatch(of: regex) == nil)
        for name in ["dateTime", "instant", "id", "uri", "code", "decimal", "integer", "boolean"] {
            #expect(r4.primitive(named: name)?.regex != nil, "\(name)")
        }
        #expect(r4.primitive(named: "boolean")?.json == .boolean)
        #expect(r4.primitive(named: "decimal")?.json == .number)
    }

    @Test func resourceTypesAreTheConcreteOnes() {
        #expect(r4.isResourceType("Patient"))
        #expect(r4.isResourceType("ClinicalImpression"))
        #expect(!r4.isResourceType("DomainResource"))
        #expect(!r4.isResourceType("HumanName"))
        // The same list as the official JSON Schema's discriminator.
        #expect(r4.resourceTypes.count == 146)
    }

    /// The embedded tables are exactly what the script derives from the official package, which is in the
    /// repository (`schemas/fhir-r4/`).
    @Test func generatedFilesMatchTheScriptsOutput() throws {
        let root = TestRepository.root
        let out = NSTemporaryDirectory() + "fhir-defs-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let run = try runProcess(try TestPrerequisite.python3.path(), [root + "/scripts/derive-fhir-definitions.py", "--out-dir", out])
        try #require(run.status == 0, "scripts/derive-fhir-definitions.py failed: \(run.stderr)")
        for file in ["schemas/fhir-r4-definitions.json", "Sources/FHIRDefinitions/Generated/R4Definitions.swift"] {
            let generated = FileManager.default.contents(atPath: out + "/" + file)
            let committed = FileManager.default.contents(atPath: root + "/" + file)
            #expect(generated != nil && generated == committed, "\(file) is not what the script generates; run scripts/derive-fhir-definitions.py")
        }
    }
}
