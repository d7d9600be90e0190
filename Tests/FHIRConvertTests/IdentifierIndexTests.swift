@testable import FHIRConvert
import Testing

@Suite struct IdentifierIndexTests {
    @Test func keysKeepTheLineThatFirstWroteThemThroughGrowth() {
        var index = IdentifierIndex(capacity: 16)
        // Keys whose low halves collide (same slot), key 0, and enough keys to grow the table several times.
        var keys: [UInt128] = [0, 2, UInt128(1) << 64, UInt128(2) << 64, UInt128(3) << 64 | 1]
        for i in 1...5_000 { keys.append(UInt128(UInt64(i) &* 0x9E37_79B9_7F4A_7C15) << 64 | UInt128(i % 7)) }
        for (line, key) in keys.enumerated() { index.insert(key, line: line + 1) }
        #expect(index.count == keys.count)
        for (line, key) in keys.enumerated() { #expect(index.line(of: key) == line + 1) }
        // A second insert of a known key keeps the first line.
        index.insert(keys[10], line: 99_999)
        #expect(index.line(of: keys[10]) == 11 && index.count == keys.count)
        #expect(index.line(of: UInt128(4) << 64) == nil)
        #expect(index.line(of: UInt128(12_345) << 64 | 3) == nil)
    }
}
