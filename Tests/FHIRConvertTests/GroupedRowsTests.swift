import FHIRArtifacts
import FHIRConvert
import FHIRModel
import FHIRValidation
import Foundation
import Testing

/// Observations as Synthea writes them (blood pressure as two adjacent rows, other vitals between encounters), and
/// a mapping that makes one blood-pressure Observation with two components of each reading.
private func writeBloodPressureExport(in dir: String, rows: String? = nil) {
    write(rows ?? """
        DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS
        2021-08-23T03:26:50Z,p1,e1,8302-6,Body Height,49.2,cm
        2021-08-23T03:26:50Z,p1,e1,8462-4,Diastolic Blood Pressure,87.0,mm[Hg]
        2021-08-23T03:26:50Z,p1,e1,8480-6,Systolic Blood Pressure,131.0,mm[Hg]
        2021-08-23T03:26:50Z,p1,e1,72514-3,Pain severity,1.0,{score}
        2021-09-27T03:26:50Z,p1,e2,8462-4,Diastolic Blood Pressure,84.0,mm[Hg]
        2021-09-27T03:26:50Z,p1,e2,8480-6,Systolic Blood Pressure,123.0,mm[Hg]

        """, to: dir + "/observations.csv")
    write("""
        version: 1
        sources:
          observations: { file: observations.csv }
        steps:
          - name: blood-pressure
            source: observations
            bundle: batch
            group:
              by: [PATIENT, ENCOUNTER, DATE]
              as: readings
              where: "{{ or(eq(CODE, '8480-6'), eq(CODE, '8462-4')) }}"
            resource:
              resourceType: Observation
              identifier: [{ system: http://example.org/bp, value: "{{ hashId(PATIENT, ENCOUNTER, DATE) }}" }]
              status: final
              code: { coding: [{ system: http://loinc.org, code: 85354-9, display: Blood pressure panel }] }
              subject: { reference: "Patient?identifier=http://example.org/patient|{{ PATIENT }}" }
              effectiveDateTime: "{{ DATE }}"
              component:
                - $each: "{{ readings }}"
                  $as: reading
                  code: { coding: [{ system: http://loinc.org, code: "{{ reading.CODE }}", display: "{{ reading.DESCRIPTION }}" }] }
                  valueQuantity: { value: "{{ reading.VALUE }}", unit: "{{ reading.UNITS }}", system: http://unitsofmeasure.org, code: "{{ reading.UNITS }}" }
        """, to: dir + "/mapping.yaml")
}

private func convertKnowingPatients(_ dir: String) throws -> ConvertSummary {
    write("Patient|http://example.org/patient|p1\n", to: dir + "/known.txt")
    var options = ConvertOptions(mappingPath: dir + "/mapping.yaml", outputPath: dir + "/out", toolVersion: "test")
    options.knownIdentifiers = ["Patient|http://example.org/patient|p1"]
    return try Converter(options: options).run()
}

/// Two readings whose rows interleave, as a few do in Synthea's observations.csv.
private let interleaved = """
    DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS
    2021-08-23,p1,e1,8462-4,Diastolic Blood Pressure,87.0,mm[Hg]
    2021-09-27,p1,e2,8462-4,Diastolic Blood Pressure,84.0,mm[Hg]
    2021-09-27,p1,e2,8480-6,Systolic Blood Pressure,120.0,mm[Hg]
    2021-08-23,p1,e1,8480-6,Systolic Blood Pressure,131.0,mm[Hg]

    """

