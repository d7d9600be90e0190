import FHIRModel
import Testing

/// The open-addressing map under the validator's identifier index: every key kept through growth, in-place updates,
/// the key 0 (the empty-slot marker) stored all the same, and counts without a copy of the entries.
struct HashedKeyMapTests {
    @Test func keysSurviveGrowthAndUpdatesChangeValuesInPlace() {
        var map = HashedKeyMap<Int>(empty: -1, capacity: 16)
        let keys = (0..<10_000).map { UInt128($0) &* 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834 }
        for (i, key) in keys.enumerated() { map[key] = i }
        #expect(map.count == keys.count)
        for (i, key) in keys.enumerated() { #expect(map[key] == i) }
        for key in keys.prefix(100) { map.update(key, startingAt: 0) { $0 += 1_000_000 } }
        #expect(map[keys[0]] == 1_000_000)
        #expect(map.update(12345, startingAt: 7) { $0 } == 7)
        #expect(map[UInt128(999_999_999)] == nil)
    }

    @Test func theKeyZeroIsAKeyLikeAnother() {
        var map = HashedKeyMap<Int>(empty: -1)
        map[0] = 5
        #expect(map[0] == 5)
        #expect(map.count == 1)
    }

    @Test func countWhereCountsTheValuesThatSatisfyThePredicate() {
        var map = HashedKeyMap<Int>(empty: 0)
        for i in 1...1000 { map[UInt128(i) << 64 | UInt128(i)] = i }
        #expect(map.count { $0 % 10 == 0 } == 100)
        #expect(map.count { _ in true } == map.entries.count)
    }
}
