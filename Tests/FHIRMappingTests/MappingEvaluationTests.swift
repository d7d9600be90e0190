import Foundation
import FHIRMapping
import Testing

/// Builds a one-step mapping around a Patient template body (indented under `resource:`).
private func patientMapping(_ body: String, extra: String = "", bundle: String = "batch") -> String {
    """
    version: 1
    constants:
      base: http://example.org
    sources:
      patients: { file: patients.csv }
      phones: { file: phones.csv }
    lookups:
      phones:
        source: phones
        key: patient_id
        multiple: true
    \(extra)
    steps:
      - name: patients
        source: patients
        bundle: \(bundle)
        resource:
          resourceType: Patient
          identifier:
            - system: "{{ base }}/patientId"
              value: "{{ id }}"
    \(body.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(separator: "\n"))
    """
}

private let fields = ["patients": ["id", "first", "last", "dob", "sex", "active", "weight", "deceased"], "phones": ["patient_id", "kind", "number"]]

private func run(_ body: String, extra: String = "", row: [String], phones: [[String]] = []) throws -> Result<[String], RowFailure> {
    let m = try compileMapping(patientMapping(body, extra: extra), fields: fields)
    return evaluate(m, step: "patients", row: row, lookups: [("phones", phones)])
}

private let row = ["P1", "Ann Marie", "Lee", "07/15/1980", "F", "yes", "70.50", ""]

struct MappingEvaluationTests {
    @Test func keysComeOutInFHIRElementOrderWhateverTheTemplateOrder() throws {
        let out = try run("""
            gender: female
            birthDate: "{{ date(dob, 'MM/dd/yyyy') }}"
            name: [{ family: "{{ last }}", given: ["{{ first }}"] }]
            """, row: row).success?.first
        #expect(out == #"{"resourceType":"Patient","identifier":[{"system":"http://example.org/patientId","value":"P1"}],"name":[{"family":"Lee","given":["Ann Marie"]}],"gender":"female","birthDate":"1980-07-15"}"#)
    }

    @Test func singleValuesForRepeatingElementsBecomeArrays() throws {
        let out = try run("name: { given: \"{{ first }}\" }", row: row).success?.first
        #expect(out?.contains(#""name":[{"given":["Ann Marie"]}]"#) == true)
    }

    @Test func emptyValuesArePrunedSoNoEmptyStringArrayOrObjectRemains() throws {
        let out = try run("""
            name: [{ family: "{{ deceased }}", given: ["{{ deceased }}"] }]
            telecom: [{ system: phone, value: "{{ deceased }}" }]
            address: [{ text: "" }]
            """, row: row).success?.first
        // The telecom's only row-dependent part is empty, so its fixed `system` does not keep it alive.
        #expect(out == #"{"resourceType":"Patient","identifier":[{"system":"http://example.org/patientId","value":"P1"}]}"#)
    }

    @Test func valueMapTranslatesCodesAndUsesItsDefault() throws {
        let extra = """
            maps:
              sex: { values: { M: male, F: female }, default: unknown }
            """
        #expect(try run("gender: \"{{ map(sex, 'sex') }}\"", extra: extra, row: row).success?.first?.contains(#""gender":"female""#) == true)
        var other = row
        other[4] = "X"
        #expect(try run("gender: \"{{ map(sex, 'sex') }}\"", extra: extra, row: other).success?.first?.contains(#""gender":"unknown""#) == true)
    }

    @Test func valueMissingFromAMapWithoutDefaultRejectsTheRowNamingColumnAndMap() throws {
        var other = row
        other[4] = "X"
        let failure = try run("gender: \"{{ map(sex, 'sex') }}\"", extra: "maps:\n  sex: { M: male, F: female }", row: other).failure
        #expect(failure?.message.contains("column 'sex'") == true)
        #expect(failure?.message.contains("map 'sex'") == true)
        #expect(failure?.value == "X")
    }

    @Test func datesAreNormalisedFromTheDeclaredFormat() throws {
        let out = try run("birthDate: \"{{ date(dob, 'MM/dd/yyyy') }}\"", row: row).success?.first
        #expect(out?.contains(#""birthDate":"1980-07-15""#) == true)
    }

    @Test(arguments: ["1980-02-30", "13/01/1980", "7/15/80", "garbage"])
    func invalidDatesRejectTheRow(dob: String) throws {
        var other = row
        other[3] = dob
        let failure = try run("birthDate: \"{{ date(dob, 'MM/dd/yyyy') }}\"", row: other).failure
        #expect(failure?.message.contains("is not a date in the declared format 'MM/dd/yyyy'") == true)
    }

