import FHIRArtifacts
import FHIRConvert
import FHIRModel
import FHIRTestSupport
import Foundation
import Testing

func fixture(_ path: String) -> String { TestRepository.fixture(path) }

/// A fresh temporary folder, removed by the caller with `cleanup`.
func temporaryFolder(_ name: String = "fhirbundle-test") -> String {
    let path = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func cleanup(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

/// Every file under `folder` (relative path → bytes), skipping dotfiles.
func folderContents(_ folder: String) -> [String: Data] {
    var out: [String: Data] = [:]
    let fm = FileManager.default
    guard let e = fm.enumerator(atPath: folder) else { return out }
    while let rel = e.nextObject() as? String {
        if (rel as NSString).lastPathComponent.hasPrefix(".") { continue }
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: folder + "/" + rel, isDirectory: &isDir), !isDir.boolValue {
            out[rel] = fm.contents(atPath: folder + "/" + rel)
        }
    }
    return out
}

func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

func write(_ text: String, to path: String) {
    try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    if !FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) { Issue.record("cannot write \(path)") }
}

/// Converts `mapping` into `out`.
@discardableResult
func convert(_ mapping: String, out: String, limits: [BundleLimit: Int?] = [:]) throws -> ConvertSummary {
    try Converter(options: ConvertOptions(mappingPath: mapping, outputPath: out, limitOverrides: limits, toolVersion: "test")).run()
}
