import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// The reference pass: urn:uuid, conditional and literal references, their order and target types.
extension ArtifactValidator {
    /// Classifies `reference` (with `identifierKeys`) and checks it: for references the workers did not classify.
    func checkReference(_ reference: FoundReference, file: String, line: Int?, place: EntryPlace, isTransaction: Bool, fullUrls: [UInt128: String]) {
        checkReference(PreparedReference(tape, reference, keys: &identifierKeys), file: file, line: line, place: place,
                       isTransaction: isTransaction, fullUrls: fullUrls)
    }

    func checkReference(_ prepared: PreparedReference, file: String, line: Int?, place: EntryPlace, isTransaction: Bool, fullUrls: [UInt128: String]) {
        let tape = self.tape
        let reference = prepared.found
        let token = reference.token
        var targetType: String?
        switch prepared.kind {
        case .urn(let hash):
            guard isTransaction || (place.data && !fullUrls.isEmpty) else {
                findings.append(Finding(rule: .urnInBatch, file: file, line: line, pointer: pointer(token),
                                        message: "\(tape.string(token)!) is a urn reference \(place.data ? "outside a bundle" : "in a batch")"))
                return
            }
            guard let type = fullUrls[hash] else {
                findings.append(Finding(rule: .urnUnresolved, file: file, line: line, pointer: pointer(token), message: "no entry of this transaction has fullUrl \(tape.string(token)!)"))
                return
            }
            targetType = type
        case .search(let type, let identifier):
            targetType = type
            guard let hash = identifier else { return }
            // `system|value`, for messages (worked out again from the token: rarely needed).
            let description = {
                tape.withString(token) { v in
                    IdentifierSearch.query(v).flatMap { query in
                        IdentifierSearch.withParsedToken(query) { system, value in String(decoding: system, as: UTF8.self) + "|" + String(decoding: value, as: UTF8.self) }
                    }
                }.flatMap { $0 } ?? ""
            }
            if !knownIdentifiers.isEmpty && knownIdentifiers.contains(type + "|" + description()) { break }
            guard var e = index[hash], e.count > 0 else {
                // Perhaps written by a later bundle: decided once every bundle is indexed.
                pending.append(PendingReference(hash: hash, description: description(), type: type, place: place,
                                                file: file, line: line, pointer: pointer(token)))
                break
            }
            if !e.used {
                e.used = true
                index[hash] = e
            }
            checkConditional(e, description: description, type: type, place: place, file: file, line: line, pointer: { self.pointer(token) })
        case .other:
            let value = tape.string(token)!
            if value.hasPrefix("#") || tape.contains(token, "://") {
                return  // contained, or an absolute URL outside these artifacts
            }
            var parts = value.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count >= 4 && parts[parts.count - 2] == "_history" { parts.removeLast(2) }  // Type/id/_history/version
            if parts.count >= 2 {
                let literal = parts[parts.count - 2] + "/" + parts[parts.count - 1]
                targetType = String(parts[parts.count - 2])
                if !literalIDs.contains(String(literal)) && !knownIdentifiers.contains(String(literal)) {
                    pendingLiterals.append((String(literal), file, line, pointer(token)))  // perhaps in a later bundle
                }
            }
        }
        checkTarget(reference, targetType, file, line)
    }

    struct PendingReference {
        let hash: UInt128
        let description: String
        let type: String
        let place: EntryPlace
        let file: String
        let line: Int?
        let pointer: String
    }

    func checkConditional(_ e: IndexEntry, description: () -> String, type: String, place: EntryPlace, file: String, line: Int?,
                                  pointer: () -> String) {
        let allConditionalCreates = e.conditionalCreates == e.count
        if e.count > 1 && !allConditionalCreates {
            findings.append(Finding(rule: .conditionalAmbiguous, file: file, line: line, pointer: pointer(),
                                    message: "\(e.count) resources have identifier \(description())"))
        } else if place.data {
            return  // data is not uploaded as it is: the target need only exist
        } else if e.step < place.step || (place.transaction >= 0 && e.transaction == place.transaction) {
            return
        } else if e.step == place.step && e.bundle == place.bundle && e.position < place.position {
            findings.append(Finding(rule: .conditionalSameBatch, file: file, line: line, pointer: pointer(),
                                    message: "the \(type) with identifier \(description()) is an earlier entry of the same batch"))
        } else {
            findings.append(Finding(rule: .conditionalLaterStep, file: file, line: line, pointer: pointer(),
                                    message: "the \(type) with identifier \(description()) is written in \(e.step == place.step ? "the same step, outside this transaction" : "a later step")"))
        }
    }

