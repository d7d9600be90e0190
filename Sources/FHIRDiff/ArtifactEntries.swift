import FHIRArtifacts
import FHIRModel
import Foundation

/// One write of an artifact folder's bundles, in upload order.
public struct ArtifactEntry {
    /// The manifest step it belongs to.
    public var step: Int
    /// Entries that must land together share a group: those of one inner transaction (`POST /` in a batch) or of
    /// one transaction bundle. Every other entry is a group of its own.
    public var group: Int
    public var method: String
    /// `request.url`: `Type?identifier=system|value` for a conditional update.
    public var url: String
    public var fullUrl: String?
    public var resource: JSONValue?

    /// What the entry writes or deletes, as the server finds it again: the conditional URL of a conditional update
    /// or delete, `Type/id` of an update by id, `Type?<ifNoneExist>` of a conditional create; nil for a plain create.
    public var identity: String? {
        switch method {
        case "PUT", "DELETE", "PATCH": return url
        case "POST":
            guard let ifNoneExist = ifNoneExist else { return nil }
            return "\(resourceType ?? url)?\(ifNoneExist)"
        default: return nil
        }
    }

    var ifNoneExist: String?

    public var resourceType: String? {
        resource?["resourceType"]?.stringValue ?? url.split(separator: "?").first.flatMap { $0.split(separator: "/").first }.map(String.init)
    }
}

/// Why a folder's entries cannot be read.
public struct ArtifactReadError: Error, CustomStringConvertible {
    public var file: String
    public var message: String
    public var description: String { "\(file): \(message)" }
}

/// Reads an artifact folder (one written by `convert`, `rebundle` or `diff --out`) entry by entry, one bundle file in
/// memory at a time, in the manifest's upload order.
public struct ArtifactEntries {
    public let folder: String
    public let manifest: Manifest
    /// SHA-256 of `manifest.json`, which names the folder's whole content.
    public let manifestSHA256: String

    public init(folder: String) throws(ArtifactReadError) {
        self.folder = folder
        let path = folder + "/manifest.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ArtifactReadError(file: path, message: "no manifest.json: not an artifact folder; diff compares folders written by fhirbundle convert, rebundle or diff --out")
        }
        do {
            manifest = try Manifest(json: JSONParser.parse(Array(data)))
        } catch let error as ManifestError {
            throw ArtifactReadError(file: path, message: "#\(error.pointer): \(error.message)")
        } catch {
            throw ArtifactReadError(file: path, message: "not valid JSON: \(error)")
        }
        manifestSHA256 = sha256Hex(Array(data))
    }

    /// Calls `body` with every entry, step by step, bundle by bundle.
    public func forEach(_ body: (ArtifactEntry) throws -> Void) throws {
        var group = 0
        for (stepIndex, step) in manifest.steps.enumerated() {
            for bundleFile in step.bundles {
                let path = folder + "/" + bundleFile
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw ArtifactReadError(file: path, message: "listed in the manifest but missing; run fhirbundle validate on the folder")
                }
                let bundle: JSONValue
                do {
                    bundle = try JSONParser.parse(Array(data))
                } catch {
                    throw ArtifactReadError(file: path, message: "not valid JSON (\(error)); run fhirbundle validate on the folder")
                }
                let isTransaction = bundle["type"]?.stringValue == "transaction"
                if isTransaction { group += 1 }
                for entry in bundle["entry"]?.arrayValue ?? [] {
                    let method = entry["request"]?["method"]?.stringValue ?? ""
                    let url = entry["request"]?["url"]?.stringValue ?? ""
                    if !isTransaction && method == "POST" && url == "/", entry["resource"]?["type"]?.stringValue == "transaction" {
                        group += 1
                        for inner in entry["resource"]?["entry"]?.arrayValue ?? [] {
                            try body(Self.entry(inner, step: stepIndex, group: group))
                        }
                        continue
                    }
                    if !isTransaction { group += 1 }
                    try body(Self.entry(entry, step: stepIndex, group: group))
                }
            }
        }
    }

    private static func entry(_ e: JSONValue, step: Int, group: Int) -> ArtifactEntry {
        ArtifactEntry(step: step, group: group, method: e["request"]?["method"]?.stringValue ?? "", url: e["request"]?["url"]?.stringValue ?? "",
                      fullUrl: e["fullUrl"]?.stringValue, resource: e["resource"], ifNoneExist: e["request"]?["ifNoneExist"]?.stringValue)
    }
}
