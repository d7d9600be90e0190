import FHIRArtifacts
import FHIRConvert
import FHIRMapping
import FHIRValidation
import Foundation
import Testing

/// Patients with one gender code the map lacks, and conditions that refer to every patient: the rejected patient
/// leaves a condition's reference dangling, which fails validation.
private func writeExportWithARejectedPatient(in dir: String) {
    write("""
        patient_id,first_name,middle_name,gender
        P001,Ann,Marie,F
        P002,Bob,,Z
        P003,Cy,,M

        """, to: dir + "/patients.csv")
    write("""
        condition_id,patient_id,code
        C1,P001,38341003
        C2,P002,44054006
        C3,P003,38341003

        """, to: dir + "/conditions.csv")
    write("""
        version: 1
        constants: { base: "http://example.org" }
        sources:
          patients: { file: patients.csv }
          conditions: { file: conditions.csv }
        maps:
          gender: { F: female, M: male }
        steps:
          - name: patients
            source: patients
            bundle: batch
            resource:
              resourceType: Patient
              identifier: [{ system: "{{ base }}/patient", value: "{{ patient_id }}" }]
              name: [{ given: ["{{ first_name }}"] }]
              gender: "{{ map(gender, 'gender') }}"
          - name: conditions
            source: conditions
            bundle: batch
            resource:
              resourceType: Condition
              identifier: [{ system: "{{ base }}/condition", value: "{{ condition_id }}" }]
              code: { coding: [{ system: http://snomed.info/sct, code: "{{ code }}" }] }
              subject: { reference: "{{ ref('patients', patient_id) }}" }
        """, to: dir + "/mapping.yaml")
}

struct ConvertFeedbackTests {
    @Test func aFailedValidationShowsTheRejectsAndTheRejectBehindEachDanglingReference() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExportWithARejectedPatient(in: dir)
        do {
            _ = try convert(dir + "/mapping.yaml", out: dir + "/out")
            Issue.record("expected the dangling reference to fail validation")
        } catch let ConvertError.invalid(summary, keptAt) {
            #expect(summary.rejects.count == 1)
            let group = try #require(summary.rejects.groups.first)
            #expect(group.reason.contains("map 'gender'"))
            #expect(group.examples == [RejectDigest.Place(file: "patients.csv", line: 3)])
            let explanation = summary.rejects.explanation(of: "Patient?identifier=http://example.org/patient|P002")
            #expect(explanation?.place.line == 3)
            let text = summary.invalidText(keptAt: keptAt)
            #expect(text.contains("Rejected rows by reason:"))
            #expect(text.contains("1 × \(group.reason) (patients.csv:3)"))
            #expect(text.contains("no Patient in the artifacts has identifier http://example.org/patient|P002"))
            #expect(text.contains("← its target's row patients.csv:3 was rejected: \(explanation!.reason)"))
            #expect(text.contains("1 of the 1 unresolved references point at resources of rejected rows"))
            #expect(text.contains("bundles/01-patients: 3 rows → 2 Patient"))
        }
    }

    @Test func theSummaryListsTheColumnsNoTemplateReads() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExportWithARejectedPatient(in: dir)
        var mapping = read(dir + "/mapping.yaml")
        mapping = mapping.replacingOccurrences(of: "gender: { F: female, M: male }", with: "gender: { F: female, M: male, Z: unknown }")
        write(mapping, to: dir + "/mapping.yaml")
        let summary = try convert(dir + "/mapping.yaml", out: dir + "/out")
        #expect(summary.unusedColumns == [UnusedColumns(source: "patients", file: "patients.csv", columns: ["middle_name"])])
        #expect(summary.text().contains("patients (patients.csv): middle_name"))
    }

    @Test func columnsReadOnlyThroughALookupOrAsItsKeyCountAsUsed() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExportWithARejectedPatient(in: dir)
        var mapping = read(dir + "/mapping.yaml")
        mapping = mapping.replacingOccurrences(of: "gender: { F: female, M: male }", with: "gender: { F: female, M: male, Z: unknown }")
        mapping = mapping.replacingOccurrences(of: "maps:", with: "lookups:\n  patient: { source: patients, key: patient_id }\nmaps:")
        mapping = mapping.replacingOccurrences(of: "name: [{ given: [\"{{ first_name }}\"] }]", with: "name: [{ given: [\"{{ first_name }}\", \"{{ patient[patient_id].middle_name }}\"] }]")
        write(mapping, to: dir + "/mapping.yaml")
        let summary = try convert(dir + "/mapping.yaml", out: dir + "/out")
        #expect(summary.unusedColumns == [])
    }

    @Test func rejectReasonsThatDifferOnlyInTheirNumbersFormOneGroup() {
        #expect(RejectDigest.withoutNumbers("expected 4 fields, found 3") == "expected N fields, found N")
        #expect(RejectDigest.withoutNumbers("column 'address2' is empty") == "column 'address2' is empty")
        #expect(RejectDigest.withoutNumbers("duplicate identifier: line 12 already produced Patient") == "duplicate identifier: line N already produced Patient")
    }

    @Test func referencesToResourcesAlreadyOnTheServerPassAndTheFolderCarriesTheirList() throws {
        let dir = temporaryFolder()
        defer { cleanup(dir) }
        writeExportWithARejectedPatient(in: dir)
        var options = ConvertOptions(mappingPath: dir + "/mapping.yaml", outputPath: dir + "/out", toolVersion: "test")
        options.knownIdentifiers = ["Patient|http://example.org/patient|P002", "Patient/123"]
        let summary = try Converter(options: options).run()
        #expect(summary.validation?.errors == 0)
        #expect(summary.manifest.artifacts.contains { $0.path == KnownIdentifiers.fileName })
        #expect(read(dir + "/out/known-identifiers.txt") == "Patient/123\nPatient|http://example.org/patient|P002\n")
        // A later validation (the uploader's included) reads the folder's list without being told.
        let report = try ArtifactValidator(folder: dir + "/out", options: ValidationOptions()).run()
        #expect(report.errors == 0, "\(report.findings)")
        // The list is checked like every listed file.
        write("Patient/123\nPatient|http://example.org/patient|P002\nPatient|http://example.org/patient|P009\n", to: dir + "/out/known-identifiers.txt")
        let altered = try ArtifactValidator(folder: dir + "/out", options: ValidationOptions()).run()
        #expect(altered.findings.contains { $0.rule == Rule.manifestChecksum.id && $0.file == KnownIdentifiers.fileName })
    }
}
