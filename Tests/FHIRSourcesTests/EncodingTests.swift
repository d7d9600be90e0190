@testable import FHIRSources
import Foundation
import Testing

/// Text in a declared encoding reads as the same UTF-8 values; what the encoding cannot decode is a reject naming
/// the field, and an undeclared file that is not UTF-8 stops with the likely encoding.
struct EncodingTests {
    private let text = "id,first,last\n1,José,Müller\n2,Zoë,Œuvre €\n3,Ann,Lee\n"
    private let expected = [["1", "José", "Müller"], ["2", "Zoë", "Œuvre €"], ["3", "Ann", "Lee"]]

    /// `text` in `encoding`, as Foundation writes it (an independent encoder); Windows-1252 by hand, as this
    /// Foundation has no encoder for it.
    private func encoded(_ text: String, _ encoding: String.Encoding) -> [UInt8] {
        if encoding == .windowsCP1252 {
            return text.unicodeScalars.map { u in
                switch u {
                case "€": 0x80
                case "Œ": 0x8C
                default: UInt8(truncatingIfNeeded: u.value)  // ASCII and Latin-1 letters are the same bytes
                }
            }
        }
        return Array(text.data(using: encoding) ?? Data())
    }

    @Test(arguments: [
        (SourceEncoding.windows1252, String.Encoding.windowsCP1252),
        (.utf16le, .utf16LittleEndian),
        (.utf16be, .utf16BigEndian),
        (.utf16, .utf16),  // with a byte order mark
        (.utf8, .utf8),
    ])
    func aDeclaredEncodingReadsAsTheSameText(encoding: SourceEncoding, foundation: String.Encoding) throws {
        let reader = try CSVRecordReader(path: temporaryFile(encoded(text, foundation)), encoding: encoding)
        #expect(reader.fieldNames == ["id", "first", "last"])
        #expect(rows(try readAll(reader)) == expected)
    }

    @Test func latin1AndLatin9DifferWhereTheyShould() throws {
        let bytes: [UInt8] = Array("id,v\n1,".utf8) + [0xE9, 0xA4] + Array("\n".utf8)
        #expect(rows(try readAll(CSVRecordReader(path: temporaryFile(bytes), encoding: .iso88591))) == [["1", "é¤"]])
        #expect(rows(try readAll(CSVRecordReader(path: temporaryFile(bytes), encoding: .iso885915))) == [["1", "é€"]])
    }

    @Test func theDecoderSurvivesEveryChunkBoundary() {
        for (encoding, foundation) in [(SourceEncoding.utf16le, String.Encoding.utf16LittleEndian), (.utf16be, .utf16BigEndian), (.windows1252, .windowsCP1252)] {
            let sample = encoding == .windows1252 ? "a€bŒcé" : "a€b😀c"  // a surrogate pair in UTF-16
            let input = encoded(sample, foundation)
            for chunk in 1...5 {
                var decoder = StreamDecoder(encoding)
                var out = [UInt8](repeating: 0, count: input.count * 4 + 8)
                var n = 0
                out.withUnsafeMutableBufferPointer { o in
                    input.withUnsafeBytes { p in
                        for from in stride(from: 0, to: p.count, by: chunk) {
                            n += decoder.decode(UnsafeRawBufferPointer(rebasing: p[from..<min(from + chunk, p.count)]), into: o.baseAddress! + n)
                        }
                    }
                    n += decoder.finish(into: o.baseAddress! + n)
                }
                #expect(String(decoding: out[0..<n], as: UTF8.self) == sample, "\(encoding) in chunks of \(chunk)")
            }
        }
    }

    @Test func aByteTheEncodingCannotDecodeIsARejectNamingTheField() throws {
        let bytes: [UInt8] = Array("id,v\n1,ok\n2,".utf8) + [0x81] + Array("\n3,fine\n".utf8)  // 0x81: undefined in Windows-1252
        let results = try readAll(CSVRecordReader(path: temporaryFile(bytes), encoding: .windows1252))
        #expect(rows(results) == [["1", "ok"], ["3", "fine"]])
        guard case .reject(let line, let reason) = results[1] else {
            Issue.record("expected a reject")
            return
        }
        #expect(line == 3 && reason == "bytes that are not windows-1252 in field 2 (column 'v')")
        // "2,<lone high surrogate>\n" in UTF-16LE.
        let lone = encoded("id,v\n", .utf16LittleEndian) + [0x32, 0x00, 0x2C, 0x00, 0x00, 0xD8, 0x0A, 0x00]
        let results16 = try readAll(CSVRecordReader(path: temporaryFile(lone), encoding: .utf16le))
        guard case .reject(_, let reason16) = results16.first else {
            Issue.record("expected a reject, got \(results16)")
            return
        }
        #expect(reason16.contains("not utf-16le"))
    }

    @Test func anUndeclaredWindows1252FileStopsAndNamesTheLikelyEncoding() throws {
        do {
            _ = try readAll(CSVRecordReader(path: temporaryFile(encoded(text, .windowsCP1252))))
            Issue.record("expected an error")
        } catch let e as SourceError {
            #expect(e.line == 2)
            #expect(e.message.contains("field 2 (column 'first') is not UTF-8; its first such bytes read as Windows-1252 'é'"))
            #expect(e.message.contains("`encoding: windows-1252`"))
            #expect(!e.message.contains("José"))  // one character, never the value
        }
    }

    @Test func anUndeclaredUTF16FileStopsAtTheHeader() throws {
        for bytes in [encoded(text, .utf16LittleEndian), encoded(text, .utf16)] {
            do {
                _ = try CSVRecordReader(path: temporaryFile(bytes))
                Issue.record("expected an error")
            } catch let e as SourceError {
                #expect(e.line == 1 && e.message.contains("looks like UTF-16"), "\(e)")
            }
        }
    }

    @Test func utf16WithoutAByteOrderMarkAsksWhichOne() throws {
        #expect(throws: SourceError.self) { try CSVRecordReader(path: temporaryFile(encoded(text, .utf16LittleEndian)), encoding: .utf16) }
    }

    @Test func declaredNamesAndAliases() {
        #expect(SourceEncoding(declared: "Windows-1252") == .windows1252)
        #expect(SourceEncoding(declared: "latin1") == .iso88591)
        #expect(SourceEncoding(declared: "UTF_16LE") == .utf16le)
        #expect(SourceEncoding(declared: "ebcdic") == nil)
    }
}
