import FHIRArtifacts
import FHIRConvert
@testable import FHIRDiff
import FHIRModel
import FHIRTestSupport
import FHIRValidation
import Foundation
import Testing

/// Both waves converted, in a fresh folder.
private struct ConvertedWaves {
    let dir: String
    let waves: MigrationWaves
    var old: String { dir + "/out1" }
    var new: String { dir + "/out2" }

    init(patients: Int = 50) throws {
        dir = NSTemporaryDirectory() + "diff-\(UUID().uuidString)"
        waves = try MigrationWaves.write(in: dir, patients: patients)
        _ = try Converter(options: ConvertOptions(mappingPath: waves.first, outputPath: old)).run()
        _ = try Converter(options: ConvertOptions(mappingPath: waves.second, outputPath: new)).run()
    }

    func compare(show: Int = 0) throws -> DiffReport {
        try ArtifactDiff.compare(old: ArtifactEntries(folder: old), new: ArtifactEntries(folder: new), show: show)
    }

    func delta(deletes: Bool) throws -> DeltaSummary {
        var options = DeltaOptions(outputPath: dir + "/delta")
        options.deletes = deletes
        return try DeltaWriter.write(old: ArtifactEntries(folder: old), new: ArtifactEntries(folder: new), report: compare(), options: options)
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
}

/// The request URLs of a folder's bundle entries, in upload order, with their methods.
private func requests(_ folder: String) throws -> [(method: String, url: String)] {
    var out: [(String, String)] = []
    try ArtifactEntries(folder: folder).forEach { out.append(($0.method, $0.url)) }
    return out
}

struct ArtifactDiffTests {
    @Test func diffCountsEveryTypeExactly() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        let report = try w.compare()
        #expect(Set(report.types.keys) == Set(w.waves.expected.keys))
        for (type, e) in w.waves.expected {
            #expect(report.types[type] == TypeChanges(added: e.added, changed: e.changed, removed: e.removed, unchanged: e.unchanged), "\(type)")
        }
        #expect(Set(report.removed) == w.waves.removed)
        #expect(report.added.count == 10 && report.changed.count == 10)
        #expect(report.added.first == "Patient?identifier=\(MigrationWaves.patientSystem)|P51")
    }

