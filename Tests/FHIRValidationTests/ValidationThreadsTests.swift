import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// The validator's workers read, hash, parse and check files ahead of it; the findings stay those of one thread,
/// in the same order, on every fixture folder (each breaks one rule) and on third-party data.
struct ValidationThreadsTests {
    static let folders: [String] = {
        let root = TestRepository.fixture("validation")
        let rules = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasSuffix(".md") }.sorted()
        return rules.map { "validation/" + $0 } + ["synthea-fhir", "foreign/synthea-style"]
    }()

    @Test func everyFixtureFolderGivesTheSameFindingsWithOneAndFourThreads() throws {
        #expect(Self.folders.count > 40)
        for folder in Self.folders {
            var one = ValidationOptions()
            one.threads = 1
            var four = ValidationOptions()
            four.threads = 4
            let path = TestRepository.fixture(folder)
            let single = try ArtifactValidator(folder: path, options: one).run()
            let parallel = try ArtifactValidator(folder: path, options: four).run()
            #expect(parallel.findings == single.findings, "\(folder)")
            #expect(parallel.resources == single.resources, "\(folder)")
        }
    }
}
