import FHIRModel

/// One write in an upload plan: a resource and its conditional update.
public struct PlannedEntry: Sendable {
    /// The resource serialised compactly, spliced into one-line entries unchanged.
    public let compactResource: [UInt8]
    /// `Type?identifier=system|value`.
    public let url: String
    /// `urn:uuid:...`, written in transactions where other entries may point at it.
    public let fullUrl: String

    public init(compactResource: [UInt8], url: String, fullUrl: String) {
        self.compactResource = compactResource
        self.url = url
        self.fullUrl = fullUrl
    }
}

/// The entries of one group (one source row's resources), as the assembler reads them: entries of a producer that
/// keeps its resources in its own buffer are written into the bundle without being copied into arrays first.
public protocol EntryGroup {
    var entryCount: Int { get }
    /// Calls `body` with entry `i`: its compact resource bytes (valid during the call), conditional URL and full URL.
    func withEntry<R>(_ i: Int, _ body: (_ resource: UnsafeBufferPointer<UInt8>, _ url: String, _ fullUrl: String) throws -> R) rethrows -> R
}

extension Array: EntryGroup where Element == PlannedEntry {
    public var entryCount: Int { count }

    public func withEntry<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>, String, String) throws -> R) rethrows -> R {
        let entry = self[i]
        return try entry.compactResource.withUnsafeBufferPointer { try body($0, entry.url, entry.fullUrl) }
    }
}

/// How a step's groups are packed into bundles.
public enum BundlePacking: String, Sendable {
    case batch
    case transaction
    case batchOfTransactions = "batch-of-transactions"
}

/// A group that cannot be packed (too many entries or too many bytes for one bundle).
public struct GroupTooLarge: Error, Sendable {
    public let message: String
}

/// How bundle files are laid out.
public enum BundleLayout: String, Sendable {
    /// One entry per line, compact: a diff of two runs shows one line per changed resource, at NDJSON's size.
    case entryPerLine = "lines"
    /// Indented JSON, easiest to read, about three times larger.
    case pretty
}

/// Packs the groups of one step into bundle files under the limits, in arrival order.
///
/// Each entry is serialised once, at its final depth, so the size of a bundle is known exactly before it is
/// written: no bundle is ever over `bundleBytes`, and the same groups always give the same files.
public final class BundleAssembler {
    public let packing: BundlePacking
    public let limits: BundleLimits
    public let layout: BundleLayout
    private let writer: JSONWriter
    /// Called with each finished bundle's bytes.
    private let emit: ([UInt8]) throws -> Void
    /// The bundle being filled: its header and the entries so far (the footer is added when it is written).
    // Used by one thread at a time; the per-entry state skips the runtime exclusivity checks.
    @exclusivity(unchecked) private var body: [UInt8] = []
    @exclusivity(unchecked) private var entryCount = 0
    @exclusivity(unchecked) private var entryBytes = 0
    @exclusivity(unchecked) public private(set) var bundleCount = 0

    /// Creates an assembler; `emit` receives each complete bundle file.
    public init(packing: BundlePacking, limits: BundleLimits, layout: BundleLayout = .entryPerLine, emit: @escaping ([UInt8]) throws -> Void) {
        self.packing = packing
        self.limits = limits
        self.layout = layout
        writer = JSONWriter(indent: layout == .pretty ? 2 : nil)
        self.emit = emit
        frameBytes = frame(header: true).count + frame(header: false).count
        body = frame(header: true)
    }

    private var bundleType: String { packing == .transaction ? "transaction" : "batch" }

    /// Bytes of the bundle around its entries.
    @exclusivity(unchecked) private var frameBytes = 0

    private func frame(header: Bool) -> [UInt8] {
        switch (layout, header) {
        case (.pretty, true): return Array("{\n  \"resourceType\": \"Bundle\",\n  \"type\": \"\(bundleType)\",\n  \"entry\": [".utf8)
        case (.pretty, false): return Array("\n  ]\n}\n".utf8)
        case (.entryPerLine, true): return Array("{\"resourceType\":\"Bundle\",\"type\":\"\(bundleType)\",\"entry\":[".utf8)
        case (.entryPerLine, false): return Array("\n]}\n".utf8)
        }
    }

    /// The most entries one transaction may hold, given whether it has conditional operations.
    private func transactionCap(conditional: Bool) -> Int {
        min(limits.transactionEntries, conditional ? limits.conditionalTransactionEntries : limits.transactionEntries, limits.transactionUpdates)
    }

    /// Adds one group (one source row's resources). Throws `GroupTooLarge` when the group alone breaks a limit.
    public func add(group: some EntryGroup) throws {
        let count = group.entryCount
        guard count > 0 else { return }
        let conditional = (0..<count).contains { i in group.withEntry(i) { _, url, _ in url.utf8.contains(UInt8(ascii: "?")) } }
        switch packing {
        case .batch:
            for i in 0..<count {
                try append(count: 1, cap: limits.batchEntries) { out in
                    separate(&out, first: true)
                    group.withEntry(i) { resource, url, _ in writeEntry(resource, url: url, fullUrl: nil, into: &out) }
                }
            }
        case .transaction:
            let cap = transactionCap(conditional: conditional)
            guard count <= cap else { throw GroupTooLarge(message: transactionTooLarge(count, cap, conditional)) }
            try append(count: count, cap: cap) { out in
                for i in 0..<count {
                    separate(&out, first: i == 0)
                    group.withEntry(i) { writeEntry($0, url: $1, fullUrl: $2, into: &out) }
                }
            }
        case .batchOfTransactions:
            let cap = transactionCap(conditional: conditional)
            guard count <= cap else { throw GroupTooLarge(message: transactionTooLarge(count, cap, conditional)) }
            try append(count: 1, cap: limits.batchEntries) { out in
                separate(&out, first: true)
                writeInnerTransaction(group, into: &out)
            }
        }
    }

