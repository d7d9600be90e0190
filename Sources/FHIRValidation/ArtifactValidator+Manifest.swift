import Crypto
import FHIRArtifacts
import FHIRModel
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// The manifest pass: its schema, checksums, figures and the NDJSON mirror.
extension ArtifactValidator {
    /// Reads and parses a JSON file into a `JSONValue`, checking it against the manifest's checksum on the way.
    func parseJSON(_ file: String) -> JSONValue? {
        guard read(file) else { return nil }
        if unverified[file] != nil { checkDigest(file, sha256: Hex.encode(SHA256.hash(data: tape.bytes)), size: tape.bytes.count) }
        do {
            return try JSONParser.parse(tape.bytes)
        } catch {
            findings.append(Finding(rule: .jsonSyntax, file: file, line: error.line, message: "invalid JSON at column \(error.column): \(error.message)"))
            return nil
        }
    }

    func readManifest(files: [String]) -> Manifest? {
        guard let json = parseJSON("manifest.json") else { return nil }
        let manifest: Manifest
        do {
            manifest = try Manifest(json: json)
        } catch {
            findings.append(Finding(rule: .manifestInvalid, file: "manifest.json", pointer: error.pointer, message: error.message))
            return nil
        }
        var listed = Set<String>()
        for (i, artifact) in manifest.artifacts.enumerated() {
            listed.insert(artifact.path)
            // Checked when the passes read the file (or at the end, for files they do not read).
            unverified[artifact.path] = (i, artifact.bytes, artifact.sha256)
        }
        for file in files where file != "manifest.json" && !listed.contains(file) && !isJournal(file) {
            findings.append(Finding(rule: .manifestMissingFile, file: file, message: "the file is not listed in manifest.json"))
        }
        for (s, step) in manifest.steps.enumerated() {
            // fhirbundle numbers step folders in upload order: another number at this position means the steps were
            // reordered, and a later step would then be sent before what it refers to.
            let number = step.folder.split(separator: "/").last?.prefix { $0.isNumber }
            if let number, let n = Int(number), n != s + 1 {
                findings.append(Finding(rule: .manifestInvalid, file: "manifest.json", pointer: "/steps/\(s)/folder",
                                        message: "step \(step.name) is listed as step \(s + 1) but its folder is \(step.folder): the steps were reordered; restore manifest.json"))
            }
            for (b, bundle) in step.bundles.enumerated() where !listed.contains(bundle) {
                findings.append(Finding(rule: .manifestMissingFile, file: "manifest.json", pointer: "/steps/\(s)/bundles/\(b)", message: "\(bundle) is not among the artifacts"))
            }
        }
        expectedCounts = manifest.resourceCounts
        // Size the identifier index once: about one identifier per resource, at most 70% full (rounded up to a
        // power of two, so 35-70%). It is the validator's only per-resource memory: 32 bytes a slot.
        let expected = manifest.resourceCounts.values.reduce(0, +)
        if expected > index.count { index = HashedKeyMap(empty: IndexEntry(), capacity: expected * 10 / 7 + 16) }
        return manifest
    }

    func checkDigest(_ path: String, sha256: String, size: Int) {
        guard let listed = unverified.removeValue(forKey: path) else { return }
        if size != listed.bytes || sha256 != listed.sha256 {
            findings.append(Finding(rule: .manifestChecksum, file: path,
                                    message: "the file's size or SHA-256 differs from manifest.json (\(size) bytes, manifest says \(listed.bytes))"))
        }
    }

