import FHIRModel

#if canImport(Glibc)
import Glibc
#endif

/// One entry of a bundle file, read with the validator's tokenizer instead of building JSON values: `diff` and its
/// delta read every entry of two folders.
public struct ScannedEntry: Sendable {
    public var method: String
    public var url: String
    public var fullUrl: String?
    public var ifNoneExist: String?
    public var resourceType: String?
    /// The resource as compact JSON (the file's own bytes when they are compact, as fhirbundle writes bundles by
    /// default; re-serialised from an indented file); nil for an entry without one (a delete).
    public var resource: [UInt8]?
    /// Entries that must land together share it: those of one inner transaction (`POST /` in a batch), or of one
    /// transaction bundle. Numbered from the caller's counter, one up per group.
    public var group: Int
}

/// Reads the entries of bundle files in order, inner transactions' entries in place of the batch entry holding them.
public struct BundleEntryScan {
    private var tape = JSONTape()
    /// The last group number given out.
    public private(set) var group = 0

    public init() {}

    /// Why a bundle file cannot be read.
    public struct Failure: Error, CustomStringConvertible {
        public let file: String
        public let message: String
        public var description: String { "\(file): \(message)" }
    }

    public mutating func forEachEntry(inFile path: String, _ body: (ScannedEntry) throws -> Void) throws {
        switch tape.read(path) {
        case .read: break
        case .unreadable: throw Failure(file: path, message: "cannot be read; run fhirbundle validate on the folder")
        case .tooLarge(let size): throw Failure(file: path, message: "is \(size) bytes, more than a bundle file may have; run fhirbundle validate on the folder")
        }
        guard tape.parse(), tape.kind(0) == .object else { throw Failure(file: path, message: "is not a JSON object; run fhirbundle validate on the folder") }
        let isTransaction = tape.member(0, "type").map { tape.equals($0, "transaction") } ?? false
        if isTransaction { group += 1 }
        guard let entries = tape.member(0, "entry"), tape.kind(entries) == .array else { return }
        var list: [Int] = []
        tape.forEachItem(entries) { _, e in list.append(e) }
        for e in list {
            let request = tape.member(e, "request")
            let method = request.flatMap { tape.member($0, "method") }.flatMap { tape.string($0) } ?? ""
            let url = request.flatMap { tape.member($0, "url") }.flatMap { tape.string($0) } ?? ""
            let resource = tape.member(e, "resource")
            if !isTransaction, method == "POST", url == "/", let inner = resource,
               let type = tape.member(inner, "type"), tape.equals(type, "transaction"), let innerEntries = tape.member(inner, "entry") {
                group += 1
                var items: [Int] = []
                tape.forEachItem(innerEntries) { _, item in items.append(item) }
                for item in items { try body(entry(item, group: group)) }
                continue
            }
            if !isTransaction { group += 1 }
            try body(entry(e, group: group))
        }
    }

    private func entry(_ e: Int, group: Int) -> ScannedEntry {
        let request = tape.member(e, "request")
        func requestMember(_ key: StaticString) -> String? { request.flatMap { tape.member($0, key) }.flatMap { tape.string($0) } }
        var scanned = ScannedEntry(method: requestMember("method") ?? "", url: requestMember("url") ?? "",
                                   fullUrl: tape.member(e, "fullUrl").flatMap { tape.string($0) }, ifNoneExist: requestMember("ifNoneExist"),
                                   resourceType: nil, resource: nil, group: group)
        if let r = tape.member(e, "resource"), tape.kind(r) == .object {
            scanned.resourceType = tape.member(r, "resourceType").flatMap { tape.string($0) }
            scanned.resource = compactBytes(r)
        }
        return scanned
    }

    /// The value's bytes when they hold no line break (compact JSON has none: a string's line break is escaped),
    /// else the value parsed and written compactly.
    private func compactBytes(_ i: Int) -> [UInt8] {
        let range = tape.start(i)..<tape.end(i)
        return tape.bytes.withUnsafeBufferPointer { p in
            let raw = UnsafeBufferPointer(rebasing: p[range])
            if memchr(raw.baseAddress!, 0x0A, raw.count) == nil { return Array(raw) }
            return (try? JSONParser.parse(raw)).map { JSONWriter().bytes($0) } ?? Array(raw)
        }
    }
}
