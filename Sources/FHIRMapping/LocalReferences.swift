import FHIRModel
import FHIRSources

#if canImport(Glibc)
import Glibc
#endif

/// The NDJSON form of a resource whose template uses `uuid(...)`: NDJSON has no transaction to resolve `urn:uuid:`
/// references, so they become conditional references.
enum LocalReferences {
    /// Whether every `uuid(...)` of `node` is a whole string leaf (`"{{ uuid('encounter') }}"`): the urn then appears
    /// in the rendered bytes only as a complete JSON string, and swapping it there gives exactly what rendering again
    /// with conditional references would. Any other use (in text, a condition, a function) needs the second render.
    static func onlyWholeLeaves(_ node: TemplateNode) -> Bool {
        switch node {
        case .literal: return true
        case .leaf(let leaf):
            if leaf.parts.count == 1, case .expression(.call(.uuid, _)) = leaf.parts[0] { return leaf.kind == .string }
            return !leaf.parts.contains { if case .expression(let e) = $0 { return usesUUID(e) } else { return false } }
        case .object(let members, let condition):
            return !(condition.map(usesUUID) ?? false) && members.allSatisfy { onlyWholeLeaves($0.node) }
        case .array(let items):
            return items.allSatisfy { item in
                switch item {
                case .node(let n): return onlyWholeLeaves(n)
                case .each(let list, _, let body): return !usesUUID(list) && onlyWholeLeaves(body)
                }
            }
        }
    }

    private static func usesUUID(_ e: CompiledExpression) -> Bool {
        switch e {
        case .call(.uuid, _): return true
        case .call(_, let args): return args.contains(where: usesUUID)
        case .field(let base, _, _): return usesUUID(base)
        case .lookup(_, let keys): return keys.contains(where: usesUUID)
        case .literal, .column, .alias: return false
        }
    }

    /// Writes `p` into `out` with each JSON string `"urn:uuid:…"` that is a member's urn replaced by that member's
    /// conditional URL. Urns are name-based UUIDs of type and identifier, so no other string of a resource holds one.
    static func swap(in p: UnsafeBufferPointer<UInt8>, urns: [String?], conditionalURLs: [String?], into out: inout RenderBuffer) {
        let base = p.baseAddress!
        var copied = 0
        var i = 0
        while i < p.count, let hit = memchr(base + i, 0x22, p.count - i) {  // the next '"'
            let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            i = at + 1
            guard at + marker.count <= p.count, memcmp(base + at, marker, marker.count) == 0 else { continue }
            for (j, urn) in urns.enumerated() {
                // `"` urn `"`
                guard let urn, let url = conditionalURLs[j] else { continue }
                let end = at + 1 + urn.utf8.count
                guard end < p.count, base[end] == 0x22,
                      urn.utf8.withContiguousStorageIfAvailable({ memcmp(base + at + 1, $0.baseAddress!, $0.count) == 0 }) == true
                else { continue }
                out.append(bytes: UnsafeBufferPointer(rebasing: p[copied..<at]))
                JSONWriter.writeString(url, into: &out)
                i = end + 1
                copied = i
                break
            }
        }
        out.append(bytes: UnsafeBufferPointer(rebasing: p[copied...]))
    }

    private static let marker = Array("\"urn:uuid:".utf8)
}
