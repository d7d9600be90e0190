import FHIRArtifacts
import FHIRConvert
import FHIRModel
import Foundation
import Testing

/// A small export with one bad row of each kind, and its mapping.
private func writeExport(in dir: String, rows: String? = nil, bundle: String = "batch") {
    write(rows ?? """
        id,name,dob,sex
        1,Ann,1980-01-02,F
        2,Bob,1980-13-02,M
        3,Cy,1981-03-04,X
        4,"Dee, Jr.",1982-05-06,F
        5,Eve,1983-07-08
        1,Ann again,1980-01-02,F
        6,Fay,1984-09-10,F

        """, to: dir + "/people.csv")
    write("""
        version: 1
        sources:
          people: { file: people.csv }
        maps:
          sex: { F: female, M: male }
        steps:
          - name: people
            source: people
            bundle: \(bundle)
            resource:
              resourceType: Patient
              identifier: [{ system: "http://example.org/person", value: "{{ id }}" }]
              name: [{ text: "{{ name }}" }]
              birthDate: "{{ date(dob, 'yyyy-MM-dd') }}"
              gender: "{{ map(sex, 'sex') }}"
        """, to: dir + "/mapping.yaml")
}

private func rejects(_ out: String) throws -> [JSONValue] {
    try read(out + "/rejects.ndjson").split(separator: "\n").map { try JSONParser.parse(String($0)) }
}

