import FHIRConvert
import FHIRModel
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

private let root = TestRepository.root

private let fixtureFolders: [String] = {
    let dir = root + "/fixtures/validation"
    return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { !$0.hasSuffix(".md") }.sorted()
}()

/// `rule` or `rule.case`: folders where that rule must fire.
private let ruleFolders = fixtureFolders.filter { $0 != "valid" && !$0.hasPrefix("valid.") }
/// `valid` and `valid.case` (false alarms fixed): folders that must give no finding at all.
private let validFolders = fixtureFolders.filter { $0 == "valid" || $0.hasPrefix("valid.") }

/// Rules about what is inside a resource or entry.
private let insideResource: Set<String> = Set([
    Rule.duplicateKey, .unknownElement, .cardinality, .primitiveType, .primitiveFormat, .requiredBinding, .emptyValue, .referenceTarget,
    .literalUnresolved, .conditionalUnresolved, .urnUnresolved, .urnInBatch, .entryRequest, .entryResourceType, .bundleInvariant,
].map(\.id))

/// The rule a fixture folder is named after.
private func rule(ofFolder folder: String) -> String { String(folder.prefix { $0 != "." }) }

/// Validates a fixture folder with the arguments of its `validate-args` file (`--limit name=N`, `--max-json-bytes N`),
/// as `fhirbundle validate DIR $(cat DIR/validate-args)` would.
private func validateFixture(_ folder: String) throws -> ValidationReport {
    let dir = root + "/fixtures/validation/" + folder
    var options = ValidationOptions()
    if let args = try? String(contentsOfFile: dir + "/validate-args", encoding: .utf8) {
        let words = args.split(whereSeparator: \.isWhitespace).map(String.init)
        for (flag, value) in zip(words, words.dropFirst()) {
            if flag == "--max-json-bytes", let n = Int(value) { options.maxJSONBytes = n }
            if flag == "--limit", let eq = value.firstIndex(of: "="), let limit = BundleLimit(rawValue: String(value[..<eq])) {
                options.limitOverrides[limit] = Int(value[value.index(after: eq)...])
            }
        }
    }
    return try ArtifactValidator(folder: dir, options: options).run()
}

struct ValidationRuleTests {
    @Test func validFixtureHasNoFinding() throws {
        let report = try ArtifactValidator(folder: root + "/fixtures/validation/valid").run()
        #expect(report.findings.isEmpty, "\(report.findings)")
        #expect(report.resources == 5)
    }

    /// The false alarms fixed stay fixed: legal FHIR gives no finding.
    @Test(arguments: validFolders)
    func legalFHIRGivesNoFinding(folder: String) throws {
        let report = try validateFixture(folder)
        #expect(report.findings.isEmpty, "\(report.findings.map { "\($0.rule) \($0.location): \($0.message)" })")
        #expect(report.resources > 0)
    }

    @Test(arguments: ruleFolders)
    func eachRuleFiresOnItsFixture(folder: String) throws {
        let report = try validateFixture(folder)
        let rule = rule(ofFolder: folder)
        let fired = report.findings.filter { $0.rule == rule }
        #expect(!fired.isEmpty, "rule \(rule) did not fire on \(folder); found \(report.findings.map(\.rule))")
        for f in fired {
            #expect(!f.file.isEmpty)
            // A finding about something inside a resource points at it; one about a file (checksum, a FIFO) names it.
            if insideResource.contains(rule) { #expect(f.pointer != nil, "a finding must point at the element: \(f)") }
            if f.file.hasSuffix(".ndjson") && insideResource.contains(rule) { #expect(f.line != nil, "an NDJSON finding must give its line: \(f)") }
            #expect(!f.hint.isEmpty)
        }
    }

    @Test func everyRuleHasAFixture() {
        let covered = Set(ruleFolders.map(rule(ofFolder:)))
        for rule in Rule.allCases {
            #expect(covered.contains(rule.id), "no folder fixtures/validation/\(rule.id) (or \(rule.id).<case>) makes rule \(rule.id) fire")
        }
        for folder in ruleFolders {
            #expect(Rule(rawValue: rule(ofFolder: folder)) != nil, "fixtures/validation/\(folder) is named after no rule")
        }
    }

    @Test func foreignSyntheaStyleTransactionHasNoErrorButIsNotReplaySafe() throws {
        let report = try ArtifactValidator(folder: root + "/fixtures/foreign/synthea-style").run()
        #expect(report.errors == 0, "\(report.findings)")
        #expect(report.resources == 3)
        #expect(report.findings.map(\.rule) == ["not-idempotent", "not-idempotent", "not-idempotent"])
    }

    @Test func findingsPointAtTheJSONLocation() throws {
        let report = try ArtifactValidator(folder: root + "/fixtures/validation/primitive-format").run()
        let f = try #require(report.findings.first { $0.rule == "primitive-format" })
        #expect(f.file == "01/0001.json")
        #expect(f.pointer == "/entry/0/resource/birthDate")
        let syntax = try ArtifactValidator(folder: root + "/fixtures/validation/json-syntax").run().findings[0]
        #expect(syntax.line == 1)
        #expect(syntax.message.contains("column"))
    }
}

/// Folders written by convert: the seed example and the Synthea mapping's output validate clean; damage is found.
struct ManifestValidationTests {
    private func convertSeed(into dir: String) throws {
        _ = try Converter(options: ConvertOptions(mappingPath: root + "/fixtures/medplum-example/mapping.yaml", outputPath: dir, toolVersion: "test")).run()
    }

    @Test func seedExampleArtifactsValidateWithNoFinding() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let report = try ArtifactValidator(folder: dir).run()
        #expect(report.findings.isEmpty, "\(report.findings)")
        #expect(report.resources == 9)
    }

    @Test func syntheaArtifactsValidateWithNoError() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Converter(options: ConvertOptions(mappingPath: root + "/fixtures/synthea/mapping.yaml", outputPath: dir, toolVersion: "test")).run()
        let report = try ArtifactValidator(folder: dir).run()
        #expect(report.errors == 0, "\(report.findings.prefix(5))")
        #expect(report.resources == 26226)
    }

