import FHIRModel
import Foundation
import Testing

@testable import FHIRValidation

/// The upload order of a foreign folder comes from the keys its files write and refer to. They are hashed from the
/// bytes of each reference; the bytes must give the key the String reading gives (`FileFacts.key(ofReference:)`),
/// or a file would lose (or gain) a dependency.
struct UploadOrderTests {
    static let references = [
        "Patient?identifier=http://x.org/mrn|123", "Patient?identifier=http://x.org/mrn|a|b", "Patient?identifier=|123",
        "Patient?identifier=123", "Patient?identifier=http://x.org/mrn|1,http://x.org/mrn|2", "Patient?identifier=s|v&active=true",
        "Patient?name=Smith", "?identifier=s|v", "Patient?identifier=http://x.org/mrn|12%203", "Patient?identifier=s\\|x|v",
        "Patient/123", "Patient/123/_history/2", "http://server.org/fhir/Patient/123", "Patient//123", "/Patient/123/",
        "a/b/Patient/123", "Patient", "#contained", "urn:uuid:0f2a6c3e-1b4d-4c8e-9f7a-2d5e6b8c9a01", "urn:oid:1.2.3",
        "Patiënt/123", "Patient?identifier=http://x.org/naïve|1", "", "/", "Observation/_history/1/2",
    ]

    @Test(arguments: references)
    func aReferenceHashedFromItsBytesGivesTheKeyOfItsString(reference: String) {
        var facts = FileFacts()
        let fromBytes = Array(reference.utf8).withUnsafeBufferPointer { facts.key(ofReference: $0) }
        let fromString = FileFacts.key(ofReference: reference).map { key in Array(key.utf8).withUnsafeBufferPointer { FastHash.hash128($0) } }
        #expect(fromBytes == fromString, "\(reference) → \(FileFacts.key(ofReference: reference) ?? "no key")")
    }

    @Test func aFileThatRefersToAnotherComesAfterItWhateverTheThreads() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("order-\(getpid())-\(UInt64.random(in: 0...UInt64.max))").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let lines = [
            "a-observations.ndjson": #"{"resourceType":"Observation","subject":{"reference":"Patient?identifier=http://x.org/mrn|1"},"encounter":{"reference":"Encounter/e1"}}"#,
            "b-encounters.ndjson": #"{"resourceType":"Encounter","id":"e1","subject":{"reference":"Patient/p1"}}"#,
            "c-patients.ndjson": #"{"resourceType":"Patient","id":"p1","identifier":[{"system":"http://x.org/mrn","value":"1"}]}"#,
            "d-alone.ndjson": #"{"resourceType":"Organization","id":"o1"}"#,
        ]
        for (file, line) in lines { try Data((line + "\n").utf8).write(to: URL(fileURLWithPath: folder + "/" + file)) }
        let files = lines.keys.sorted()
        let expected = [["c-patients.ndjson", "d-alone.ndjson"], ["b-encounters.ndjson"], ["a-observations.ndjson"]]
        for threads in [1, 2, 8] {
            let order = UploadOrder.infer(folder: folder, files: files, threads: threads)
            #expect(order.steps == expected, "\(threads) threads")
            #expect(order.cycles.isEmpty)
        }
    }
}
