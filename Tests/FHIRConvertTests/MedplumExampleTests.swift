import FHIRArtifacts
import FHIRConvert
import FHIRModel
import Foundation
import Testing

/// The seed example of Medplum's "Building Migration Pipelines", converted from CSV and from XML.
struct MedplumExampleTests {
    /// Golden files in fixtures/medplum-example/expected; `RECORD_SNAPSHOTS=1 swift test` rewrites them (and fails, so a
    /// recording run is never mistaken for a passing one).
    @Test func csvConversionMatchesTheGoldenArtifactsByteForByte() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        try convert(fixture("medplum-example/mapping.yaml"), out: out + "/out")
        let produced = folderContents(out + "/out")
        let goldenFolder = fixture("medplum-example/expected")
        if ProcessInfo.processInfo.environment["RECORD_SNAPSHOTS"] != nil {
            cleanup(goldenFolder)
            for (path, data) in produced { write(String(decoding: data, as: UTF8.self), to: goldenFolder + "/" + path) }
            Issue.record("recorded golden files in \(goldenFolder); run again without RECORD_SNAPSHOTS")
            return
        }
        let golden = folderContents(goldenFolder)
        #expect(Set(produced.keys) == Set(golden.keys))
        for (path, data) in golden {
            #expect(produced[path] == data, "\(path) differs from the golden file")
        }
    }

    @Test func bundlesFollowTheSeedsThreeSteps() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        let summary = try convert(fixture("medplum-example/mapping.yaml"), out: out + "/out")
        #expect(summary.manifest.steps.map(\.folder) == ["bundles/01-patients", "bundles/02-conditions", "bundles/03-encounters"])

        let patients = try JSONParser.parse(Array(read(out + "/out/bundles/01-patients/0001.json").utf8))
        #expect(patients["type"] == .string("batch"))
        let patientEntries = try #require(patients["entry"]?.arrayValue)
        #expect(patientEntries.count == 2)
        #expect(patientEntries[0]["request"]?["method"] == .string("PUT"))
        #expect(patientEntries[0]["request"]?["url"] == .string("Patient?identifier=http://your-source-system.com/patientId|P001"))
        #expect(patientEntries[0]["resource"]?["gender"] == .string("male"))
        #expect(patientEntries[0]["resource"]?["id"] == nil)

        let conditions = try JSONParser.parse(Array(read(out + "/out/bundles/02-conditions/0001.json").utf8))
        let first = try #require(conditions["entry"]?.arrayValue?.first?["resource"])
        #expect(first["subject"]?["reference"] == .string("Patient?identifier=http://your-source-system.com/patientId|P001"))
        let codings = try #require(first["code"]?["coding"]?.arrayValue)
        #expect(codings.map { $0["code"] } == [.string("HT001"), .string("I10")])
        #expect(codings[1]["display"] == .string("Essential (primary) hypertension"))
        #expect(first["onsetDateTime"] == .string("2022-03-15"))

        let encounters = try JSONParser.parse(Array(read(out + "/out/bundles/03-encounters/0001.json").utf8))
        #expect(encounters["type"] == .string("batch"))
        let outer = try #require(encounters["entry"]?.arrayValue)
        #expect(outer.count == 2)
        #expect(outer[0]["request"]?["method"] == .string("POST"))
        #expect(outer[0]["request"]?["url"] == .string("/"))
        let inner = try #require(outer[1]["resource"])
        #expect(inner["type"] == .string("transaction"))
        let innerEntries = try #require(inner["entry"]?.arrayValue)
        #expect(innerEntries.count == 2)
        let encounter = try #require(innerEntries[0]["resource"])
        #expect(encounter["class"]?["code"] == .string("EMER"))
        #expect(encounter["period"]?["start"] == .string("2023-06-16T00:00:00Z"))
        // The seed POSTs the ClinicalImpression; here it is a conditional update on an identifier from the note.
        #expect(innerEntries[1]["request"]?["method"] == .string("PUT"))
        #expect(innerEntries[1]["request"]?["url"] == .string("ClinicalImpression?identifier=http://your-source-system.com/noteId|N002"))
        #expect(innerEntries[1]["resource"]?["encounter"]?["reference"] == innerEntries[0]["fullUrl"])
        #expect(innerEntries[0]["fullUrl"]?.stringValue?.hasPrefix("urn:uuid:") == true)
    }

    @Test func ndjsonHoldsEveryResourceWithConditionalInsteadOfURNReferences() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        try convert(fixture("medplum-example/mapping.yaml"), out: out + "/out")
        let impressions = read(out + "/out/ndjson/ClinicalImpression.ndjson").split(separator: "\n")
        #expect(impressions.count == 2)
        let first = try JSONParser.parse(String(impressions[0]))
        #expect(first["encounter"]?["reference"] == .string("Encounter?identifier=http://your-source-system.com/encounterId|E001"))
        #expect(read(out + "/out/ndjson/Patient.ndjson").split(separator: "\n").count == 2)
        #expect(read(out + "/out/ndjson/Condition.ndjson").split(separator: "\n").count == 3)
        #expect(read(out + "/out/ndjson/Encounter.ndjson").split(separator: "\n").count == 2)
    }

    @Test func xmlExportGivesTheSameResourcesAsTheCSVExport() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        try convert(fixture("medplum-example/mapping.yaml"), out: out + "/csv")
        let xml = try convert(fixture("medplum-example/mapping-xml.yaml"), out: out + "/xml")
        let csvFiles = folderContents(out + "/csv")
        let xmlFiles = folderContents(out + "/xml")
        for (path, data) in csvFiles where path.hasPrefix("bundles/") || path.hasPrefix("ndjson/") {
            #expect(xmlFiles[path] == data, "\(path) differs between the CSV and XML conversions")
        }
        // The MySQL dump has a third note whose encounter is xsi:nil: read, but no encounter points at it.
        #expect(xml.manifest.sources.first { $0.name == "notes" }?.rows == 3)
        #expect(xml.manifest.rejects == 0)
    }

    @Test func manifestRecordsChecksumsCountsAndUploadOrder() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        try convert(fixture("medplum-example/mapping.yaml"), out: out + "/out")
        let manifest = try Manifest(json: JSONParser.parse(Array(read(out + "/out/manifest.json").utf8)))
        #expect(manifest.resourceCounts == ["Patient": 2, "Condition": 3, "Encounter": 2, "ClinicalImpression": 2])
        let mappingFile = try #require(FileManager.default.contents(atPath: fixture("medplum-example/mapping.yaml")))
        #expect(manifest.mapping?.sha256 == sha256Hex(Array(mappingFile)))
        let patientsCSV = Array(try #require(FileManager.default.contents(atPath: fixture("medplum-example/patients.csv"))))
        #expect(manifest.sources.first { $0.name == "patients" }?.sha256 == sha256Hex(patientsCSV))
        #expect(manifest.sources.first { $0.name == "patients" }?.rows == 2)
        for artifact in manifest.artifacts {
            let data = try #require(FileManager.default.contents(atPath: out + "/out/" + artifact.path))
            #expect(sha256Hex(Array(data)) == artifact.sha256, "\(artifact.path)")
            #expect(data.count == artifact.bytes)
        }
        #expect(Set(manifest.artifacts.map(\.path)) == Set(folderContents(out + "/out").keys).subtracting(["manifest.json"]))
    }
}