    @Test func alteredFileIsCaughtByItsChecksum() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/ndjson/Patient.ndjson"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "John", with: "Jon")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let report = try ArtifactValidator(folder: dir).run()
        #expect(report.findings.contains { $0.rule == "manifest-checksum" && $0.file == "ndjson/Patient.ndjson" })
    }

    @Test func missingAndExtraFilesAreFound() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        try FileManager.default.removeItem(atPath: dir + "/ndjson/Condition.ndjson")
        #expect(FileManager.default.createFile(atPath: dir + "/stray.json", contents: Data("{}".utf8)))
        let rules = Set(try ArtifactValidator(folder: dir).run().findings.map(\.rule))
        #expect(rules.contains("manifest-missing-file"))
        #expect(rules.contains("manifest-counts"))
    }

    @Test func brokenManifestIsReportedWithItsPointer() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/manifest.json"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"formatVersion\": 1", with: "\"formatVersion\": 9")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let f = try #require(try ArtifactValidator(folder: dir).run().findings.first { $0.rule == "manifest-invalid" })
        #expect(f.pointer == "/formatVersion")
    }

    /// The figures a reviewer reads ("rows = converted rows + rejects") are checked, not only `resourceCounts`.
    @Test(arguments: [
        ("/steps/0/resources/Patient", JSONValue.number("3"), "/steps/0/resources/Patient"),
        ("/steps/0/rows", .number("3"), "/steps/0/rows"),
        ("/steps/1/rejects", .number("1"), "/steps/1/rejects"),
        ("/sources/0/rows", .number("7"), "/steps/0/rows"),
        ("/rejects", .number("4"), "/rejects"),
    ])
    func eachEditedManifestFigureIsAnError(pointer: String, value: JSONValue, reportedAt: String) throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/manifest.json"
        let manifest = try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        try Data(JSONWriter(indent: 2).bytes(manifest.setting(pointer, to: value))).write(to: URL(fileURLWithPath: path))
        let findings = try ArtifactValidator(folder: dir).run().findings.filter { $0.rule == "manifest-counts" }
        #expect(findings.contains { $0.file == "manifest.json" && $0.pointer == reportedAt }, "\(findings)")
    }

    @Test func aControlCharacterInAStringIsAnErrorAtItsPointer() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let patient = #"{"resourceType":"Patient","id":"p1","name":[{"family":"Do\u001be","given":["Tab\tis fine"]}],"birthDate":"1980-01-02"}"#
        try Data((patient + "\n").utf8).write(to: URL(fileURLWithPath: dir + "/Patient.ndjson"))
        let findings = try ArtifactValidator(folder: dir).run().findings.filter { $0.severity == .error }
        #expect(findings.count == 1, "\(findings)")
        #expect(findings.first?.pointer == "/name/0/family")
        #expect(findings.first?.line == 1)
        #expect(findings.first?.message.contains("control character U+001B") == true)
    }

    @Test func hiddenFilesAndStrangersInUploadAreReportedNotSkipped() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let fm = FileManager.default
        #expect(fm.createFile(atPath: dir + "/bundles/01-patients/.0002.json", contents: Data("{}".utf8)))
        try fm.createDirectory(atPath: dir + "/.git/objects", withIntermediateDirectories: true)
        #expect(fm.createFile(atPath: dir + "/.git/objects/ab", contents: Data()))
        try fm.createDirectory(atPath: dir + "/upload/127.0.0.1-8103-0123456789ab", withIntermediateDirectories: true)
        #expect(fm.createFile(atPath: dir + "/upload/127.0.0.1-8103-0123456789ab/journal.ndjson", contents: Data()))
        #expect(fm.createFile(atPath: dir + "/upload/127.0.0.1-8103-0123456789ab/extra.json", contents: Data("{}".utf8)))
        #expect(fm.createFile(atPath: dir + "/.gitkeep", contents: Data()))
        let report = try ArtifactValidator(folder: dir).run()
        let reported = report.findings.filter { $0.rule == "unlisted-hidden-file" }.map(\.file)
        #expect(reported == [".git/", "bundles/01-patients/.0002.json", "upload/127.0.0.1-8103-0123456789ab/extra.json"])
        #expect(report.errors == 0, "\(report.findings)")  // reported, not refused: nothing of it is uploaded
    }

    @Test func reorderedStepsAreRefusedNamingTheManifest() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/manifest.json"
        let manifest = try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        let steps = try #require(manifest["steps"]?.arrayValue)
        let swapped = manifest.setting("/steps", to: .array([steps[1], steps[0]] + steps.dropFirst(2)))
        try Data(JSONWriter(indent: 2).bytes(swapped)).write(to: URL(fileURLWithPath: path))
        let findings = try ArtifactValidator(folder: dir).run().findings.filter { $0.rule == "manifest-invalid" }
        #expect(findings.first?.file == "manifest.json")
        #expect(findings.first?.pointer == "/steps/0/folder")
        #expect(findings.first?.message.contains("the steps were reordered") == true)
    }

    @Test func ndjsonThatDisagreesWithTheBundlesIsFound() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/ndjson/Patient.ndjson"
        let first = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")[0]
        try (first + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let rules = Set(try ArtifactValidator(folder: dir).run().findings.map(\.rule))
        #expect(rules.contains("ndjson-bundle-mismatch"))
    }

    /// Mirror lines with their twin's very bytes are not parsed again and their identifiers were counted with the
    /// twin; when the mirror is not the bundles' (here a line replaced by a copy of another), every line is counted
    /// again, so the difference is found as before.
    @Test(arguments: [1, 2])
    func aMirrorLineReplacedByACopyOfAnotherIsFound(threads: Int) throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/ndjson/Patient.ndjson"
        var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        try #require(lines.count >= 2)
        lines[1] = lines[0]
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        var options = ValidationOptions()
        options.threads = threads
        let findings = try ArtifactValidator(folder: dir, options: options).run().findings
        #expect(findings.contains { $0.rule == "ndjson-bundle-mismatch" })
    }

    /// Reordered mirror lines are no twins of the resources at their places: each is checked whole, counted again,
    /// and, being the same resources, agree with the bundles.
    @Test func reorderedMirrorLinesAreCheckedWholeAndAgreeWithTheBundles() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        let path = dir + "/ndjson/Patient.ndjson"
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        try #require(lines.count >= 2)
        try (lines.reversed().joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let findings = try ArtifactValidator(folder: dir).run().findings
        #expect(!findings.contains { $0.rule == "ndjson-bundle-mismatch" })
        // Only the checksum of the edited file is off.
        #expect(Set(findings.map(\.rule)) == ["manifest-checksum"])
    }

    /// A twin's coded values are counted when its bundle is read; a mirror that is not the bundles' is counted from
    /// its own lines, so the census is of the NDJSON resources whatever the bundles say.
    @Test func codedValuesOfAMirrorThatDiffersFromItsBundlesAreItsOwn() throws {
        let dir = NSTemporaryDirectory() + "validate-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try convertSeed(into: dir)
        var options = ValidationOptions()
        options.countCodedValues = true
        let asWritten = try #require(try ArtifactValidator(folder: dir, options: options).run().codedValues)
        #expect(asWritten.counts["Patient.gender"] == ["male": 1, "female": 1])
        let path = dir + "/ndjson/Patient.ndjson"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: "\"gender\":\"male\"", with: "\"gender\":\"other\"").write(toFile: path, atomically: true, encoding: .utf8)
        let edited = try #require(try ArtifactValidator(folder: dir, options: options).run().codedValues)
        #expect(edited.counts["Patient.gender"] == ["other": 1, "female": 1])
        #expect(edited.counts["Encounter.status"] == asWritten.counts["Encounter.status"])
    }

    @Test func unreadableFolderCannotBeValidated() {
        #expect(throws: ValidationFailure.self) { try ArtifactValidator(folder: "/nonexistent/folder").run() }
    }

    @Test func aFolderWithNothingToValidateDoesNotPass() throws {
        let dir = NSTemporaryDirectory() + "empty-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        try "notes".write(toFile: dir + "/README.txt", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: ValidationFailure.self) { try ArtifactValidator(folder: dir).run() }
    }
}

