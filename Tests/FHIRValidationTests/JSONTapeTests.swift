import FHIRModel
import Foundation
import Testing

@testable import FHIRValidation

/// The validator reads files through `JSONTape`; it must accept exactly what `JSONParser` accepts and read the same
/// values, or a finding would appear (or vanish) depending on which reader saw the file.
struct JSONTapeTests {
    private static let invalid: [String] = [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[01]", "[1.]", "[.5]", "[1e]", "[-]", "[+1]",
        "[tru]", "[nul]", "\"abc", "\"a\u{01}b\"", "\"\\x\"", "\"\\u12G4\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "{} {}", "[1] x", "[\"\\", "{\"a\":1 \"b\":2}", "[1 2]",
        String(repeating: "[", count: 513) + String(repeating: "]", count: 513),
    ]

    @Test(arguments: invalid)
    func textThatJSONParserRefusesTheTapeRefuses(text: String) {
        var tape = JSONTape()
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
        let parsed = tape.parse(Array(text.utf8))
        #expect(!parsed)
    }

    @Test func invalidUTF8InsideAStringIsRefusedLikeJSONParser() {
        let samples: [[UInt8]] = [
            [0x22, 0xC3, 0x22],              // truncated sequence
            [0x22, 0xC0, 0xAF, 0x22],        // overlong
            [0x22, 0xED, 0xA0, 0x80, 0x22],  // UTF-16 surrogate
            [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
            [0x22, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0xFF, 0x22],  // after a run of eight plain bytes
        ]
        for bytes in samples {
            var tape = JSONTape()
            #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(bytes) }
            let parsed = tape.parse(bytes)
            #expect(!parsed, "\(bytes)")
        }
    }

    @Test func valuesReadFromTheTapeEqualJSONParsersValues() throws {
        let text = #"{"resourceType":"Patient","name":[{"family":"O\"Brien \\ \/ \b\f\n\r\t","given":["Zoë","\u00e9\ud83d\ude00 long enough to pass the eight-byte scan"]}],"n":-0.5e+3,"ok":true,"no":false,"nil":null,"empty":{},"list":[]}"#
        var tape = JSONTape()
        let parsed = tape.parse(Array(text.utf8))
        #expect(parsed)
        let value = try JSONParser.parse(text)
        func same(_ token: Int, _ v: JSONValue) {
            switch v {
            case .null: #expect(tape.kind(token) == .null)
            case .bool(let b): #expect(tape.kind(token) == (b ? .true : .false))
            case .number(let n): #expect(tape.numberText(token) == n)
            case .string(let s): #expect(tape.string(token) == s)
            case .array(let items):
                #expect(tape.count(token) == items.count)
                tape.forEachItem(token) { i, item in same(item, items[i]) }
            case .object(let members):
                #expect(tape.count(token) == members.count)
                var i = 0
                tape.forEachMember(token) { key, member in
                    #expect(tape.string(key) == members[i].key)
                    same(member, members[i].value)
                    i += 1
                }
            }
        }
        same(0, value)
        // name: array, its object, "family", its value, "given", its value
        let name = try #require(tape.member(0, "name"))
        #expect(tape.pointer(to: name + 5, from: 0) == "/name/0/given")
        #expect(tape.keys(to: name + 5, from: 0) == ["name", "given"])
    }
}

/// Structure checks on NDJSON resources (no bundles, so every line is checked in full).
struct StructureCheckTests {
    private func findings(_ lines: [String]) throws -> [Finding] {
        let dir = NSTemporaryDirectory() + "structure-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/ndjson", withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/ndjson/Patient.ndjson", atomically: true, encoding: .utf8)
        return try ArtifactValidator(folder: dir).run().findings
    }

    @Test func positiveIntAndUnsignedIntAreJSONNumbers() throws {
        let valid = #"{"resourceType":"Patient","identifier":[{"system":"s","value":"1"}],"telecom":[{"system":"phone","value":"1","rank":1}],"photo":[{"contentType":"image/png","size":0}]}"#
        #expect(try findings([valid]).isEmpty)
        let quoted = valid.replacingOccurrences(of: #""rank":1"#, with: #""rank":"1""#)
        let zero = valid.replacingOccurrences(of: #""rank":1"#, with: #""rank":0"#).replacingOccurrences(of: #""value":"1"}]"#, with: #""value":"2"}]"#)
        let found = try findings([quoted, zero])
        #expect(found.map(\.rule) == ["primitive-json-type", "primitive-format"])
        #expect(found.map(\.pointer) == ["/telecom/0/rank", "/telecom/0/rank"])
        #expect(found.map(\.line) == [1, 2])
    }

    @Test func escapedKeysAndValuesAreCheckedByTheirMeaning() throws {
        // "g\u0065nder" is the key gender; "m\u0061le" the code male.
        #expect(try findings([#"{"resourceType":"Patient","identifier":[{"system":"s","value":"1"}],"g\u0065nder":"m\u0061le"}"#]).isEmpty)
        let found = try findings([#"{"resourceType":"Patient","identifier":[{"system":"s","value":"1"}],"gender":"m\u0061l"}"#])
        #expect(found.map(\.rule) == ["required-binding"])
    }

    @Test func aControlCharacterIsFoundOnlyWhereAnEscapeWritesOne() {
        let cases: [(json: String, control: UInt8?)] = [
            (#""plain text""#, nil), (#""line\nbreak\ttab\rreturn""#, nil), (#""\u0009\u000A\u000d""#, nil),
            (#""bell\u0007""#, 0x07), (#""\b""#, 0x08), (#""a\fb""#, 0x0C), (#""\u001F""#, 0x1F), (#""\u001f""#, 0x1F),
            (#""\u0020 and \u00e9""#, nil), (#""a backslash, then u0001: \\u0001""#, nil), (#""\\\u0001""#, 0x01),
        ]
        for (json, control) in cases {
            var tape = JSONTape()
            let parsed = tape.parse(Array(json.utf8))
            #expect(parsed)
            #expect(tape.forbiddenControlCharacter(0) == control, "\(json)")
        }
    }

    @Test func aFileReadIntoANewOrAReusedTapeHasExactlyItsBytes() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tape-read-\(getpid())-\(UInt64.random(in: 0...UInt64.max))").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // Empty, small, and larger than the first read's storage, in both orders of one reused tape.
        let contents: [[UInt8]] = [[], Array("[1]".utf8), Array(("[" + String(repeating: "\"abc\",", count: 40_000) + "1]").utf8), Array("{}".utf8)]
        var reused = JSONTape()
        for (i, bytes) in contents.enumerated() {
            let path = folder + "/\(i).json"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            var fresh = JSONTape()
            guard case .read = fresh.read(path) else { Issue.record("file \(i) not read"); continue }
            #expect(fresh.bytes == bytes, "file \(i), new tape")
            guard case .read = reused.read(path) else { Issue.record("file \(i) not read again"); continue }
            #expect(reused.bytes == bytes, "file \(i), reused tape")
            #expect(reused.parse() == !bytes.isEmpty)
        }
        var limited = JSONTape()
        guard case .tooLarge(let size) = limited.read(folder + "/2.json", limit: 1000) else {
            Issue.record("a file over the limit was read")
            return
        }
        #expect(size == contents[2].count)
    }
}
