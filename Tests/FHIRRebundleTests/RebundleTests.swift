import FHIRArtifacts
import FHIRConvert
import FHIRModel
@testable import FHIRRebundle
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// A scratch folder with these files (path → text), removed by the caller.
private func folder(_ files: [String: String]) throws -> String {
    let dir = NSTemporaryDirectory() + "rebundle-in-\(UUID().uuidString)"
    for (path, text) in files {
        let full = dir + "/" + path
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: full, atomically: true, encoding: .utf8)
    }
    return dir
}

private func rebundle(_ input: String, profile: ServerProfile = .medplum) throws -> (RebundleSummary, String) {
    let out = NSTemporaryDirectory() + "rebundle-out-\(UUID().uuidString)"
    var options = RebundleOptions(inputPath: input, outputPath: out)
    options.profile = profile
    options.toolVersion = "test"
    return (try Rebundler(options: options).run(), out)
}

private func lines(_ path: String) -> [JSONValue] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
}

struct RebundleSyntheaTests {
    @Test func syntheasOwnOutputBecomesAFolderWithNoFindingAndEveryResourceAccountedFor() throws {
        let (summary, out) = try rebundle(TestRepository.fixture("synthea-fhir"))
        defer { try? FileManager.default.removeItem(atPath: out) }
        let m = summary.manifest
        let written = m.resourceCounts.values.reduce(0, +)
        #expect(summary.read == 1116)
        #expect(written + m.rejects == 1116)
        #expect(m.sources.reduce(0) { $0 + $1.rows } == 1116 && m.sources.reduce(0) { $0 + $1.rejects } == m.rejects)
        // What was not written: the second run's identical hospital and practitioner copies, and its practitioners
        // that reuse an NPI of the first run with other content (with ifNoneExist the server keeps the first).
        let rejects = lines(out + "/rejects.ndjson")
        #expect(rejects.count == 76)
        #expect(rejects.allSatisfy { ($0["reason"]?.stringValue ?? "").hasPrefix("duplicate:") || ($0["reason"]?.stringValue ?? "").hasPrefix("conflict:") })
        #expect(rejects.allSatisfy { $0["file"]?.stringValue?.hasSuffix("1758167569434.json") == true && $0["pointer"] != nil })
        // No finding at all, under the profile's limits.
        let report = try ArtifactValidator(folder: out).run()
        #expect(report.findings.isEmpty, "\(report.findings.prefix(5))")
        #expect(report.resources == written)
        // Every write is a conditional update (or PUT Provenance/id: Provenance has no identifier), never with an id.
        for step in m.steps {
            for file in step.bundles {
                let bundle = try JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: out + "/" + file))))
                for entry in bundle["entry"]?.arrayValue ?? [] {
                    let url = entry["request"]?["url"]?.stringValue ?? ""
                    #expect(entry["request"]?["method"] == .string("PUT"))
                    if url.hasPrefix("Provenance/") { continue }
                    #expect(url.contains("?identifier=") && entry["resource"]?["id"] == nil)
                }
            }
        }
    }

    @Test func anObservationWithoutIdentifierIsKeyedByItsFullUrl() throws {
        let (_, out) = try rebundle(TestRepository.fixture("synthea-fhir"))
        defer { try? FileManager.default.removeItem(atPath: out) }
        let input = try JSONParser.parse(Array(try #require(FileManager.default.contents(
            atPath: TestRepository.fixture("synthea-fhir/Alfred550_West559_6872def5-772f-427c-3053-de6e1c71ce0a.json")))))
        let entry = try #require(input["entry"]?.arrayValue?.first { $0["resource"]?["resourceType"] == .string("Observation") })
        let fullUrl = try #require(entry["fullUrl"]?.stringValue)
        let observation = try #require(lines(out + "/ndjson/Observation.ndjson").first {
            $0["identifier"]?.arrayValue?.contains(.object([JSONMember("system", .string("urn:ietf:rfc:3986")), JSONMember("value", .string(fullUrl))])) == true
        })
        // Its subject was a urn:uuid in the input transaction; now a conditional reference to the patient.
        #expect(observation["subject"]?["reference"]?.stringValue?.hasPrefix("Patient?identifier=https://github.com/synthetichealth/synthea|") == true)
        #expect(observation["id"] == nil)
    }

    @Test func theSameInputGivesTheSameBytes() throws {
        let (_, a) = try rebundle(TestRepository.fixture("synthea-fhir"))
        let (_, b) = try rebundle(TestRepository.fixture("synthea-fhir"))
        defer {
            try? FileManager.default.removeItem(atPath: a)
            try? FileManager.default.removeItem(atPath: b)
        }
        let files = try #require(FileManager.default.subpaths(atPath: a)).sorted()
        #expect(files == (try #require(FileManager.default.subpaths(atPath: b))).sorted())
        for file in files {
            #expect(FileManager.default.contents(atPath: a + "/" + file) == FileManager.default.contents(atPath: b + "/" + file), "\(file)")
        }
    }

    @Test func profilesThatAllowItKeepEachInputTransactionWhole() throws {
        let (summary, out) = try rebundle(TestRepository.fixture("synthea-fhir"), profile: .generic)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let transactions = summary.manifest.steps.filter { $0.bundle == "transaction" }
        #expect(transactions.count == 1 && transactions[0].bundles.count == 3)
        let bundle = try JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: out + "/" + transactions[0].bundles[0]))))
        let text = JSONWriter().string(bundle)
        #expect(text.contains(#""reference":"urn:uuid:"#))  // references inside the transaction stay urn:uuid
        #expect(try ArtifactValidator(folder: out).run().findings.isEmpty)
        #expect(summary.manifest.profile == .generic && summary.manifest.limits == .none)
    }
}

