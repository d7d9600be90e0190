import CommandLineSupport
import FHIRConvert
import FHIRValidation
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Draws one progress line on stderr, only when stderr is a terminal, a few times a second.
final class TerminalProgress: ConvertProgress {
    private let enabled = isatty(2) == 1
    private var task = ""
    private var totalBytes = 0
    private var started = Date()
    private var lastDraw = Date.distantPast

    func started(task: String, source: String, totalBytes: Int) {
        self.task = task
        self.totalBytes = totalBytes
        started = Date()
    }

    func advanced(rows: Int, bytes: Int) {
        guard enabled else { return }
        let now = Date()
        guard now.timeIntervalSince(lastDraw) > 0.25 else { return }
        lastDraw = now
        let seconds = max(now.timeIntervalSince(started), 0.001)
        let percent = totalBytes > 0 ? " \(min(100, bytes * 100 / totalBytes))%" : ""
        draw("\(task):\(percent) \(rows) rows, \(Int(Double(rows) / seconds)) rows/s")
    }

    func finished(task: String, rows: Int, rejects: Int) {
        guard enabled else { return }
        let seconds = max(Date().timeIntervalSince(started), 0.001)
        let unit = task == "validate" ? "resources" : "rows"
        draw("\(task): \(rows) \(unit) in \(String(format: "%.2f", seconds)) s (\(Int(Double(rows) / seconds)) \(unit)/s)")
        FileHandle.standardError.write(Data("\n".utf8))
    }

    func clearLine() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    private func draw(_ text: String) {
        FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
    }
}
