import FHIRConvert
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// What fhirbundle's validator accepts, an independent R4 validator (PyPI fhirkit-rs) accepts too: the seed
/// example and the Synthea export's artifacts. `scripts/install-test-tools.sh` installs fhirkit-rs.
struct IndependentValidatorTests {
    @Test func resourcesWeAcceptAreAcceptedByFhirkit() throws {
        let python = try TestPrerequisite.fhirkitPython.path()
        let dir = NSTemporaryDirectory() + "crosscheck-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folders = [dir + "/seed", dir + "/synthea"]
        for (mapping, folder) in zip(["medplum-example/mapping.yaml", "synthea/mapping.yaml"], folders) {
            _ = try Converter(options: ConvertOptions(mappingPath: TestRepository.fixture(mapping), outputPath: folder)).run()
            #expect(try ArtifactValidator(folder: folder).run().errors == 0)
        }
        let run = try runProcess(python, [TestRepository.root + "/scripts/cross-check-fhirkit.py"] + folders)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains(" passed, 0 failed"))
    }
}
