import FHIRSources
import Foundation
import Testing

struct FixedWidthRecordReaderTests {
    private let columns = [FixedWidthColumn(name: "id", start: 1, width: 4), FixedWidthColumn(name: "name", start: 5, width: 8),
                           FixedWidthColumn(name: "dob", start: 13, width: 10)]

    @Test func fieldsAreCutAtTheirPositionsAndTrimmed() throws {
        let text = "ID  NAME    DOB\r\nP1  Ann     1980-01-02\r\n\r\nP2    Bob   1981-02-03  \r\nP3  Cy\nP4  Dee     1982-03-04 extra\nP5  Éva     1983-04-05"
        let results = try readAll(FixedWidthRecordReader(path: temporaryFile(text, suffix: ".txt"), columns: columns, headerLines: 1))
        #expect(rows(results) == [["P1", "Ann", "1980-01-02"], ["P2", "Bob", "1981-02-03"], ["P5", "Éva", "1983-04-05"]])
        let rejects = results.compactMap { if case .reject(let line, let reason) = $0 { return "\(line): \(reason)" } else { return nil } }
        #expect(rejects == ["5: the line has 6 characters, the columns need 22", "6: the line has text after character 22, where the last column ends"])
    }

    @Test func aDeclaredEncodingIsDecoded() throws {
        let bytes: [UInt8] = Array("P1  Jos".utf8) + [0xE9] + Array("    1980-01-02\n".utf8)
        let reader = try FixedWidthRecordReader(path: temporaryFile(bytes, suffix: ".txt"), columns: columns, encoding: .windows1252)
        #expect(rows(try readAll(reader)) == [["P1", "José", "1980-01-02"]])
        do {
            _ = try readAll(FixedWidthRecordReader(path: temporaryFile(bytes, suffix: ".txt"), columns: columns))
            Issue.record("expected an error")
        } catch let e as SourceError {
            #expect(e.line == 1 && e.message.contains("read as Windows-1252 'é'") && e.message.contains("`encoding: windows-1252`"), "\(e)")
        }
        let declaredUTF8 = try readAll(FixedWidthRecordReader(path: temporaryFile(bytes, suffix: ".txt"), columns: columns, encoding: .utf8))
        guard case .reject(1, let reason) = declaredUTF8.first else {
            Issue.record("expected a reject, got \(declaredUTF8)")
            return
        }
        #expect(reason.contains("invalid UTF-8"))
    }
}
