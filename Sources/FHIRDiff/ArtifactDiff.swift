import FHIRArtifacts
import FHIRModel

/// How the resources of one type changed between two folders.
public struct TypeChanges: Sendable, Equatable {
    public var added = 0
    public var changed = 0
    public var removed = 0
    public var unchanged = 0

    public init(added: Int = 0, changed: Int = 0, removed: Int = 0, unchanged: Int = 0) {
        self.added = added
        self.changed = changed
        self.removed = removed
        self.unchanged = unchanged
    }
}

/// One element that differs between the old and the new version of a resource; nil: absent on that side.
public struct ElementChange: Sendable, Equatable {
    /// FHIR-style path: `Patient.name[0].given[1]`.
    public var path: String
    public var old: JSONValue?
    public var new: JSONValue?
}

/// A changed resource, element by element.
public struct ResourceChange: Sendable {
    public var identity: String
    public var changes: [ElementChange]
}

/// What changed from one artifact folder to another, by resource identity (the conditional URL each resource is
/// written by) and content.
public struct DiffReport: Sendable {
    public var oldManifestSHA256: String
    public var newManifestSHA256: String
    /// Resource type → counts, for every type on either side.
    public var types: [String: TypeChanges] = [:]
    /// Identities, added and changed in the new folder's upload order, removed in the old one's.
    public var added: [String] = []
    public var changed: [String] = []
    public var removed: [String] = []
    /// Entries of the new folder that no identity names (plain creates): they cannot be compared.
    public var unidentified = 0
    /// The first changed resources, element by element (as many as asked for).
    public var shown: [ResourceChange] = []

    /// Hashes of the added and changed identities: what a delta carries.
    var kept: Set<UInt128> = []
    /// The removed identities with their old step, for deletes in reverse dependency order.
    var removedSteps: [Int] = []

    public var total: TypeChanges {
        types.values.reduce(into: TypeChanges()) { t, c in
            t.added += c.added
            t.changed += c.changed
            t.removed += c.removed
            t.unchanged += c.unchanged
        }
    }
}

