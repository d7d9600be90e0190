import Crypto

/// Hex encoding shared by checksums and UUIDs.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hex of `bytes`.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Lowercase hex SHA-256 of `bytes`.
public func sha256Hex(_ bytes: [UInt8]) -> String {
    Hex.encode(SHA256.hash(data: bytes))
}

/// Name-based UUIDs (RFC 9562 version 5), so that `urn:uuid:` values are derived from identifiers and stay the
/// same from run to run.
public enum NameUUID {
    /// The namespace under which fhirbundle derives `urn:uuid:` full URLs. Fixed forever: changing it would change
    /// every artifact.
    public static let fhirbundleNamespace: [UInt8] = [
        0x6f, 0x1c, 0x5a, 0x3e, 0x8b, 0x2d, 0x4f, 0x47, 0x9a, 0x61, 0x0e, 0x3c, 0x27, 0xd4, 0x95, 0xb8,
    ]

    /// The version-5 UUID for `name` in `namespace`, lowercase with hyphens.
    public static func v5(_ name: String, namespace: [UInt8] = fhirbundleNamespace) -> String {
        var hasher = Insecure.SHA1()
        namespace.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        update(&hasher, name)
        return format(hasher, prefix: "")
    }

    /// `urn:uuid:` and the version-5 UUID of `type|system|value` in fhirbundle's namespace: the full URL of a
    /// resource in a transaction. Hashed part by part and formatted in one allocation (it runs for every resource).
    public static func urn(type: String, system: String, value: String) -> String {
        var type = type, system = system, value = value
        return type.withUTF8 { t in
            system.withUTF8 { s in
                value.withUTF8 { v in
                    // The whole name in one buffer and one update: each update of the hasher costs far more than copying.
                    let size = 16 + t.count + 1 + s.count + 1 + v.count
                    return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: size) { name in
                        var o = 0
                        func put(_ bytes: UnsafeBufferPointer<UInt8>) {
                            if let base = bytes.baseAddress { (name.baseAddress! + o).initialize(from: base, count: bytes.count) }
                            o += bytes.count
                        }
                        fhirbundleNamespace.withUnsafeBufferPointer { put($0) }
                        put(t)
                        name[o] = UInt8(ascii: "|")
                        o += 1
                        put(s)
                        name[o] = UInt8(ascii: "|")
                        o += 1
                        put(v)
                        var hasher = Insecure.SHA1()
                        hasher.update(bufferPointer: UnsafeRawBufferPointer(name))
                        return format(hasher, prefix: "urn:uuid:")
                    }
                }
            }
        }
    }

    private static func update(_ hasher: inout Insecure.SHA1, _ text: String) {
        var text = text
        text.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
    }

    private static let hexDigits: StaticString = "0123456789abcdef"

    /// `prefix` and the UUID from the first 16 bytes of the digest, with the version (5) and variant bits set.
    private static func format(_ hasher: Insecure.SHA1, prefix: StaticString) -> String {
        hasher.finalize().withUnsafeBytes { digest in
            String(unsafeUninitializedCapacity: prefix.utf8CodeUnitCount + 36) { out in
                var o = 0
                for i in 0..<prefix.utf8CodeUnitCount {
                    out[o] = prefix.utf8Start[i]
                    o += 1
                }
                let digits = hexDigits.utf8Start
                for i in 0..<16 {
                    if i == 4 || i == 6 || i == 8 || i == 10 {
                        out[o] = UInt8(ascii: "-")
                        o += 1
                    }
                    var b = digest[i]
                    if i == 6 { b = (b & 0x0F) | 0x50 }
                    if i == 8 { b = (b & 0x3F) | 0x80 }
                    out[o] = digits[Int(b >> 4)]
                    out[o + 1] = digits[Int(b & 0xF)]
                    o += 2
                }
                return o
            }
        }
    }
}

/// A fast, well-mixed 128-bit hash for in-memory indexes of identifiers (not for security): two multiply-xorshift
/// lanes over 8-byte words. Keys are hashed once per resource on the hot paths of convert and validate.
public enum FastHash {
    public static func hash128(_ s: String) -> UInt128 {
        var s = s
        return s.withUTF8 { hash128($0) }
    }

    public static func hash128(_ p: UnsafeBufferPointer<UInt8>) -> UInt128 {
        var a: UInt64 = 0x9E37_79B9_7F4A_7C15
        var b: UInt64 = 0xC2B2_AE3D_27D4_EB4F
        let n = p.count
        var i = 0
        while i + 8 <= n {
            let w = UnsafeRawPointer(p.baseAddress! + i).loadUnaligned(as: UInt64.self)
            a = (a ^ w) &* 0xFF51_AFD7_ED55_8CCD
            a ^= a >> 32
            b = (b ^ w.byteSwapped) &* 0xC4CE_B9FE_1A85_EC53
            b ^= b >> 29
            i += 8
        }
        var tail = UInt64(n)
        while i < n {
            tail = tail << 8 | UInt64(p[i])
            i += 1
        }
        a = (a ^ tail) &* 0xFF51_AFD7_ED55_8CCD
        b = (b ^ tail &+ 0x632B_E59B_D9B4_E019) &* 0xC4CE_B9FE_1A85_EC53
        a ^= a >> 33
        a = a &* 0xFF51_AFD7_ED55_8CCD
        a ^= a >> 33
        b ^= b >> 31
        b = b &* 0x94D0_49BB_1331_11EB
        b ^= b >> 31
        return UInt128(a) << 64 | UInt128(b)
    }
}
