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
