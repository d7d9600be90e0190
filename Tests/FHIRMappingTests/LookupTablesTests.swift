@testable import FHIRMapping
import FHIRSources
import Testing

/// The lookup store keeps rows as bytes behind its own index: what goes in must come out, by key, in order.
struct LookupTablesTests {
    private func texts(_ rows: [LookupRow], column: Int) -> [String] {
        rows.map { if case .string(let s) = $0.value(column) { return s } else { return "" } }
    }

    @Test func singleRowLookupFindsEveryKeyAcrossGrowthAndKeepsTheFirstOfADuplicate() {
        var builder = LookupTables.Builder(count: 1)
        for i in 0..<5_000 {
            let added = builder.add(index: 0, key: "K\(i)", row: [.single("K\(i)"), .single("value \(i)")], multiple: false)
            #expect(added)
        }
        let second = builder.add(index: 0, key: "K42", row: [.single("K42"), .single("second")], multiple: false)
        #expect(!second)
        let tables = builder.build()
        for i in stride(from: 0, to: 5_000, by: 7) {
            #expect(texts(tables.row(0, "K\(i)").map { [$0] } ?? [], column: 1) == ["value \(i)"])
        }
        #expect(texts([tables.row(0, "K42")!], column: 1) == ["value 42"])
        #expect(tables.row(0, "K5000") == nil)
        #expect(tables.row(0, "") == nil)
        #expect(tables.row(0, "K4") != nil && tables.row(0, "K") == nil)  // prefixes are other keys
    }

    @Test func multiRowLookupGivesEveryRowOfAKeyInFileOrder() {
        var builder = LookupTables.Builder(count: 1)
        for i in 0..<3_000 {
            _ = builder.add(index: 0, key: "P\(i % 300)", row: [.single("P\(i % 300)"), .single("\(i)")], multiple: true)
        }
        let tables = builder.build()
        for p in [0, 1, 150, 299] {
            #expect(texts(tables.rows(0, "P\(p)"), column: 1) == stride(from: p, to: 3_000, by: 300).map(String.init))
        }
        #expect(tables.rows(0, "P300").isEmpty)
    }

    @Test func emptyFieldsAreNullAndListFieldsStayLists() {
        var builder = LookupTables.Builder(count: 1)
        _ = builder.add(index: 0, key: "A", row: [.single("A"), .single(""), .list(["x", "", "y"]), .list([])], multiple: false)
        let tables = builder.build()
        let row = tables.row(0, "A")!
        guard case .null = row.value(1) else { Issue.record("an empty field reads as null"); return }
        guard case .list(let items) = row.value(2), items.count == 3, case .string("y") = items[2], case .null = items[1] else {
            Issue.record("a list field reads as its items"); return
        }
        guard case .list(let none) = row.value(3), none.isEmpty else { Issue.record("an empty list stays a list"); return }
    }

    @Test func aKeyColumnThatIsEmptyIsNotStoredAndADuplicateNamesItsKey() {
        var builder = LookupTables.Builder(count: 1)
        var record = RecordBytes()
        record.set(SourceRecord(line: 2, values: [.single(""), .single("x")]))
        let emptyKey = builder.add(index: 0, record: record, keyColumns: [0], multiple: false)
        #expect(emptyKey == .emptyKey)
        record.set(SourceRecord(line: 3, values: [.single("K"), .single("x")]))
        let firstK = builder.add(index: 0, record: record, keyColumns: [0], multiple: false)
        #expect(firstK == .added)
        let secondK = builder.add(index: 0, record: record, keyColumns: [0], multiple: false)
        #expect(secondK == .duplicate(key: "K"))
        record.set(SourceRecord(line: 4, values: [.list(["L1", "L2"]), .single("y")]))
        let listKey = builder.add(index: 0, record: record, keyColumns: [0], multiple: false)
        #expect(listKey == .added)
        let tables = builder.build()
        #expect(tables.row(0, "L1") != nil && tables.row(0, "L2") == nil)  // a list key files the row under its first item
    }

    /// A lookup holds a whole source in memory: columns no template reads are not kept.
    @Test func onlyTheColumnsTheMappingReadsAreKept() throws {
        let yaml = """
            version: 1
            sources:
              encounters: { file: e.csv }
              notes: { file: n.csv }
            lookups:
              note: { source: notes, key: encounter_id }
            steps:
              - name: encounters
                source: encounters
                bundle: batch
                resource:
                  resourceType: Encounter
                  identifier: [{ system: "http://example.org/e", value: "{{ id }}" }]
                  status: finished
                  class: { code: "{{ note[id].kind }}" }
            """
        let m = try compileMapping(yaml, fields: ["encounters": ["id"], "notes": ["note_id", "encounter_id", "kind", "summary"]])
        #expect(m.lookups[0].columnsRead == [2])
        var builder = LookupTables.Builder(mapping: m)
        _ = builder.add(index: 0, key: "E1", row: [.single("N1"), .single("E1"), .single("AMB"), .single("a long text")], multiple: false)
        let tables = builder.build()
        let row = try #require(tables.row(0, "E1"))
        guard case .string("AMB") = row.value(2) else { Issue.record("a read column is kept"); return }
        guard case .null = row.value(3), case .null = row.value(0) else { Issue.record("unread columns are not kept"); return }
        #expect(evaluate(m, step: "encounters", row: ["E1"], lookups: [("note", [["N1", "E1", "AMB", "x"]])]).success?.first?.contains(#""class":{"code":"AMB"}"#) == true)
    }
}
