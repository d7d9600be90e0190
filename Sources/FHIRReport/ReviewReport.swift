import FHIRArtifacts
import FHIRModel
import FHIRValidation

/// `report.html`: one self-contained page for the people who sign off a migration (a data steward, the clinic's IT
/// lead), written into every folder `convert` and `diff --out` make.
///
/// It shows counts, codes, file names and line numbers: what was read, what was written, what was rejected and
/// why, where each source column went, which coded values appear, what validation found, how the upload will go,
/// and for a delta what changed. No names, dates or identifier values of patients: the page may travel further
/// than the artifacts (a ticket, an e-mail). Nothing is fetched from anywhere (no script, style sheet or font): it
/// is opened on air-gapped machines, and its Content-Security-Policy forbids any fetch.
public struct ReviewReport: Sendable {
    public static let fileName = "report.html"

    /// Rejects with one reason (numbers written as N), and where the first ones are.
    public struct RejectGroup: Sendable {
        public var reason: String
        public var count: Int
        /// `file:line`.
        public var examples: [String]

        public init(reason: String, count: Int, examples: [String]) {
            self.reason = reason
            self.count = count
            self.examples = examples
        }
    }

    /// One source's columns: read or not, and the template elements each fills.
    public struct SourceColumns: Sendable {
        public var source: String
        public var file: String
        public var columns: [(name: String, used: Bool, paths: [String])]

        public init(source: String, file: String, columns: [(name: String, used: Bool, paths: [String])]) {
            self.source = source
            self.file = file
            self.columns = columns
        }
    }

    /// For a delta: per type, added / changed / removed / unchanged.
    public struct DeltaChanges: Sendable {
        public var types: [String: [Int]]

        public init(types: [String: [Int]]) {
            self.types = types
        }
    }

    public var title: String
    public var manifest: Manifest
    public var rejects: [RejectGroup] = []
    public var sources: [SourceColumns] = []
    /// nil: the run was not validated, so neither findings nor coded values are known.
    public var validation: ValidationReport?
    public var delta: DeltaChanges?

    public init(title: String, manifest: Manifest) {
        self.title = title
        self.manifest = manifest
    }

    /// The page, the same bytes for the same inputs (no timestamp).
    public func html() -> [UInt8] {
        var page = HTMLPage(title: title)
        summary(&page)
        if let delta { deltaSection(delta, &page) }
        steps(&page)
        rejectsSection(&page)
        if !sources.isEmpty { sourcesSection(&page) }
        codedValuesSection(&page)
        validationSection(&page)
        uploadPlan(&page)
        return page.finish()
    }

    private func summary(_ page: inout HTMLPage) {
        let m = manifest
        let written = m.resourceCounts.values.reduce(0, +)
        let rows = m.sources.reduce(0) { $0 + $1.rows }
        page.section("Summary")
        var facts: [(String, String)] = [("Tool", "\(m.tool.name) \(m.tool.version)"), ("Server profile", m.profile.rawValue)]
        if let mapping = m.mapping { facts.append(("Mapping", "\(mapping.file) (SHA-256 \(mapping.sha256.prefix(12))…)")) }
        if m.delta == nil { facts.append(("Rows read", number(rows))) }
        facts += [("Resources written", number(written)), ("Rejected", number(m.rejects)),
                  ("Bundles", number(m.steps.reduce(0) { $0 + $1.bundles.count }))]
        if let v = validation {
            facts.append(("Validation", "\(number(v.errors)) errors, \(number(v.warnings)) warnings in \(number(v.resources)) resources"))
        } else {
            facts.append(("Validation", "not run (--no-validate): run fhirbundle validate on the folder"))
        }
        page.facts(facts)
        page.table(["Resource type", "Count"], m.resourceCounts.keys.sorted().map { [$0, number(m.resourceCounts[$0]!)] }, numeric: [1])
    }

    private func deltaSection(_ delta: DeltaChanges, _ page: inout HTMLPage) {
        page.section("Changes since the base folder")
        if let d = manifest.delta {
            page.facts([("Base manifest", "SHA-256 \(d.base.prefix(12))…"), ("New manifest", "SHA-256 \(d.new.prefix(12))…"),
                        ("Added", number(d.added)), ("Changed", number(d.changed)), ("Re-sent with their transaction", number(d.resent)),
                        ("Unchanged, left out", number(d.unchanged)), ("Removed", number(d.removed)),
                        ("Deleted by this folder", d.deleted == 0 && d.removed > 0 ? "0 (removals are never implicit: diff --deletes writes them)" : number(d.deleted))])
        }
        page.table(["Resource type", "Added", "Changed", "Removed", "Unchanged (re-sent ones included)"],
                   delta.types.keys.sorted().map { [$0] + delta.types[$0]!.map(number) }, numeric: [1, 2, 3, 4])
    }

