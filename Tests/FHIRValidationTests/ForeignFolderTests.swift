import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// Folders that fhirbundle did not write: any shape of FHIR data, in the order its references give.
struct ForeignFolderTests {
    private func folder(_ files: [String: String]) throws -> String {
        let dir = NSTemporaryDirectory() + "foreign-\(UUID().uuidString)"
        for (path, text) in files {
            let full = dir + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return dir
    }

    @Test func syntheasOwnOutputHasNoErrorUnderTheGenericProfileAndItsOrderIsInferred() throws {
        var options = ValidationOptions()
        options.profile = .generic
        let report = try ArtifactValidator(folder: TestRepository.fixture("synthea-fhir"), options: options).run()
        #expect(report.errors == 0, "\(report.findings.filter { $0.severity == .error }.prefix(5))")
        #expect(report.resources == 1116)
        let steps = try #require(report.inferredOrder?.steps)
        // The hospital and practitioner batches first (the patients refer to them), though they sort after them.
        #expect(steps.count == 2)
        #expect(steps[0].count == 4 && steps[0].allSatisfy { $0.hasPrefix("hospitalInformation") || $0.hasPrefix("practitionerInformation") })
        #expect(steps[1].count == 3)
        // POST with ifNoneExist is a conditional create: not a replay hazard.
        #expect(!report.findings.contains { $0.rule == "not-idempotent" && $0.file.hasPrefix("hospitalInformation") })
        // Every ExplanationOfBenefit carries the claim group 99999999999, which no conditional operation uses.
        #expect(!report.findings.contains { $0.rule == "identifier-duplicate" })
        // Under Medplum's limits the patient transactions are too large.
        let medplum = try ArtifactValidator(folder: TestRepository.fixture("synthea-fhir")).run()
        #expect(medplum.findings.filter { $0.rule == "transaction-entries" }.count == 3)
    }

    @Test func singleResourceFilesCollectionsAndNDJSONAreCheckedAsData() throws {
        let dir = try folder([
            "patient.json": #"{"resourceType":"Patient","id":"p1","identifier":[{"system":"http://x/p","value":"1"}],"gender":"x"}"#,
            "observations.json": #"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:0c3a0b1e-0d8e-4a5c-9f4b-1d2e3f405060","resource":{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/p1"}}},{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"encounter":{"reference":"urn:uuid:0c3a0b1e-0d8e-4a5c-9f4b-1d2e3f405060"},"subject":{"reference":"Patient?identifier=http://x/p|1"}}}]}"#,
            "conditions.ndjson": #"{"resourceType":"Condition","subject":{"reference":"Patient/p2"}}"# + "\n" + #"{"resourceType":"Condition","subject":{"reference":"Patient/p1"},"bogus":1}"# + "\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try ArtifactValidator(folder: dir).run()
        let rules = report.findings.map(\.rule)
        #expect(report.resources == 5)
        #expect(!rules.contains("bundle-type") && !rules.contains("entry-request"))
        // Each shape is checked for structure and references.
        #expect(report.findings.contains { $0.rule == "required-binding" && $0.file == "patient.json" })
        #expect(report.findings.contains { $0.rule == "literal-reference-unresolved" && $0.file == "conditions.ndjson" && $0.line == 1 })
        #expect(report.findings.contains { $0.rule == "unknown-element" && $0.file == "conditions.ndjson" && $0.line == 2 })
        #expect(!rules.contains("urn-uuid-unresolved") && !rules.contains("conditional-reference-unresolved"))
        // The patient file comes first: the others refer to it.
        #expect(report.inferredOrder?.steps.first == ["patient.json"])
    }

    @Test func aSingleIdentifierObjectIsCarriedByItsUpdateAndOrdersTheFilesReferringToIt() throws {
        // Composition.identifier is 0..1: one Identifier object, not an array.
        let dir = try folder([
            "batch.json": #"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Composition","identifier":{"system":"http://example.org/docs","value":"D-1"},"status":"final","type":{"text":"note"},"date":"2024-01-01","author":[{"display":"x"}],"title":"Note"},"request":{"method":"PUT","url":"Composition?identifier=http://example.org/docs|D-1"}}]}"#,
            "b2.json": #"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Provenance","target":[{"reference":"Composition?identifier=http://example.org/docs|D-1"}],"recorded":"2024-01-01T00:00:00Z","agent":[{"who":{"display":"x"}}]},"request":{"method":"POST","url":"Provenance"}}]}"#,
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ValidationOptions()
        options.profile = .generic
        let report = try ArtifactValidator(folder: dir, options: options).run()
        #expect(!report.findings.contains { $0.rule == "conditional-identifier-missing" || $0.rule == "conditional-reference-order" }, "\(report.findings)")
        #expect(report.inferredOrder?.steps == [["batch.json"], ["b2.json"]])
    }

    @Test func aConditionalReferenceThatAlsoSearchesByOtherCriteriaResolvesByItsIdentifier() throws {
        let dir = try folder([
            "patients.json": #"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","identifier":[{"system":"http://example.org/mrn","value":"C1"}],"active":true},"request":{"method":"PUT","url":"Patient?identifier=http://example.org/mrn|C1"}}]}"#,
            "observations.json": #"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=http://example.org/mrn|C1&active=true"}},"request":{"method":"POST","url":"Observation"}}]}"#,
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = ValidationOptions()
        options.profile = .generic
        let report = try ArtifactValidator(folder: dir, options: options).run()
        #expect(!report.findings.contains { $0.rule == "conditional-reference-unresolved" }, "\(report.findings)")
        #expect(report.inferredOrder?.steps == [["patients.json"], ["observations.json"]])
    }

    @Test func aSharedIdentifierIsAnErrorOnlyWhereAConditionalOperationUsesIt() throws {
        let shared = #"{"system":"http://x/family","value":"F1"}"#
        let dir = try folder(["a.json": """
            {"resourceType":"Bundle","type":"batch","entry":[
            {"resource":{"resourceType":"Patient","identifier":[{"system":"http://x/p","value":"1"},\(shared)]},"request":{"method":"PUT","url":"Patient?identifier=http://x/p|1"}},
            {"resource":{"resourceType":"Patient","identifier":[{"system":"http://x/p","value":"2"},\(shared)]},"request":{"method":"PUT","url":"Patient?identifier=http://x/p|2"}}]}
            """])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try ArtifactValidator(folder: dir).run()
        let shared1 = try #require(report.findings.first { $0.rule == "identifier-shared" })
        #expect(shared1.severity == .warning && shared1.message.contains("http://x/family|F1"))
        #expect(report.errors == 0)
        // Once a reference searches by it, it must be unique.
        try """
            {"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Group","identifier":[{"system":"http://x/g","value":"1"}],"type":"person","actual":true,"member":[{"entity":{"reference":"Patient?identifier=http://x/family|F1"}}]},"request":{"method":"PUT","url":"Group?identifier=http://x/g|1"}}]}
            """.write(toFile: dir + "/b.json", atomically: true, encoding: .utf8)
        let used = try ArtifactValidator(folder: dir).run()
        #expect(used.findings.contains { $0.rule == "identifier-duplicate" && $0.message.contains("http://x/family|F1") })
        #expect(used.findings.contains { $0.rule == "conditional-reference-ambiguous" })
    }
}
