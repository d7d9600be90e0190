#if canImport(Glibc)
import Glibc
#endif

/// Counts the attributes of each start tag in the bytes handed to libxml2, before it parses them, and says when
/// one has more than `limit`.
///
/// Why: libxml2 appends each attribute to the end of its element's list (and checks duplicates pairwise), so its
/// time grows with the square of the count: 50,000 attributes on one element took 32 s. No real export comes close
/// to the limit; a file that does is refused in linear time instead. The scan is a small state machine that survives
/// chunk boundaries; text is skipped with `memchr`.
struct XMLAttributeCounter {
    static let defaultLimit = 10_000

    let limit: Int
    private enum State {
        case text, afterOpen, startTag, quoted(UInt8), endTag, bang, comment(dashes: Int), cdata(brackets: Int), instruction(question: Bool)
    }
    private var state = State.text
    private var attributes = 0
    private var offset = 0
    /// Byte offset of the start tag being scanned.
    private var tagStart = 0

    init(limit: Int = Self.defaultLimit) {
        self.limit = limit
    }

    private var carry: UInt8?
    private var projection: [UInt8] = []

    /// `scan` for UTF-16: each code unit counts as its ASCII character (or a letter, for any other), so that the
    /// bytes of other characters are never taken for markup. The offset returned counts code units.
    mutating func scanUTF16(_ bytes: UnsafeRawBufferPointer, littleEndian: Bool) -> Int? {
        projection.removeAll(keepingCapacity: true)
        var k = 0
        func unit(_ a: UInt8, _ b: UInt8) -> UInt8 {
            let u = littleEndian ? UInt16(a) | UInt16(b) << 8 : UInt16(a) << 8 | UInt16(b)
            return u < 0x80 ? UInt8(u) : UInt8(ascii: "x")
        }
        if let first = carry, bytes.count > 0 {
            projection.append(unit(first, bytes[0]))
            carry = nil
            k = 1
        }
        while k + 1 < bytes.count {
            projection.append(unit(bytes[k], bytes[k + 1]))
            k += 2
        }
        if k < bytes.count { carry = bytes[k] }
        return projection.withUnsafeBytes { scan($0) }
    }

    /// Scans the next bytes of the file; returns the byte offset of the first start tag with too many attributes.
    mutating func scan(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
        let n = bytes.count
        var i = 0
        defer { offset += n }
        while i < n {
            switch state {
            case .text:
                guard let found = memchr(base + i, 0x3C, n - i) else { return nil }  // '<'
                i = UnsafeRawPointer(found).assumingMemoryBound(to: UInt8.self) - base + 1
                tagStart = offset + i - 1
                state = .afterOpen
                continue
            case .afterOpen:
                switch base[i] {
                case 0x21: state = .bang  // '!'
                case 0x3F: state = .instruction(question: false)  // '?'
                case 0x2F: state = .endTag  // '/'
                default:
                    attributes = 0
                    state = .startTag
                    continue  // the byte is the name's first
                }
            case .startTag:
                switch base[i] {
                case 0x22, 0x27: state = .quoted(base[i])
                case 0x3D:  // '='
                    attributes += 1
                    if attributes > limit { return tagStart }
                case 0x3E: state = .text  // '>'
                default: break
                }
            case .quoted(let quote):
                guard let found = memchr(base + i, Int32(quote), n - i) else { return nil }
                i = UnsafeRawPointer(found).assumingMemoryBound(to: UInt8.self) - base
                state = .startTag
            case .endTag:
                if base[i] == 0x3E { state = .text }
            case .bang:
                // `<!--` opens a comment, `<![CDATA[` a CDATA section; anything else (a declaration) ends at '>'.
                switch base[i] {
                case 0x2D: state = .comment(dashes: 0)
                case 0x5B: state = .cdata(brackets: 0)
                default: state = .endTag
                }
            case .comment(let dashes):
                let b = base[i]
                if b == 0x3E && dashes >= 2 { state = .text } else { state = .comment(dashes: b == 0x2D ? dashes + 1 : 0) }
            case .cdata(let brackets):
                let b = base[i]
                if b == 0x3E && brackets >= 2 { state = .text } else { state = .cdata(brackets: b == 0x5D ? brackets + 1 : 0) }
            case .instruction(let question):
                let b = base[i]
                if b == 0x3E && question { state = .text } else { state = .instruction(question: b == 0x3F) }
            }
            i += 1
        }
        return nil
    }
}
