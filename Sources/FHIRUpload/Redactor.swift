import Foundation

/// Removes credentials from text that came from a server before it is printed or written to the journal or the
/// failures file: a server may echo the `Authorization` header or the client secret in an error message.
///
/// It knows the secrets in use (the bearer token, the client secret, every OAuth2 token fetched) and also masks
/// what looks like one whatever its source: `Bearer …` and `Basic …` values, JSON Web Tokens, and
/// `access_token`, `client_secret`, `password` or `refresh_token` values.
public final class Redactor: @unchecked Sendable {  // `secrets` behind `lock`
    public static let mask = "[redacted]"

    private let lock = NSLock()
    private var secrets: [String] = []

    public init(secrets: [String] = []) {
        for secret in secrets { add(secret) }
    }

    /// Masks `secret` from now on (values shorter than 4 characters are left alone: they would mask ordinary text).
    public func add(_ secret: String) {
        guard secret.count >= 4 else { return }
        lock.withLock {
            if !secrets.contains(secret) {
                secrets.append(secret)
                secrets.sort { $0.count > $1.count }  // longest first, so a secret containing another is masked whole
            }
        }
    }

    /// `text` with every known secret and every credential-shaped value masked.
    public func redact(_ text: String) -> String {
        var out = text
        for secret in lock.withLock({ secrets }) where out.contains(secret) {
            out = out.replacingOccurrences(of: secret, with: Self.mask)
        }
        for pattern in Self.patterns {
            out = out.replacing(pattern.regex) { match in
                String(match.output[pattern.keep].substring ?? "") + Self.mask
            }
        }
        return out
    }

    /// Credential shapes; `keep` is the capture that stays (the label before the value).
    private struct Pattern: @unchecked Sendable {  // Regex is immutable after creation
        let regex: Regex<AnyRegexOutput>
        let keep: Int
    }

    private static let patterns: [Pattern] = [
        // Authorization schemes, as in an echoed header.
        Pattern(regex: try! Regex(#"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{4,}"#), keep: 1),
        // A JSON Web Token anywhere (header.payload.signature, base64url, the header starting `{"`).
        Pattern(regex: try! Regex(#"()eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"#), keep: 1),
        // `name=value`, `name: value`, `"name":"value"` for the usual secret names.
        Pattern(regex: try! Regex(#"(?i)("?(?:access_token|refresh_token|id_token|client_secret|password|authorization)"?\s*[:=]\s*"?)[^"&\s,}]{4,}"#), keep: 1),
    ]
}
