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

    /// Whatever fhirkit-rs or the official R4 JSON Schema flags, we flag too (the schema's own mistakes are named in
    /// the script, citing the specification), and we flag nothing they accept but what breaks the specification:
    /// on Synthea's FHIR output, the Synthea CSV export's artifacts, the seed example's, a sample of the official
    /// package's resources, and defects seeded into a quarter of them.
    @Test func everythingFhirkitOrTheJSONSchemaFlagsWeFlagToo() throws {
        let python = try TestPrerequisite.fhirkitPython.path()
        let dir = NSTemporaryDirectory() + "crosscheck-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folders = [dir + "/seed", dir + "/synthea"]
        for (mapping, folder) in zip(["medplum-example/mapping.yaml", "synthea/mapping.yaml"], folders) {
            _ = try Converter(options: ConvertOptions(mappingPath: TestRepository.fixture(mapping), outputPath: folder)).run()
        }
        let run = try runProcess(python, [TestRepository.root + "/scripts/cross-check-validators.py",
                                          "--fhirbundle", TestRepository.builtExecutable("fhirbundle"), TestRepository.fixture("synthea-fhir")] + folders)
        #expect(run.status == 0, "\(run.stdout)\(run.stderr)")
        #expect(run.stdout.contains("0 missed, 0 false alarms"), "\(run.stdout)")
        #expect(run.stdout.contains("fhirbundle: caught"))
    }
}
