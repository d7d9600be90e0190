/// The character encodings a source file may declare (`encoding:` in the mapping). Artifacts are always UTF-8.
public enum SourceEncoding: String, Sendable, CaseIterable {
    case utf8 = "utf-8"
    /// Excel's and many Windows exports' default in Europe and the Americas.
    case windows1252 = "windows-1252"
    case iso88591 = "iso-8859-1"
    case iso885915 = "iso-8859-15"
    case utf16le = "utf-16le"
    case utf16be = "utf-16be"
    /// UTF-16 with a byte order mark saying which of the two.
    case utf16 = "utf-16"

    /// Parses a declared name, case-insensitively, with the usual aliases (`latin1`, `cp1252`, `utf8`).
    public init?(declared name: String) {
        let n = name.lowercased().replacingOccurrences(of: "_", with: "-")
        switch n {
        case "utf-8", "utf8": self = .utf8
        case "windows-1252", "cp1252", "cp-1252": self = .windows1252
        case "iso-8859-1", "latin1", "latin-1", "iso8859-1": self = .iso88591
        case "iso-8859-15", "latin9", "latin-9", "iso8859-15": self = .iso885915
        case "utf-16le", "utf16le": self = .utf16le
        case "utf-16be", "utf16be": self = .utf16be
        case "utf-16", "utf16": self = .utf16
        default: return nil
        }
    }

    /// The most bytes of UTF-8 one input byte can become (sizes the decoding buffer).
    var maxExpansion: Int {
        switch self {
        case .utf8: return 1
        case .windows1252, .iso88591, .iso885915: return 3  // € is 3 bytes of UTF-8
        case .utf16le, .utf16be, .utf16: return 2  // 2 bytes → at most 3 (BMP), 4 bytes → 4
        }
    }
}

/// Decodes a source's bytes into UTF-8 as they are read, across chunk boundaries. A byte (or code unit) the
/// encoding cannot decode becomes the byte 0xFF, which is never UTF-8: the row that holds it is then rejected by
/// the reader's UTF-8 check, naming its line and column, as for a UTF-8 file.
struct StreamDecoder {
    let encoding: SourceEncoding
    private var littleEndian: Bool?
    /// An odd byte of UTF-16 left at the end of the previous chunk.
    private var carry: UInt8?
    /// A high surrogate waiting for its low half.
    private var highSurrogate: UInt32?
    /// True until the first bytes are seen (for the byte order mark of `utf-16`).
    private var atStart = true
    /// For `utf-16`: set when the file does not start with a byte order mark.
    private(set) var missingByteOrderMark = false

    static let invalid: UInt8 = 0xFF

    init(_ encoding: SourceEncoding) {
        self.encoding = encoding
        switch encoding {
        case .utf16le: littleEndian = true
        case .utf16be: littleEndian = false
        default: littleEndian = nil
        }
    }

    /// Decodes `input` into `out` (room for `input.count * maxExpansion + 4` bytes); returns the bytes written.
    mutating func decode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Int {
        switch encoding {
        case .utf8:
            input.copyBytes(to: UnsafeMutableRawBufferPointer(start: out, count: input.count))
            return input.count
        case .windows1252, .iso88591, .iso885915:
            return decodeSingleByte(input, into: out)
        case .utf16le, .utf16be, .utf16:
            return decodeUTF16(input, into: out)
        }
    }

    /// At the end of the file: what is still pending (half a code unit, a lone surrogate) is invalid.
    mutating func finish(into out: UnsafeMutablePointer<UInt8>) -> Int {
        var n = 0
        if carry != nil { out[n] = Self.invalid; n += 1; carry = nil }
        if highSurrogate != nil { out[n] = Self.invalid; n += 1; highSurrogate = nil }
        return n
    }

