import FHIRArtifacts
import FHIRConvert
import FHIRModel
import FHIRReport
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// The Synthea example converted once for these tests.
private let synthea: Result<String, any Error> = Result {
    let out = NSTemporaryDirectory() + "report-\(UUID().uuidString)"
    _ = try Converter(options: ConvertOptions(mappingPath: TestRepository.fixture("synthea/mapping.yaml"), outputPath: out)).run()
    return out
}

/// What headless Chromium shows of a page at a phone's width: a wrapper page loads it in a frame of that width and
/// writes, as JSON, its headings, the text of its cells and whether it scrolls sideways.
private func rendered(_ page: String, width: Int) throws -> JSONValue {
    let chromium = try TestPrerequisite.chromium.path()
    let dir = NSTemporaryDirectory() + "render-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try """
        <!DOCTYPE html><html><body style="margin:0">
        <iframe id="f" src="file://\(page)" style="width:\(width)px;height:800px;border:0"></iframe>
        <pre id="result">pending</pre>
        <script>
        document.getElementById('f').onload = function () {
          var d = document.getElementById('f').contentDocument;
          var out = {
            title: d.title,
            headings: Array.from(d.querySelectorAll('h2')).map(function (h) { return h.textContent; }),
            cells: Array.from(d.querySelectorAll('td')).map(function (c) { return c.textContent; }),
            pageWidth: d.documentElement.scrollWidth,
            frameWidth: d.documentElement.clientWidth,
            scripts: d.querySelectorAll('script').length
          };
          document.getElementById('result').textContent = JSON.stringify(out);
        };
        </script></body></html>
        """.write(toFile: dir + "/wrapper.html", atomically: true, encoding: .utf8)
    let run = try runProcess(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                                        "--virtual-time-budget=10000", "--window-size=\(width + 20),900", "--dump-dom", "file://\(dir)/wrapper.html"],
                             currentDirectory: dir)
    try #require(run.status == 0, "chromium failed: \(run.stderr.suffix(500))")
    let html = run.stdout
    guard let start = html.range(of: "<pre id=\"result\">"), let end = html.range(of: "</pre>", range: start.upperBound..<html.endIndex) else {
        throw RenderFailure(message: "no result in the rendered page")
    }
    let text = String(html[start.upperBound..<end.lowerBound]).replacingOccurrences(of: "&amp;", with: "&")
        .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&quot;", with: "\"")
    return try JSONParser.parse(text)
}

private struct RenderFailure: Error {
    let message: String
}

struct ReviewReportTests {
    @Test func theReportIsListedInTheManifestAndTheFolderValidates() throws {
        let out = try synthea.get()
        let manifest = try Manifest(json: JSONParser.parse(Array(try #require(FileManager.default.contents(atPath: out + "/manifest.json")))))
        let listed = try #require(manifest.artifacts.first { $0.path == "report.html" })
        let bytes = Array(try #require(FileManager.default.contents(atPath: out + "/report.html")))
        #expect(listed.sha256 == sha256Hex(bytes) && listed.bytes == bytes.count)
        #expect(try ArtifactValidator(folder: out).run().errors == 0)
    }

    @Test func theReportFetchesNothingAndShowsNoPatientData() throws {
        let html = try String(contentsOfFile: try synthea.get() + "/report.html", encoding: .utf8)
        #expect(!html.contains("<script") && !html.contains("<link") && !html.contains("src=") && !html.contains("url("))
        #expect(!html.contains("href=\"http"))
        #expect(html.contains("Content-Security-Policy\" content=\"default-src 'none'"))
        // No name, birth date or identifier of a patient of the export.
        let patients = try String(contentsOfFile: TestRepository.fixture("synthea/csv/patients.csv"), encoding: .utf8).split(separator: "\n")
        let header = patients[0].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        for row in patients.dropFirst().prefix(20) {
            let fields = row.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            for column in ["Id", "BIRTHDATE", "FIRST", "LAST", "SSN", "ADDRESS"] {
                let value = fields[header.firstIndex(of: column)!]
                #expect(value.count < 4 || !html.contains(value), "report.html shows \(column) of a patient")
            }
        }
    }

    @Test func chromiumShowsTheFiguresOnAPhoneWithoutSidewaysScrolling() throws {
        let shown = try rendered(try synthea.get() + "/report.html", width: 390)
        #expect(shown["title"] == .string("Conversion of mapping.yaml"))
        #expect(shown["scripts"] == .number("0"))
        let headings = shown["headings"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(headings == ["Summary", "Steps", "Rejects by reason", "Sources and their columns", "Coded values", "Validation findings", "Upload plan"])
        let cells = shown["cells"]?.arrayValue?.compactMap(\.stringValue) ?? []
        // Resource counts, a step's rows, an unused column, coded values as the artifacts hold them.
        #expect(cells.contains("21,697") && cells.contains("observations"))
        #expect(cells.contains("HEALTHCARE_EXPENSES") && cells.contains("— unused —"))
        #expect(cells.contains("Patient.name.given"))
        let ndjson = try String(contentsOfFile: try synthea.get() + "/ndjson/Patient.ndjson", encoding: .utf8)
        let female = ndjson.components(separatedBy: "\"gender\":\"female\"").count - 1
        let index = try #require(cells.firstIndex(of: "female"))
        #expect(cells[index + 1] == String(female))
        // Wide tables scroll in their own box; the page itself fits the phone's width.
        guard case .number(let page)? = shown["pageWidth"], case .number(let frame)? = shown["frameWidth"] else {
            Issue.record("no widths in \(shown)")
            return
        }
        #expect(Int(page)! <= Int(frame)!, "the page is \(page) px wide in a \(frame) px frame")
    }
}

struct ReviewReportEscapingTests {
    /// A column name from a source file cannot open a tag, even behind a mark that joins the `<` into one
    /// grapheme cluster.
    @Test func sourceTextIsEscapedScalarByScalar() throws {
        let manifest = Manifest(tool: .init(name: "fhirbundle", version: "0"), mapping: nil, limits: .medplum, sources: [], steps: [], artifacts: [],
                                resourceCounts: [:], rejects: 0)
        var report = ReviewReport(title: "t", manifest: manifest)
        report.sources = [ReviewReport.SourceColumns(source: "s", file: "f.csv", columns: [(name: "\u{0600}<meta http-equiv=refresh>", used: false, paths: [])])]
        let html = String(decoding: report.html(), as: UTF8.self)
        #expect(!html.contains("<meta http-equiv=refresh"))
        #expect(html.contains("&lt;meta http-equiv=refresh&gt;"))
    }
}
