import FHIRModel
import Testing

struct JSONWriterTests {
    @Test func compactOutputKeepsMemberOrder() {
        let value = JSONValue.object([JSONMember("resourceType", .string("Patient")), JSONMember("active", .bool(true)), JSONMember("a", .number("1.50"))])
        #expect(JSONWriter().string(value) == #"{"resourceType":"Patient","active":true,"a":1.50}"#)
    }

    @Test func indentedOutputUsesTwoSpacesAndSpaceAfterColon() {
        let value = JSONValue.object([JSONMember("a", .array([.number("1"), .null])), JSONMember("b", .object([]))])
        #expect(JSONWriter(indent: 2).string(value) == "{\n  \"a\": [\n    1,\n    null\n  ],\n  \"b\": {}\n}")
    }

    @Test(arguments: [
        ("plain", #""plain""#),
        ("quote\"back\\slash", #""quote\"back\\slash""#),
        ("line\nbreak\ttab\r", #""line\nbreak\ttab\r""#),
        ("\u{01}\u{1F}", #""\u0001\u001f""#),
        ("café ✓ 😀", "\"café ✓ 😀\""),
    ])
    func stringsEscapeOnlyWhatJSONRequires(input: String, expected: String) {
        #expect(JSONWriter().string(.string(input)) == expected)
    }

    /// The writer scans eight bytes at a time: a special character at any offset of any window, or several in one
    /// window, must be escaped exactly as one byte at a time would.
    @Test func stringsEscapeTheSameWhereverTheSpecialCharactersFall() throws {
        let pieces = ["a", "\"", "\\", "\n", "\u{01}", "\u{1F}", " ", "~", "\u{7F}", "é", "✓", "😀"]
        var generator = SystemRandomNumberGenerator()
        for length in 0..<40 {
            for _ in 0..<20 {
                let text = (0..<length).map { _ in pieces.randomElement(using: &generator)! }.joined()
                var expected = "\""
                for scalar in text.unicodeScalars {
                    switch scalar {
                    case "\"": expected += "\\\""
                    case "\\": expected += "\\\\"
                    case "\n": expected += "\\n"
                    case "\u{01}": expected += "\\u0001"
                    case "\u{1F}": expected += "\\u001f"
                    default: expected.unicodeScalars.append(scalar)
                    }
                }
                expected += "\""
                #expect(JSONWriter().string(.string(text)) == expected, "\(Array(text.utf8))")
                #expect(try JSONParser.parse(JSONWriter().bytes(.string(text))) == .string(text))
            }
        }
    }

    @Test func writerOutputParsesBackToTheSameValue() throws {
        let value = JSONValue.object([
            JSONMember("s", .string("x\"\\\n\u{7}é😀")), JSONMember("n", .number("-0.5e10")),
            JSONMember("arr", .array([.bool(false), .object([JSONMember("k", .null)])])),
        ])
        #expect(try JSONParser.parse(JSONWriter().bytes(value)) == value)
        #expect(try JSONParser.parse(JSONWriter(indent: 2).bytes(value)) == value)
    }
}

struct JSONParserTests {
    @Test func parsesNestedValuesKeepingNumberText() throws {
        let v = try JSONParser.parse(#" {"a": [1, 2.50, -3e2], "b": {"c": "\u00e9\ud83d\ude00"}, "d": null} "#)
        #expect(v["a"] == .array([.number("1"), .number("2.50"), .number("-3e2")]))
        #expect(v["b"]?["c"] == .string("é😀"))
        #expect(v["d"] == .null)
    }

    @Test(arguments: [
        ("{\"a\": 1,}", 1, 9),
        ("[1, 2\n, 03]", 2, 4),
        ("{\"a\" 1}", 1, 6),
        ("\"unterminated", 1, 14),
        ("{}\n x", 2, 2),
        ("[\"tab\there\"]", 1, 6),
    ])
    func syntaxErrorsCarryLineAndColumn(text: String, line: Int, column: Int) {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
        do {
            _ = try JSONParser.parse(text)
        } catch {
            #expect(error.line == line)
            #expect(error.column == column)
        }
    }

    @Test func invalidUTF8InsideAStringIsAnError() {
        let bytes: [UInt8] = [0x22, 0xFF, 0x22]
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(bytes) }
    }
}

struct NameUUIDTests {
    @Test func version5MatchesTheRFCExample() {
        // RFC 9562 appendix A.4: "www.example.com" in the DNS namespace.
        let dns: [UInt8] = [0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8]
        #expect(NameUUID.v5("www.example.com", namespace: dns) == "2ed6657d-e927-568b-95e1-2665a8aea6a2")
    }

    @Test func aResourcesURNIsTheUUIDOfTypeSystemAndValue() {
        #expect(NameUUID.urn(type: "Patient", system: "http://x/id", value: "P001") == "urn:uuid:" + NameUUID.v5("Patient|http://x/id|P001"))
        #expect(NameUUID.urn(type: "Encounter", system: "", value: "é|1") == "urn:uuid:" + NameUUID.v5("Encounter||é|1"))
    }

    @Test func sameNameGivesSameUUIDAndDifferentNamesDiffer() {
        #expect(NameUUID.v5("Patient|s|P001") == NameUUID.v5("Patient|s|P001"))
        #expect(NameUUID.v5("Patient|s|P001") != NameUUID.v5("Patient|s|P002"))
    }
}

struct ConditionalURLTests {
    @Test(arguments: [
        ("P001", "P001"), ("", ""), ("a b&c|d,e$f\\g#h", "a%20b%26c%5C%7Cd%5C%2Ce%5C%24f%5C%5Cg%23h"),
        ("é😀", "%C3%A9%F0%9F%98%80"), ("x\u{01}\u{7F}?=:/", "x%01%7F?=:/"),
    ])
    func appendingATokenEncodesItAfterThePrefix(token: String, encoded: String) {
        #expect(ConditionalURL.appending(token: token, to: "Patient?identifier=s|") == "Patient?identifier=s|" + encoded)
        #expect(ConditionalURL.encodeToken(token) == encoded)
    }

    @Test func plainIdentifiersStayReadable() {
        #expect(ConditionalURL.identifier(type: "Patient", system: "http://your-source-system.com/patientId", value: "P001")
            == "Patient?identifier=http://your-source-system.com/patientId|P001")
    }

    @Test func searchSpecialCharactersAreEscapedAndPercentEncoded() {
        #expect(ConditionalURL.encodeToken("a b&c|d,e$f\\g#h") == "a%20b%26c%5C%7Cd%5C%2Ce%5C%24f%5C%5Cg%23h")
        #expect(ConditionalURL.encodeToken("é") == "%C3%A9")
    }
}
