@testable import FHIRSources
import Foundation
import Testing

/// A mysqldump of `tables` (name → rows of (column, value or nil for NULL)), in the layout MariaDB writes.
private func mysqldump(_ tables: [(name: String, columns: [String], rows: [[String?]])], database: String = "clinic") -> String {
    var xml = "<?xml version=\"1.0\"?>\n<mysqldump xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n<database name=\"\(database)\">\n"
    for table in tables {
        xml += "\t<table_structure name=\"\(table.name)\">\n"
        for c in table.columns { xml += "\t\t<field Field=\"\(c)\" Type=\"varchar(64)\" Null=\"YES\" Key=\"\" Extra=\"\" Comment=\"\" />\n" }
        xml += "\t\t<options Name=\"\(table.name)\" Engine=\"InnoDB\" Rows=\"\(table.rows.count)\" />\n\t</table_structure>\n"
        xml += "\t<table_data name=\"\(table.name)\">\n"
        for row in table.rows {
            xml += "\t<row>\n"
            for (c, v) in zip(table.columns, row) {
                xml += v.map { "\t\t<field name=\"\(c)\">\($0)</field>\n" } ?? "\t\t<field name=\"\(c)\" xsi:nil=\"true\" />\n"
            }
            xml += "\t</row>\n"
        }
        xml += "\t</table_data>\n"
    }
    return xml + "</database>\n</mysqldump>\n"
}

private let patients = (name: "patients", columns: ["Id", "FIRST", "MIDDLE"], rows: [["p1", "Ada", "Maria"], ["p2", "Tom", nil]] as [[String?]])
private let allergies = (name: "allergies", columns: ["PATIENT", "CODE"], rows: [["p1", "300916003"]] as [[String?]])

struct XMLRecordPathTests {
    @Test func stepsWithPrefixesAndPredicatesInEitherQuote() throws {
        let path = try XMLRecordPath(parsing: "/h:dump/database[@name='clinic']/table_data[ @name = \"pa'tients\" ][@kind='t']/row")
        #expect(path.steps.map(\.local) == ["dump", "database", "table_data", "row"])
        #expect(path.prefixes == ["h"])
        #expect(path.steps[1].predicates == [.init(attribute: "name", value: "clinic")])
        #expect(path.steps[2].predicates == [.init(attribute: "name", value: "pa'tients"), .init(attribute: "kind", value: "t")])
    }

