import ArgumentParser
import CommandLineSupport
import FHIRArtifacts
import FHIRDiff
import FHIRModel
import Foundation

struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare two artifact folders by resource identity, and write the delta that takes a server from one to the other.",
        discussion: """
            Each resource is known by what it is written by: its conditional update (Type?identifier=system|value). \
            A resource of NEW whose identity OLD lacks is added; one whose content differs is changed; an identity \
            of OLD that NEW no longer writes is removed. Per type, the counts and the first examples are printed.

            With --out, writes an artifact folder holding only the added and changed resources, in NEW's steps and \
            order (a changed resource's whole transaction is re-sent with it); references to unchanged resources \
            stay conditional references, listed in known-identifiers.txt as resources the server already holds. \
            Upload it with fhirupload like any folder. Removals are never implicit: without --deletes the delta only \
            adds and updates, and says how many removals it left out; with --deletes it ends with conditional \
            deletes (DELETE Type?identifier=system|value), referrers before what they refer to.

            --show prints the changed elements of the first changed resources, with their old and new values: \
            health data, for a reviewer's terminal, not for logs.

            Exit status: 0 when the comparison (and the delta) succeeded, whatever it found; 1 when it failed; 64 \
            for a usage error.

            Examples:
              fhirbundle diff out-2026-11 out-2026-12
              fhirbundle diff out-2026-11 out-2026-12 --format json
              fhirbundle diff out-2026-11 out-2026-12 --out delta-2026-12 --deletes
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Argument(help: ArgumentHelp("The artifact folder the server holds now (an earlier run).", valueName: "old"))
    var old: String

    @Argument(help: ArgumentHelp("The artifact folder it should hold (a later run).", valueName: "new"))
    var new: String

    @Option(help: "text (counts and first examples) or json (counts and every identity).")
    var format: Format = .text

    @Flag(help: "Print the changed elements of the first changed resources (see --show-limit).")
    var show = false

    @Option(help: ArgumentHelp("How many changed resources --show prints.", valueName: "n"))
    var showLimit = 20

    @Option(name: [.short, .long], help: ArgumentHelp("Write the delta folder here (replaced when the run completes).", valueName: "dir"))
    var out: String?

    @Flag(help: "With --out: also delete the removed identities on the server (conditional deletes).")
    var deletes = false

    @Flag(help: "With --out: indent bundle files for reading.")
    var pretty = false

    @Flag(help: "With --out: skip the offline validation of the delta before it replaces the output folder.")
    var noValidate = false

    func validate() throws {
        if deletes && out == nil { throw ValidationError("--deletes applies to the delta folder: give --out") }
        if showLimit < 0 { throw ValidationError("--show-limit must be 0 or more") }
    }

    func run() throws {
        let report: DiffReport
        let oldEntries: ArtifactEntries
        let newEntries: ArtifactEntries
        do {
            oldEntries = try ArtifactEntries(folder: old)
            newEntries = try ArtifactEntries(folder: new)
            report = try ArtifactDiff.compare(old: oldEntries, new: newEntries, show: show ? showLimit : 0)
        } catch {
            Stderr.print("error: \(error)")
            throw ExitCode.failure
        }
        switch format {
        case .text: print(DiffText.text(report, old: old, new: new, show: show), terminator: "")
        case .json: print(String(decoding: JSONWriter(indent: 2).bytes(DiffText.json(report, show: show)), as: UTF8.self))
        }
        guard let out else { return }
        var options = DeltaOptions(outputPath: out)
        options.deletes = deletes
        options.layout = pretty ? .pretty : .entryPerLine
        options.validate = !noValidate
        let summary: DeltaSummary
        do {
            summary = try DeltaWriter.write(old: oldEntries, new: newEntries, report: report, options: options)
        } catch let DeltaFailure.invalid(validation, keptAt) {
            Stderr.print(validation.text())
            Stderr.print("error: \(DeltaFailure.invalid(validation, keptAt: keptAt))")
            throw ExitCode.failure
        } catch {
            Stderr.print("error: \(error)")
            throw ExitCode.failure
        }
        let m = summary.manifest
        let d = m.delta!
        let bundles = m.steps.reduce(0) { $0 + $1.bundles.count }
        var lines = ["Wrote \(out)/: \(d.added) added, \(d.changed) changed" + (d.resent > 0 ? ", \(d.resent) unchanged re-sent with their transaction" : "")
                     + (d.deleted > 0 ? ", \(d.deleted) deletes" : "") + " in \(bundles) bundles."]
        if d.removed > 0 && !deletes {
            lines.append("note: \(d.removed) removed identities are not deleted (removals are never implicit); --deletes writes conditional deletes for them.")
        } else if d.removed > d.deleted {
            lines.append("note: \(d.removed - d.deleted) removed identities are not deleted: \(new)/known-identifiers.txt says they are on the server, and the new folder refers to them.")
        }
        if let v = summary.validation {
            lines.append("Validated: \(v.errors) errors, \(v.warnings) warnings in \(v.resources) resources (fhirbundle validate \(out) for details).")
        }
        Stderr.print(lines.joined(separator: "\n"))
    }
}

/// The two renderings of a diff report.
enum DiffText {
    static let examples = 5

    static func text(_ report: DiffReport, old: String, new: String, show: Bool) -> String {
        var lines: [String] = []
        let total = report.total
        lines.append("\(old) → \(new): \(total.added) added, \(total.changed) changed, \(total.removed) removed, \(total.unchanged) unchanged")
        for type in report.types.keys.sorted() {
            let c = report.types[type]!
            lines.append("  \(type): \(c.added) added, \(c.changed) changed, \(c.removed) removed, \(c.unchanged) unchanged")
        }
        for (name, identities) in [("added", report.added), ("changed", report.changed), ("removed", report.removed)] where !identities.isEmpty {
            let more = identities.count > examples ? " (first \(examples) of \(identities.count))" : ""
            lines.append("\(name)\(more):")
            for identity in identities.prefix(examples) { lines.append("  \(identity)") }
        }
        if report.unidentified > 0 {
            lines.append("note: \(report.unidentified) entries of \(new) are plain creates, which no identity names: not compared, and left out of a delta.")
        }
        if show {
            for change in report.shown {
                lines.append("")
                lines.append(change.identity)
                for c in change.changes { lines.append("  \(c.path): \(rendered(c.old)) → \(rendered(c.new))") }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func json(_ report: DiffReport, show: Bool) -> JSONValue {
        func n(_ i: Int) -> JSONValue { .number(String(i)) }
        var members = [
            JSONMember("old", .object([JSONMember("manifestSha256", .string(report.oldManifestSHA256))])),
            JSONMember("new", .object([JSONMember("manifestSha256", .string(report.newManifestSHA256))])),
            JSONMember("types", .object(report.types.keys.sorted().map { type in
                let c = report.types[type]!
                return JSONMember(type, .object([JSONMember("added", n(c.added)), JSONMember("changed", n(c.changed)),
                                                 JSONMember("removed", n(c.removed)), JSONMember("unchanged", n(c.unchanged))]))
            })),
            JSONMember("added", .array(report.added.map { .string($0) })),
            JSONMember("changed", .array(report.changed.map { .string($0) })),
            JSONMember("removed", .array(report.removed.map { .string($0) })),
            JSONMember("unidentified", n(report.unidentified)),
        ]
        if show {
            members.append(JSONMember("shown", .array(report.shown.map { change in
                .object([JSONMember("identity", .string(change.identity)), JSONMember("changes", .array(change.changes.map { c in
                    .object([JSONMember("path", .string(c.path))] + (c.old.map { [JSONMember("old", $0)] } ?? []) + (c.new.map { [JSONMember("new", $0)] } ?? []))
                }))])
            })))
        }
        return .object(members)
    }

    /// A value as compact JSON, cut at 120 characters; `(absent)` for none.
    static func rendered(_ value: JSONValue?) -> String {
        guard let value else { return "(absent)" }
        let s = JSONWriter().string(value)
        return s.count > 120 ? String(s.prefix(117)) + "..." : s
    }
}