    @Test func aFolderComparedWithItselfIsAllUnchanged() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        let report = try ArtifactDiff.compare(old: ArtifactEntries(folder: w.new), new: ArtifactEntries(folder: w.new))
        #expect(report.total == TypeChanges(unchanged: 50 + 50 + 20))
        #expect(report.added.isEmpty && report.changed.isEmpty && report.removed.isEmpty)
    }

    @Test func showGivesTheChangedElementsWithOldAndNewValues() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        let report = try w.compare(show: 2)
        #expect(report.shown.count == 2)
        #expect(report.shown[0].identity == "Patient?identifier=\(MigrationWaves.patientSystem)|P1")
        #expect(report.shown[0].changes == [ElementChange(path: "Patient.name[0].family", old: .string("Family1"), new: .string("Renamed1"))])
    }

    @Test func resourceDiffNamesElementsAddedAndRemovedFromLists() throws {
        let old = try JSONParser.parse(#"{"resourceType":"Patient","name":[{"given":["A","B"]}],"gender":"male"}"#)
        let new = try JSONParser.parse(#"{"resourceType":"Patient","name":[{"given":["A"]},{"text":"C"}],"birthDate":"2000-01-01"}"#)
        #expect(ResourceDiff.changes(from: old, to: new) == [
            ElementChange(path: "Patient.name[0].given[1]", old: .string("B"), new: nil),
            ElementChange(path: "Patient.name[1]", old: nil, new: .object([JSONMember("text", .string("C"))])),
            ElementChange(path: "Patient.gender", old: .string("male"), new: nil),
            ElementChange(path: "Patient.birthDate", old: nil, new: .string("2000-01-01")),
        ])
    }

    @Test func aDeltaHoldsOnlyTheAddedAndChangedAndValidatesOnItsOwn() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        let summary = try w.delta(deletes: false)
        let delta = try #require(summary.manifest.delta)
        #expect(delta.added == 10 && delta.changed == 10 && delta.resent == 0 && delta.removed == 15 && delta.deleted == 0)
        #expect(summary.manifest.resourceCounts == ["Patient": 10, "Condition": 10])
        #expect(summary.manifest.steps.map(\.name) == ["patients", "conditions", "encounters"])
        #expect(try requests(w.dir + "/delta").allSatisfy { $0.method == "PUT" })
        // The changed conditions of unchanged patients refer to what the server already holds, and say so.
        let known = KnownIdentifiers.parse(try String(contentsOfFile: w.dir + "/delta/known-identifiers.txt", encoding: .utf8))
        #expect(known.contains("Patient|\(MigrationWaves.patientSystem)|P3"))
        #expect(!known.contains("Patient|\(MigrationWaves.patientSystem)|P51"))  // carried by the delta itself
        let report = try ArtifactValidator(folder: w.dir + "/delta", options: ValidationOptions(knownIdentifiers: known)).run()
        #expect(report.errors == 0, "\(report.findings.prefix(3))")
        // Its manifest names its base and what it leads to.
        let old = try ArtifactEntries(folder: w.old), new = try ArtifactEntries(folder: w.new)
        #expect(delta.base == old.manifestSHA256 && delta.new == new.manifestSHA256)
    }

    @Test func deletesAreWrittenOnlyWhenAskedReferrersFirst() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        let summary = try w.delta(deletes: true)
        #expect(summary.validation?.errors == 0)
        #expect(summary.manifest.delta?.deleted == 15)
        // One step of deletes per step of the old folder, the last first: steps go up one after another.
        #expect(summary.manifest.steps.map(\.name).suffix(3) == ["delete-encounters", "delete-conditions", "delete-patients"])
        let deletes = try requests(w.dir + "/delta").filter { $0.method == "DELETE" }.map(\.url)
        #expect(Set(deletes) == w.waves.removed)
        // Its report shows the changes and the deletes.
        let html = try String(contentsOfFile: w.dir + "/delta/report.html", encoding: .utf8)
        #expect(html.contains("<h2 id=\"changes-since-the-base-folder\">"))
        #expect(html.contains("<dt>Deleted by this folder</dt><dd>15</dd>"))
        #expect(html.contains("<tr><td>Patient</td><td class=\"n\">5</td><td class=\"n\">5</td><td class=\"n\">5</td><td class=\"n\">40</td></tr>"))
        let types = deletes.map { $0.prefix { $0 != "?" } }
        #expect(types == Array(repeating: "Encounter", count: 5) + Array(repeating: "Condition", count: 5) + Array(repeating: "Patient", count: 5))
    }

    @Test func anEditedDeltaFigureIsAValidationError() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        _ = try w.delta(deletes: true)
        let path = w.dir + "/delta/manifest.json"
        let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"deleted\": 15", with: "\"deleted\": 14")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let known = KnownIdentifiers.parse(try String(contentsOfFile: w.dir + "/delta/known-identifiers.txt", encoding: .utf8))
        let report = try ArtifactValidator(folder: w.dir + "/delta", options: ValidationOptions(knownIdentifiers: known)).run()
        #expect(report.findings.contains { $0.rule == "manifest-counts" && $0.message.contains("15 deletes, the manifest says 14") })
    }

    /// In the Medplum example each encounter lands with its note in one transaction: a changed note re-sends its
    /// encounter with it, and the delta says so.
    @Test func aChangedResourceOfATransactionIsResentWithItsWholeTransaction() throws {
        let dir = NSTemporaryDirectory() + "diff-tx-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: TestRepository.fixture("medplum-example"), toPath: dir + "/v1")
        try FileManager.default.copyItem(atPath: TestRepository.fixture("medplum-example"), toPath: dir + "/v2")
        let notes = try String(contentsOfFile: dir + "/v2/notes.csv", encoding: .utf8)
        try notes.replacingOccurrences(of: "Routine check-up.", with: "Routine visit.").write(toFile: dir + "/v2/notes.csv", atomically: true, encoding: .utf8)
        _ = try Converter(options: ConvertOptions(mappingPath: dir + "/v1/mapping.yaml", outputPath: dir + "/out1")).run()
        _ = try Converter(options: ConvertOptions(mappingPath: dir + "/v2/mapping.yaml", outputPath: dir + "/out2")).run()
        let old = try ArtifactEntries(folder: dir + "/out1"), new = try ArtifactEntries(folder: dir + "/out2")
        let report = try ArtifactDiff.compare(old: old, new: new)
        #expect(report.changed == ["ClinicalImpression?identifier=http://your-source-system.com/noteId|N001"])
        let summary = try DeltaWriter.write(old: old, new: new, report: report, options: DeltaOptions(outputPath: dir + "/delta"))
        #expect(summary.manifest.delta?.resent == 1 && summary.manifest.delta?.unchanged == 7)
        #expect(summary.manifest.resourceCounts == ["ClinicalImpression": 1, "Encounter": 1])
        let urls = try requests(dir + "/delta").map(\.url)
        #expect(urls == ["Encounter?identifier=http://your-source-system.com/encounterId|E001", "ClinicalImpression?identifier=http://your-source-system.com/noteId|N001"])
        #expect(summary.validation?.errors == 0)
    }

    @Test func aDeltaIsRefusedAsEitherSideOfADiff() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        _ = try w.delta(deletes: true)
        for (old, new) in [(w.old, w.dir + "/delta"), (w.dir + "/delta", w.new)] {
            #expect {
                try ArtifactDiff.compare(old: ArtifactEntries(folder: old), new: ArtifactEntries(folder: new))
            } throws: { error in
                "\(error)".contains("a delta folder (written by diff --out)")
            }
        }
    }

    /// A removed identity that the new wave still refers to as already on the server (its known-identifiers.txt)
    /// is not deleted.
    @Test func aRemovedIdentityTheNewWaveStillKnowsIsNotDeleted() throws {
        let w = try ConvertedWaves()
        defer { w.cleanup() }
        var options = ConvertOptions(mappingPath: w.waves.second, outputPath: w.new)
        options.knownIdentifiers = ["Patient|\(MigrationWaves.patientSystem)|P2"]
        _ = try Converter(options: options).run()
        let summary = try w.delta(deletes: true)
        #expect(summary.manifest.delta?.removed == 15 && summary.manifest.delta?.deleted == 14)
        let deletes = try requests(w.dir + "/delta").filter { $0.method == "DELETE" }.map(\.url)
        #expect(!deletes.contains("Patient?identifier=\(MigrationWaves.patientSystem)|P2"))
        #expect(summary.validation?.errors == 0)
    }

    @Test func aFolderWithoutManifestIsRefusedSayingWhatDiffTakes() {
        #expect {
            try ArtifactEntries(folder: NSTemporaryDirectory() + "no-such-\(UUID().uuidString)")
        } throws: { error in
            "\(error)".contains("not an artifact folder")
        }
    }
}
