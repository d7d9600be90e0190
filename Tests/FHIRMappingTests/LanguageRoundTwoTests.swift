import FHIRMapping
import FHIRModel
import Testing

/// Observations of a vital sign with a care-plan style lookup keyed by two columns.
private func observationMapping(_ body: String, lookups: String = "") -> String {
    """
    version: 1
    sources:
      vitals: { file: vitals.csv }
      conditions: { file: conditions.csv }
    \(lookups)
    steps:
      - name: vitals
        source: vitals
        bundle: batch
        resource:
          resourceType: Observation
          identifier: [{ system: http://example.org/vital, value: "{{ id }}" }]
          status: final
          code: { text: vital }
    \(body.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(separator: "\n"))
    """
}

private let fields = [
    "vitals": ["id", "patient", "code", "when", "pounds", "systolic"],
    "conditions": ["condition_id", "patient", "code", "onset"],
]

private func run(_ body: String, lookups: String = "", row: [String], conditions: [[String]] = []) throws -> Result<[String], RowFailure> {
    let m = try compileMapping(observationMapping(body, lookups: lookups), fields: fields)
    return evaluate(m, step: "vitals", row: row, lookups: lookups.isEmpty ? [] : [("condition", conditions)])
}

private func vital(when: String = "2024-03-05", pounds: String = "154.3", systolic: String = "141") -> [String] {
    ["V1", "P1", "8480-6", when, pounds, systolic]
}

