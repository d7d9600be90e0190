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
        hasher.update(data: namespace)
        hasher.update(data: Array(name.utf8))
        var bytes = Array(hasher.finalize().prefix(16))
        bytes[6] = (bytes[6] & 0x0F) | 0x50
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = Array(Hex.encode(bytes).utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (i, c) in hex.enumerated() {
            if i == 8 || i == 12 || i == 16 || i == 20 { out.append(UInt8(ascii: "-")) }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
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
