import FHIRConvert
import FHIRTestServer
import FHIRTestSupport
@testable import FHIRUpload
import Foundation
import Testing

/// A folder whose conditions refer to patients loaded earlier (listed with --known-identifiers), and one that
/// loads some of those patients.
private func writeFolders(in dir: String) throws -> (conditions: String, patients: String) {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try "patient_id\nP1\n".write(toFile: dir + "/patients.csv", atomically: true, encoding: .utf8)
    try "condition_id,patient_id\nC1,P1\nC2,P2\n".write(toFile: dir + "/conditions.csv", atomically: true, encoding: .utf8)
    try """
        version: 1
        sources: { patients: { file: patients.csv } }
        steps:
          - name: patients
            source: patients
            bundle: batch
            resource:
              resourceType: Patient
              identifier: [{ system: http://example.org/patient, value: "{{ patient_id }}" }]
        """.write(toFile: dir + "/patients.yaml", atomically: true, encoding: .utf8)
    try """
        version: 1
        sources: { conditions: { file: conditions.csv } }
        steps:
          - name: conditions
            source: conditions
            bundle: batch
            resource:
              resourceType: Condition
              identifier: [{ system: http://example.org/condition, value: "{{ condition_id }}" }]
              code: { text: known elsewhere }
              subject: { reference: "Patient?identifier=http://example.org/patient|{{ patient_id }}" }
        """.write(toFile: dir + "/conditions.yaml", atomically: true, encoding: .utf8)
    _ = try Converter(options: ConvertOptions(mappingPath: dir + "/patients.yaml", outputPath: dir + "/patients-out")).run()
    var options = ConvertOptions(mappingPath: dir + "/conditions.yaml", outputPath: dir + "/conditions-out")
    options.knownIdentifiers = ["Patient|http://example.org/patient|P1", "Patient|http://example.org/patient|P2"]
    _ = try Converter(options: options).run()
    return (dir + "/conditions-out", dir + "/patients-out")
}

struct KnownIdentifierUploadTests {
    @Test func anUploadWhoseKnownIdentifiersAreNotOnTheServerIsRefusedBeforeAnyWrite() async throws {
        let dir = NSTemporaryDirectory() + "known-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folders = try writeFolders(in: dir)
        try await UploadFixtures.withServer(folder: { folders.conditions }) { server, folder in
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
                Issue.record("expected a refusal")
            } catch let UploadRefusal.knownIdentifiersMissing(missing, total) {
                #expect(missing == ["Patient|http://example.org/patient|P1", "Patient|http://example.org/patient|P2"] && total == 2)
            }
            #expect(server.statistics.bundleRequests == 0)
            // Once the patients are loaded (here P1 only), the refusal names what is still missing.
            _ = try await Uploader(folder: folders.patients, options: UploadFixtures.options(server)).run()
            do {
                _ = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
                Issue.record("expected a refusal")
            } catch let refusal as UploadRefusal {
                guard case .knownIdentifiersMissing(let missing, _) = refusal else { throw refusal }
                #expect(missing == ["Patient|http://example.org/patient|P2"])
                #expect(refusal.description.contains("1 of the 2 resources that known-identifiers.txt says are on the server are not"))
            }
            // With every patient there, the conditions go up.
            try "patient_id\nP1\nP2\n".write(toFile: dir + "/patients.csv", atomically: true, encoding: .utf8)
            _ = try Converter(options: ConvertOptions(mappingPath: dir + "/patients.yaml", outputPath: dir + "/patients-out")).run()
            _ = try await Uploader(folder: folders.patients, options: UploadFixtures.options(server)).run()
            let report = try await Uploader(folder: folder, options: UploadFixtures.options(server)).run()
            #expect(report.written == 2)
        }
    }
}