    private func steps(_ page: inout HTMLPage) {
        page.section("Steps", note: "In upload order: rows read → resources written, and the rows rejected.")
        page.table(["#", "Step", "Source", "Bundle", "Rows", "Rejected", "Resources", "Bundles"], manifest.steps.enumerated().map { i, s in
            [String(i + 1), s.name, s.source, s.bundle, number(s.rows), number(s.rejects),
             s.resources.keys.sorted().map { "\(number(s.resources[$0]!)) \($0)" }.joined(separator: ", "), number(s.bundles.count)]
        }, numeric: [0, 4, 5, 7])
    }

    private func rejectsSection(_ page: inout HTMLPage) {
        page.section("Rejects by reason", note: "Every rejected row is in rejects.ndjson with its file, line and reason.")
        if rejects.isEmpty {
            page.paragraph(manifest.rejects == 0 ? "No row was rejected." : "\(number(manifest.rejects)) rows were rejected; see rejects.ndjson.")
            return
        }
        page.table(["Reason", "Rows", "First rows"], rejects.map { [$0.reason, number($0.count), $0.examples.joined(separator: ", ")] }, numeric: [1])
    }

    private func sourcesSection(_ page: inout HTMLPage) {
        page.section("Sources and their columns", note: "Columns no expression reads go nowhere: check that none of them should.")
        let stats = Dictionary(manifest.sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for s in sources {
            let unused = s.columns.filter { !$0.used }.count
            var heading = "\(s.source) — \(s.file)"
            if let st = stats[s.source] { heading += ": \(number(st.rows)) rows, \(number(st.rejects)) rejected" }
            page.subsection(heading + (unused > 0 ? ", \(unused) columns unused" : ""))
            page.table(["Column", "Goes to"], s.columns.map { c in
                [c.name, !c.used ? "— unused —" : c.paths.isEmpty ? "(a key, condition or group column)" : c.paths.joined(separator: ", ")]
            }, flagged: Set(s.columns.enumerated().filter { !$0.element.used }.map(\.offset)))
        }
    }

    private func codedValuesSection(_ page: inout HTMLPage) {
        page.section("Coded values", note: "How often each code appears in the coded elements at the top of the resources: system|code for codings and required value sets, the code systems of the other CodeableConcepts (diagnoses, tests).")
        guard let coded = validation?.codedValues else {
            page.paragraph("Not counted: the run was not validated.")
            return
        }
        if coded.counts.isEmpty { page.paragraph("No coded elements.") }
        for element in coded.counts.keys.sorted() {
            let values = coded.counts[element]!
            page.subsection(element)
            page.table(["Value", "Count"], values.keys.sorted { values[$0]! != values[$1]! ? values[$0]! > values[$1]! : $0 < $1 }.map { [$0, number(values[$0]!)] },
                       numeric: [1])
        }
    }

    private func validationSection(_ page: inout HTMLPage) {
        page.section("Validation findings", note: "By rule; fhirbundle validate on the folder lists every finding.")
        guard let v = validation else {
            page.paragraph("Not run.")
            return
        }
        if v.findings.isEmpty {
            page.paragraph("No errors and no warnings in \(number(v.resources)) resources.")
            return
        }
        var order: [String] = []
        var byRule: [String: [Finding]] = [:]
        for f in v.findings {
            if byRule[f.rule] == nil { order.append(f.rule) }
            byRule[f.rule, default: []].append(f)
        }
        order.sort { (byRule[$0]![0].severity, $0) < (byRule[$1]![0].severity, $1) }
        page.table(["Rule", "Severity", "Count", "First places", "What to do"], order.map { rule in
            let list = byRule[rule]!
            return [rule, list[0].severity.rawValue, number(list.count), list.prefix(3).map(\.location).joined(separator: ", "), list[0].hint]
        }, numeric: [2], flagged: Set(order.enumerated().filter { byRule[$0.element]![0].severity == .error }.map(\.offset)))
    }

    private func uploadPlan(_ page: inout HTMLPage) {
        page.section("Upload plan", note: "fhirupload sends the steps in this order, each step's bundles concurrently, every write a conditional update.")
        let limits = manifest.limits
        page.table(["Limit", "Value"], BundleLimit.allCases.map { [$0.rawValue, limits[$0].map(number) ?? "none"] }, numeric: [1])
        page.table(["#", "Step", "Bundle type", "Bundles", "Writes"], manifest.steps.enumerated().map { i, s in
            [String(i + 1), s.name, s.bundle, number(s.bundles.count), number(s.name == "deletes" && manifest.delta != nil ? s.rows : s.resources.values.reduce(0, +))]
        }, numeric: [0, 3, 4])
    }

    private func number(_ n: Int) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }
}