    private func transactionTooLarge(_ count: Int, _ cap: Int, _ conditional: Bool) -> String {
        "the group has \(count) entries, more than one transaction may hold (\(cap)\(conditional ? " with conditional updates" : ""))"
    }

    /// The separator before an entry of the open bundle: a comma unless it is the bundle's first, a line break and
    /// (pretty) the entry's indentation.
    private func separate(_ out: inout [UInt8], first: Bool) {
        if entryCount > 0 || !first { out.append(UInt8(ascii: ",")) }
        out.append(UInt8(ascii: "\n"))
        if layout == .pretty { out.append(contentsOf: [0x20, 0x20, 0x20, 0x20]) }
    }

    private static let innerTransactionHead = Array(#"{"resource":{"resourceType":"Bundle","type":"transaction","entry":["#.utf8)
    private static let innerTransactionTail = Array(#"]},"request":{"method":"POST","url":"/"}}"#.utf8)
    private static let fullUrlHead = Array(#"{"fullUrl":"#.utf8)
    private static let resourceHead = Array(#""resource":"#.utf8)
    private static let requestHead = Array(#","request":{"method":"PUT","url":"#.utf8)

    /// One entry (with `fullUrl` in transactions): spliced from the compact resource for one-line layout,
    /// serialised for pretty layout.
    private func writeEntry(_ resource: UnsafeBufferPointer<UInt8>, url: String, fullUrl: String?, into out: inout [UInt8]) {
        if layout == .pretty {
            out.append(contentsOf: serialise(entryValue(resource, url: url, fullUrl: fullUrl)))
            return
        }
        if let fullUrl {
            out.append(contentsOf: BundleAssembler.fullUrlHead)
            JSONWriter.writeString(fullUrl, into: &out)
            out.append(UInt8(ascii: ","))
        } else {
            out.append(UInt8(ascii: "{"))
        }
        out.append(contentsOf: BundleAssembler.resourceHead)
        out.append(contentsOf: resource)
        out.append(contentsOf: BundleAssembler.requestHead)
        JSONWriter.writeString(url, into: &out)
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "}"))
    }

    /// A batch entry holding the group as an inner transaction (`POST /`).
    private func writeInnerTransaction(_ group: some EntryGroup, into out: inout [UInt8]) {
        if layout == .pretty {
            let inner = JSONValue.object([
                JSONMember("resource", .object([
                    JSONMember("resourceType", .string("Bundle")),
                    JSONMember("type", .string("transaction")),
                    JSONMember("entry", .array((0..<group.entryCount).map { i in group.withEntry(i) { entryValue($0, url: $1, fullUrl: $2) } })),
                ])),
                JSONMember("request", .object([JSONMember("method", .string("POST")), JSONMember("url", .string("/"))])),
            ])
            out.append(contentsOf: serialise(inner))
            return
        }
        out.append(contentsOf: BundleAssembler.innerTransactionHead)
        for i in 0..<group.entryCount {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            group.withEntry(i) { writeEntry($0, url: $1, fullUrl: $2, into: &out) }
        }
        out.append(contentsOf: BundleAssembler.innerTransactionTail)
    }

    /// Writes the last, partly filled bundle.
    public func finish() throws {
        try flush()
    }

    /// A Bundle.entry in FHIR element order: fullUrl, resource, request.
    private func entryValue(_ resource: UnsafeBufferPointer<UInt8>, url: String, fullUrl: String?) -> JSONValue {
        var members: [JSONMember] = []
        if let fullUrl { members.append(JSONMember("fullUrl", .string(fullUrl))) }
        // Indented layout only: the compact bytes are our own output, so they parse.
        members.append(JSONMember("resource", (try? JSONParser.parse(Array(resource))) ?? .null))
        members.append(JSONMember("request", .object([JSONMember("method", .string("PUT")), JSONMember("url", .string(url))])))
        return .object(members)
    }

    private func serialise(_ value: JSONValue) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        writer.write(value, into: &out, level: 2)
        return out
    }

    /// Adds entries that must share one bundle: `write` puts them, with their separators, straight into the open
    /// bundle; then the limits apply. A group too large for any bundle is taken out again and refused; one that does
    /// not fit the open bundle moves to a new one. Sizes count every entry with its full separator, so that a group's
    /// size does not depend on where it lands.
    private func append(count: Int, cap: Int, _ write: (inout [UInt8]) -> Void) throws {
        let mark = body.count
        let wasEmpty = entryCount == 0
        write(&body)
        let groupBytes = body.count - mark + (wasEmpty ? 1 : 0)
        guard frameBytes + groupBytes <= limits.bundleBytes else {
            body.removeLast(body.count - mark)
            throw GroupTooLarge(message: "the group needs \(frameBytes + groupBytes) bytes, more than one bundle may hold (\(limits.bundleBytes))")
        }
        if !wasEmpty && (entryCount + count > cap || frameBytes + entryBytes + groupBytes > limits.bundleBytes) {
            let moved = Array(body[(mark + 1)...])  // without the comma: it opens the next bundle
            body.removeLast(body.count - mark)
            try flush()
            body.append(contentsOf: moved)
        }
        entryCount += count
        entryBytes += groupBytes
    }

    private func flush() throws {
        guard entryCount > 0 else { return }
        body.append(contentsOf: frame(header: false))
        bundleCount += 1
        try emit(body)
        body.removeAll(keepingCapacity: true)
        body.append(contentsOf: frame(header: true))
        entryCount = 0
        entryBytes = 0
    }
}