struct GroupedRowsTests {
    @Test func adjacentRowsWithTheSameGroupValuesBecomeOneResourceWithAPartPerRow() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeBloodPressureExport(in: dir)
        let summary = try convertKnowingPatients(dir)
        let lines = read(dir + "/out/ndjson/Observation.ndjson").split(separator: "\n")
        #expect(lines.count == 2)
        let first = try JSONParser.parse(String(lines[0]))
        let components = first["component"]?.arrayValue ?? []
        #expect(components.map { $0["code"]?["coding"]?.arrayValue?.first?["code"]?.stringValue } == ["8462-4", "8480-6"])
        #expect(components.map { $0["valueQuantity"]?["value"] } == [.number("87.0"), .number("131.0")])
        let step = summary.manifest.steps[0]
        // 6 rows: 4 in two groups, 2 other vitals filtered; the validator accepts the figures.
        #expect(step.rows == 6 && step.groups == 2 && step.rejects == 2 && step.resources == ["Observation": 2])
        #expect(summary.validation?.errors == 0)
        let rejects = read(dir + "/out/rejects.ndjson")
        #expect(rejects.components(separatedBy: "filtered: group.where is false for this row").count == 3)
    }

    @Test func rowsOfTwoGroupsThatInterleaveStillFormTheirGroups() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeBloodPressureExport(in: dir, rows: interleaved)
        let summary = try convertKnowingPatients(dir)
        #expect(summary.manifest.steps[0].groups == 2 && summary.manifest.steps[0].rejects == 0)
        let lines = read(dir + "/out/ndjson/Observation.ndjson").split(separator: "\n")
        // Written in the order of their last row: e2 (line 3) first, then e1 (line 4).
        let effective = try lines.map { try JSONParser.parse(String($0))["effectiveDateTime"]?.stringValue }
        #expect(effective == ["2021-09-27", "2021-08-23"])
        #expect(try lines.map { try JSONParser.parse(String($0))["component"]?.arrayValue?.count } == [2, 2])
    }

    @Test func aRowThatComesAfterItsGroupWasWrittenIsARejectSayingWhy() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeBloodPressureExport(in: dir, rows: interleaved)
        write(read(dir + "/mapping.yaml").replacingOccurrences(of: "as: readings", with: "as: readings\n      within: 1"), to: dir + "/mapping.yaml")
        let summary = try convertKnowingPatients(dir)
        let rejects = read(dir + "/out/rejects.ndjson")
        // e1's first row is alone when e2 starts, so e1 is written with it; its second row (line 5) comes too late.
        #expect(rejects.split(separator: "\n").count == 1 && rejects.contains(#""line":5"#))
        #expect(rejects.contains("rows with these values of PATIENT, ENCOUNTER, DATE already formed a group at line 2, written when 1 rows had passed without another; sort the file by PATIENT, ENCOUNTER, DATE, or raise group.within"))
        #expect(summary.manifest.steps[0].groups == 2 && summary.manifest.steps[0].rejects == 1)
    }

    @Test func aGroupThatCannotBeConvertedRejectsEachOfItsRows() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeBloodPressureExport(in: dir, rows: """
            DATE,PATIENT,ENCOUNTER,CODE,DESCRIPTION,VALUE,UNITS
            2021-08-23,p1,e1,8462-4,Diastolic Blood Pressure,eighty,mm[Hg]
            2021-08-23,p1,e1,8480-6,Systolic Blood Pressure,131.0,mm[Hg]
            2021-09-27,p1,e2,8462-4,Diastolic Blood Pressure,84.0,mm[Hg]

            """)
        let summary = try convertKnowingPatients(dir)
        let step = summary.manifest.steps[0]
        #expect(step.rows == 3 && step.rejects == 2 && step.groups == 1)
        #expect(summary.rejects.groups.count == 1 && summary.rejects.groups[0].examples.map(\.line) == [2, 3])
    }

    @Test func anEditedGroupCountIsAValidationError() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeBloodPressureExport(in: dir)
        _ = try convertKnowingPatients(dir)
        let manifest = read(dir + "/out/manifest.json").replacingOccurrences(of: "\"groups\": 2", with: "\"groups\": 5")
        write(manifest, to: dir + "/out/manifest.json")
        let report = try FHIRValidation.ArtifactValidator(folder: dir + "/out", options: .init()).run()
        #expect(report.findings.contains { $0.rule == "manifest-counts" && $0.pointer == "/steps/0/groups" }, "\(report.findings)")
    }

    @Test func syntheaBloodPressureRowsBecomeOneObservationWithTwoComponentsEach() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeBloodPressureExport(in: dir)
        let observations = fixture("synthea/csv/observations.csv")
        var mapping = read(dir + "/mapping.yaml").replacingOccurrences(of: "file: observations.csv", with: "file: \(observations)")
        mapping = mapping.replacingOccurrences(of: "Patient?identifier=http://example.org/patient|{{ PATIENT }}", with: "Patient/{{ PATIENT }}")
        write(mapping, to: dir + "/mapping.yaml")
        // What the grouping must find, counted independently: the distinct (PATIENT, ENCOUNTER, DATE) of BP rows.
        var readings: [String: Int] = [:]
        var patients: Set<String> = []
        for line in read(observations).split(separator: "\n").dropFirst() {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard f.count > 4, f[4] == "8480-6" || f[4] == "8462-4" else { continue }
            readings[f[1] + "|" + f[2] + "|" + f[0], default: 0] += 1
            patients.insert("Patient/" + f[1])
        }
        #expect(!readings.isEmpty && readings.values.allSatisfy { $0 == 2 })
        var options = ConvertOptions(mappingPath: dir + "/mapping.yaml", outputPath: dir + "/out", toolVersion: "test")
        options.knownIdentifiers = patients
        let summary = try Converter(options: options).run()
        #expect(summary.manifest.steps[0].groups == readings.count)
        #expect(summary.manifest.resourceCounts["Observation"] == readings.count)
        let lines = read(dir + "/out/ndjson/Observation.ndjson").split(separator: "\n")
        let codes = try lines.map { try JSONParser.parse(String($0))["component"]?.arrayValue?.compactMap { $0["code"]?["coding"]?.arrayValue?.first?["code"]?.stringValue }.sorted() }
        // A few pairs interleave with another encounter's in this export; they form their groups all the same.
        #expect(codes.allSatisfy { $0 == ["8462-4", "8480-6"] }, "\(codes.filter { $0 != ["8462-4", "8480-6"] }.prefix(3))")
        #expect(summary.manifest.steps[0].rejects == summary.manifest.steps[0].rows - 2 * readings.count)
        #expect(summary.validation?.errors == 0)
    }
}
