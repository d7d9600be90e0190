import FHIRValidation
import Foundation

/// The end-of-run summary: counts, reasons and places, never resource contents.
extension ConvertSummary {
    /// What the run did, for the terminal.
    public func text() -> String {
        var lines: [String] = []
        let m = manifest
        lines.append("Wrote \(outputPath)/ in \(String(format: "%.2f", seconds)) s: \(resourcesWritten) resources in \(bundleCount) bundles from \(rowsRead) rows, \(m.rejects) rejected.")
        lines += stepLines
        lines += rejectLines(folder: outputPath)
        lines += unusedColumnLines
        if let v = validation {
            lines.append("Validated: \(v.errors) errors, \(v.warnings) warnings in \(v.resources) resources (fhirbundle validate \(outputPath) for details).")
        }
        return lines.joined(separator: "\n")
    }

    /// A run whose artifacts failed validation: what the run did (its rejects often explain the findings), then
    /// the findings, each dangling reference followed by the reject of the row that would have written its target.
    public func invalidText(keptAt: String) -> String {
        var lines = ["Converted \(rowsRead) rows into \(resourcesWritten) resources, \(manifest.rejects) rejected; kept in \(keptAt)/ for review."]
        lines += stepLines
        lines += rejectLines(folder: keptAt)
        lines += unusedColumnLines
        guard let report = validation else { return lines.joined(separator: "\n") }
        var explained = 0, dangling = 0
        for f in report.findings {
            guard let identity = f.missingIdentity else { continue }
            dangling += 1
            if rejects.explanation(of: identity) != nil { explained += 1 }
        }
        lines.append(report.text { finding in
            guard let identity = finding.missingIdentity, let e = rejects.explanation(of: identity) else { return nil }
            return "← its target's row \(e.place) was rejected: \(e.reason)"
        })
        if explained > 0 {
            lines.append("\(explained) of the \(dangling) unresolved references point at resources of rejected rows: fix those rows (or the mapping) first.")
        }
        return lines.joined(separator: "\n")
    }

    private var stepLines: [String] {
        manifest.steps.map { step in
            let resources = step.resources.keys.sorted().map { "\(step.resources[$0]!) \($0)" }.joined(separator: ", ")
            return "  \(step.folder): \(step.rows) rows\(step.groups.map { " (\($0) groups)" } ?? "") → \(resources.isEmpty ? "nothing" : resources), \(step.bundles.count) bundles, \(step.rejects) rejected"
        }
    }

    /// Rejects grouped by reason, largest group first, with the first places of each.
    private func rejectLines(folder: String) -> [String] {
        var lines: [String] = []
        let groups = rejects.largestFirst
        if !groups.isEmpty {
            lines.append("Rejected rows by reason:")
            for g in groups.prefix(10) {
                let places = g.examples.map(\.description).joined(separator: ", ") + (g.count > g.examples.count ? ", …" : "")
                lines.append("  \(g.count) × \(g.reason) (\(places))")
            }
            if groups.count > 10 { lines.append("  … and \(groups.count - 10) other reasons") }
            lines.append("Every rejected row is listed with file, line and reason in \(folder)/rejects.ndjson.")
        }
        for d in lookupDuplicates {
            let shown = d.firstLines.map(String.init).joined(separator: ", ") + (d.count > d.firstLines.count ? ", …" : "")
            lines.append("warning: lookup '\(d.lookup)': \(d.count) rows of \(d.file) repeat a key in \(d.keyText) (lines \(shown)); the lookup uses the first row with each key. Those rows are converted by their step all the same.")
        }
        return lines
    }

    /// Columns no template reads: their data does not reach the server.
    private var unusedColumnLines: [String] {
        guard !unusedColumns.isEmpty else { return [] }
        var lines = ["Columns the mapping does not read (their values are not converted):"]
        for u in unusedColumns {
            let shown = u.columns.prefix(20).joined(separator: ", ") + (u.columns.count > 20 ? ", … (\(u.columns.count) in all)" : "")
            lines.append("  \(u.source) (\(u.file)): \(shown)")
        }
        return lines
    }
}
