import FHIRConvert
import FHIRValidation
import Foundation
import Testing

/// What fhirbundle's validator accepts, an independent R4 validator (PyPI fhirkit-rs) accepts too.
/// `.ci/run` installs it and sets FHIRKIT_PYTHON to a Python that has it.
struct IndependentValidatorTests {
    private static let python = ProcessInfo.processInfo.environment["FHIRKIT_PYTHON"]
    private static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    @Test(.enabled(if: python != nil, "set FHIRKIT_PYTHON to a Python with fhirkit-rs installed (.ci/run does)"))
    func resourcesWeAcceptAreAcceptedByFhirkit() throws {
        let dir = NSTemporaryDirectory() + "crosscheck-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var folders = [dir + "/seed"]
        _ = try Converter(options: ConvertOptions(mappingPath: Self.root + "/fixtures/medplum-example/mapping.yaml", outputPath: dir + "/seed")).run()
        if FileManager.default.fileExists(atPath: Self.root + "/../shared/data/synthea-csv/patients.csv") {
            _ = try Converter(options: ConvertOptions(mappingPath: Self.root + "/fixtures/synthea/mapping.yaml", outputPath: dir + "/synthea")).run()
            folders.append(dir + "/synthea")
        }
        for folder in folders {
            #expect(try ArtifactValidator(folder: folder).run().errors == 0)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.python!)
        p.arguments = [Self.root + "/scripts/cross-check-fhirkit.py"] + folders
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(output)")
        #expect(output.contains(" passed, 0 failed"))
    }
}
