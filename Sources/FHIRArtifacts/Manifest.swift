import FHIRModel
import Foundation

/// The tool's version, recorded in every manifest.
public enum FHIRBundleVersion {
    public static let current = "0.1.0"
}

/// `manifest.json`: what an artifact folder holds and how to check it, documented by
/// `schemas/manifest.schema.json`. Written without timestamps so that two runs on the same inputs are identical.
public struct Manifest: Sendable, Equatable {
    public static let format = "fhirbundle-artifacts"
    public static let formatVersion = 1

    public struct Tool: Sendable, Equatable {
        public var name: String
        public var version: String

        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }

    public struct MappingFile: Sendable, Equatable {
        public var file: String
        public var sha256: String

        public init(file: String, sha256: String) {
            self.file = file
            self.sha256 = sha256
        }
    }

    public struct Source: Sendable, Equatable {
        public var name: String
        public var file: String
        public var sha256: String
        public var bytes: Int
        public var rows: Int
        public var rejects: Int

        public init(name: String, file: String, sha256: String, bytes: Int, rows: Int, rejects: Int) {
            self.name = name
            self.file = file
            self.sha256 = sha256
            self.bytes = bytes
            self.rows = rows
            self.rejects = rejects
        }
    }

    public struct Step: Sendable, Equatable {
        public var name: String
        public var source: String
        /// batch, transaction or batch-of-transactions.
        public var bundle: String
        public var folder: String
        public var rows: Int
        public var rejects: Int
        /// For a step that groups rows (`group:` in the mapping): the groups converted. Rows read are then the
        /// rows of those groups plus the rejects, and each group gives its resources.
        public var groups: Int?
        /// Resource type → count, sorted by type.
        public var resources: [String: Int]
        public var bundles: [String]

        public init(name: String, source: String, bundle: String, folder: String, rows: Int, rejects: Int, resources: [String: Int], bundles: [String]) {
            self.name = name
            self.source = source
            self.bundle = bundle
            self.folder = folder
            self.rows = rows
            self.rejects = rejects
            self.resources = resources
            self.bundles = bundles
        }
    }

    public struct Artifact: Sendable, Equatable {
        public var path: String
        public var sha256: String
        public var bytes: Int

        public init(path: String, sha256: String, bytes: Int) {
            self.path = path
            self.sha256 = sha256
            self.bytes = bytes
        }
    }

    /// A delta folder's origin and figures (written by `fhirbundle diff --out`): the folder takes a server holding
    /// `base` to `new`.
    public struct Delta: Sendable, Equatable {
        /// SHA-256 of the old folder's manifest.json, and of the new one's.
        public var base: String
        public var new: String
        public var added: Int
        public var changed: Int
        /// Unchanged resources written again because they share a transaction with a changed one.
        public var resent: Int
        /// Unchanged resources left out.
        public var unchanged: Int
        /// Identities the new folder no longer writes, and the conditional deletes written for them (0 without
        /// `--deletes`: removals are never implicit).
        public var removed: Int
        public var deleted: Int

        public init(base: String, new: String, added: Int, changed: Int, resent: Int, unchanged: Int, removed: Int, deleted: Int) {
            self.base = base
            self.new = new
            self.added = added
            self.changed = changed
            self.resent = resent
            self.unchanged = unchanged
            self.removed = removed
            self.deleted = deleted
        }

        static let figureNames = ["added", "changed", "resent", "unchanged", "removed", "deleted"]
        var figures: [Int] { [added, changed, resent, unchanged, removed, deleted] }
    }

    public var tool: Tool
    /// The server profile the bundles were sized for.
    public var profile: ServerProfile
    /// The mapping file; nil for a folder written by `fhirbundle rebundle`.
    public var mapping: MappingFile?
    public var limits: BundleLimits
    public var sources: [Source]
    /// In upload order.
    public var steps: [Step]
    /// Every file of the folder except the manifest, sorted by path.
    public var artifacts: [Artifact]
    public var resourceCounts: [String: Int]
    public var rejects: Int
    /// Set for a folder written by `diff --out`.
    public var delta: Delta?

    public init(tool: Tool, profile: ServerProfile = .medplum, mapping: MappingFile?, limits: BundleLimits, sources: [Source], steps: [Step],
                artifacts: [Artifact], resourceCounts: [String: Int], rejects: Int) {
        self.tool = tool
        self.profile = profile
        self.mapping = mapping
        self.limits = limits
        self.sources = sources
        self.steps = steps
        self.artifacts = artifacts
        self.resourceCounts = resourceCounts
        self.rejects = rejects
    }