    /// Checks the manifest's per-step and per-source figures against the bundles and `rejects.ndjson`: a reviewer
    /// signs off "rows read = rows converted + rejects", so an edited figure is an error like an edited count.
    func checkFigures(of manifest: Manifest) {
        var rejectLines = 0
        var byTask: [String: Int] = [:]
        var byFile: [String: Int] = [:]
        let verify = unverified["rejects.ndjson"] != nil
        let digest = FileStreaming.forEachLine(folder + "/rejects.ndjson", digest: verify) { line, bytes in
            if NDJSONLine.isBlank(bytes) { return }
            rejectLines += 1
            guard let reject = try? JSONParser.parse(bytes) else {
                findings.append(Finding(rule: .ndjsonLine, file: "rejects.ndjson", line: line, message: "not one JSON object"))
                return
            }
            if let task = reject["task"]?.stringValue { byTask[task, default: 0] += 1 }
            if let file = reject["file"]?.stringValue { byFile[file, default: 0] += 1 }
        }
        if let digest, verify { checkDigest("rejects.ndjson", sha256: digest.sha256, size: digest.size) }
        func figure(_ pointer: String, _ message: String) {
            findings.append(Finding(rule: .manifestCounts, file: "manifest.json", pointer: pointer, message: message))
        }
        if rejectLines != manifest.rejects {
            figure("/rejects", "rejects.ndjson holds \(rejectLines) rejects, the manifest says \(manifest.rejects)")
        }
        let sources = Dictionary(manifest.sources.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (s, step) in manifest.steps.enumerated() {
            let p = "/steps/\(s)"
            let found = s < stepTypeCounts.count ? stepTypeCounts[s].byName : [:]
            for type in Set(found.keys).union(step.resources.keys).sorted() where found[type] ?? 0 != step.resources[type] ?? 0 {
                figure("\(p)/resources/\(type)", "the bundles of step \(step.name) hold \(found[type] ?? 0) \(type), the manifest says \(step.resources[type] ?? 0)")
            }
            // A delta's steps carry what changed, not rows read: its figures are checked below.
            if manifest.delta != nil { continue }
            let filed = byTask["step \(step.name)"] ?? 0
            if manifest.mapping != nil && filed != step.rejects {
                figure("\(p)/rejects", "rejects.ndjson holds \(filed) rejects of step \(step.name), the manifest says \(step.rejects)")
            }
            let converted = step.rows - step.rejects
            let written = step.resources.values.reduce(0, +)
            if let groups = step.groups {
                // Several rows make one group, and each group gives at least one resource.
                if step.rejects > step.rows || groups > converted || groups > written || (converted > 0) != (groups > 0) || (groups == 0 && written > 0) {
                    figure("\(p)/groups", "step \(step.name) read \(step.rows) rows, rejected \(step.rejects) and made \(groups) groups, which cannot give its \(written) resources (every group has a row and gives at least one)")
                }
            } else if step.rejects > step.rows || converted > written || (converted == 0 && written > 0) {
                figure("\(p)/rows", "step \(step.name) read \(step.rows) rows and rejected \(step.rejects), which cannot give its \(written) resources (every row converted gives at least one)")
            }
            // Every step reads the whole of its source.
            if let source = sources[step.source], source.rows != step.rows {
                figure("\(p)/rows", "step \(step.name) read \(step.rows) rows of source \(source.name), which has \(source.rows) according to /sources")
            }
        }
        if let delta = manifest.delta {
            let written = manifest.steps.reduce(0) { $0 + $1.resources.values.reduce(0, +) }
            if written != delta.added + delta.changed + delta.resent {
                figure("/delta", "the bundles write \(written) resources, the manifest says \(delta.added) added + \(delta.changed) changed + \(delta.resent) re-sent with a transaction")
            }
            if deleteEntries != delta.deleted {
                figure("/delta/deleted", "the bundles hold \(deleteEntries) deletes, the manifest says \(delta.deleted)")
            }
            if delta.deleted > delta.removed {
                figure("/delta/deleted", "\(delta.deleted) deletes for \(delta.removed) removed identities: a delta deletes only what the new folder no longer writes")
            }
            return
        }
        for (i, source) in manifest.sources.enumerated() where source.rejects > source.rows {
            figure("/sources/\(i)/rejects", "source \(source.name) has more rejects (\(source.rejects)) than rows (\(source.rows))")
        }
        if manifest.mapping == nil {
            // Written by rebundle: every resource read is written in one step or rejected, and rejects name their file.
            let read = manifest.sources.reduce(0) { $0 + $1.rows }
            let written = manifest.steps.reduce(0) { $0 + $1.rows }
            if read != written + manifest.rejects {
                figure("/sources", "the inputs hold \(read) resources, but the steps write \(written) and \(manifest.rejects) were rejected")
            }
            for (i, source) in manifest.sources.enumerated() where byFile[source.file] ?? 0 != source.rejects {
                figure("/sources/\(i)/rejects", "rejects.ndjson holds \(byFile[source.file] ?? 0) rejects of \(source.file), the manifest says \(source.rejects)")
            }
        }
    }

    func compareNDJSONWithBundles() {
        let mismatches = index.count { $0.count != $0.ndjsonCount }
        if mismatches > 0 {
            findings.append(Finding(rule: .ndjsonBundleMismatch, file: "ndjson/", message: "\(mismatches) identifiers appear a different number of times in the NDJSON files and in the bundles"))
        }
    }
}
