import FHIRModel

/// The bytes of the resource being rendered: a plain growable buffer.
///
/// Rendering appends a few hundred small pieces per resource; on `[UInt8]` each append checks that the storage is
/// uniquely referenced, which cost more than the copying. The owner frees the storage (`free()`), once per row.
struct RenderBuffer: JSONByteSink {
    private(set) var base: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    /// Bytes written; setting a smaller count drops what was written after it.
    var count = 0

    init(capacity: Int = 4096) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    func free() {
        base.deallocate()
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        if count == capacity { grow(to: count + 1) }
        base[count] = byte
        count += 1
    }

    @inline(__always)
    mutating func append(bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress else { return }
        if count + bytes.count > capacity { grow(to: count + bytes.count) }
        (base + count).update(from: source, count: bytes.count)
        count += bytes.count
    }

    /// Starts an item of an array or object: a comma when `items` came before it. Returns where to cut back to if
    /// the item turns out empty (`count = mark`).
    @inline(__always)
    mutating func beginItem(after items: Int) -> Int {
        let mark = count
        if items > 0 { append(UInt8(ascii: ",")) }
        return mark
    }

    mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { append(bytes: $0) }
    }

    /// The bytes written, as an array.
    var bytes: [UInt8] { Array(UnsafeBufferPointer(start: base, count: count)) }

    private mutating func grow(to needed: Int) {
        var size = capacity * 2
        while size < needed { size *= 2 }
        let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
        larger.initialize(from: base, count: count)
        base.deallocate()
        base = larger
        capacity = size
    }
}