    @Test(arguments: [
        ("", 0, "empty"),
        ("/a//b", 3, "'//'"),
        ("/a/b[@name=x]", 11, "must be quoted"),
        ("/a/b[@name='x'", 14, "expected ']'"),
        ("/a/b[@name='x]", 11, "no closing quote"),
        ("/a/b[1]", 5, "only [@attribute='value']"),
        ("/a/*", 3, "expected an element name"),
        ("/a/b/", 5, "ends with '/'"),
        ("/a/b[@xsi:type='x']", 6, "cannot be matched"),
    ])
    func malformedPathsSayWhatIsWrongAndWhere(text: String, offset: Int, message: String) {
        #expect {
            try XMLRecordPath(parsing: text)
        } throws: { error in
            guard let e = error as? XMLRecordPath.SyntaxError else { return false }
            return e.offset == offset && e.message.contains(message)
        }
    }

    @Test func aMysqldumpOfOneTableIsReadWithoutARecordPath() throws {
        let reader = try xmlReader(mysqldump([patients]), record: nil, format: .mysql)
        // The <table_structure>'s <field Field> elements are not records.
        #expect(reader.fieldNames == ["Id", "FIRST", "MIDDLE"])
        let r = try records(reader)
        #expect(r.map(\.values) == [[.single("p1"), .single("Ada"), .single("Maria")], [.single("p2"), .single("Tom"), .single("")]])
        #expect(r.map(\.line) == [11, 16])  // the lines of the <row>s
    }

    @Test func aMysqlResultsetIsReadWithoutARecordPath() throws {
        let reader = try xmlReader("<resultset statement=\"SELECT\"><row><field name=\"id\">1</field></row></resultset>", record: nil, format: .mysql)
        #expect(try records(reader).map(\.values) == [[.single("1")]])
    }

    @Test func aMysqldumpOfSeveralTablesWithoutARecordPathIsRefusedNamingThem() throws {
        #expect {
            try xmlReader(mysqldump([allergies, patients]), record: nil, format: .mysql)
        } throws: { error in
            let message = (error as? SourceError)?.message ?? ""
            return message.contains("holds 2 tables (allergies, patients)")
                && message.contains("record: \"/mysqldump/database/table_data[@name='allergies']/row\"")
        }
    }

    @Test func aPredicatePicksOneTableOfADump() throws {
        let reader = try xmlReader(mysqldump([allergies, patients]), record: "/mysqldump/database/table_data[@name='patients']/row", format: .mysql)
        #expect(reader.fieldNames == ["Id", "FIRST", "MIDDLE"])
        #expect(try records(reader).count == 2)
        let other = try xmlReader(mysqldump([allergies, patients]), record: "/mysqldump/database/table_data[@name='allergies']/row", format: .mysql)
        #expect(try records(other).map(\.values) == [[.single("p1"), .single("300916003")]])
    }

    @Test func anEmptyMysqldumpTableTakesItsColumnsFromItsStructure() throws {
        let empty = (name: "allergies", columns: ["PATIENT", "CODE", "START"], rows: [[String?]]())
        let reader = try xmlReader(mysqldump([empty, patients]), record: "/mysqldump/database/table_data[@name='allergies']/row", format: .mysql)
        #expect(reader.fieldNames == ["PATIENT", "CODE", "START"])
        #expect(try records(reader).isEmpty)
    }

    @Test func anEmptyParentWithDeclaredFieldsIsASourceOfZeroRows() throws {
        let reader = try xmlReader("<export><patients>\n</patients></export>", record: "/export/patients/patient", fields: [("id", "@id")])
        #expect(try records(reader).isEmpty)
    }

    @Test func anEmptyParentWithoutFieldsSaysNothingTellsThem() throws {
        #expect {
            try xmlReader("<export><patients></patients></export>", record: "/export/patients/patient")
        } throws: { error in
            ((error as? SourceError)?.message ?? "").contains("holds no <patient> in <patients>")
        }
    }

    @Test func aPathThatMatchesNothingNamesTheRootAndTheRepeatingElements() throws {
        let text = "<?xml version=\"1.0\"?>\n<export>\n<people><person id=\"1\"><phone>1</phone><phone>2</phone></person><person id=\"2\"/></people>\n</export>"
        // Discovered fields: when the file is opened.
        #expect {
            try xmlReader(text, record: "/export/patients/patient")
        } throws: { error in
            let e = error as? SourceError
            return e?.line == 2 && e?.message.hasPrefix("record path '/export/patients/patient' matches no element of ") == true
                && e?.message.hasSuffix("; its root is <export>; repeating elements: /export/people/person (2), /export/people/person/phone (2)") == true
        }
        // Declared fields: at the end of the file, before any row.
        let reader = try xmlReader(text, record: "/export/patients/patient", fields: [("id", "@id")])
        #expect {
            try reader.next()
        } throws: { error in
            ((error as? SourceError)?.message ?? "").contains("repeating elements: /export/people/person (2)")
        }
    }

    @Test func aParentHoldingOtherElementsIsAMistakenPathNotAnEmptyTable() throws {
        #expect {
            try readAll(xmlReader(mysqldump([patients]), record: "/mysqldump/database/table_data/rows", fields: [("Id", "Id")], format: .mysql))
        } throws: { error in
            let message = (error as? SourceError)?.message ?? ""
            return message.contains("its root is <mysqldump>") && message.contains("/mysqldump/database/table_data/row (2)")
                && message.contains("its tables: patients")
        }
    }

    @Test func aMysqlFileReadAsPlainElementsSaysToUseMysqlXML() throws {
        #expect {
            try xmlReader(mysqldump([patients]), record: "/mysqldump/database/table_data/row")
        } throws: { error in
            ((error as? SourceError)?.message ?? "").contains("format: mysql-xml")
        }
    }

    @Test func theCensusStopsCountingNewPathsAtItsLimit() throws {
        var text = "<r>"
        for i in 0..<(XMLPathCensus.pathLimit + 500) { text += "<e\(i)><x/><x/></e\(i)>" }
        text += "</r>"
        #expect {
            try xmlReader(text, record: "/r/p")
        } throws: { error in
            // Each <eN> holds two <x>: only the paths counted before the limit can be listed.
            let message = (error as? SourceError)?.message ?? ""
            return message.contains("/r/e0/x (2)") && !message.contains("/r/e1400/")
        }
    }
}