struct ConvertBehaviourTests {
    @Test func everyRowBecomesAResourceOrARejectWithFileLineAndReason() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir)
        let summary = try convert(dir + "/mapping.yaml", out: dir + "/out")
        let r = try rejects(dir + "/out")
        #expect(r.map { $0["line"] } == [.number("3"), .number("4"), .number("6"), .number("7")])
        #expect(r.allSatisfy { $0["file"] == .string("people.csv") })
        #expect(r[0]["reason"]?.stringValue?.contains("not a date") == true)
        #expect(r[0]["key"] == .string("2"))
        #expect(r[1]["reason"]?.stringValue?.contains("map 'sex'") == true)
        #expect(r[2]["reason"]?.stringValue?.contains("expected 4 fields") == true)
        #expect(r[3]["reason"]?.stringValue?.contains("duplicate identifier: line 2") == true)
        let step = summary.manifest.steps[0]
        #expect(step.rows == 7)
        #expect(step.rows == step.resources.values.reduce(0, +) + step.rejects)
        #expect(summary.manifest.rejects == 4)
        // Reject reasons name columns, never values: the value sits in its own field of the rejects file.
        #expect(r[1]["reason"]?.stringValue?.contains("X") == false)
        #expect(r[1]["value"] == .string("X"))
    }

    /// A source that is both a step's and a lookup's: a repeated lookup key is said, not filed as a reject of a row
    /// that the step converts all the same (rows read = rows converted + rejects, always).
    @Test func aRepeatedKeyOfALookupOnTheStepsOwnSourceIsNoReject() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        write("""
            id,name,family
            1,Ann,Doe
            2,Bob,Doe
            3,Cy,Roe

            """, to: dir + "/people.csv")
        write("""
            version: 1
            sources:
              people: { file: people.csv }
            lookups:
              firstOfFamily: { source: people, key: family }
            steps:
              - name: people
                source: people
                bundle: batch
                resource:
                  resourceType: Patient
                  identifier: [{ system: "http://example.org/person", value: "{{ id }}" }]
                  name: [{ text: "{{ name }}", family: "{{ family }}", given: ["{{ firstOfFamily[family].name }}"] }]
            """, to: dir + "/mapping.yaml")
        let summary = try convert(dir + "/mapping.yaml", out: dir + "/out")
        let step = summary.manifest.steps[0]
        #expect(step.rows == 3 && step.rejects == 0 && step.resources == ["Patient": 3])
        #expect(summary.manifest.rejects == 0)
        #expect(try rejects(dir + "/out").isEmpty)
        #expect(summary.lookupDuplicates == [LookupDuplicates(lookup: "firstOfFamily", keyColumns: ["family"], file: "people.csv", count: 1, firstLines: [3])])
    }

    @Test func aRepeatedKeyOfSeveralColumnsIsNamedInThePlural() {
        #expect(LookupDuplicates(lookup: "l", keyColumns: ["family"], file: "f", count: 1, firstLines: [2]).keyText == "column 'family'")
        #expect(LookupDuplicates(lookup: "l", keyColumns: ["PATIENT", "CODE"], file: "f", count: 1, firstLines: [2]).keyText == "columns 'PATIENT', 'CODE'")
    }

    /// FHIR strings allow no control character but tab, line feed and carriage return: such a row is a reject.
    @Test(arguments: [("NUL", "\u{0}"), ("ESC", "\u{1B}"), ("BEL", "\u{7}"), ("form feed", "\u{C}")])
    func aFieldWithAControlCharacterIsARejectNamingIt(name: String, control: String) throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir, rows: "id,name,dob,sex\n1,Ann,1980-01-02,F\n2,Bo\(control)b,1980-01-02,M\n3,Cy\tTab,1981-03-04,F\n")
        let summary = try convert(dir + "/mapping.yaml", out: dir + "/out")
        #expect(summary.manifest.resourceCounts == ["Patient": 2])
        let r = try rejects(dir + "/out")
        #expect(r.count == 1)
        #expect(r.first?["line"] == .number("3"))
        let hex = String(format: "%04X", control.unicodeScalars.first!.value)
        #expect(r.first?["reason"]?.stringValue?.contains("the control character U+\(hex), which FHIR strings forbid") == true, "\(r)")
    }

    /// A value copied as it is must already be what its FHIR type and required value set allow: a bad cell
    /// rejects its row (with the value beside the reason), instead of failing the whole run at validation.
    @Test func aCellThatItsElementsFHIRTypeOrRequiredCodesRefuseRejectsItsRowNotTheRun() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        write("id,dob,sex,seen,phone_kind\n1,1980-01-02,female,2020-01-02T10:00:00Z,phone\n2,01/02/1980,male,,phone\n3,1981-03-04,M,,phone\n4,1982-05-06,male,2020-01-02T10:00:00+14:30,phone\n5,1983-07-08,other,,fax2\n6,0000,unknown,,email\n", to: dir + "/people.csv")
        write("""
            version: 1
            sources:
              people: { file: people.csv }
            steps:
              - name: people
                source: people
                bundle: batch
                resource:
                  resourceType: Patient
                  identifier: [{ system: "http://example.org/person", value: "{{ id }}" }]
                  birthDate: "{{ dob }}"
                  gender: "{{ sex }}"
                  telecom: [{ system: "{{ phone_kind }}", value: "555" }]
                  meta: { lastUpdated: "{{ seen }}" }
            """, to: dir + "/mapping.yaml")
        let summary = try convert(dir + "/mapping.yaml", out: dir + "/out")
        #expect(summary.validation?.errors == 0)
        #expect(summary.manifest.resourceCounts == ["Patient": 1])
        let r = try rejects(dir + "/out")
        let byLine = Dictionary(uniqueKeysWithValues: r.map { (JSONWriter().string($0["line"]!), ($0["reason"]?.stringValue ?? "", $0["value"]?.stringValue)) })
        #expect(byLine["3"]?.0.hasPrefix("Patient.birthDate is a FHIR date, but the value is not one (YYYY, YYYY-MM or YYYY-MM-DD") == true, "\(r)")
        #expect(byLine["3"]?.1 == "01/02/1980")
        #expect(byLine["4"]?.0.hasPrefix("Patient.gender is bound to the required value set http://hl7.org/fhir/ValueSet/administrative-gender") == true)
        #expect(byLine["5"]?.0.hasPrefix("Patient.meta.lastUpdated is a FHIR instant") == true)
        #expect(byLine["6"]?.0.hasPrefix("Patient.telecom[0].system is bound to the required value set") == true, "\(byLine)")
        #expect(byLine["7"]?.0.hasPrefix("Patient.birthDate is a FHIR date") == true)
        #expect(r.count == 5)
    }

    @Test func twoRunsOnTheSameInputsGiveByteIdenticalArtifacts() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        try convert(fixture("medplum-example/mapping.yaml"), out: dir + "/one")
        try convert(fixture("medplum-example/mapping.yaml"), out: dir + "/two")
        let one = folderContents(dir + "/one")
        #expect(!one.isEmpty)
        #expect(one == folderContents(dir + "/two"))
    }

    @Test func failedRunLeavesThePreviousOutputUntouched() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir)
        try convert(dir + "/mapping.yaml", out: dir + "/out")
        let before = folderContents(dir + "/out")
        // Break the source so the run fails half way: a file that becomes unreadable is simplest, a deleted one.
        try FileManager.default.removeItem(atPath: dir + "/people.csv")
        #expect(throws: ConvertError.self) { try convert(dir + "/mapping.yaml", out: dir + "/out") }
        #expect(folderContents(dir + "/out") == before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains("staging") }
        #expect(leftovers.isEmpty)
    }

    @Test func cancelledRunLeavesThePreviousOutputUntouched() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir)
        try convert(dir + "/mapping.yaml", out: dir + "/out")
        let before = folderContents(dir + "/out")
        var rows = "id,name,dob,sex\n"
        for i in 0..<10_000 { rows += "\(i),N\(i),1980-01-02,F\n" }
        write(rows, to: dir + "/people.csv")
        let converter = Converter(options: ConvertOptions(mappingPath: dir + "/mapping.yaml", outputPath: dir + "/out"), isCancelled: { true })
        #expect(throws: ConvertError.self) { try converter.run() }
        #expect(folderContents(dir + "/out") == before)
    }

    @Test func mappingErrorsStopTheRunBeforeAnythingIsWritten() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir)
        write(read(dir + "/mapping.yaml").replacingOccurrences(of: "{{ name }}", with: "{{ nmae }}"), to: dir + "/mapping.yaml")
        do {
            try convert(dir + "/mapping.yaml", out: dir + "/out")
            Issue.record("expected a mapping error")
        } catch let ConvertError.mapping(e) {
            #expect(e.line == 13)
            #expect(e.message.contains("did you mean 'name'"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
    }

    @Test func anOutputFolderThatIsNotOursIsRefused() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir)
        write("precious", to: dir + "/out/notes.txt")
        #expect(throws: ConvertError.self) { try convert(dir + "/mapping.yaml", out: dir + "/out") }
        #expect(read(dir + "/out/notes.txt") == "precious")
    }

    @Test func batchesSplitAtTheEntryLimit() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        var rows = "id,name,dob,sex\n"
        for i in 0..<25 { rows += "\(i),N\(i),1980-01-02,F\n" }
        writeExport(in: dir, rows: rows)
        let s = try convert(dir + "/mapping.yaml", out: dir + "/out", limits: [.batchEntries: 10])
        #expect(s.manifest.steps[0].bundles == ["bundles/01-people/0001.json", "bundles/01-people/0002.json", "bundles/01-people/0003.json"])
        let last = try JSONParser.parse(Array(read(dir + "/out/bundles/01-people/0003.json").utf8))
        #expect(last["entry"]?.arrayValue?.count == 5)
    }

    @Test func bundlesSplitBeforeTheByteLimit() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        var rows = "id,name,dob,sex\n"
        for i in 0..<40 { rows += "\(i),\(String(repeating: "n", count: 200)),1980-01-02,F\n" }
        writeExport(in: dir, rows: rows)
        let s = try convert(dir + "/mapping.yaml", out: dir + "/out", limits: [.bundleBytes: 4000])
        #expect(s.manifest.steps[0].bundles.count > 1)
        for path in s.manifest.steps[0].bundles {
            let data = try #require(FileManager.default.contents(atPath: dir + "/out/" + path))
            #expect(data.count <= 4000)
        }
        #expect(s.manifest.resourceCounts["Patient"] == 40)
    }

    @Test func transactionsHoldAtMostEightConditionalEntriesByDefault() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        var rows = "id,name,dob,sex\n"
        for i in 0..<20 { rows += "\(i),N\(i),1980-01-02,F\n" }
        writeExport(in: dir, rows: rows, bundle: "transaction")
        let s = try convert(dir + "/mapping.yaml", out: dir + "/out")
        let sizes = try s.manifest.steps[0].bundles.map { path in
            try JSONParser.parse(Array(read(dir + "/out/" + path).utf8))["entry"]?.arrayValue?.count ?? 0
        }
        #expect(sizes == [8, 8, 4])
    }

    @Test func aGroupTooLargeForOneTransactionIsARejectNamingTheLimit() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        try convert(fixture("medplum-example/mapping.yaml"), out: dir + "/out", limits: [.conditionalTransactionEntries: 1])
        let r = try rejects(dir + "/out")
        #expect(r.count == 2)
        #expect(r[0]["reason"]?.stringValue?.contains("more than one transaction may hold (1") == true)
        #expect(r[0]["key"] == .string("E001"))
    }

    @Test func prettyBundlesHoldTheSameJSONAsOneLineBundles() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        try convert(fixture("medplum-example/mapping.yaml"), out: dir + "/lines")
        _ = try Converter(options: ConvertOptions(mappingPath: fixture("medplum-example/mapping.yaml"), outputPath: dir + "/pretty",
                                              toolVersion: "test", bundleLayout: .pretty)).run()
        for path in ["bundles/01-patients/0001.json", "bundles/03-encounters/0001.json"] {
            let lines = read(dir + "/lines/" + path)
            let pretty = read(dir + "/pretty/" + path)
            #expect(pretty.contains("\n      \"resource\": {"))
            #expect(try JSONParser.parse(lines) == JSONParser.parse(pretty))
        }
        #expect(read(dir + "/lines/ndjson/Patient.ndjson") == read(dir + "/pretty/ndjson/Patient.ndjson"))
    }

    @Test func artifactsWithValidationErrorsDoNotReplaceTheOutputAndAreKeptForReview() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExport(in: dir)
        try convert(dir + "/mapping.yaml", out: dir + "/out")
        let before = folderContents(dir + "/out")
        // A reference to a patient that no row writes: conditional-reference-unresolved.
        write(read(dir + "/mapping.yaml") + "\n      link: [{ other: { reference: \"{{ ref('people', 'nobody') }}\" }, type: seealso }]\n",
              to: dir + "/mapping.yaml")
        do {
            try convert(dir + "/mapping.yaml", out: dir + "/out")
            Issue.record("expected validation errors")
        } catch let ConvertError.invalid(summary, keptAt) {
            #expect(summary.validation?.findings.contains { $0.rule == "conditional-reference-unresolved" } == true)
            #expect(keptAt == dir + "/out.invalid")
        }
        #expect(folderContents(dir + "/out") == before)
        #expect(FileManager.default.fileExists(atPath: dir + "/out.invalid/manifest.json"))
    }
}