/// Compares two artifact folders without holding their resources: the old folder is read once to keep a 128-bit
/// hash of each identity and of each resource's bytes, the new one once against that, and the old one again only for
/// the removed identities (and the old versions of the changed resources shown).
public enum ArtifactDiff {
    public static func compare(old: ArtifactEntries, new: ArtifactEntries, show: Int = 0) throws -> DiffReport {
        // A delta holds only what changed: compared as a wave, everything it leaves out would look removed.
        for side in [old, new] where side.manifest.delta != nil {
            throw ArtifactReadError(file: side.folder + "/manifest.json", message: "a delta folder (written by diff --out): diff compares whole waves, the folders convert or rebundle wrote; compare the two waves this delta was made from")
        }
        func refuseDeletes(_ entry: ArtifactEntry, in side: ArtifactEntries) throws {
            guard entry.method == "DELETE" else { return }
            throw ArtifactReadError(file: side.folder, message: "step \(side.manifest.steps[entry.step].name) deletes \(entry.url): diff compares whole waves, whose entries write resources")
        }
        /// 16 bytes a resource: its content hash (64 bits suffice to tell one resource's two versions apart) and
        /// its type, with the top bit set once the new folder has it.
        struct OldResource {
            var content: UInt64
            var typeAndSeen: UInt32
            var type: Int32 { Int32(typeAndSeen & 0x7FFF_FFFF) }
            var seen: Bool { typeAndSeen & 0x8000_0000 != 0 }
        }
        var typeNames: [String] = []
        var typeIndex: [String: Int32] = [:]
        func typeID(_ name: String) -> Int32 {
            if let i = typeIndex[name] { return i }
            typeIndex[name] = Int32(typeNames.count)
            typeNames.append(name)
            return Int32(typeNames.count - 1)
        }
        let expected = old.manifest.resourceCounts.values.reduce(0, +)
        var olds = HashedKeyMap(empty: OldResource(content: 0, typeAndSeen: 0), capacity: expected * 4 / 3 + 16)
        var removedCount = 0
        try old.forEach { entry in
            try refuseDeletes(entry, in: old)
            guard let identity = entry.identity, let resource = entry.resourceBytes else { return }
            let key = FastHash.hash128(identity)
            if olds[key] == nil {
                olds[key] = OldResource(content: contentHash(resource), typeAndSeen: UInt32(typeID(entry.resourceType ?? "")))
                removedCount += 1
            }
        }
        var report = DiffReport(oldManifestSHA256: old.manifestSHA256, newManifestSHA256: new.manifestSHA256)
        var newOfShown: [UInt128: (index: Int, resource: JSONValue)] = [:]
        try new.forEach { entry in
            try refuseDeletes(entry, in: new)
            guard let resource = entry.resourceBytes else { return }
            guard let identity = entry.identity else {
                report.unidentified += 1
                return
            }
            let key = FastHash.hash128(identity)
            let type = entry.resourceType ?? ""
            guard let previous = olds[key] else {
                // Written twice in the new folder: counted once (validate reports it).
                guard report.kept.insert(key).inserted else { return }
                report.types[type, default: TypeChanges()].added += 1
                report.added.append(identity)
                return
            }
            if previous.seen { return }
            olds[key] = OldResource(content: previous.content, typeAndSeen: previous.typeAndSeen | 0x8000_0000)
            removedCount -= 1
            if previous.content == contentHash(resource) {
                report.types[type, default: TypeChanges()].unchanged += 1
            } else {
                report.types[type, default: TypeChanges()].changed += 1
                report.changed.append(identity)
                report.kept.insert(key)
                if report.shown.count < show, let parsed = entry.resource {
                    newOfShown[key] = (report.shown.count, parsed)
                    report.shown.append(ResourceChange(identity: identity, changes: []))
                }
            }
        }
        guard removedCount > 0 || !newOfShown.isEmpty else { return report }
        var removedSeen: Set<UInt128> = []
        try old.forEach { entry in
            guard entry.method != "DELETE", let identity = entry.identity, entry.resourceBytes != nil else { return }
            let key = FastHash.hash128(identity)
            if let shown = newOfShown[key], let resource = entry.resource {
                report.shown[shown.index].changes = ResourceDiff.changes(from: resource, to: shown.resource)
                newOfShown[key] = nil
            }
            guard let previous = olds[key], !previous.seen, removedSeen.insert(key).inserted else { return }
            report.types[typeNames[Int(previous.type)], default: TypeChanges()].removed += 1
            report.removed.append(identity)
            report.removedSteps.append(entry.step)
        }
        return report
    }

    /// A hash of the resource's compact JSON: equal for the same elements in the same order.
    static func contentHash(_ resource: [UInt8]) -> UInt64 {
        UInt64(truncatingIfNeeded: resource.withUnsafeBufferPointer { FastHash.hash128($0) })
    }
}

/// Element-by-element differences of two versions of a resource.
public enum ResourceDiff {
    public static func changes(from old: JSONValue, to new: JSONValue) -> [ElementChange] {
        var out: [ElementChange] = []
        compare(old, new, path: new["resourceType"]?.stringValue ?? old["resourceType"]?.stringValue ?? "", into: &out)
        return out
    }

    private static func compare(_ old: JSONValue?, _ new: JSONValue?, path: String, into out: inout [ElementChange]) {
        if old == new { return }
        switch (old, new) {
        case (.object(let a)?, .object(let b)?):
            var keys = a.map(\.key)
            for m in b where !keys.contains(m.key) { keys.append(m.key) }
            for key in keys where key != "resourceType" || path.contains(".") {
                compare(a.first { $0.key == key }?.value, b.first { $0.key == key }?.value, path: path + "." + key, into: &out)
            }
        case (.array(let a)?, .array(let b)?):
            for i in 0..<max(a.count, b.count) {
                compare(i < a.count ? a[i] : nil, i < b.count ? b[i] : nil, path: path + "[\(i)]", into: &out)
            }
        default:
            out.append(ElementChange(path: path, old: old, new: new))
        }
    }
}
