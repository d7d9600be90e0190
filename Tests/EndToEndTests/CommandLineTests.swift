import FHIRModel
import FHIRTestSupport
import Foundation
import Testing

/// The built `fhirbundle` executable, run as a user would: exit statuses, output streams, help.
struct CommandLineTests {
    /// Runs the built `fhirbundle` from the repository root, as the README's commands do.
    private func run(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(TestRepository.builtExecutable("fhirbundle"), arguments, currentDirectory: TestRepository.root)
    }

    @Test func convertAndValidateTheExampleExitZero() throws {
        let out = NSTemporaryDirectory() + "cli-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let convert = try run(["convert", "fixtures/medplum-example/mapping.yaml", "--out", out])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stderr.contains("9 resources in 3 bundles from 7 rows, 0 rejected"))
        #expect(convert.stderr.contains("Validated: 0 errors"))
        let validate = try run(["validate", out])
        #expect(validate.status == 0)
        #expect(validate.stdout.contains("0 errors, 0 warnings in 9 resources"))
        let json = try run(["validate", out, "--format", "json"])
        #expect(json.stdout.contains("\"errors\": 0"))
    }

    @Test func mappingErrorsPrintCompilerStyleAndExitOne() throws {
        let dir = NSTemporaryDirectory() + "cli-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "id\n1\n".write(toFile: dir + "/a.csv", atomically: true, encoding: .utf8)
        try """
            sources: { a: { file: a.csv } }
            steps:
              - name: a
                source: a
                bundle: batch
                resource: { resourceType: Patient, identifier: [{ system: "http://x", value: "{{ idd }}" }] }
            """.write(toFile: dir + "/m.yaml", atomically: true, encoding: .utf8)
        let r = try run(["convert", dir + "/m.yaml", "--out", dir + "/out"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("m.yaml:6:"))
        #expect(r.stderr.contains(": error: unknown name 'idd'"))
    }

    @Test func validateExitsOneOnErrorsAndTwoWhenItCannotRun() throws {
        let bad = try run(["validate", "fixtures/validation/required-binding"])
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("error: required-binding (1)"))
        #expect(bad.stdout.contains("hint:"))
        let missing = try run(["validate", "/nonexistent/folder"])
        #expect(missing.status == 2)
        let usage = try run(["validate", "out", "--format", "yaml"])
        #expect(usage.status == 64)
    }

    @Test func aKnownIdentifiersFileWithALineOfNeitherFormIsRefusedNamingTheLine() throws {
        let file = NSTemporaryDirectory() + "known-\(UUID().uuidString).txt"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "# on the server\nPatient|http://x/mrn|1\ngarbage line\nPatient/p1\nPatient/\n".write(toFile: file, atomically: true, encoding: .utf8)
        let r = try run(["validate", "fixtures/validation/valid", "--known-identifiers", file])
        #expect(r.status == 2)
        #expect(r.stderr.contains("line 3, 5 is neither Type|system|value nor Type/id"), "\(r.stderr)")
        #expect(!r.stderr.contains("garbage"))
    }

    @Test func helpExplainsTheCommands() throws {
        let help = try run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("convert"))
        #expect(help.stdout.contains("validate"))
        #expect(try run(["convert", "--help"]).stdout.contains("--out"))
    }

    @Test func diffPrintsCountsAsTextAndJSONAndWritesTheDelta() throws {
        let dir = NSTemporaryDirectory() + "cli-diff-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let waves = try MigrationWaves.write(in: dir, patients: 20)
        #expect(try run(["convert", waves.first, "--out", dir + "/out1", "--quiet"]).status == 0)
        #expect(try run(["convert", waves.second, "--out", dir + "/out2", "--quiet"]).status == 0)
        let text = try run(["diff", dir + "/out1", dir + "/out2"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("  Patient: 2 added, 2 changed, 2 removed, 16 unchanged"))
        #expect(text.stdout.contains("removed (first 5 of 6):\n  Patient?identifier=http://example.org/clinic/patient|P2\n"))
        let json = try run(["diff", dir + "/out1", dir + "/out2", "--format", "json"])
        let parsed = try JSONParser.parse(json.stdout)
        #expect(parsed["types"]?["Encounter"] == .object([JSONMember("added", .number("0")), JSONMember("changed", .number("0")),
                                                        JSONMember("removed", .number("2")), JSONMember("unchanged", .number("8"))]))
        #expect(parsed["removed"]?.arrayValue?.count == 6)
        let delta = try run(["diff", dir + "/out1", dir + "/out2", "--out", dir + "/delta"])
        #expect(delta.status == 0)
        #expect(delta.stderr.contains("note: 6 removed identities are not deleted (removals are never implicit); --deletes writes conditional deletes for them."))
        #expect(try run(["validate", dir + "/delta"]).status == 0)
        #expect(try run(["diff", dir + "/out1", dir + "/out2", "--deletes"]).status == 64)
        #expect(try run(["diff", dir + "/out1", dir + "/nothing"]).status == 1)
    }
}