    func resolvePending() {
        for p in pendingLiterals where !literalIDs.contains(p.literal) {
            findings.append(Finding(rule: .literalUnresolved, file: p.file, line: p.line, pointer: p.pointer, message: "\(p.literal) is not among the artifacts nor declared known"))
        }
        pendingLiterals = []
        for p in pending {
            guard var e = index[p.hash], e.count > 0 else {
                findings.append(Finding(rule: .conditionalUnresolved, file: p.file, line: p.line, pointer: p.pointer,
                                        message: "no \(p.type) in the artifacts has identifier \(p.description)",
                                        missingIdentity: "\(p.type)?identifier=\(p.description)"))
                continue
            }
            if !e.used {
                e.used = true
                index[p.hash] = e
            }
            checkConditional(e, description: { p.description }, type: p.type, place: p.place, file: p.file, line: p.line, pointer: { p.pointer })
        }
        pending = []
    }

    func checkTarget(_ reference: FoundReference, _ targetType: String?, _ file: String, _ line: Int?) {
        let targets = tables.targetLists[Int(reference.targets)]
        guard let targetType, !targets.isEmpty, !targets.contains("Resource") else { return }
        if !targets.contains(targetType) {
            findings.append(Finding(rule: .referenceTarget, file: file, line: line, pointer: pointer(reference.token),
                                    message: "a \(targetType) cannot be referenced here; allowed: \(targets.joined(separator: ", "))"))
        }
    }
}

/// The identifier searches of conditional references and writes (`Type?identifier=system|value`), read in place.
enum IdentifierSearch {
    /// Calls `body` with `system` and `value` of a token search (`system|value`), undoing percent-encoding and
    /// FHIR's backslash escapes; nil when the token has no `|`.
    static func withParsedToken<R>(_ token: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> R) -> R? {
        if !token.contains(UInt8(ascii: "%")) && !token.contains(UInt8(ascii: "\\")) {
            // The usual case: split in place.
            guard let bar = token.firstIndex(of: UInt8(ascii: "|")) else { return nil }
            return body(UnsafeBufferPointer(rebasing: token[..<bar]), UnsafeBufferPointer(rebasing: token[(bar + 1)...]))
        }
        var bytes = Array(token)
        if bytes.contains(UInt8(ascii: "%")) {
            guard let decoded = String(decoding: token, as: UTF8.self).removingPercentEncoding else { return nil }
            bytes = Array(decoded.utf8)
        }
        var system: [UInt8] = []
        var value: [UInt8] = []
        var inValue = false
        var escaped = false
        for b in bytes {
            if escaped {
                if inValue { value.append(b) } else { system.append(b) }
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "|") && !inValue {
                inValue = true
            } else if inValue {
                value.append(b)
            } else {
                system.append(b)
            }
        }
        guard inValue else { return nil }
        return system.withUnsafeBufferPointer { s in value.withUnsafeBufferPointer { v in body(s, v) } }
    }

    /// The value of a search URL's `identifier` parameter (`Type?identifier=…`), also among other parameters
    /// (`…&active=true`, which only narrow the search: see `ConditionalURL.identifierCriterion`); nil without one.
    static func query(_ url: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8>? {
        guard let q = url.firstIndex(of: UInt8(ascii: "?")) else { return nil }
        let prefix: StaticString = "identifier="
        var found: UnsafeBufferPointer<UInt8>?
        var start = q + 1
        while start <= url.count {
            let end = url[start...].firstIndex(of: UInt8(ascii: "&")) ?? url.count
            let parameter = UnsafeBufferPointer(rebasing: url[start..<end])
            if parameter.count >= prefix.utf8CodeUnitCount, memcmp(parameter.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0 {
                if found != nil { return nil }  // two identifiers: no one target
                found = UnsafeBufferPointer(rebasing: parameter[prefix.utf8CodeUnitCount...])
            }
            start = end + 1
        }
        return found
    }
}

/// A reference found by `ResourceChecker`, classified: what its check needs that depends on its text alone, worked out
/// by the worker that prepares its bundle (see `BundleFacts`).
struct PreparedReference: Sendable {
    enum Kind: Sendable {
        /// `urn:uuid:` or `urn:oid:`, with the hash of its text (the fullUrl it names).
        case urn(UInt128)
        /// A search (`Type?…`): its type, and the hash of `Type|system|value` when it searches by identifier.
        case search(type: String, identifier: UInt128?)
        /// A literal, contained or absolute reference.
        case other
    }

    let found: FoundReference
    let kind: Kind

    init(_ tape: JSONTape, _ found: FoundReference, keys: inout IdentifierKeys) {
        self.found = found
        let token = found.token
        if tape.hasPrefix(token, "urn:uuid:") || tape.hasPrefix(token, "urn:oid:") {
            kind = .urn(tape.withString(token) { FastHash.hash128($0) }!)
            return
        }
        kind = tape.withString(token) { v -> Kind in
            guard let q = v.firstIndex(of: UInt8(ascii: "?")), !v[..<q].contains(UInt8(ascii: "/")) else { return .other }
            let type = UnsafeBufferPointer(rebasing: v[..<q])
            let hash = IdentifierSearch.query(v).flatMap { query in
                IdentifierSearch.withParsedToken(query) { system, value in keys.hash(type: type, system: system, value: value) }
            }
            return .search(type: String(decoding: type, as: UTF8.self), identifier: hash)
        } ?? .other
    }
}
