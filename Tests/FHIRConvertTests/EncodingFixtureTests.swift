import FHIRConvert
import FHIRTestSupport
import Foundation
import Testing

/// The guide's example as legacy systems write it (fixtures/encodings, made by scripts/make-encoding-fixtures.py):
/// every encoding and layout gives the very artifacts of the UTF-8 CSV, byte for byte.
struct EncodingFixtureTests {
    @Test(arguments: ["windows-1252/mapping.yaml", "iso-8859-1/mapping.yaml", "utf-16/mapping.yaml", "xml-utf-16/mapping-xml.yaml", "fixed-width/mapping.yaml"])
    func eachEncodingGivesTheArtifactsOfTheUTF8Export(mapping: String) throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        let reference = try convert(fixture("encodings/utf-8/mapping.yaml"), out: dir + "/utf-8")
        let summary = try convert(fixture("encodings/" + mapping), out: dir + "/other")
        #expect(summary.manifest.rejects == 0)
        #expect(summary.manifest.resourceCounts == reference.manifest.resourceCounts)
        var expected = folderContents(dir + "/utf-8")
        var got = folderContents(dir + "/other")
        // The manifest and the report name the source files, their checksums and layouts (XML field paths).
        for file in ["manifest.json", "report.html"] {
            expected[file] = nil
            got[file] = nil
        }
        #expect(got == expected)
        #expect(read(dir + "/other/ndjson/Patient.ndjson").contains("\"family\":\"Ångström\""))
    }
}
