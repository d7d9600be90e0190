import FHIRConvert
import FHIRTestSupport
import Foundation
import Testing

/// Every mapping under `fixtures/`, found by name (`mapping*.yaml`), so that a new one is covered without a new test.
private let fixtureMappings: [String] = {
    let fixtures = TestRepository.root + "/fixtures"
    guard let walk = FileManager.default.enumerator(atPath: fixtures) else { return [] }
    var found: [String] = []
    while let path = walk.nextObject() as? String {
        let name = (path as NSString).lastPathComponent
        if name.hasPrefix("mapping"), name.hasSuffix(".yaml") || name.hasSuffix(".yml") { found.append(path) }
    }
    return found.sorted()
}()

/// A fresh clone with nothing beside it converts every bundled example: each mapping reads only files inside the
/// repository, and its artifacts validate.
struct FixtureMappingTests {
    @Test func theBundledExamplesAreFound() {
        #expect(fixtureMappings.contains("medplum-example/mapping.yaml"))
        #expect(fixtureMappings.contains("synthea/mapping.yaml"))
    }

    @Test(arguments: fixtureMappings)
    func mappingConvertsFromFilesInsideTheRepository(mapping: String) throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        let mappingPath = fixture(mapping)
        let summary = try convert(mappingPath, out: out + "/out")
        #expect(summary.validation?.errors == 0)
        #expect(!summary.manifest.sources.isEmpty)
        for source in summary.manifest.sources {
            let path = source.file.hasPrefix("/") ? source.file : (mappingPath as NSString).deletingLastPathComponent + "/" + source.file
            #expect(TestRepository.contains(path), "source '\(source.name)' of \(mapping) reads \(source.file), outside the repository")
        }
    }

    /// The mysqldump example: a one-table dump read by its layout alone, a table of a larger dump picked by name, and
    /// an empty table whose columns come from its structure.
    @Test func mysqldumpExampleReadsTablesByLayoutAndByName() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        let summary = try convert(fixture("mysqldump/mapping.yaml"), out: out + "/out")
        #expect(summary.manifest.sources.map(\.name) == ["patients", "conditions", "allergies"])
        #expect(summary.manifest.sources.map(\.rows) == [3, 4, 0])
        #expect(summary.manifest.resourceCounts == ["Patient": 3, "Condition": 4])
        #expect(summary.manifest.rejects == 0)
    }
}