    @Test func dateTimeGetsTheDeclaredOffsetAndMidnightForDateOnlySources() throws {
        let out = try run("deceasedDateTime: \"{{ dateTime(dob, 'MM/dd/yyyy', 'Z') }}\"", row: row).success?.first
        #expect(out?.contains(#""deceasedDateTime":"1980-07-15T00:00:00Z""#) == true)
        var other = row
        other[3] = "1980-07-15 09:30:05.25+0130"
        let withTime = try run("deceasedDateTime: \"{{ dateTime(dob, 'yyyy-MM-dd HH:mm:ss.SSSX') }}\"", row: other).success?.first
        #expect(withTime?.contains(#""deceasedDateTime":"1980-07-15T09:30:05.25+01:30""#) == true)
    }

    @Test(arguments: [("yyyy", "1980", "1980"), ("MM/yyyy", "07/1980", "1980-07"), ("yyyy-MM-dd", "0999-01-02", "0999-01-02")])
    func datesKeepTheSourcesPrecision(format: String, value: String, expected: String) throws {
        var other = row
        other[3] = value
        let out = try run("birthDate: \"{{ date(dob, '\(format)') }}\"", row: other).success?.first
        #expect(out?.contains("\"birthDate\":\"\(expected)\"") == true, "\(out ?? "")")
    }

    @Test func dateTimeWithATimeButNoOffsetIsAMappingError() {
        let e = mappingError(patientMapping("deceasedDateTime: \"{{ dateTime(dob, 'yyyy-MM-dd HH:mm') }}\""), fields: fields)
        #expect(e?.message.contains("no UTC offset") == true)
    }

    @Test func booleansAndDecimalsAreWrittenAsJSONPrimitivesFromTheirFHIRType() throws {
        let extra = "maps:\n  yesNo: { yes: \"true\", no: \"false\" }"
        let out = try run("active: \"{{ map(active, 'yesNo') }}\"\nmultipleBirthInteger: \"{{ '2' }}\"", extra: extra, row: row).success?.first
        #expect(out?.contains(#""active":true"#) == true)
        #expect(out?.contains(#""multipleBirthInteger":2"#) == true)
    }

    @Test func notANumberForADecimalRejectsTheRow() throws {
        let yaml = """
            version: 1
            sources:
              obs: { file: obs.csv }
            steps:
              - name: obs
                source: obs
                bundle: batch
                resource:
                  resourceType: Observation
                  identifier: [{ system: "http://x/o", value: "{{ id }}" }]
                  status: final
                  code: { text: weight }
                  valueQuantity: { value: "{{ v }}", unit: kg }
            """
        let m = try compileMapping(yaml, fields: ["obs": ["id", "v"]])
        #expect(evaluate(m, step: "obs", row: ["1", "070.50"]).success?.first?.contains(#""value":70.50"#) == true)
        #expect(evaluate(m, step: "obs", row: ["1", "seventy"]).failure?.message.contains("is a decimal") == true)
    }

    @Test func conditionalElementIsLeftOutWhenItsConditionIsFalse() throws {
        let body = """
            deceasedBoolean: true
            extension:
              - $if: "{{ eq(sex, 'F') }}"
                url: http://example.org/flag
                valueString: female-flag
            """
        #expect(try run(body, row: row).success?.first?.contains("female-flag") == true)
        var other = row
        other[4] = "M"
        #expect(try run(body, row: other).success?.first?.contains("female-flag") == false)
    }

    @Test func eachGroupsLookupRowsIntoAnArray() throws {
        let body = """
            telecom:
              - $each: "{{ phones[id] }}"
                $as: phone
                system: phone
                use: "{{ phone.kind }}"
                value: "{{ phone.number }}"
            """
        let out = try run(body, row: row, phones: [["P1", "home", "555-1"], ["P2", "home", "555-2"], ["P1", "work", "555-3"]]).success?.first
        #expect(out?.contains(#""telecom":[{"system":"phone","value":"555-1","use":"home"},{"system":"phone","value":"555-3","use":"work"}]"#) == true)
    }

    @Test func splitFillsAnArrayFromOneColumn() throws {
        let out = try run("name: [{ given: \"{{ split(first, ' ') }}\" }]", row: row).success?.first
        #expect(out?.contains(#""given":["Ann","Marie"]"#) == true)
    }

    @Test func stringTemplatesCombineTextAndColumnsAndDropWhenAllColumnsAreEmpty() throws {
        let out = try run("name: [{ text: \"{{ first }} {{ last }}\" }]\naddress: [{ text: \"Box {{ deceased }}\" }]", row: row).success?.first
        #expect(out?.contains(#""text":"Ann Marie Lee""#) == true)
        #expect(out?.contains("Box") == false)
    }

    @Test func pipesReadLeftToRight() throws {
        let out = try run("name: [{ family: \"{{ last | upper }}\", given: [\"{{ first | replace(' ', '-') | lower }}\"] }]", row: row).success?.first
        #expect(out?.contains(#""family":"LEE","given":["ann-marie"]"#) == true)
    }

    @Test func emptyIdentifierValueRejectsTheRow() throws {
        var other = row
        other[0] = ""
        #expect(try run("gender: female", row: other).failure?.message.contains("identifier value") == true)
    }
}

