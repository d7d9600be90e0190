import FHIRArtifacts
import FHIRModel
import FHIRValidation
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
    /// The resource as compact JSON; nil for an entry without one (a delete).
    public var resourceBytes: [UInt8]?
    var declaredType: String?

    /// The resource parsed (for the few entries whose elements are looked at).
    public var resource: JSONValue? { resourceBytes.flatMap { try? JSONParser.parse($0) } }

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
        declaredType ?? url.split(separator: "?").first.flatMap { $0.split(separator: "/").first }.map(String.init)
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

    /// Calls `body` with every entry, step by step, bundle by bundle (one bundle file in memory at a time).
    public func forEach(_ body: (ArtifactEntry) throws -> Void) throws {
        var scan = BundleEntryScan()
        for (stepIndex, step) in manifest.steps.enumerated() {
            for bundleFile in step.bundles {
                let path = folder + "/" + bundleFile
                do {
                    try scan.forEachEntry(inFile: path) { e in
                        try body(ArtifactEntry(step: stepIndex, group: e.group, method: e.method, url: e.url, fullUrl: e.fullUrl,
                                               resourceBytes: e.resource, declaredType: e.resourceType, ifNoneExist: e.ifNoneExist))
                    }
                } catch let failure as BundleEntryScan.Failure {
                    throw ArtifactReadError(file: failure.file, message: failure.message + " (it is listed in manifest.json)")
                }
            }
        }
    }
}
