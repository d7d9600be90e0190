import FHIRModel
import FHIRSources

/// Why a row did not become resources. The message names columns and elements, never cell values; `value` holds
/// the offending value for the rejects file only.
public struct RowFailure: Error, Sendable, Equatable {
    public var message: String
    public var value: String?

    public init(_ message: String, value: String? = nil) {
        self.message = message
        self.value = value
    }
}

/// What the conversion does with a row: write the resources it produced, or file a reject with this key (the first
/// resource's identifier value, when it can be computed) and identities (see `StepEvaluator.identities`).
public enum RowOutcome: Sendable, Equatable {
    /// The row's resources were rendered.
    case produced
    case failed(RowFailure, rejectKey: String?, identities: [String])
    /// The `$if` of every resource of the step is false.
    case filtered(rejectKey: String?)
}

/// One resource produced from a row, as compact JSON bytes, with what bundling needs: its conditional URL and
/// `urn:uuid:` full URL, each in arrays of its own: for callers that keep a row's resources (tests, tools). The
/// conversion reads them in place from `RowResources` instead.
public final class ProducedResource: Sendable {
    /// Index of the template in its step.
    public let member: Int
    public let resourceType: String
    public let identifierSystem: String
    public let identifierValue: String
    /// The resource in bundle form (`urn:uuid:` references to other members of its group), compact JSON.
    public let bytes: [UInt8]
    /// The NDJSON form when it differs: `urn:uuid:` references replaced by conditional references.
    public let ndjsonBytes: [UInt8]?
    /// `Type?identifier=system|value`, the URL of the conditional update.
    public let conditionalURL: String
    /// `urn:uuid:` derived from type and identifier (stable across runs); empty in batch steps, which do not use it.
    public let fullUrl: String

    init(member: Int, resourceType: String, identifierSystem: String, identifierValue: String, bytes: [UInt8],
         ndjsonBytes: [UInt8]?, conditionalURL: String, fullUrl: String) {
        self.member = member
        self.resourceType = resourceType
        self.identifierSystem = identifierSystem
        self.identifierValue = identifierValue
        self.bytes = bytes
        self.ndjsonBytes = ndjsonBytes
        self.conditionalURL = conditionalURL
        self.fullUrl = fullUrl
    }

    /// The resource as a JSON value (parsed back from `bytes`; for tests and indented output).
    public var json: JSONValue { (try? JSONParser.parse(bytes)) ?? .null }
}

/// The resources of one row, rendered into one buffer that the conversion reuses from row to row.
public final class RowResources {
    /// One produced resource: its member, identity, and where its two forms lie in the buffer.
    public struct Resource: Sendable {
        /// Index of the template in its step.
        public let member: Int
        public let identifierValue: String
        /// `Type?identifier=system|value`, the URL of the conditional update.
        public let conditionalURL: String
        /// `FastHash.hash128` of `conditionalURL`: what the conversion's duplicate check keys on, worked out where the
        /// row is evaluated (a worker thread, in a parallel conversion).
        public let conditionalURLHash: UInt128
        /// `urn:uuid:` derived from type and identifier; empty in batch steps, which do not use it.
        public let fullUrl: String
        public internal(set) var bundleForm: Range<Int>
        public internal(set) var ndjsonForm: Range<Int>
    }

    // Used by one thread at a time, for every row: the state skips the runtime exclusivity checks.
    /// The row's resources, in template order (members whose `$if` is false are left out).
    @exclusivity(unchecked) public internal(set) var resources: [Resource] = []
    @exclusivity(unchecked) var buffer = RenderBuffer()
    @exclusivity(unchecked) var scratch = RenderBuffer(capacity: 1024)
    @exclusivity(unchecked) var urns: [String?] = []
    @exclusivity(unchecked) var conditionalURLs: [String?] = []

    public init() {}

    deinit {
        buffer.free()
        scratch.free()
    }

    func reset() {
        resources.removeAll(keepingCapacity: true)
        buffer.count = 0
    }

    /// Resource `i` in bundle form (`urn:uuid:` references to other members of its group), compact JSON; the bytes
    /// are valid during the call only.
    public func withBundleForm<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let r = resources[i].bundleForm
        return try body(UnsafeBufferPointer(start: buffer.base + r.lowerBound, count: r.count))
    }

    /// Resource `i` in NDJSON form (conditional references instead of `urn:uuid:`; usually the bundle form).
    public func withNDJSONForm<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        let r = resources[i].ndjsonForm
        return try body(UnsafeBufferPointer(start: buffer.base + r.lowerBound, count: r.count))
    }

    /// The row's resources, read in place (valid during the call only).
    public func withRow<R>(_ body: (RenderedRow) throws -> R) rethrows -> R {
        try body(RenderedRow(resources: resources[...], bytes: UnsafeBufferPointer(start: buffer.base, count: buffer.count)))
    }
}

/// The resources of one row where they were rendered, a `RowResources` or a `RenderedRows` batch: what the
/// conversion checks, bundles and writes, whichever thread evaluated the row. Valid while its storage is.
public struct RenderedRow {
    public let resources: ArraySlice<RowResources.Resource>
    let bytes: UnsafeBufferPointer<UInt8>

    public var count: Int { resources.count }

    /// Resource `i` (from 0) in bundle form, compact JSON.
    public func bundleForm(_ i: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: bytes[resources[resources.startIndex + i].bundleForm])
    }

    /// Resource `i` (from 0) in NDJSON form.
    public func ndjsonForm(_ i: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: bytes[resources[resources.startIndex + i].ndjsonForm])
    }
}

/// The rendered resources of many rows, copied out of a worker's `RowResources` so that they can travel to the
/// thread that writes them: one array of resources and one of bytes per batch, not one per row.
public struct RenderedRows: Sendable {
    private var resources: [RowResources.Resource] = []
    private var bytes: [UInt8] = []

    public init() {}

    /// Copies the row last evaluated into `row`; returns its resources' positions in this batch.
    public mutating func append(_ row: RowResources) -> Range<Int> {
        let first = resources.count
        let offset = bytes.count
        bytes.append(contentsOf: UnsafeBufferPointer(start: row.buffer.base, count: row.buffer.count))
        for var r in row.resources {
            r.bundleForm = (r.bundleForm.lowerBound + offset)..<(r.bundleForm.upperBound + offset)
            r.ndjsonForm = (r.ndjsonForm.lowerBound + offset)..<(r.ndjsonForm.upperBound + offset)
            resources.append(r)
        }
        return first..<resources.count
    }

    /// Calls `body` with a way to read each appended row in place (valid during the call only).
    public func withRows<R>(_ body: ((Range<Int>) -> RenderedRow) throws -> R) rethrows -> R {
        try bytes.withUnsafeBufferPointer { all in
            try body { range in RenderedRow(resources: resources[range], bytes: all) }
        }
    }
}