/// Builds the page's HTML, escaping every text.
struct HTMLPage {
    private var body = ""
    private let title: String

    init(title: String) {
        self.title = title
    }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        // By scalar, not by Character: a combining or prepended mark would hide a `<` inside a grapheme cluster.
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// Sections met so far, for the page's table of contents: (anchor, heading).
    private var contents: [(String, String)] = []

    mutating func section(_ heading: String, note: String? = nil) {
        let anchor = heading.lowercased().split { !$0.isLetter && !$0.isNumber }.joined(separator: "-")
        contents.append((anchor, heading))
        body += "<h2 id=\"\(anchor)\">\(Self.escape(heading))</h2>\n"
        if let note { body += "<p class=\"note\">\(Self.escape(note))</p>\n" }
    }

    mutating func subsection(_ heading: String) {
        body += "<h3>\(Self.escape(heading))</h3>\n"
    }

    mutating func paragraph(_ text: String) {
        body += "<p>\(Self.escape(text))</p>\n"
    }

    mutating func facts(_ facts: [(String, String)]) {
        body += "<dl>\n"
        for (k, v) in facts { body += "<dt>\(Self.escape(k))</dt><dd>\(Self.escape(v))</dd>\n" }
        body += "</dl>\n"
    }

    /// A table in a scrolling box (wide tables scroll on a phone instead of breaking the page); `numeric` columns
    /// are right-aligned, `flagged` rows marked.
    mutating func table(_ headers: [String], _ rows: [[String]], numeric: Set<Int> = [], flagged: Set<Int> = []) {
        body += "<div class=\"scroll\"><table>\n<thead><tr>"
        for (i, h) in headers.enumerated() { body += "<th\(numeric.contains(i) ? " class=\"n\"" : "")>\(Self.escape(h))</th>" }
        body += "</tr></thead>\n<tbody>\n"
        for (r, row) in rows.enumerated() {
            body += flagged.contains(r) ? "<tr class=\"flag\">" : "<tr>"
            for (i, cell) in row.enumerated() { body += "<td\(numeric.contains(i) ? " class=\"n\"" : "")>\(Self.escape(cell))</td>" }
            body += "</tr>\n"
        }
        body += "</tbody></table></div>\n"
    }

    func finish() -> [UInt8] {
        let head = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
            <title>\(Self.escape(title))</title>
            <style>
            body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 64rem; padding: 1rem; color: #1b1b1b; line-height: 1.4; }
            h1 { font-size: 1.5rem; margin: 0.5rem 0 1rem; }
            h2 { font-size: 1.2rem; margin: 2rem 0 0.5rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; }
            h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
            .note { color: #555; font-size: 0.9rem; margin: 0.2rem 0 0.6rem; }
            dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; margin: 0 0 1rem; }
            dt { font-weight: 600; }
            dd { margin: 0; overflow-wrap: anywhere; }
            .scroll { overflow-x: auto; margin: 0 0 1rem; }
            table { border-collapse: collapse; font-size: 0.9rem; }
            th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
            th { background: #f3f3f3; }
            td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
            tr.flag td { background: #fff4e5; }
            nav { font-size: 0.9rem; line-height: 1.8; }
            a { color: #0b57d0; }
            @media (max-width: 40rem) { body { padding: 0.5rem; } dl { grid-template-columns: 1fr; } dt { margin-top: 0.4rem; } table { font-size: 0.8rem; } }
            </style>
            </head>
            <body>
            <h1>\(Self.escape(title))</h1>

            """
        let nav = "<nav>" + contents.map { "<a href=\"#\($0.0)\">\(Self.escape($0.1))</a>" }.joined(separator: " · ") + "</nav>\n"
        return Array((head + nav + body + "</body>\n</html>\n").utf8)
    }
}

extension ArtifactFolder {
    /// Writes `report.html` into the staging folder and lists it in `manifest.json`, which is written again. It comes
    /// after validation because it shows the validation's findings; the manifest changes only by that entry.
    public func addReport(_ report: ReviewReport) throws(ArtifactError) -> Manifest {
        var manifest = report.manifest
        manifest.artifacts.removeAll { $0.path == ReviewReport.fileName }
        manifest.artifacts.append(try write(report.html(), to: ReviewReport.fileName))
        manifest.artifacts.sort { $0.path < $1.path }
        var bytes = JSONWriter(indent: 2).bytes(manifest.json)
        bytes.append(0x0A)
        _ = try write(bytes, to: "manifest.json")
        return manifest
    }
}
