import FHIRSources
import Foundation
import Testing

/// This test process's folder for temporary files, removed when the process exits (tests write hundreds).
private let scratchPath = NSTemporaryDirectory() + "fhirsources-tests-\(getpid())"
private let scratch: String = {
    try? FileManager.default.createDirectory(atPath: scratchPath, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: scratchPath) }
    return scratchPath
}()

/// Writes `bytes` to a temporary file and returns its path.
func temporaryFile(_ bytes: [UInt8], suffix: String = ".csv") -> String {
    let path = scratch + "/\(UUID().uuidString)\(suffix)"
    if !FileManager.default.createFile(atPath: path, contents: Data(bytes)) { Issue.record("cannot write \(path)") }
    return path
}

func temporaryFile(_ text: String, suffix: String = ".csv") -> String { temporaryFile(Array(text.utf8), suffix: suffix) }

/// Every result of a reader.
func readAll(_ reader: any RecordReader) throws -> [ReadResult] {
    var out: [ReadResult] = []
    while let r = try reader.next() { out.append(r) }
    return out
}

func rows(_ results: [ReadResult]) -> [[String]] {
    results.compactMap {
        if case .record(let r) = $0 { return r.values.map { if case .single(let s) = $0 { return s } else { return "<list>" } } }
        return nil
    }
}

struct CSVRecordReaderTests {
    @Test func aHeaderOfAHundredThousandColumnsIsRead() throws {
        let names = (0..<100_000).map { "c\($0)" }
        let reader = try CSVRecordReader(path: temporaryFile(names.joined(separator: ",") + "\n" + names.map { _ in "x" }.joined(separator: ",") + "\n"))
        #expect(reader.fieldNames.count == 100_000)
        #expect(rows(try readAll(reader)).first?.count == 100_000)
    }

    @Test(arguments: [
        ("a,b\n1,2\n", [["1", "2"]]),
        ("a,b\r\n1,2\r\n", [["1", "2"]]),
        ("a,b\n1,2", [["1", "2"]]),
        ("\u{FEFF}a,b\n1,2\n", [["1", "2"]]),
        ("a,b\n\"x,y\",\"say \"\"hi\"\"\"\n", [["x,y", "say \"hi\""]]),
        ("a,b\n\"line1\nline2\",z\n", [["line1\nline2", "z"]]),
        ("a,b\n\"line1\r\nline2\",z\r\n", [["line1\r\nline2", "z"]]),
        ("a,b\n,\n", [["", ""]]),
        ("a,b\n1,2\n\n3,4\n", [["1", "2"], ["3", "4"]]),
        ("a,b\n\"\",x\n", [["", "x"]]),
        ("a,b\nca\"t,dog\n", [["ca\"t", "dog"]]),
        ("a,b\ncafé,日本\n", [["café", "日本"]]),
    ])
    func readsRFC4180Records(text: String, expected: [[String]]) throws {
        let reader = try CSVRecordReader(path: temporaryFile(text))
        #expect(reader.fieldNames == ["a", "b"])
        #expect(rows(try readAll(reader)) == expected)
    }

    @Test func recordsStartingAfterMultiLineFieldsKeepTheirLineNumbers() throws {
        let reader = try CSVRecordReader(path: temporaryFile("id,note\n1,\"two\nlines\"\n2,x\n3,\"a\r\nb\r\nc\"\n4,y\n"))
        let lines = try readAll(reader).map { r -> Int in
            switch r {
            case .record(let rec): return rec.line
            case .reject(let line, _): return line
            }
        }
        #expect(lines == [2, 4, 5, 8])
    }

    @Test func rowWithTheWrongFieldCountIsARejectAndReadingGoesOn() throws {
        let results = try readAll(CSVRecordReader(path: temporaryFile("a,b,c\n1,2,3\n1,2\n1,2,3,4\n7,8,9\n")))
        #expect(results.count == 4)
        #expect(results[1] == .reject(line: 3, reason: "expected 3 fields, found 2"))
        #expect(results[2] == .reject(line: 4, reason: "expected 3 fields, found 4"))
        #expect(rows(results) == [["1", "2", "3"], ["7", "8", "9"]])
    }

    /// With `encoding: utf-8` declared (undeclared, the file stops with the likely encoding: EncodingTests).
    @Test func invalidUTF8IsARejectNamingTheColumnNotTheValue() throws {
        var bytes = Array("id,name\n1,ok\n2,".utf8)
        bytes += [0xC3, 0x28]
        bytes += Array("\n3,fine\n".utf8)
        let results = try readAll(CSVRecordReader(path: temporaryFile(bytes), encoding: .utf8))
        #expect(results[1] == .reject(line: 3, reason: "invalid UTF-8 in field 2 (column 'name')"))
        #expect(rows(results) == [["1", "ok"], ["3", "fine"]])
    }

