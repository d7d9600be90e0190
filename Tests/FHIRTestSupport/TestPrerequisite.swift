import Foundation

/// A program that some tests need and that the repository does not build: an independent validator or server.
///
/// A test asks for it with `try TestPrerequisite.sekmet.path()`. When it is missing, that call throws an error that
/// says what to install, so the tests that need it fail with that message while every other test runs on;
/// nothing is skipped silently and nothing crashes the test process.
public enum TestPrerequisite: String, CaseIterable, Sendable {
    /// The PyPI FHIR R4 server sekmet-fhir, for the uploader's end-to-end tests on 127.0.0.1.
    case sekmet
    /// A Python that has the PyPI validator fhirkit-rs, for the independent cross-check.
    case fhirkitPython
    /// Python 3, for the repository's scripts (FHIR definitions generator).
    case python3
    /// Headless Chromium (Debian's `chromium`), which renders report.html in its test.
    case chromium

    /// The environment variable that names the program, overriding the search.
    public var environmentVariable: String {
        switch self {
        case .sekmet: "SEKMET_BIN"
        case .fhirkitPython: "FHIRKIT_PYTHON"
        case .python3: "PYTHON3"
        case .chromium: "CHROMIUM"
        }
    }

    /// What to do when it is missing.
    public var installHint: String {
        switch self {
        case .sekmet, .fhirkitPython:
            "run `scripts/install-test-tools.sh` (it installs sekmet-fhir==0.1.1 and fhirkit-rs==0.1.0 into .venv-ci/; "
                + "`.ci/run` calls it), or set \(environmentVariable)"
        case .python3:
            "install Python 3 (`apt-get install python3`), or set \(environmentVariable)"
        case .chromium:
            "install Chromium (`apt-get install chromium`; `.ci/run` does), or set \(environmentVariable)"
        }
    }

    /// Where it is looked for, in order, after the environment variable: the test tools' venv, then `PATH`.
    private func candidates(root: String, environment: [String: String]) -> [String] {
        let venv = root + "/.venv-ci/bin/"
        let path = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        switch self {
        case .sekmet: return [venv + "sekmet"] + path.map { "\($0)/sekmet" }
        case .fhirkitPython: return [venv + "python"]
        case .python3: return path.map { "\($0)/python3" }
        case .chromium: return path.flatMap { ["\($0)/chromium", "\($0)/chromium-browser"] }
        }
    }

    /// The program's absolute path.
    /// - Parameters:
    ///   - environment: where the override variable and `PATH` are read (the process's own by default).
    ///   - root: the repository whose `.venv-ci/` is searched.
    /// - Throws: `MissingTestPrerequisite`, saying what to install.
    public func path(environment: [String: String] = ProcessInfo.processInfo.environment,
                     root: String = TestRepository.root) throws(MissingTestPrerequisite) -> String {
        if let named = environment[environmentVariable], !named.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: named) else {
                throw MissingTestPrerequisite(prerequisite: self, reason: "\(environmentVariable)=\(named) is not an executable file")
            }
            return named
        }
        for candidate in candidates(root: root, environment: environment)
        where FileManager.default.isExecutableFile(atPath: candidate) {
            if self == .fhirkitPython, !Self.succeeds(candidate, ["-c", "import fhirkit"]) { continue }
            return candidate
        }
        throw MissingTestPrerequisite(prerequisite: self, reason: "not found")
    }

    private static func succeeds(_ executable: String, _ arguments: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}

/// A test prerequisite that is not installed; its description says what to install.
public struct MissingTestPrerequisite: Error, CustomStringConvertible {
    public let prerequisite: TestPrerequisite
    public let reason: String

    public var description: String { "\(prerequisite.rawValue): \(reason); \(prerequisite.installHint)" }
}