    /// The manifest as JSON, members in a fixed order.
    public var json: JSONValue {
        func counts(_ d: [String: Int]) -> JSONValue {
            .object(d.keys.sorted().map { JSONMember($0, .number(String(d[$0]!))) })
        }
        func n(_ i: Int) -> JSONValue { .number(String(i)) }
        var members = [
            JSONMember("format", .string(Manifest.format)),
            JSONMember("formatVersion", n(Manifest.formatVersion)),
            JSONMember("tool", .object([JSONMember("name", .string(tool.name)), JSONMember("version", .string(tool.version))])),
            JSONMember("profile", .string(profile.rawValue)),
        ]
        if let mapping {
            members.append(JSONMember("mapping", .object([JSONMember("file", .string(mapping.file)), JSONMember("sha256", .string(mapping.sha256))])))
        }
        if let delta {
            members.append(JSONMember("delta", .object([JSONMember("base", .string(delta.base)), JSONMember("new", .string(delta.new))]
                + zip(Delta.figureNames, delta.figures).map { JSONMember($0, n($1)) })))
        }
        return .object(members + [
            JSONMember("limits", .object(BundleLimit.allCases.map { limit in JSONMember(limit.rawValue, limits[limit].map(n) ?? .null) })),
            JSONMember("sources", .array(sources.map { s in
                .object([
                    JSONMember("name", .string(s.name)), JSONMember("file", .string(s.file)), JSONMember("sha256", .string(s.sha256)),
                    JSONMember("bytes", n(s.bytes)), JSONMember("rows", n(s.rows)), JSONMember("rejects", n(s.rejects)),
                ])
            })),
            JSONMember("steps", .array(steps.map { s in
                .object([
                    JSONMember("name", .string(s.name)), JSONMember("source", .string(s.source)), JSONMember("bundle", .string(s.bundle)),
                    JSONMember("folder", .string(s.folder)), JSONMember("rows", n(s.rows)), JSONMember("rejects", n(s.rejects)),
                ] + (s.groups.map { [JSONMember("groups", n($0))] } ?? []) + [
                    JSONMember("resources", counts(s.resources)), JSONMember("bundles", .array(s.bundles.map { .string($0) })),
                ])
            })),
            JSONMember("artifacts", .array(artifacts.map { a in
                .object([JSONMember("path", .string(a.path)), JSONMember("sha256", .string(a.sha256)), JSONMember("bytes", n(a.bytes))])
            })),
            JSONMember("resourceCounts", counts(resourceCounts)),
            JSONMember("rejects", n(rejects)),
        ])
    }

