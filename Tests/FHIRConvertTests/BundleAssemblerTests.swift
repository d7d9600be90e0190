import FHIRArtifacts
import FHIRModel
import Testing

/// The assembler writes one-line entries straight into the open bundle and moves a group to the next bundle when it
/// does not fit: these pin that every bundle stays whole, under its limits, with each group in one bundle.
@Suite struct BundleAssemblerTests {
    /// A group of `size` resources for row `row`, each with a name of `padding` characters.
    private func group(row: Int, size: Int, padding: Int) -> [PlannedEntry] {
        (0..<size).map { k in
            let id = "\(row)-\(k)"
            let resource = #"{"resourceType":"Patient","identifier":[{"system":"s","value":"\#(id)"}],"name":[{"family":"\#(String(repeating: "x", count: padding + k))"}]}"#
            return PlannedEntry(compactResource: Array(resource.utf8), url: "Patient?identifier=s|\(id)",
                                fullUrl: "urn:uuid:00000000-0000-5000-8000-\(String(repeating: "0", count: 12 - id.count))\(id.replacingOccurrences(of: "-", with: "0"))")
        }
    }

    private func assemble(_ packing: BundlePacking, limits: BundleLimits, layout: BundleLayout = .entryPerLine,
                          groups: [[PlannedEntry]]) throws -> (bundles: [[UInt8]], refused: [Int]) {
        var bundles: [[UInt8]] = []
        var refused: [Int] = []
        let assembler = BundleAssembler(packing: packing, limits: limits, layout: layout) { bundles.append($0) }
        for (i, g) in groups.enumerated() {
            do { try assembler.add(group: g) } catch is GroupTooLarge { refused.append(i) }
        }
        try assembler.finish()
        return (bundles, refused)
    }

    /// The identifier values of a bundle's entries, in order, grouped by inner transaction for batch-of-transactions.
    private func values(_ bundle: JSONValue) -> [[String]] {
        (bundle["entry"]?.arrayValue ?? []).map { entry -> [String] in
            let resource = entry["resource"]
            if resource?["resourceType"]?.stringValue == "Bundle" {
                return (resource?["entry"]?.arrayValue ?? []).compactMap { $0["resource"]?["identifier"]?.arrayValue?.first?["value"]?.stringValue }
            }
            return [resource?["identifier"]?.arrayValue?.first?["value"]?.stringValue].compactMap { $0 }
        }
    }

    @Test(arguments: [BundlePacking.batch, .transaction, .batchOfTransactions], [700, 1500, 4000])
    func groupsThatDoNotFitTheOpenBundleMoveWholeToTheNext(packing: BundlePacking, bundleBytes: Int) throws {
        var limits = BundleLimits()
        limits.bundleBytes = bundleBytes
        limits.batchEntries = 7
        // Groups of 1 to 3 entries of varying sizes; some are too large for any bundle of 700 bytes.
        let groups = (0..<60).map { group(row: $0, size: 1 + $0 % 3, padding: ($0 * 37) % 150) }
        for layout in [BundleLayout.entryPerLine, .pretty] {
            let (bundles, refused) = try assemble(packing, limits: limits, layout: layout, groups: groups)
            var seen: [[String]] = []
            for bytes in bundles {
                #expect(bytes.count <= bundleBytes)
                let bundle = try JSONParser.parse(bytes)
                #expect(bundle["type"]?.stringValue == (packing == .transaction ? "transaction" : "batch"))
                let entries = values(bundle)
                #expect(!entries.isEmpty)
                #expect(entries.count <= (packing == .transaction ? 8 : 7))
                seen.append(contentsOf: entries)
            }
            // Every group that was not refused is there once, whole and in order.
            let expected = groups.indices.filter { !refused.contains($0) }.map { i in groups[i].map { "\(i)-\($0.url.split(separator: "-").last!)" } }
            let flattened: [[String]] = packing == .batch ? expected.flatMap { $0.map { [$0] } } : expected
            if packing == .transaction {
                #expect(seen.flatMap { $0 } == expected.flatMap { $0 })
            } else {
                #expect(seen == flattened)
            }
            if layout == .entryPerLine && bundleBytes >= 1500 { #expect(refused.isEmpty) }
            if bundleBytes == 700 && packing != .batch { #expect(!refused.isEmpty) }
        }
    }

    @Test func aTransactionGroupIsNeverSplitAcrossBundles() throws {
        var limits = BundleLimits()
        limits.bundleBytes = 1200
        let groups = (0..<30).map { group(row: $0, size: 3, padding: 5 + $0 % 4) }
        let (bundles, refused) = try assemble(.transaction, limits: limits, groups: groups)
        #expect(refused.isEmpty && bundles.count > 1)
        for bytes in bundles {
            let ids: [String] = values(try JSONParser.parse(bytes)).flatMap { $0 }
            let rows = ids.map { String($0.split(separator: "-")[0]) }
            // Each row's three entries sit together in this bundle.
            #expect(Dictionary(grouping: rows, by: { $0 }).values.allSatisfy { $0.count == 3 })
        }
    }
}