/// This test process's folder for the limit tests' artifact folders, removed when the process exits.
private let scratchPath = NSTemporaryDirectory() + "limits-tests-\(getpid())"
private let scratch: String = {
    try? FileManager.default.createDirectory(atPath: scratchPath, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: scratchPath) }
    return scratchPath
}()

/// Size limits, on bundles made to break them.
struct LimitValidationTests {
    private func folder(_ bundle: String) -> String {
        let dir = scratch + "/\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir + "/01", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: dir + "/01/0001.json", contents: Data(bundle.utf8)))
        return dir
    }

    private func entries(_ n: Int, method: String = "PUT", conditional: Bool = true) -> String {
        (0..<n).map { i in
            let url = conditional ? "Patient?identifier=http://x/p|\(i)" : "Patient/p\(i)"
            let id = conditional ? "" : "\"id\":\"p\(i)\","
            return #"{"fullUrl":"urn:uuid:6f1c5a3e-8b2d-4f47-9a61-0e3c27d4\#(String(format: "%04d", i))","resource":{"resourceType":"Patient",\#(id)"identifier":[{"system":"http://x/p","value":"\#(i)"}]},"request":{"method":"\#(method)","url":"\#(url)"}}"#
        }.joined(separator: ",")
    }

    @Test func transactionsOverTheEntryLimitAreErrors() throws {
        let dir = folder(#"{"resourceType":"Bundle","type":"transaction","entry":[\#(entries(21, conditional: false))]}"#)
        let rules = Set(try ArtifactValidator(folder: dir).run().findings.map(\.rule))
        #expect(rules.contains("transaction-entries"))
        #expect(!rules.contains("conditional-transaction-entries"))
    }

    @Test func updatesPerTransactionAreCapped() throws {
        var options = ValidationOptions()
        options.limitOverrides = [.transactionEntries: 100, .transactionUpdates: 5]
        let dir = folder(#"{"resourceType":"Bundle","type":"transaction","entry":[\#(entries(6, conditional: false))]}"#)
        #expect(try ArtifactValidator(folder: dir, options: options).run().findings.contains { $0.rule == "transaction-updates" })
    }

    @Test func bundlesOverTheByteLimitAreErrors() throws {
        var options = ValidationOptions()
        options.limitOverrides = [.bundleBytes: 500]
        let dir = folder(#"{"resourceType":"Bundle","type":"batch","entry":[\#(entries(3))]}"#)
        let f = try #require(try ArtifactValidator(folder: dir, options: options).run().findings.first { $0.rule == "bundle-bytes" })
        #expect(f.file == "01/0001.json")
    }

    @Test func largeBatchesAreWarnings() throws {
        var options = ValidationOptions()
        options.limitOverrides = [.batchEntries: 2]
        let report = try ArtifactValidator(folder: folder(#"{"resourceType":"Bundle","type":"batch","entry":[\#(entries(3))]}"#), options: options).run()
        #expect(report.findings.contains { $0.rule == "batch-entries" && $0.severity == .warning })
    }

    @Test func knownIdentifiersResolveConditionalReferences() throws {
        let bundle = #"{"resourceType":"Bundle","type":"batch","entry":[{"resource":{"resourceType":"Condition","identifier":[{"system":"http://x/c","value":"1"}],"subject":{"reference":"Patient?identifier=http://x/p|on-server"}},"request":{"method":"PUT","url":"Condition?identifier=http://x/c|1"}}]}"#
        #expect(try ArtifactValidator(folder: folder(bundle)).run().findings.contains { $0.rule == "conditional-reference-unresolved" })
        let options = ValidationOptions(knownIdentifiers: ["Patient|http://x/p|on-server"])
        #expect(try ArtifactValidator(folder: folder(bundle), options: options).run().findings.isEmpty)
    }
}