struct RebundleRuleTests {
    @Test func whatCannotBeMadeIdempotentIsRejectedWithWhereAndWhyAndSoIsWhatRefersToIt() throws {
        let dir = try folder([
            "a.json": #"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Patient","name":[{"family":"X"}]},"request":{"method":"POST","url":"Patient"}},{"request":{"method":"DELETE","url":"Patient/1"}},{"fullUrl":"urn:uuid:8c1b9a5e-1f0e-4a4b-9a1c-2d3e4f506172","resource":{"resourceType":"Basic","code":{"text":"x"}},"request":{"method":"POST","url":"Basic"}}]}"#,
            "b.ndjson": #"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}}"# + "\n" + #"{"resourceType":"Frobnicate","id":"1"}"# + "\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (summary, out) = try rebundle(dir)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let rejects = lines(out + "/rejects.ndjson")
        let reasons = rejects.map { ($0["file"]?.stringValue ?? "") + " " + ($0["pointer"]?.stringValue ?? $0["line"].map { JSONWriter().string($0) } ?? "") + " " + ($0["reason"]?.stringValue ?? "") }
        #expect(reasons.contains { $0.hasPrefix("a.json /entry/0/resource no identifier of its own") })
        #expect(reasons.contains { $0.hasPrefix("a.json /entry/1 a DELETE entry without a resource") })
        #expect(reasons.contains { $0.hasPrefix("b.ndjson 2 'Frobnicate' is not a FHIR R4 resource type") })
        // The Basic had a fullUrl, the Observation an id: kept, keyed by them.
        #expect(summary.manifest.resourceCounts == ["Basic": 1, "Observation": 1])
        #expect(rejects.count == 3 && summary.read == 5)
    }

    @Test func aReferenceToARejectedResourceRejectsTheReferrer() throws {
        let dir = try folder(["t.json": #"{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Frobnicate"},"request":{"method":"POST","url":"Frobnicate"}},{"fullUrl":"urn:uuid:22222222-2222-4222-8222-222222222222","resource":{"resourceType":"Basic","code":{"text":"x"},"subject":{"reference":"urn:uuid:11111111-1111-4111-8111-111111111111"}},"request":{"method":"POST","url":"Basic"}}]}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (summary, out) = try rebundle(dir)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let rejects = lines(out + "/rejects.ndjson")
        #expect(summary.manifest.rejects == 2 && summary.manifest.resourceCounts.isEmpty)
        #expect(rejects.contains { ($0["reason"]?.stringValue ?? "").hasPrefix("refers (at /subject/reference) to t.json#/entry/0/resource, which is not written") })
    }

    @Test func resourcesReferringToEachOtherLandInOneTransaction() throws {
        let dir = try folder(["p.json": #"{"resourceType":"Patient","id":"p1"}"#, "c.json": #"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:33333333-3333-4333-8333-333333333333","resource":{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"diagnosis":[{"condition":{"reference":"urn:uuid:44444444-4444-4444-8444-444444444444"}}]}},{"fullUrl":"urn:uuid:44444444-4444-4444-8444-444444444444","resource":{"resourceType":"Condition","subject":{"reference":"Patient/p1"},"encounter":{"reference":"urn:uuid:33333333-3333-4333-8333-333333333333"}}}]}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (summary, out) = try rebundle(dir)
        defer { try? FileManager.default.removeItem(atPath: out) }
        #expect(summary.manifest.steps.map(\.bundle) == ["batch", "transaction"])  // the patient first
        let bundle = try JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: out + "/" + summary.manifest.steps[1].bundles[0]))))
        let entries = try #require(bundle["entry"]?.arrayValue)
        #expect(entries.count == 2)
        let encounterURL = try #require(entries[0]["fullUrl"]?.stringValue)
        #expect(entries[1]["resource"]?["encounter"]?["reference"] == .string(encounterURL))
        #expect(summary.notes.contains { $0.contains("cycle") })
        // The NDJSON form refers by identifier instead.
        #expect(lines(out + "/ndjson/Condition.ndjson")[0]["encounter"]?["reference"]?.stringValue?.hasPrefix("Encounter?identifier=urn:ietf:rfc:3986|") == true)
    }

    @Test func aFolderWrittenByConvertRebundlesForAnotherServer() throws {
        let converted = NSTemporaryDirectory() + "converted-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: converted) }
        let mapping = TestRepository.fixture("medplum-example/mapping.yaml")
        _ = try Converter(options: ConvertOptions(mappingPath: mapping, outputPath: converted)).run()
        let (summary, out) = try rebundle(converted, profile: .hapi)
        defer { try? FileManager.default.removeItem(atPath: out) }
        #expect(summary.manifest.resourceCounts == ["Patient": 2, "Condition": 3, "Encounter": 2, "ClinicalImpression": 2])
        #expect(summary.manifest.rejects == 0)
        #expect(summary.manifest.steps.map(\.name) == ["patient", "condition-encounter", "clinicalimpression"])
        #expect(try ArtifactValidator(folder: out).run().findings.isEmpty)
    }
}

/// Data from several servers, and folders that other tools shaped.
struct RebundleForeignShapesTests {
    @Test func anAbsoluteReferenceToAnotherServerIsNotPointedAtTheInputsResourceOfThatTypeAndID() throws {
        // Patient/1 of server a is in the input; the Observation refers to Patient/1 of server b: another person.
        let dir = try folder(["c.json": #"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"https://a.example.org/fhir/Patient/1","resource":{"resourceType":"Patient","id":"1","identifier":[{"system":"http://a.example.org/mrn","value":"A-1"}]}},{"fullUrl":"https://a.example.org/fhir/Observation/2","resource":{"resourceType":"Observation","id":"2","status":"final","code":{"text":"x"},"subject":{"reference":"https://b.example.org/fhir/Patient/1"},"performer":[{"reference":"https://a.example.org/fhir/Patient/1/_history/3"}],"focus":[{"reference":"Patient/1"}]}}]}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (summary, out) = try rebundle(dir, profile: .generic)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let observation = try #require(lines(out + "/ndjson/Observation.ndjson").first)
        #expect(observation["subject"]?["reference"] == .string("https://b.example.org/fhir/Patient/1"))
        // The same server's patient, absolute (a version of it) or relative to the referrer's base: the input's.
        #expect(observation["performer"]?.arrayValue?.first?["reference"] == .string("Patient?identifier=http://a.example.org/mrn|A-1"))
        #expect(observation["focus"]?.arrayValue?.first?["reference"] == .string("Patient?identifier=http://a.example.org/mrn|A-1"))
        #expect(summary.notes.contains { $0.hasPrefix("1 absolute references name a Type/id of the input on another server") })
    }

    @Test func aResourceWithOneIdentifierObjectIsKeyedByItAndItsDocumentBundleRebundlesCleanly() throws {
        let dir = try folder(["document.json": #"{"resourceType":"Bundle","id":"d1","identifier":{"system":"http://example.org/docs","value":"D-1"},"type":"document","timestamp":"2024-01-01T00:00:00Z","entry":[{"fullUrl":"urn:uuid:55555555-5555-4555-8555-555555555555","resource":{"resourceType":"Composition","identifier":{"system":"http://example.org/compositions","value":"C-1"},"status":"final","type":{"text":"note"},"date":"2024-01-01","author":[{"reference":"urn:uuid:66666666-6666-4666-8666-666666666666"}],"title":"Note","subject":{"reference":"urn:uuid:66666666-6666-4666-8666-666666666666"}}},{"fullUrl":"urn:uuid:66666666-6666-4666-8666-666666666666","resource":{"resourceType":"Patient","identifier":[{"system":"http://example.org/mrn","value":"P-1"}]}}]}"#])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (summary, out) = try rebundle(dir, profile: .generic)
        defer { try? FileManager.default.removeItem(atPath: out) }
        #expect(summary.validation?.errors == 0)
        #expect(summary.manifest.resourceCounts == ["Composition": 1, "Patient": 1])
        let bundles = summary.manifest.steps.flatMap(\.bundles)
        let urls = try bundles.flatMap { path -> [String] in
            let bundle = try JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: out + "/" + path))))
            return (bundle["entry"]?.arrayValue ?? []).compactMap { $0["request"]?["url"]?.stringValue }
        }
        #expect(urls.contains("Composition?identifier=http://example.org/compositions|C-1"))
    }

    @Test func aBulkDataExportsManifestIsNotTakenForThisToolsAndItsNDJSONIsRead() throws {
        let dir = try folder([
            "manifest.json": #"{"transactionTime":"2024-01-01T00:00:00Z","request":"https://example.org/fhir/$export","requiresAccessToken":true,"output":[{"type":"Patient","url":"https://example.org/files/Patient.ndjson"}],"error":[]}"#,
            "Patient.ndjson": #"{"resourceType":"Patient","id":"p1","identifier":[{"system":"http://example.org/mrn","value":"1"}]}"# + "\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let report = try ArtifactValidator(folder: dir).run()
        #expect(report.errors == 0 && report.resources == 1)
        let (summary, out) = try rebundle(dir)
        defer { try? FileManager.default.removeItem(atPath: out) }
        #expect(summary.manifest.resourceCounts == ["Patient": 1])
        // Nor is such a folder an artifact folder that --out may replace.
        #expect(throws: ArtifactError.self) { try ArtifactFolder(target: dir) }
    }
}