    private func decodeSingleByte(_ input: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Int {
        let table: [UInt32]
        switch encoding {
        case .windows1252: table = Self.windows1252High
        case .iso885915: table = Self.iso885915High
        default: table = Self.latin1High
        }
        var n = 0
        return table.withUnsafeBufferPointer { high in
            for byte in input {
                if byte < 0x80 {
                    out[n] = byte
                    n += 1
                } else {
                    n += Self.writeUTF8(high[Int(byte) - 0x80], into: out + n)
                }
            }
            return n
        }
    }

    private mutating func decodeUTF16(_ input: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt8>) -> Int {
        var n = 0
        var i = 0
        let count = input.count
        func byte(_ k: Int) -> UInt8 { input[k] }
        if atStart && count > 0 {
            atStart = false
            if encoding == .utf16 {
                if count >= 2 && byte(0) == 0xFF && byte(1) == 0xFE {
                    littleEndian = true
                    i = 2
                } else if count >= 2 && byte(0) == 0xFE && byte(1) == 0xFF {
                    littleEndian = false
                    i = 2
                } else {
                    missingByteOrderMark = true
                    littleEndian = true
                }
            }
        }
        let little = littleEndian ?? true
        while true {
            var unit: UInt32
            if let first = carry {
                guard i < count else { break }
                unit = little ? UInt32(first) | UInt32(byte(i)) << 8 : UInt32(first) << 8 | UInt32(byte(i))
                carry = nil
                i += 1
            } else {
                guard i + 1 < count else {
                    if i < count { carry = byte(i) }
                    break
                }
                unit = little ? UInt32(byte(i)) | UInt32(byte(i + 1)) << 8 : UInt32(byte(i)) << 8 | UInt32(byte(i + 1))
                i += 2
            }
            if let high = highSurrogate {
                highSurrogate = nil
                if unit >= 0xDC00 && unit <= 0xDFFF {
                    n += Self.writeUTF8(0x10000 + ((high - 0xD800) << 10) + (unit - 0xDC00), into: out + n)
                    continue
                }
                out[n] = Self.invalid  // the high surrogate had no low half
                n += 1
            }
            if unit >= 0xD800 && unit <= 0xDBFF {
                highSurrogate = unit
            } else if unit >= 0xDC00 && unit <= 0xDFFF {
                out[n] = Self.invalid
                n += 1
            } else if unit < 0x80 {
                out[n] = UInt8(unit)
                n += 1
            } else {
                n += Self.writeUTF8(unit, into: out + n)
            }
        }
        return n
    }

    /// Writes `scalar` as UTF-8 (the invalid byte for `undefined`); returns the bytes written.
    private static func writeUTF8(_ scalar: UInt32, into out: UnsafeMutablePointer<UInt8>) -> Int {
        switch scalar {
        case undefined:
            out[0] = invalid
            return 1
        case ..<0x80:
            out[0] = UInt8(scalar)
            return 1
        case ..<0x800:
            out[0] = UInt8(0xC0 | scalar >> 6)
            out[1] = UInt8(0x80 | scalar & 0x3F)
            return 2
        case ..<0x10000:
            out[0] = UInt8(0xE0 | scalar >> 12)
            out[1] = UInt8(0x80 | scalar >> 6 & 0x3F)
            out[2] = UInt8(0x80 | scalar & 0x3F)
            return 3
        default:
            out[0] = UInt8(0xF0 | scalar >> 18)
            out[1] = UInt8(0x80 | scalar >> 12 & 0x3F)
            out[2] = UInt8(0x80 | scalar >> 6 & 0x3F)
            out[3] = UInt8(0x80 | scalar & 0x3F)
            return 4
        }
    }

    private static let undefined: UInt32 = 0xFFFF_FFFF

    /// Bytes 0x80-0xFF of ISO-8859-1: the same code points.
    private static let latin1High: [UInt32] = (0x80...0xFF).map { UInt32($0) }

    /// Bytes 0x80-0xFF of Windows-1252 (the WHATWG table); five bytes are undefined.
    static let windows1252High: [UInt32] = {
        let low: [UInt32] = [
            0x20AC, undefined, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, undefined, 0x017D, undefined,
            undefined, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, undefined, 0x017E, 0x0178,
        ]
        return low + (0xA0...0xFF).map { UInt32($0) }
    }()

    /// ISO-8859-15: Latin-1 with eight letters and the euro sign in place of rarely used symbols.
    private static let iso885915High: [UInt32] = {
        var table = latin1High
        for (byte, scalar) in [(0xA4, 0x20AC), (0xA6, 0x0160), (0xA8, 0x0161), (0xB4, 0x017D), (0xB8, 0x017E), (0xBC, 0x0152), (0xBD, 0x0153), (0xBE, 0x0178)] {
            table[byte - 0x80] = UInt32(scalar)
        }
        return table
    }()

    /// What bytes that are not UTF-8 most likely are, for the error that asks to declare the encoding: the first
    /// non-ASCII character as Windows-1252 would read it (one character, not the value: it may be health data).
    static func guess(_ bytes: UnsafeBufferPointer<UInt8>) -> (encoding: SourceEncoding, character: String)? {
        let zeros = bytes.lazy.filter { $0 == 0 }.count
        if bytes.count >= 4 && zeros * 3 >= bytes.count { return (.utf16le, "") }  // ASCII text as UTF-16
        guard let byte = bytes.first(where: { $0 >= 0x80 }) else { return nil }
        let scalar = windows1252High[Int(byte) - 0x80]
        guard scalar != undefined, let u = Unicode.Scalar(scalar) else { return nil }
        return (.windows1252, String(Character(u)))
    }
}
