import FHIRArtifacts
import FHIRConvert
import FHIRTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A signal at any moment of `convert` (reading, bundle writing, validation, sync, swap) either keeps the previous
/// output byte for byte or, once the swap has happened, says so: never a replaced output reported as a plain success.
@Suite struct InterruptionTests {
    /// Answers "cancelled" from its `call`-th question on, and counts the questions.
    final class CancelAt: Sendable {
        let call: Int
        let asked = Atomic<Int>(0)
        init(call: Int) { self.call = call }
        func isCancelled() -> Bool { asked.add(1, ordering: .relaxed).newValue >= call }
    }

    private func previousOutput(in folder: String) throws -> (out: String, contents: [String: Data]) {
        let out = folder + "/out"
        // Another batch size, so the previous output differs from what the interrupted run would write.
        try convert(fixture("medplum-example/mapping.yaml"), out: out, limits: [.batchEntries: 2])
        return (out, folderContents(out))
    }

    @Test func aCancellationAtEveryCheckpointKeepsThePreviousOutputOrSaysTheSwapHappened() throws {
        let folder = temporaryFolder()
        defer { cleanup(folder) }
        let (out, before) = try previousOutput(in: folder)
        let options = ConvertOptions(mappingPath: fixture("medplum-example/mapping.yaml"), outputPath: out, toolVersion: "test")
        let counting = CancelAt(call: .max)
        _ = try Converter(options: options, isCancelled: counting.isCancelled).run()
        let checkpoints = counting.asked.load(ordering: .relaxed)
        #expect(checkpoints >= 8)  // before reading, each step, after the steps, validation's files, before and after the sync, after the swap
        let complete = folderContents(out)
        try convert(fixture("medplum-example/mapping.yaml"), out: out, limits: [.batchEntries: 2])
        var keptPrevious = 0
        for call in 1...checkpoints {
            let cancel = CancelAt(call: call)
            do {
                _ = try Converter(options: options, isCancelled: cancel.isCancelled).run()
                Issue.record("cancelled at question \(call) of \(checkpoints), the run reported success")
            } catch .cancelled {
                #expect(folderContents(out) == before, "question \(call): the previous output changed")
                keptPrevious += 1
            } catch .cancelledAfterCommit {
                #expect(call == checkpoints, "only the question after the swap may find the swap done")
                #expect(folderContents(out) == complete)
                try convert(fixture("medplum-example/mapping.yaml"), out: out, limits: [.batchEntries: 2])
            } catch {
                Issue.record("question \(call): \(error)")
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains("staging") || $0.hasSuffix(".invalid") }
            #expect(leftovers.isEmpty, "question \(call) left \(leftovers)")
        }
        #expect(keptPrevious == checkpoints - 1)
    }

    @Test func aSecondRunOnTheSameOutputIsRefusedWhileTheFirstHoldsIt() throws {
        let folder = temporaryFolder()
        defer { cleanup(folder) }
        let (out, before) = try previousOutput(in: folder)
        let first = try ArtifactFolder(target: out)
        #expect(throws: ArtifactError.self) { _ = try ArtifactFolder(target: out) }
        do {
            _ = try ArtifactFolder(target: out)
        } catch {
            #expect(error.message.contains("another run (process \(getpid())) is writing this folder"))
        }
        // The first run's staging folder is still there: the refused run removed nothing.
        #expect(FileManager.default.fileExists(atPath: first.staging))
        first.discard()
        #expect(folderContents(out) == before)
        _ = try convert(fixture("medplum-example/mapping.yaml"), out: out)  // free again once the first is done
    }

    @Test func twoConcurrentConvertProcessesEndWithOneRefusalOrOneCompleteFolder() throws {
        let folder = temporaryFolder()
        defer { cleanup(folder) }
        let (out, _) = try previousOutput(in: folder)
        let mapping = fixture("medplum-example/mapping.yaml")
        func start() throws -> (Process, Pipe) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestRepository.builtExecutable("fhirbundle"))
            p.arguments = ["convert", mapping, "--out", out, "--quiet", "--no-validate"]
            let err = Pipe()
            p.standardError = err
            try p.run()
            return (p, err)
        }
        for _ in 0..<5 {
            let (a, aErr) = try start()
            let (b, bErr) = try start()
            let aText = String(decoding: aErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let bText = String(decoding: bErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            a.waitUntilExit()
            b.waitUntilExit()
            let statuses = [a.terminationStatus, b.terminationStatus]
            #expect(statuses.contains(0), "\(aText)\(bText)")
            for (status, text) in zip(statuses, [aText, bText]) where status != 0 {
                #expect(text.contains("is writing this folder; wait for it to finish or choose another --out"), "\(text)")
            }
            let check = try runProcess(TestRepository.builtExecutable("fhirbundle"), ["validate", out])
            #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        }
    }

    @Test func sigtermAtAnyMomentExitsWith130AndKeepsOrSaysSo() throws {
        let folder = temporaryFolder()
        defer { cleanup(folder) }
        let (out, before) = try previousOutput(in: folder)
        // Enough rows for the run to take a few seconds in a debug build.
        let mappingFolder = folder + "/export"
        try FileManager.default.copyItem(atPath: fixture("medplum-example"), toPath: mappingFolder)
        var patients = try String(contentsOfFile: mappingFolder + "/patients.csv", encoding: .utf8)
        if !patients.hasSuffix("\n") { patients += "\n" }
        for i in 0..<4_000 { patients += "Q\(i),Ann\(i),Lee,1970-01-0\(i % 9 + 1),F\n" }
        try patients.write(toFile: mappingFolder + "/patients.csv", atomically: true, encoding: .utf8)
        let arguments = ["convert", mappingFolder + "/mapping.yaml", "--out", out, "--quiet"]
        let started = Date()
        let whole = try runProcess(TestRepository.builtExecutable("fhirbundle"), arguments)
        let duration = Date().timeIntervalSince(started)
        try #require(whole.status == 0, "\(whole.stderr)")
        let complete = folderContents(out)
        try convert(fixture("medplum-example/mapping.yaml"), out: out, limits: [.batchEntries: 2])
        for fraction in [0.05, 0.2, 0.35, 0.5, 0.65, 0.8] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestRepository.builtExecutable("fhirbundle"))
            p.arguments = arguments
            let err = Pipe()
            p.standardError = err
            try p.run()
            Thread.sleep(forTimeInterval: duration * fraction)
            let signalled = p.isRunning
            kill(p.processIdentifier, SIGTERM)
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            guard signalled else { continue }  // it had finished: nothing to judge
            #expect(p.terminationStatus == 130, "at \(fraction) of the run: \(text)")
            if text.contains("interrupted; the previous output folder is unchanged") {
                #expect(folderContents(out) == before, "at \(fraction) of the run")
            } else {
                #expect(text.contains("interrupted just after the new artifacts replaced"), "at \(fraction) of the run: \(text)")
                #expect(folderContents(out) == complete)
                try convert(fixture("medplum-example/mapping.yaml"), out: out, limits: [.batchEntries: 2])
            }
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains("staging") }
            #expect(leftovers.isEmpty, "at \(fraction) of the run: \(leftovers)")
        }
    }
}
