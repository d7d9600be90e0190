import Foundation
import FHIRMapping
import FHIRSources
import Testing

/// A minimal valid mapping; tests replace parts of it to provoke one error each.
private let patientStep = """
    version: 1
    constants:
      base: http://example.org
    sources:
      patients: { file: patients.csv }
    steps:
      - name: patients
        source: patients
        bundle: batch
        resource:
          resourceType: Patient
          identifier:
            - system: "{{ base }}/patientId"
              value: "{{ patient_id }}"
          birthDate: "{{ date(birth_date, 'yyyy-MM-dd') }}"
    """

private let columns = ["patients": ["patient_id", "first_name", "birth_date", "gender"]]

struct MappingCompilerTests {
    @Test func validMappingCompiles() throws {
        let m = try compileMapping(patientStep, fields: columns)
        #expect(m.steps.map(\.name) == ["patients"])
        #expect(m.steps[0].resources[0].identifierSystem == "http://example.org/patientId")
    }

    @Test(arguments: [
        ("{ file: patients.csv, encoding: ebcdic }", "unknown encoding 'ebcdic'; use one of utf-8, windows-1252"),
        ("{ file: patients.xml, record: /r/p, encoding: utf-16 }", "XML files say their encoding themselves"),
        ("{ file: patients.txt, format: fixed-width }", "needs 'columns'"),
        ("{ file: patients.txt, format: fixed-width, columns: { patient_id: { start: 1 } } }", "needs either 'width' or 'end'"),
        ("{ file: patients.txt, format: fixed-width, columns: { patient_id: { start: 5, end: 2 } } }", "ends before it starts"),
        ("{ file: patients.txt, format: fixed-width, columns: { patient_id: { start: 0, width: 2 } } }", "must be a whole number from 1"),
        ("{ file: patients.csv, header: 1 }", "'header' applies to sources with format: fixed-width"),
    ])
    func sourceDeclarationsExplainTheirMistakes(source: String, message: String) throws {
        let yaml = patientStep.replacingOccurrences(of: "{ file: patients.csv }", with: source)
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.message.contains(message), "\(e)")
    }

    @Test func aFixedWidthSourceDeclaresItsColumnsInOrder() throws {
        let yaml = patientStep.replacingOccurrences(of: "{ file: patients.csv }", with: """
            { file: patients.txt, format: fixed-width, encoding: cp1252, header: 2, columns: { patient_id: { start: 1, width: 4 }, birth_date: { start: 5, end: 14 } } }
            """)
        let document = try MappingDocument.parse(yaml, path: "mapping.yaml")
        let source = try #require(document.sources.first)
        #expect(source.columns.map(\.name) == ["patient_id", "birth_date"])
        #expect(source.columns.map(\.width) == [4, 10])
        #expect(source.headerLines == 2 && source.encoding == .windows1252)
    }

    @Test func unknownColumnIsAnErrorAtItsLineAndColumnWithASuggestion() throws {
        let yaml = patientStep.replacingOccurrences(of: "{{ patient_id }}", with: "{{ patient_idd }}")
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.line == 14)
        #expect(e.column == 22)
        #expect(e.message.contains("unknown name 'patient_idd'"))
        #expect(e.message.contains("did you mean 'patient_id'"))
        #expect(e.description.hasPrefix("mapping.yaml:14:22: error: "))
    }

    @Test func unknownSourceIsAnError() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "source: patients", with: "source: patient"), fields: columns))
        #expect(e.line == 8)
        #expect(e.message.contains("unknown source 'patient'"))
    }

    @Test func unknownFunctionIsAnError() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "date(birth_date", with: "dat(birth_date"), fields: columns))
        #expect(e.line == 15)
        #expect(e.message.contains("unknown function 'dat'"))
    }

    @Test func unknownKeyInAStepIsAnError() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "bundle: batch", with: "bundel: batch"), fields: columns))
        #expect(e.line == 9)
        #expect(e.message.contains("unknown key 'bundel'"))
    }

    @Test func unknownFHIRElementIsAnErrorWithASuggestion() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "birthDate:", with: "birthdate:"), fields: columns))
        #expect(e.line == 15)
        #expect(e.message.contains("'birthdate' is not an element of Patient"))
        #expect(e.message.contains("did you mean 'birthDate'"))
    }

    @Test func unknownResourceTypeIsAnError() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "resourceType: Patient", with: "resourceType: Patinet"), fields: columns))
        #expect(e.message.contains("not a FHIR R4 resource type"))
    }

    @Test func badDateFormatIsAnError() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "'yyyy-MM-dd'", with: "'yyyy-MMM-dd'"), fields: columns))
        #expect(e.message.contains("bad date format"))
    }

    @Test func resourceWithoutIdentifierIsAnError() throws {
        let yaml = patientStep.replacingOccurrences(of: """
                  identifier:
                    - system: "{{ base }}/patientId"
                      value: "{{ patient_id }}"

            """, with: "")
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.message.contains("has no identifier"))
    }

    @Test func identifierSystemComputedPerRowIsAnError() throws {
        let e = try #require(mappingError(patientStep.replacingOccurrences(of: "\"{{ base }}/patientId\"", with: "\"{{ gender }}\""), fields: columns))
        #expect(e.message.contains("identifier[0].system must be fixed"))
    }

    @Test func urnUUIDInABatchIsAnError() throws {
        let yaml = patientStep + "\n      generalPractitioner: [{ reference: \"{{ uuid('patients') }}\" }]"
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.message.contains("only resolves inside a transaction"))
    }

    @Test func unknownMapIsAnError() throws {
        let yaml = patientStep + "\n      gender: \"{{ map(gender, 'sex') }}\""
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.message.contains("unknown map 'sex'"))
    }

    @Test func listGivenForASingleElementIsAnError() throws {
        let yaml = patientStep + "\n      gender: [male]"
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.message.contains("takes one value, not a list"))
    }

    @Test func constantThatIsNotAValidPrimitiveIsAnError() throws {
        let yaml = patientStep + "\n      active: maybe"
        let e = try #require(mappingError(yaml, fields: columns))
        #expect(e.message.contains("boolean"))
    }

    @Test func invalidYAMLReportsItsPosition() throws {
        let e = try #require(mappingError("steps:\n  - name: [unclosed\n", fields: [:]))
        #expect(e.message.contains("invalid YAML"))
        #expect(e.line >= 2)
    }

    @Test func stepsAreOrderedAfterTheStepsTheyReferTo() throws {
        let yaml = """
            sources:
              a: { file: a.csv }
            steps:
              - name: conditions
                source: a
                bundle: batch
                resource:
                  resourceType: Condition
                  identifier: [{ system: "http://x/c", value: "{{ id }}" }]
                  subject: { reference: "{{ ref('patients', id) }}" }
              - name: patients
                source: a
                bundle: batch
                resource:
                  resourceType: Patient
                  identifier: [{ system: "http://x/p", value: "{{ id }}" }]
            """
        let m = try compileMapping(yaml, fields: ["a": ["id"]])
        #expect(m.steps.map(\.name) == ["patients", "conditions"])
        #expect(m.steps[1].dependsOn == [0])
    }

    @Test func stepsThatReferToEachOtherAreAnError() throws {
        let yaml = """
            sources:
              a: { file: a.csv }
            steps:
              - name: one
                source: a
                bundle: batch
                resource:
                  resourceType: Patient
                  identifier: [{ system: "http://x/p", value: "{{ id }}" }]
                  link: [{ other: { reference: "{{ ref('two', id) }}" }, type: seealso }]
              - name: two
                source: a
                bundle: batch
                resource:
                  resourceType: RelatedPerson
                  identifier: [{ system: "http://x/r", value: "{{ id }}" }]
                  patient: { reference: "{{ ref('one', id) }}" }
            """
        let e = try #require(mappingError(yaml, fields: ["a": ["id"]]))
        #expect(e.message.contains("cycle"))
    }

    @Test(arguments: [
        // (record line as written, column of the mistake, what the message says)
        ("    record: \"/dump/table_data[@name=patients]/row\"", 37, "must be quoted"),
        ("    record: /dump//row", 19, "'//'"),
        ("    record: /d:dump/row", 13, "prefix 'd'"),
    ])
    func recordPathMistakesAreFoundWhenTheMappingIsReadAtTheirColumn(record: String, column: Int, message: String) throws {
        let yaml = """
            version: 1
            sources:
              patients:
                file: dump.xml
                format: mysql-xml
            \(record)
            steps:
              - name: patients
                source: patients
                resource: { resourceType: Patient }
            """
        do {
            _ = try MappingDocument.parse(yaml, path: "mapping.yaml")
            Issue.record("expected an error")
        } catch {
            #expect(error.line == 6)
            #expect(error.column == column, "\(error)")
            #expect(error.message.contains(message), "\(error)")
        }
    }
}