    @Test func unterminatedQuoteAtTheEndIsAReject() throws {
        let results = try readAll(CSVRecordReader(path: temporaryFile("a,b\n1,2\n3,\"open\n4,5\n")))
        #expect(rows(results) == [["1", "2"]])
        guard case .reject(let line, let reason) = results.last else { Issue.record("expected a reject"); return }
        #expect(line == 3)
        #expect(reason.contains("never closed"))
    }

    /// RFC 4180 allows nothing between a closing quote and the next delimiter: reading on would change the value.
    @Test func textAfterAClosingQuoteIsARejectNotAChangedValue() throws {
        let results = try readAll(CSVRecordReader(path: temporaryFile("id,name\n1,\"Dr. \"Bob\" Smith\"\n2,\"a\"b\n3,\"ok \"\"q\"\"\"\n4,plain\"quote\n")))
        #expect(rows(results) == [["3", "ok \"q\""], ["4", "plain\"quote"]])
        #expect(results[0] == .reject(line: 2, reason: "field 2 has text after its closing quote; quote the whole field and double the quotes inside it (\"Dr. \"\"Bob\"\" Smith\")"))
        guard case .reject(let line, _) = results[1] else { Issue.record("expected a reject"); return }
        #expect(line == 3)
    }

    @Test(arguments: [(UInt8(ascii: ";"), "a;b\n1;x,y\n", ["1", "x,y"]), (UInt8(ascii: "\t"), "a\tb\n1\t\"x\ty\"\n", ["1", "x\ty"])])
    func customDelimiters(delimiter: UInt8, text: String, expected: [String]) throws {
        let reader = try CSVRecordReader(path: temporaryFile(text), delimiter: delimiter)
        #expect(reader.fieldNames == ["a", "b"])
        #expect(rows(try readAll(reader)) == [expected])
    }

    @Test func duplicateColumnNamesAreAnError() {
        #expect(throws: SourceError.self) { try CSVRecordReader(path: temporaryFile("id,name,id\n1,2,3\n")) }
    }

    /// A spreadsheet's trailing commas: columns without a name, which no mapping can name, are no duplicates.
    @Test func severalColumnsWithoutANameAreRead() throws {
        let reader = try CSVRecordReader(path: temporaryFile("id,name,,\n1,Ann,,\n"))
        #expect(reader.fieldNames == ["id", "name", "", ""])
        #expect(rows(try readAll(reader)) == [["1", "Ann", "", ""]])
    }

    @Test func emptyFileIsAnError() {
        #expect(throws: SourceError.self) { try CSVRecordReader(path: temporaryFile("")) }
    }

    @Test func missingFileIsAnErrorNamingIt() {
        do {
            _ = try CSVRecordReader(path: "/nonexistent/x.csv")
            Issue.record("expected an error")
        } catch let e as SourceError {
            #expect(e.description.contains("/nonexistent/x.csv"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    /// Lookups read CSV as bytes: the same records, lines and rejects as the String form, field for field.
    @Test func readingAsBytesGivesTheSameRecordsAndRejectsAsReadingStrings() throws {
        var bytes = Array("id,name,note\n1,José,\"a,\"\"b\"\"\nc\"\n2,x\n3,".utf8)
        bytes += [0xC3, 0x28]
        bytes += Array(",y\n\n4,,\"\"\r\n5,日本,z\n6,\"open\n".utf8)
        let path = temporaryFile(bytes)
        let expected = try readAll(CSVRecordReader(path: path, encoding: .utf8))
        let reader = try CSVRecordReader(path: path, encoding: .utf8)
        var record = RecordBytes()
        var got: [ReadResult] = []
        while let r = try reader.next(into: &record) {
            switch r {
            case .reject(let line, let reason): got.append(.reject(line: line, reason: reason))
            case .record: got.append(.record(SourceRecord(line: record.line, values: record.ends.indices.map { record.value($0) })))
            }
        }
        #expect(got == expected)
        #expect(expected.count == 6)
        #expect(reader.sha256 == (try shellSHA256(path)))
    }

    @Test func sha256AndByteCountCoverTheWholeFileAcrossBufferRefills() throws {
        var text = "id,text\n"
        for i in 0..<60_000 { text += "\(i),\"value \(i), with comma\"\n" }
        let path = temporaryFile(text)
        let reader = try CSVRecordReader(path: path)
        let results = try readAll(reader)
        #expect(results.count == 60_000)
        #expect(reader.bytesRead == text.utf8.count)
        let expected = try shellSHA256(path)
        #expect(reader.sha256 == expected)
    }
}

/// sha256sum's answer, as an independent reference.
func shellSHA256(_ path: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    p.arguments = [path]
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    p.waitUntilExit()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return String(out.prefix(64))
}
