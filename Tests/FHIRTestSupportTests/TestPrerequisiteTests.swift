import FHIRTestSupport
import Foundation
import Testing

/// A missing test tool is a failure that says what to install, never a silent skip or a crash.
struct TestPrerequisiteTests {
    private let emptyRoot = NSTemporaryDirectory() + "no-repository-\(UUID().uuidString)"

    @Test(arguments: TestPrerequisite.allCases)
    func aMissingToolThrowsAnErrorThatSaysWhatToInstall(tool: TestPrerequisite) {
        do {
            let found = try tool.path(environment: ["PATH": "/nonexistent"], root: emptyRoot)
            Issue.record("found \(found) where nothing is installed")
        } catch {
            #expect(error.description.contains(tool.rawValue + ": not found"))
            let hint = switch tool {
            case .python3: "apt-get install python3"
            case .chromium: "apt-get install chromium"
            default: "scripts/install-test-tools.sh"
            }
            #expect(error.description.contains(hint))
            #expect(error.description.contains(tool.environmentVariable))
        }
    }

    @Test func anOverrideThatIsNotAProgramIsRefusedWithItsName() {
        let error = #expect(throws: MissingTestPrerequisite.self) {
            try TestPrerequisite.sekmet.path(environment: ["SEKMET_BIN": "/nonexistent/sekmet"], root: emptyRoot)
        }
        #expect(error?.description.contains("SEKMET_BIN=/nonexistent/sekmet is not an executable file") == true)
    }

    @Test func theVenvOfTheInstallScriptIsFoundWithoutAnyVariable() throws {
        let bin = emptyRoot + "/.venv-ci/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: emptyRoot) }
        _ = FileManager.default.createFile(atPath: bin + "/sekmet", contents: Data("#!/bin/sh\n".utf8), attributes: [.posixPermissions: 0o755])
        #expect(try TestPrerequisite.sekmet.path(environment: ["PATH": "/nonexistent"], root: emptyRoot) == bin + "/sekmet")
    }
}
