#if canImport(Glibc)
import Glibc
#endif

/// Arrays for the large in-memory tables (identifier indexes, lookups) that grow with an export.
public enum LargeTables {
    /// Tables at least this large ask for huge pages.
    public static let hugePageThreshold = 4 << 20

    /// An array of `count` copies of `value`; one of `hugePageThreshold` bytes or more asks the kernel for huge pages
    /// before its memory is first touched. A table of millions of slots otherwise takes a page fault every 4 KiB as
    /// it is filled, and on a virtual machine each fresh page is slow to get (see `FHIRArtifacts.WriteBehind`).
    @inlinable
    public static func array<Element>(repeating value: Element, count: Int) -> [Element] {
        guard count * MemoryLayout<Element>.stride >= hugePageThreshold else { return Array(repeating: value, count: count) }
        return Array(unsafeUninitializedCapacity: count) { buffer, initialized in
            adviseHugePages(UnsafeMutableRawBufferPointer(buffer))
            buffer.initialize(repeating: value)
            initialized = count
        }
    }

    /// MADV_HUGEPAGE on the 2 MiB-aligned part of `region` (advice only: ignored where unsupported).
    @usableFromInline
    static func adviseHugePages(_ region: UnsafeMutableRawBufferPointer) {
        #if os(Linux)
        guard let base = region.baseAddress else { return }
        let huge = 2 << 20
        let start = (Int(bitPattern: base) + huge - 1) & ~(huge - 1)
        let end = (Int(bitPattern: base) + region.count) & ~(huge - 1)
        guard end > start, let aligned = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(aligned, end - start, 14)  // MADV_HUGEPAGE
        #endif
    }
}