struct GroupEvaluationTests {
    private let yaml = """
        version: 1
        constants:
          base: http://example.org
        sources:
          patients: { file: p.csv }
          encounters: { file: e.csv }
          notes: { file: n.csv }
        lookups:
          note: { source: notes, key: encounter_id, missing: empty }
        steps:
          - name: patients
            source: patients
            bundle: batch
            resource:
              resourceType: Patient
              identifier: [{ system: "{{ base }}/patientId", value: "{{ id }}" }]
          - name: encounters
            source: encounters
            bundle: batch-of-transactions
            resources:
              encounter:
                resourceType: Encounter
                identifier: [{ system: "{{ base }}/encounterId", value: "{{ id }}" }]
                status: finished
                class: { code: AMB }
                subject: { reference: "{{ ref('patients', patient_id) }}" }
              note:
                $if: "{{ present(note[id]) }}"
                resourceType: ClinicalImpression
                identifier: [{ system: "{{ base }}/noteId", value: "{{ note[id].note_id }}" }]
                status: completed
                subject: { reference: "{{ ref('patients', patient_id) }}" }
                encounter: { reference: "{{ uuid('encounter') }}" }
        """

    @Test func conditionalReferencesUseTheTargetStepsIdentifierSystem() throws {
        let m = try compileMapping(yaml, fields: ["patients": ["id"], "encounters": ["id", "patient_id"], "notes": ["note_id", "encounter_id"]])
        let out = evaluate(m, step: "encounters", row: ["E1", "P1"]).success
        #expect(out?.count == 1)
        #expect(out?.first?.contains(#""subject":{"reference":"Patient?identifier=http://example.org/patientId|P1"}"#) == true)
    }

    @Test func urnUUIDReferencesPointAtTheGroupMembersDerivedFullUrl() throws {
        let m = try compileMapping(yaml, fields: ["patients": ["id"], "encounters": ["id", "patient_id"], "notes": ["note_id", "encounter_id"]])
        var builder = LookupTables.Builder(count: 1)
        _ = builder.add(index: 0, key: "E1", row: [.single("N1"), .single("E1")], multiple: false)
        let tables = builder.build()
        let evaluator = StepEvaluator(mapping: m, stepIndex: 1, lookups: tables)
        let produced = try #require(evaluator.evaluate([.single("E1"), .single("P1")]).success)
        #expect(produced.count == 2)
        #expect(produced[0].fullUrl.hasPrefix("urn:uuid:"))
        #expect(produced[1].json["encounter"]?["reference"]?.stringValue == produced[0].fullUrl)
        #expect(produced[1].conditionalURL == "ClinicalImpression?identifier=http://example.org/noteId|N1")
        // Derived, so the same input gives the same full URL on every run.
        let again = try #require(evaluator.evaluate([.single("E1"), .single("P1")]).success)
        #expect(again[0].fullUrl == produced[0].fullUrl)
    }

    /// NDJSON has no transaction: its form of a resource refers to group members conditionally, whether the urn was
    /// a whole leaf (swapped in the rendered bytes) or part of a text (rendered again).
    @Test(arguments: [
        (#"encounter: { reference: "{{ uuid('encounter') }}" }"#, "Encounter?identifier=http://example.org/encounterId|E1"),
        (#"encounter: { reference: "{{ uuid('encounter') }}", display: "{{ uuid('encounter') }}" }"#, "Encounter?identifier=http://example.org/encounterId|E1"),
        (#"encounter: { reference: "{{ uuid('encounter') }}", display: "see {{ uuid('encounter') }}" }"#, "Encounter?identifier=http://example.org/encounterId|E1"),
    ])
    func ndjsonFormRefersToGroupMembersConditionally(template: String, expected: String) throws {
        let m = try compileMapping(yaml.replacingOccurrences(of: #"encounter: { reference: "{{ uuid('encounter') }}" }"#, with: template),
                                   fields: ["patients": ["id"], "encounters": ["id", "patient_id"], "notes": ["note_id", "encounter_id"]])
        var builder = LookupTables.Builder(count: 1)
        _ = builder.add(index: 0, key: "E1", row: [.single("N1"), .single("E1")], multiple: false)
        let tables = builder.build()
        let produced = try #require(StepEvaluator(mapping: m, stepIndex: 1, lookups: tables).evaluate([.single("E1"), .single("P1")]).success)
        let urn = produced[0].fullUrl
        let bundleForm = String(decoding: produced[1].bytes, as: UTF8.self)
        let ndjson = String(decoding: try #require(produced[1].ndjsonBytes), as: UTF8.self)
        #expect(bundleForm.contains(urn))
        #expect(!ndjson.contains("urn:uuid:"))
        #expect(ndjson == bundleForm.replacingOccurrences(of: urn, with: expected))
    }
}