struct DateFormatsInOrderTests {
    @Test(arguments: [("2024-03-05", "2024-03-05"), ("03/05/2024", "2024-03-05"), ("20240305", "2024-03-05"), ("2024", "2024")])
    func theFirstFormatThatMatchesGivesTheDate(source: String, fhir: String) throws {
        let out = try run(#"effectiveDateTime: "{{ date(when, 'yyyy-MM-dd', 'MM/dd/yyyy', 'yyyyMMdd', 'yyyy') }}""#, row: vital(when: source))
        #expect(out.success?.first?.contains(#""effectiveDateTime":"\#(fhir)""#) == true, "\(out)")
    }

    @Test func aValueMatchingNoneOfTheFormatsIsARejectNamingThemAll() throws {
        let out = try run(#"effectiveDateTime: "{{ date(when, 'yyyy-MM-dd', 'MM/dd/yyyy') }}""#, row: vital(when: "5 March 2024"))
        #expect(out.failure == RowFailure("column 'when' is not a date in the declared formats 'yyyy-MM-dd', 'MM/dd/yyyy'", value: "5 March 2024"))
    }

    @Test func dateTimeTakesSeveralFormatsAndTheOffsetLast() throws {
        let body = #"effectiveDateTime: "{{ dateTime(when, 'yyyy-MM-dd HH:mm', 'MM/dd/yyyy HH:mm', 'yyyy-MM-dd', '+01:00') }}""#
        #expect(try run(body, row: vital(when: "03/05/2024 14:30")).success?.first?.contains(#""2024-03-05T14:30:00+01:00""#) == true)
        #expect(try run(body, row: vital(when: "2024-03-05")).success?.first?.contains(#""2024-03-05T00:00:00+01:00""#) == true)
    }

    @Test func anOffsetBeforeTheLastFormatIsAMappingError() throws {
        let e = try #require(mappingError(observationMapping(#"effectiveDateTime: "{{ dateTime(when, 'Z', 'yyyy-MM-dd HH:mm') }}""#), fields: fields))
        #expect(e.message.contains("'Z' is a UTC offset; it goes last, after the formats"), "\(e)")
        let twice = try #require(mappingError(observationMapping(#"effectiveDateTime: "{{ date(when, 'yyyy', 'yyyy') }}""#), fields: fields))
        #expect(twice.message.contains("the format 'yyyy' is given twice"))
    }

    @Test func minutesWithoutAnHourAreTakenForAMistypedMonth() throws {
        let e = try #require(mappingError(observationMapping(#"effectiveDateTime: "{{ date(when, 'yyyy-mm-dd') }}""#), fields: fields))
        #expect(e.message.contains("'mm' is minutes, and the format has no hour (HH); use 'MM' for the month"), "\(e)")
    }
}

struct DecimalArithmeticTests {
    @Test func aUnitConversionIsExactThenRoundedAsAsked() throws {
        let out = try run(#"valueQuantity: { value: "{{ round(mul(pounds, 0.45359237), 1) }}", unit: kg }"#, row: vital(pounds: "154.3"))
        #expect(out.success?.first?.contains(#""value":70.0,"#) == true, "\(out)")
        let exact = try run(#"valueQuantity: { value: "{{ mul(pounds, 0.45359237) }}" }"#, row: vital(pounds: "150"))
        #expect(exact.success?.first?.contains(#""value":68.03885550"#) == true, "\(exact)")
    }

    @Test(arguments: [
        ("add(0.1, 0.2)", "0.3"), ("sub(1, 0.75)", "0.25"), ("mul(1.5, 0.25)", "0.375"), ("add(1.50, 2)", "3.50"),
        ("div(10, 3, 2)", "3.33"), ("div(2, 3, 0)", "1"), ("div(-2.5, 1, 0)", "-3"), ("round(2.45, 1)", "2.5"),
        ("round(-2.45, 1)", "-2.5"), ("round(2.5, 2)", "2.50"), ("sub(0, 1.5)", "-1.5"), ("mul('1e2', 3)", "300"),
    ])
    func arithmeticKeepsEveryDigit(expression: String, result: String) throws {
        let out = try run(#"valueQuantity: { value: "{{ \#(expression) }}" }"#, row: vital())
        #expect(out.success?.first?.contains(#""value":\#(result)}"#) == true, "\(expression): \(out)")
    }

    @Test func comparisonsAreNumericNotTextual() throws {
        let body = #"""
            interpretation:
              - $if: "{{ ge(systolic, 140) }}"
                text: high
            """#
        #expect(try run(body, row: vital(systolic: "141")).success?.first?.contains(#""text":"high""#) == true)
        // As text, "90" > "140"; as numbers it is not.
        #expect(try run(body, row: vital(systolic: "90")).success?.first?.contains("interpretation") == false)
        #expect(try run(body, row: vital(systolic: "")).success?.first?.contains("interpretation") == false)
        #expect(try run(#"interpretation: [{ $if: "{{ lt(0.10, 0.1) }}", text: x }]"#, row: vital()).success?.first?.contains("interpretation") == false)
        #expect(try run(#"interpretation: [{ $if: "{{ le(0.10, 0.1) }}", text: x }]"#, row: vital()).success?.first?.contains("interpretation") == true)
        #expect(try run(#"interpretation: [{ $if: "{{ gt(-1, -2) }}", text: x }]"#, row: vital()).success?.first?.contains("interpretation") == true)
    }

    @Test func aValueThatIsNotANumberIsARejectNamingTheColumn() throws {
        let out = try run(#"valueQuantity: { value: "{{ mul(pounds, 0.45359237) }}" }"#, row: vital(pounds: "12,5"))
        #expect(out.failure == RowFailure("column 'pounds' is not a number, which mul() needs", value: "12,5"))
        let zero = try run(#"valueQuantity: { value: "{{ div(pounds, 0, 2) }}" }"#, row: vital())
        #expect(zero.failure?.message.contains("div() divides column 'pounds' by zero") == true)
    }

    @Test func anEmptyOperandGivesAnEmptyResult() throws {
        let out = try run(#"valueQuantity: { value: "{{ mul(pounds, 0.45359237) }}", unit: kg }"#, row: vital(pounds: ""))
        // Its object's only row-dependent part is empty, so the quantity goes, unit and all.
        #expect(out.success?.first?.contains("valueQuantity") == false, "\(out)")
    }

    @Test func aLiteralThatIsNotANumberIsAMappingError() throws {
        let e = try #require(mappingError(observationMapping(#"valueQuantity: { value: "{{ mul(pounds, 'lb') }}" }"#), fields: fields))
        #expect(e.message == "mul() takes numbers; 'lb' is not one")
        let places = try #require(mappingError(observationMapping(#"valueQuantity: { value: "{{ round(pounds, systolic) }}" }"#), fields: fields))
        #expect(places.message.contains("the number of decimals must be written in the mapping"))
    }
}

struct LookupOnSeveralColumnsTests {
    private let lookup = """
        lookups:
          condition: { source: conditions, key: [patient, code] }
        """
    private let conditions = [["C1", "P1", "8480-6", "2020"], ["C2", "P2", "8480-6", "2021"], ["C3", "P1", "1234-5", "2022"]]

    @Test func aLookupOnTwoColumnsFindsTheRowWhereBothMatch() throws {
        let out = try run(#"note: [{ text: "{{ condition[patient, code].condition_id }}" }]"#, lookups: lookup, row: vital(), conditions: conditions)
        #expect(out.success?.first?.contains(#""note":[{"text":"C1"}]"#) == true, "\(out)")
    }

    @Test func noRowWithBothValuesRejectsNamingBothKeys() throws {
        let out = try run(#"note: [{ text: "{{ condition[patient, 'nope'].condition_id }}" }]"#, lookups: lookup, row: vital(), conditions: conditions)
        #expect(out.failure?.message == "lookup 'condition' has no row for column 'patient' and the expression of this row (set 'missing: empty' on the lookup to allow it)")
    }

    @Test func partsThatWouldJoinAlikeStayDistinct() {
        #expect(LookupKey.composite(["a|b", "c"]) != LookupKey.composite(["a", "b|c"]))
        #expect(LookupKey.composite(["1:a", ""]) != LookupKey.composite(["1", ":a"]))
    }

    @Test func theNumberOfKeysMustMatchTheLookupsColumns() throws {
        let e = try #require(mappingError(observationMapping(#"note: [{ text: "{{ condition[patient].condition_id }}" }]"#, lookups: lookup), fields: fields))
        #expect(e.message == "lookup 'condition' is keyed by 2 columns (patient, code), so it takes 2 keys in that order, e.g. condition[patient, code]")
    }
}

/// Exports name columns as people do: `Date of Birth`, `1st-visit`; an XML reader's attributes are `@id`.
struct ColumnNamesBetweenBackticksTests {
    private let yaml = """
        version: 1
        sources:
          people: { file: people.csv }
        steps:
          - name: people
            source: people
            bundle: batch
            resource:
              resourceType: Patient
              identifier: [{ system: http://example.org/p, value: "{{ `Patient ID` }}" }]
              birthDate: "{{ date(`Date of Birth`, 'MM/dd/yyyy') }}"
              name: [{ text: "{{ `1st-visit` | upper }}" }]
        """

    @Test func aColumnWhoseNameIsNoPlainNameIsWrittenBetweenBackticks() throws {
        let m = try compileMapping(yaml, fields: ["people": ["Patient ID", "Date of Birth", "1st-visit"]])
        let out = evaluate(m, step: "people", row: ["P 1", "03/05/1980", "ann"])
        let json = try #require(out.success?.first)
        #expect(json.contains(#""value":"P 1""#) && json.contains(#""birthDate":"1980-03-05""#) && json.contains(#""text":"ANN""#), "\(json)")
    }

    @Test func aCloseColumnNameIsSuggestedInTheFormThatWorks() {
        let error = mappingError(yaml.replacingOccurrences(of: "`Patient ID`", with: "PatientID"), fields: ["people": ["Patient ID", "Date of Birth", "1st-visit"]])
        #expect(error?.message.contains("did you mean `Patient ID`?") == true, "\(String(describing: error))")
    }
}

struct HashIDTests {
    private func id(_ a: String, _ b: String) throws -> String? {
        let m = try compileMapping("""
            version: 1
            sources:
              rows: { file: rows.csv }
            steps:
              - name: rows
                source: rows
                bundle: batch
                resource:
                  resourceType: Basic
                  identifier: [{ system: http://example.org/row, value: "{{ hashId(a, b) }}" }]
                  code: { text: x }
            """, fields: ["rows": ["a", "b"]])
        let json = try #require(evaluate(m, step: "rows", row: [a, b]).success?.first)
        return json.split(separator: "\"").drop { $0 != "value" }.dropFirst(2).first.map(String.init)
    }

    @Test func valuesHoldingTheSeparatorGiveDifferentIdsAndOthersKeepTheirs() throws {
        #expect(try id("a|b", "c") != id("a", "b|c"))
        #expect(try id("a\\", "|b") != id("a", "\\|b"))
        // Without a separator in any value, the id is the one hashId always gave.
        #expect(try id("P1", "2024-01-01") == NameUUID.v5("P1|2024-01-01"))
    }
}

struct SourceShapeHintsTests {
    @Test func aHeaderReadAsOneColumnHoldingASemicolonAsksForThatDelimiter() {
        let yaml = """
            version: 1
            sources:
              people: { file: people.csv }
            steps:
              - name: people
                source: people
                bundle: batch
                resource:
                  resourceType: Patient
                  identifier: [{ system: http://example.org/p, value: "{{ patient_id }}" }]
            """
        let error = mappingError(yaml, fields: ["people": ["patient_id;name;dob"]])
        #expect(error?.message.contains("the header was read as one column, which holds ';': declare `delimiter: ';'` on the source") == true, "\(String(describing: error))")
    }
}