    /// Reads a manifest back; the error names the JSON pointer of what is missing or wrong.
    public init(json: JSONValue) throws(ManifestError) {
        func need<T>(_ v: JSONValue?, _ pointer: String, _ get: (JSONValue) -> T?) throws(ManifestError) -> T {
            guard let v, let t = get(v) else { throw ManifestError(pointer: pointer, message: "missing or of the wrong type") }
            return t
        }
        let str: (JSONValue) -> String? = { $0.stringValue }
        let int: (JSONValue) -> Int? = { if case .number(let s) = $0 { return Int(s) } else { return nil } }
        let arr: (JSONValue) -> [JSONValue]? = { $0.arrayValue }
        guard try need(json["format"], "/format", str) == Manifest.format else {
            throw ManifestError(pointer: "/format", message: "not a fhirbundle manifest")
        }
        let version = try need(json["formatVersion"], "/formatVersion", int)
        guard version == Manifest.formatVersion else {
            throw ManifestError(pointer: "/formatVersion", message: "format version \(version) is not supported by this tool (it reads \(Manifest.formatVersion))")
        }
        tool = Tool(name: try need(json["tool"]?["name"], "/tool/name", str), version: try need(json["tool"]?["version"], "/tool/version", str))
        if let name = json["profile"] {
            guard let profile = ServerProfile(rawValue: name.stringValue ?? "") else {
                throw ManifestError(pointer: "/profile", message: "unknown profile; the profiles are \(ServerProfile.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.profile = profile
        } else {
            profile = .medplum  // written before profiles existed
        }
        if json["mapping"] != nil {
            mapping = MappingFile(file: try need(json["mapping"]?["file"], "/mapping/file", str), sha256: try need(json["mapping"]?["sha256"], "/mapping/sha256", str))
        } else {
            mapping = nil
        }
        if let d = json["delta"] {
            var figures: [Int] = []
            for name in Delta.figureNames { figures.append(try need(d[name], "/delta/\(name)", int)) }
            delta = Delta(base: try need(d["base"], "/delta/base", str), new: try need(d["new"], "/delta/new", str), added: figures[0],
                          changed: figures[1], resent: figures[2], unchanged: figures[3], removed: figures[4], deleted: figures[5])
        }
        var limits = profile.limits
        for limit in BundleLimit.allCases {
            guard let v = json["limits"]?[limit.rawValue] else { continue }
            if case .null = v {
                limits[limit] = nil
            } else {
                let value = try need(v, "/limits/\(limit.rawValue)", int)
                guard value > 0 else { throw ManifestError(pointer: "/limits/\(limit.rawValue)", message: "must be a positive whole number or null") }
                limits[limit] = value
            }
        }
        self.limits = limits
        var sources: [Source] = []
        for (i, s) in try need(json["sources"], "/sources", arr).enumerated() {
            let p = "/sources/\(i)"
            sources.append(Source(name: try need(s["name"], "\(p)/name", str), file: try need(s["file"], "\(p)/file", str),
                                  sha256: try need(s["sha256"], "\(p)/sha256", str), bytes: try need(s["bytes"], "\(p)/bytes", int),
                                  rows: try need(s["rows"], "\(p)/rows", int), rejects: try need(s["rejects"], "\(p)/rejects", int)))
        }
        self.sources = sources
        var steps: [Step] = []
        for (i, s) in try need(json["steps"], "/steps", arr).enumerated() {
            let p = "/steps/\(i)"
            var resources: [String: Int] = [:]
            for m in try need(s["resources"], "\(p)/resources", { $0.objectMembers }) {
                resources[m.key] = try need(m.value, "\(p)/resources/\(m.key)", int)
            }
            var bundles: [String] = []
            for (j, b) in try need(s["bundles"], "\(p)/bundles", arr).enumerated() { bundles.append(try need(b, "\(p)/bundles/\(j)", str)) }
            var step = Step(name: try need(s["name"], "\(p)/name", str), source: try need(s["source"], "\(p)/source", str),
                            bundle: try need(s["bundle"], "\(p)/bundle", str), folder: try need(s["folder"], "\(p)/folder", str),
                            rows: try need(s["rows"], "\(p)/rows", int), rejects: try need(s["rejects"], "\(p)/rejects", int),
                            resources: resources, bundles: bundles)
            if let groups = s["groups"] { step.groups = try need(groups, "\(p)/groups", int) }
            steps.append(step)
        }
        self.steps = steps
        var artifacts: [Artifact] = []
        for (i, a) in try need(json["artifacts"], "/artifacts", arr).enumerated() {
            let p = "/artifacts/\(i)"
            artifacts.append(Artifact(path: try need(a["path"], "\(p)/path", str), sha256: try need(a["sha256"], "\(p)/sha256", str), bytes: try need(a["bytes"], "\(p)/bytes", int)))
        }
        self.artifacts = artifacts
        var counts: [String: Int] = [:]
        for m in try need(json["resourceCounts"], "/resourceCounts", { $0.objectMembers }) {
            counts[m.key] = try need(m.value, "/resourceCounts/\(m.key)", int)
        }
        resourceCounts = counts
        rejects = try need(json["rejects"], "/rejects", int)
    }
}

/// A manifest that cannot be read, with the JSON pointer of the problem.
public struct ManifestError: Error, Sendable, CustomStringConvertible {
    public var pointer: String
    public var message: String
    public var description: String { "manifest.json#\(pointer): \(message)" }
}

/// Tells this tool's `manifest.json` from another's: FHIR Bulk Data exports write one too (`transactionTime`,
/// `request`, `output`), beside NDJSON that is data from elsewhere.
public enum ManifestFile {
    public static let name = "manifest.json"
    /// The `format` this tool's manifests carry.
    public static let format = "fhirbundle-artifacts"

    /// True when `folder/manifest.json` is a JSON object whose `format` is not this tool's (a Bulk Data export's
    /// manifest, another tool's): the folder is not an artifact folder, and the file is not FHIR data. False when
    /// there is none, and for one that does not parse as an object: that is reported as an invalid manifest of
    /// this tool's, never taken for data.
    public static func isForeign(inFolder folder: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: folder + "/" + name) else { return false }
        let bytes = Array(data)
        let json: JSONValue
        do throws(JSONSyntaxError) {
            json = try bytes.withUnsafeBufferPointer { (p) throws(JSONSyntaxError) -> JSONValue in try JSONParser.parseMembers(p, keep: ["format"]) }
        } catch {
            return false
        }
        return json["format"]?.stringValue != format
    }
}
