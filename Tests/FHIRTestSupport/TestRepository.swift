import Foundation

/// Where the tests find the repository's files and the executables `swift test` built.
///
/// Fixtures and schemas sit outside any target, so they are found from this file's path, never from a folder beside
/// the checkout: a fresh clone must pass on its own.
public enum TestRepository {
    /// The repository root (this file is `Tests/FHIRTestSupport/TestRepository.swift`).
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// The absolute path of `path` under `fixtures/`.
    public static func fixture(_ path: String) -> String { root + "/fixtures/" + path }

    /// The absolute path of an executable product built beside the test bundle (`.build/debug/NAME`).
    public static func builtExecutable(_ name: String) -> String {
        var dir = Bundle.main.bundleURL
        if dir.pathExtension == "xctest" { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent(name).path
    }

    /// True when `path`, once `..` and symbolic links are resolved, lies inside the repository.
    public static func contains(_ path: String) -> Bool {
        let resolved = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        let top = URL(fileURLWithPath: root).standardizedFileURL.resolvingSymlinksInPath().path
        return resolved.hasPrefix(top + "/")
    }
}
