import FHIRConvert
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// `--threads N` changes where the work runs, never what is written: every byte of the artifacts, and every
/// finding of the validation, whatever N.
struct ThreadCountTests {
    private func convert(_ mapping: String, out: String, threads: Int) throws -> ConvertSummary {
        var options = ConvertOptions(mappingPath: mapping, outputPath: out, toolVersion: "test")
        options.threads = threads
        return try Converter(options: options).run()
    }

    @Test(arguments: ["medplum-example/mapping.yaml", "medplum-example/mapping-xml.yaml", "synthea/mapping.yaml"])
    func artifactsAreByteIdenticalWithOneTwoAndEightThreads(mapping: String) throws {
        let root = temporaryFolder()
        defer { cleanup(root) }
        var outputs: [Int: [String: Data]] = [:]
        var findings: [Int: [Finding]] = [:]
        for threads in [1, 2, 8] {
            let summary = try convert(fixture(mapping), out: root + "/out-\(threads)", threads: threads)
            outputs[threads] = folderContents(root + "/out-\(threads)")
            findings[threads] = summary.validation?.findings
            #expect(summary.validation != nil)
        }
        let one = try #require(outputs[1])
        #expect(one.keys.contains("manifest.json") && one.keys.contains("report.html") && one.count > 5)
        for threads in [2, 8] {
            let other = try #require(outputs[threads])
            #expect(other.keys.sorted() == one.keys.sorted(), "files written with \(threads) threads")
            for (path, bytes) in one where other[path] != bytes {
                Issue.record("\(path) differs between 1 and \(threads) threads")
            }
            #expect(findings[threads] == findings[1])
        }
    }

    @Test func validationWhileWritingFindsWhatAValidationOfTheFinishedFolderFinds() throws {
        let root = temporaryFolder()
        defer { cleanup(root) }
        let summary = try convert(fixture("synthea/mapping.yaml"), out: root + "/out", threads: 2)
        let whileWriting = try #require(summary.validation)
        var options = ValidationOptions()
        options.countCodedValues = true
        let afterwards = try ArtifactValidator(folder: root + "/out", options: options).run()
        // The review page is added after the validation, so the later run counts one more file.
        #expect(afterwards.resources == whileWriting.resources && afterwards.resources > 1000)
        #expect(Set(afterwards.findings.map { String(describing: $0) }) == Set(whileWriting.findings.map { String(describing: $0) }))
        #expect(afterwards.codedValues == whileWriting.codedValues)
    }
}
