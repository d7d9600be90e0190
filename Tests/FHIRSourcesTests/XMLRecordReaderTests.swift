@testable import FHIRSources
import Foundation
import Testing

func xmlReader(_ text: String, record: String?, fields: [(String, String)]? = nil, namespaces: [String: String] = [:],
                format: XMLSourceConfig.Format = .elements, schema: String? = nil, path: String? = nil) throws -> XMLRecordReader {
    var config = XMLSourceConfig(recordPath: record)
    config.fields = fields.map { $0.map { (name: $0.0, path: $0.1) } }
    config.namespaces = namespaces
    config.format = format
    config.schemaPath = schema
    return try XMLRecordReader(path: path ?? temporaryFile(text, suffix: ".xml"), config: config)
}

func records(_ reader: XMLRecordReader) throws -> [SourceRecord] {
    try readAll(reader).compactMap { if case .record(let r) = $0 { return r } else { return nil } }
}

struct XMLRecordReaderTests {
    @Test func elementPerRecordWithAttributesAndNestedFields() throws {
        let reader = try xmlReader("""
            <?xml version="1.0"?>
            <export>
              <patients>
                <patient id="P1"><name><first>Ann</first><last>Lee</last></name><dob>1980-01-02</dob></patient>
                <patient id="P2">
                  <name><first>Bob</first></name>
                </patient>
              </patients>
            </export>
            """, record: "/export/patients/patient", fields: [("id", "@id"), ("first", "name/first"), ("last", "name/last"), ("dob", "dob")])
        let r = try records(reader)
        #expect(reader.fieldNames == ["id", "first", "last", "dob"])
        #expect(r.map(\.values) == [
            [.single("P1"), .single("Ann"), .single("Lee"), .single("1980-01-02")],
            [.single("P2"), .single("Bob"), .single(""), .single("")],
        ])
        #expect(r.map(\.line) == [4, 5])
    }

    @Test func repeatedChildrenBecomeLists() throws {
        let r = try records(xmlReader("""
            <people><person><phone>1</phone><phone>2</phone><phone use="work">3</phone></person></people>
            """, record: "/people/person", fields: [("phone", "phone"), ("use", "phone/@use")]))
        #expect(r[0].values == [.list(["1", "2", "3"]), .single("work")])
    }

    @Test func fieldsThatShareAPathGetTheSameValues() throws {
        let r = try records(xmlReader("""
            <people><person id="7"><phone>1</phone><phone>2</phone></person><person id="8"/></people>
            """, record: "/people/person", fields: [("id", "@id"), ("phone", "phone"), ("key", "@id"), ("phones", "phone")]))
        #expect(r.map(\.values) == [
            [.single("7"), .list(["1", "2"]), .single("7"), .list(["1", "2"])],
            [.single("8"), .single(""), .single("8"), .single("")],
        ])
    }

    @Test func namespacesMatchByURIInTheRecordPathAndByLocalNameInFields() throws {
        let text = """
            <x:export xmlns:x="urn:a" xmlns="urn:b"><x:patient><name>Ann</name></x:patient><patient><name>Not me</name></patient></x:export>
            """
        let r = try records(xmlReader(text, record: "/a:export/a:patient", fields: [("name", "name")], namespaces: ["a": "urn:a"]))
        #expect(r.map(\.values) == [[.single("Ann")]])
        let any = try records(xmlReader(text, record: "/export/patient", fields: [("name", "b:name")]))
        #expect(any.count == 2)
    }

    @Test func xsiNilMeansEmpty() throws {
        let r = try records(xmlReader("""
            <r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><p><a xsi:nil="true">ignored</a><b>x</b></p></r>
            """, record: "/r/p", fields: [("a", "a"), ("b", "b")]))
        #expect(r[0].values == [.single(""), .single("x")])
    }

    @Test func mysqlXMLExportsAreReadByFieldName() throws {
        let reader = try xmlReader("""
            <?xml version="1.0"?>
            <resultset statement="SELECT * FROM t" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
              <row>
                <field name="id">1</field>
                <field name="note">a &amp; b</field>
                <field name="gone" xsi:nil="true" />
              </row>
              <row>
                <field name="id">2</field>
                <field name="note"><![CDATA[<b>bold</b>]]></field>
                <field name="gone">here</field>
              </row>
            </resultset>
            """, record: "/resultset/row", format: .mysql)
        #expect(reader.fieldNames == ["id", "note", "gone"])
        let r = try records(reader)
        #expect(r.map(\.values) == [
            [.single("1"), .single("a & b"), .single("")],
            [.single("2"), .single("<b>bold</b>"), .single("here")],
        ])
    }

    @Test func fieldsAreDiscoveredFromTheFirstRecordWhenNotDeclared() throws {
        let reader = try xmlReader("<r><p id=\"1\" kind=\"a\"><name>Ann</name><dob>1980</dob></p><p id=\"2\"><name>Bob</name></p></r>", record: "/r/p")
        #expect(reader.fieldNames == ["@id", "@kind", "name", "dob"])
        #expect(try records(reader).count == 2)
    }

    @Test func malformedXMLIsAnErrorWithItsLine() throws {
        // libxml2 parses ahead, so the error may surface with an earlier record; it always names line 3.
        do {
            _ = try readAll(xmlReader("<r>\n<p><a>1</a></p>\n<p><a>2</b></p>\n</r>", record: "/r/p", fields: [("a", "a")]))
            Issue.record("expected an error")
        } catch let e as SourceError {
            #expect(e.line == 3)
            #expect(e.message.contains("invalid XML"))
        }
    }

    @Test func externalEntitiesAreRefusedAndNeverRead() throws {
        let marker = temporaryFile("SECRET-MARKER", suffix: ".txt")
        let text = "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM \"file://\(marker)\">]>\n<r><p><a>&xxe;</a></p></r>"
        do {
            let reader = try xmlReader(text, record: "/r/p", fields: [("a", "a")])
            let all = try readAll(reader)
            Issue.record("expected a refusal, read \(all.count) records")
        } catch let e as SourceError {
            #expect(e.message.contains("DTD"))
            #expect(!e.description.contains("SECRET-MARKER"))
        }
    }

    /// libxml2's time grows with the square of an element's attribute count: beyond the limit it is refused, by a
    /// linear scan, before libxml2 parses it.
    @Test func anElementWithTooManyAttributesIsRefusedNamingItsLine() throws {
        let many = (0...XMLAttributeCounter.defaultLimit).map { "a\($0)=\"v\"" }.joined(separator: " ")
        let text = "<r>\n<p a=\"1\"/>\n<p \(many)/>\n</r>\n"
        do {
            let all = try readAll(xmlReader(text, record: "/r/p", fields: [("a", "@a")]))
            Issue.record("expected a refusal, read \(all.count) records")
        } catch let e as SourceError {
            #expect(e.line == 3)
            #expect(e.message.contains("more than 10000 attributes"))
        }
    }

    @Test func equalsSignsInValuesCommentsAndCDATAAreNoAttributes() throws {
        var counter = XMLAttributeCounter(limit: 2)
        let text = #"<?xml version="1.0"?><!-- a=1 b=2 c=3 --><r x="a=b=c" y='>=<='><![CDATA[ <p a=1 b=2 c=3> ]]><p a="1" b="2"/></r>"#
        let found = Array(text.utf8).withUnsafeBytes { bytes in
            // Handed over in 3-byte chunks: every state survives a chunk boundary.
            stride(from: 0, to: bytes.count, by: 3).compactMap { counter.scan(UnsafeRawBufferPointer(rebasing: bytes[$0..<min($0 + 3, bytes.count)])) }
        }
        #expect(found.isEmpty)
        var strict = XMLAttributeCounter(limit: 2)
        let three = Array(#"<r><p a="1" b="2" c="3"/></r>"#.utf8).withUnsafeBytes { strict.scan($0) }
        #expect(three == 3)
    }

    private func utf16(_ text: String, bom: Bool, little: Bool) -> [UInt8] {
        (bom ? (little ? [0xFF, 0xFE] : [0xFE, 0xFF]) : []) + text.utf16.flatMap { little ? [UInt8($0 & 0xFF), UInt8($0 >> 8)] : [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    @Test(arguments: [(true, true), (true, false), (false, true), (false, false)])
    func utf16IsReadWithOrWithoutAByteOrderMark(bom: Bool, little: Bool) throws {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<r>\n<p id=\"1\"><n>José</n></p>\n<p id=\"2\"><n>Zoë 😀</n></p>\n</r>\n"
        let reader = try XMLRecordReader(path: temporaryFile(utf16(text, bom: bom, little: little), suffix: ".xml"),
                                         config: { var c = XMLSourceConfig(recordPath: "/r/p"); c.fields = [(name: "id", path: "@id"), (name: "n", path: "n")]; return c }())
        #expect(rows(try readAll(reader)) == [["1", "José"], ["2", "Zoë 😀"]])
    }

    /// A DOCTYPE stays refused behind every encoding: read as UTF-16 by the scan, or refused with the encoding.
    @Test(arguments: ["utf-16le", "utf-16be", "utf-16le-nobom", "utf-32", "ebcdic", "utf-7", "ibm037"])
    func aDoctypeBehindAnotherEncodingIsStillRefused(encoding: String) throws {
        let doc = "<?xml version=\"1.0\" encoding=\"ENC\"?>\n<!DOCTYPE r [<!ENTITY x \"y\">]>\n<r><p><a>&x;</a></p></r>\n"
        let bytes: [UInt8]
        switch encoding {
        case "utf-16le": bytes = utf16(doc.replacingOccurrences(of: "ENC", with: "UTF-16"), bom: true, little: true)
        case "utf-16be": bytes = utf16(doc.replacingOccurrences(of: "ENC", with: "UTF-16"), bom: true, little: false)
        case "utf-16le-nobom": bytes = utf16(doc.replacingOccurrences(of: "ENC", with: "UTF-16"), bom: false, little: true)
        case "utf-32": bytes = [0xFF, 0xFE, 0x00, 0x00] + doc.unicodeScalars.flatMap { u in [UInt8(u.value & 0xFF), 0, 0, 0] }
        case "ebcdic": bytes = [0x4C, 0x6F, 0xA7, 0x94] + Array(doc.utf8)  // "<?xm" in EBCDIC, then anything
        case "utf-7": bytes = Array(doc.replacingOccurrences(of: "ENC", with: "UTF-7").replacingOccurrences(of: "<!DOCTYPE", with: "+ADw-!DOCTYPE").utf8)
        default: bytes = Array(doc.replacingOccurrences(of: "ENC", with: "IBM037").utf8)
        }
        do {
            let all = try readAll(xmlReader("", record: "/r/p", fields: [("a", "a")], path: temporaryFile(bytes, suffix: ".xml")))
            Issue.record("expected a refusal, read \(all.count) records")
        } catch let e as SourceError {
            #expect(e.message.contains("DTD") || e.message.contains("not read here"), "\(e)")
        }
    }

    @Test func billionLaughsIsRefusedQuickly() throws {
        var text = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n"
        for i in 1...9 { text += "<!ENTITY lol\(i) \"\(String(repeating: "&lol\(i == 1 ? "" : String(i - 1));", count: 10))\">\n" }
        text += "]>\n<lolz><p><a>&lol9;</a></p></lolz>"
        let started = Date()
        #expect(throws: SourceError.self) { try readAll(xmlReader(text, record: "/lolz/p", fields: [("a", "a")])) }
        #expect(Date().timeIntervalSince(started) < 30)  // expanding it would take far longer and a gigabyte
    }

    @Test func xsdValidationAcceptsValidAndRejectsInvalidFiles() throws {
        let xsd = temporaryFile("""
            <xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
              <xs:element name="r"><xs:complexType><xs:sequence>
                <xs:element name="p" maxOccurs="unbounded"><xs:complexType><xs:sequence>
                  <xs:element name="a" type="xs:integer"/>
                </xs:sequence></xs:complexType></xs:element>
              </xs:sequence></xs:complexType></xs:element>
            </xs:schema>
            """, suffix: ".xsd")
        #expect(try records(xmlReader("<r><p><a>1</a></p><p><a>2</a></p></r>", record: "/r/p", fields: [("a", "a")], schema: xsd)).count == 2)
        #expect(throws: SourceError.self) {
            try readAll(xmlReader("<r><p><a>1</a></p>\n<p><a>two</a></p></r>", record: "/r/p", fields: [("a", "a")], schema: xsd))
        }
    }

    @Test func sha256CoversTheWholeFile() throws {
        var text = "<r>"
        for i in 0..<20_000 { text += "<p id=\"\(i)\"><a>value \(i)</a></p>\n" }
        text += "</r>"
        let path = temporaryFile(text, suffix: ".xml")
        var config = XMLSourceConfig(recordPath: "/r/p")
        config.fields = [(name: "a", path: "a")]
        let reader = try XMLRecordReader(path: path, config: config)
        #expect(try readAll(reader).count == 20_000)
        #expect(reader.sha256 == (try shellSHA256(path)))
        #expect(reader.bytesRead == text.utf8.count)
    }
}
