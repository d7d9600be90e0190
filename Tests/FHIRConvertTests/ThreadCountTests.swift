import FHIRConvert
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// `--threads N` changes where the work runs, never what is written: every byte of the artifacts, and every
/// finding of the validation, whatever N.
struct ThreadCountTests {
    private func convert(_ mapping: String, out: String, threads: Int, validate: Bool = true) throws -> ConvertSummary {
        var options = ConvertOptions(mappingPath: mapping, outputPath: out, toolVersion: "test")
        options.threads = threads
        options.validate = validate
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

    /// Rows of every fate, thousands of them (many batches for the workers): unreadable rows, failed evaluations,
    /// rows every `$if` filters out, duplicate identifiers, and a grouping step with late rows and rows `group.where`
    /// leaves out. Their resources and rejects come out in the same order, byte for byte, with 1, 2 and 8 threads
    /// (without validation, so that 2 threads evaluate on one worker and 8 on seven).
    @Test func rowsAndRejectsOfEveryKindComeOutInRowOrderWhateverTheThreads() throws {
        let root = temporaryFolder()
        defer { cleanup(root) }
        var people = "ID,KIND,BORN\n"
        for i in 1...3000 {
            if i % 97 == 0 { people += "p\(i),person,2001-01-01,extra field\n"; continue }
            let id = i % 79 == 0 ? "p\(i - 1)" : "p\(i)"
            let kind = i % 83 == 0 ? "skip" : i % 3 == 0 ? "family" : "person"
            let born = i % 89 == 0 ? "not a date" : "19\(50 + i % 50)-0\(1 + i % 9)-1\(i % 10)"
            people += "\(id),\(kind),\(born)\n"
        }
        var readings = "PATIENT,DATE,CODE,VALUE\n"
        var late: [String] = []
        for g in 1...1500 {
            let rows = ["p\(g),2020-01-01,a,\(g)", "p\(g),2020-01-01,\(g % 7 == 0 ? "c" : "b"),\(g + 1)"]
            if g % 50 == 0 { late.append(rows[1]); readings += rows[0] + "\n" } else { readings += rows.joined(separator: "\n") + "\n" }
            if g % 50 == 10 { readings += late.map { $0 + "\n" }.joined(); late = [] }
        }
        write(people, to: root + "/people.csv")
        write(readings, to: root + "/readings.csv")
        write("""
            version: 1
            sources:
              people: { file: people.csv }
              readings: { file: readings.csv }
            steps:
              - name: people
                source: people
                bundle: transaction
                resources:
                  patient:
                    $if: "{{ ne(KIND, 'skip') }}"
                    resourceType: Patient
                    identifier: [{ system: http://example.org/person, value: "{{ ID }}" }]
                    birthDate: "{{ date(BORN, 'yyyy-MM-dd') }}"
                  relative:
                    $if: "{{ eq(KIND, 'family') }}"
                    resourceType: RelatedPerson
                    identifier: [{ system: http://example.org/relative, value: "{{ ID }}" }]
                    patient: { reference: "{{ uuid('patient') }}" }
              - name: readings
                source: readings
                bundle: batch
                group:
                  by: [PATIENT, DATE]
                  as: parts
                  within: 3
                  where: "{{ or(eq(CODE, 'a'), eq(CODE, 'b')) }}"
                resource:
                  resourceType: Observation
                  identifier: [{ system: http://example.org/reading, value: "{{ hashId(PATIENT, DATE) }}" }]
                  status: final
                  code: { text: reading }
                  component:
                    - $each: "{{ parts }}"
                      $as: part
                      code: { text: "{{ part.CODE }}" }
                      valueString: "{{ part.VALUE }}"
            """, to: root + "/mapping.yaml")
        var outputs: [Int: [String: Data]] = [:]
        for threads in [1, 2, 8] {
            _ = try convert(root + "/mapping.yaml", out: root + "/out-\(threads)", threads: threads, validate: false)
            outputs[threads] = folderContents(root + "/out-\(threads)")
        }
        let one = try #require(outputs[1])
        let rejects = String(decoding: try #require(one["rejects.ndjson"]), as: UTF8.self)
        for reason in ["fields", "is not a date", "filtered: the $if", "duplicate identifier", "already formed a group", "group.where is false"] {
            #expect(rejects.contains(reason), "no reject says \(reason)")
        }
        for threads in [2, 8] {
            let other = try #require(outputs[threads])
            #expect(other.keys.sorted() == one.keys.sorted())
            for (path, bytes) in one where other[path] != bytes {
                Issue.record("\(path) differs between 1 and \(threads) threads")
            }
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
