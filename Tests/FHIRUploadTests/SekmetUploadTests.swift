import AsyncHTTPClient
import FHIRConvert
import FHIRModel
import NIOCore
import FHIRTestSupport
import FHIRUpload
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real, independently written FHIR R4 server on loopback: PyPI's sekmet-fhir (SQLite).
/// `scripts/install-test-tools.sh` installs it; without it the tests that need it fail, saying so.
final class SekmetServer {
    let base: String
    private let process: Process
    private let dataDir: String

    /// Starts the server and waits (at most 30 s) until it answers.
    static func start(executable: String) async throws -> SekmetServer {
        let server = try SekmetServer(executable: executable)
        for _ in 0..<300 {
            if (try? await server.search("metadata")) != nil { return server }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        server.stop()
        throw SekmetUnavailable(executable: executable)
    }

    private init(executable: String) throws {
        let port = Self.freePort()
        dataDir = NSTemporaryDirectory() + "sekmet-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let settings = dataDir + "/settings.yaml"
        try """
            base_url: http://127.0.0.1:\(port)/fhir
            host: 127.0.0.1
            port: \(port)
            data_dir: \(dataDir)/data
            simulator:
              enabled: false
            """.write(toFile: settings, atomically: true, encoding: .utf8)
        base = "http://127.0.0.1:\(port)/fhir"
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["serve", "-c", settings, "--host", "127.0.0.1", "--port", String(port)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// The server started but did not answer `GET metadata` within 30 s.
    struct SekmetUnavailable: Error, CustomStringConvertible {
        let executable: String
        var description: String { "\(executable) serve did not answer on 127.0.0.1 within 30 s" }
    }

    /// A port nothing listens on now: bind port 0, read what the kernel chose, let it go.
    private static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : Int.random(in: 20000...30000)
    }

    /// Stops the server: SIGTERM, then SIGKILL after 2 s (its graceful shutdown waits for idle keep-alive
    /// connections, which a test's HTTP client may hold).
    func stop() {
        process.terminate()
        for _ in 0..<20 where process.isRunning { Thread.sleep(forTimeInterval: 0.1) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dataDir)
    }

    /// GET `base/path`, parsed (AsyncHTTPClient: Foundation's blocking loads stall Swift's cooperative threads).
    func search(_ path: String) async throws -> JSONValue {
        var request = HTTPClientRequest(url: base + "/" + path)
        request.headers.add(name: "Connection", value: "close")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 16 << 20)
        return try JSONParser.parse(Array(body.readableBytesView))
    }

    /// How many resources match `Type?identifier=system|value`.
    func count(_ type: String, system: String, value: String) async throws -> Int {
        let query = "identifier=" + (system + "|" + value).addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        guard case .number(let n)? = try await search("\(type)?\(query)")["total"] else { return -1 }
        return Int(n) ?? -1
    }
}

struct SekmetUploadTests {
    @Test func uploadTwiceThenRestartLeavesExactlyOneOfEachResource() async throws {
        let server = try await SekmetServer.start(executable: try TestPrerequisite.sekmet.path())
        defer { server.stop() }
        let folder = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try Converter(options: ConvertOptions(mappingPath: TestRepository.fixture("medplum-example/mapping.yaml"), outputPath: folder)).run()
        var options = UploadOptions(server: server.base)
        options.splitTransactions = true  // sekmet takes no nested bundles
        options.retry = RetryPolicy(maxAttempts: 3, baseDelay: 0.05, maxDelay: 0.2)

        // sekmet does not offer ClinicalImpression, and says so in its CapabilityStatement: nothing is sent.
        do {
            _ = try await Uploader(folder: folder, options: options).run()
            Issue.record("expected the preflight to refuse")
        } catch let UploadRefusal.preflight(problems) {
            #expect(problems == ["ClinicalImpression (2 resources): the server does not offer this type"])
        }
        #expect(try await server.count("Patient", system: "http://your-source-system.com/patientId", value: "P001") == 0)

        options.skipPreflight = true
        let first = try await Uploader(folder: folder, options: options).run()
        #expect(first.created["Patient"] == 2)
        #expect(first.created["Condition"] == 3)
        // sekmet has no `identifier` search parameter for ClinicalImpression, so the encounter transactions are
        // refused as a whole: reported with the server's OperationOutcome, and the upload goes on.
        #expect(first.failed["Encounter"] == 2 && first.failed["ClinicalImpression"] == 2)
        let failures = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/failures.ndjson", encoding: .utf8)
        #expect(failures.contains("Unknown search parameter 'identifier' for ClinicalImpression"))

        let second = try await Uploader(folder: folder, options: options).run()
        #expect(second.skipped == 5)
        #expect(second.written == 0)

        options.restart = true
        let third = try await Uploader(folder: folder, options: options).run()
        #expect(third.updated["Patient"] == 2 && third.updated["Condition"] == 3)
        for id in ["P001", "P002"] {
            #expect(try await server.count("Patient", system: "http://your-source-system.com/patientId", value: id) == 1)
        }
        for id in ["PC001", "PC002", "PC003"] {
            #expect(try await server.count("Condition", system: "http://your-source-system.com/patientConditionId", value: id) == 1)
        }
    }

    /// The Synthea output (about 26,000 resources, batches only): the uploader killed after a few seconds and run
    /// again, then a third run that finds nothing left to send, then verify, links included. sekmet stores
    /// conditional references in a batch as they are (it resolves them in transactions only): the uploader sees
    /// that on its first batch and sends those batches as transactions, so every link resolves.
    @Test func syntheaInterruptedResumedAndVerifiedOnSekmet() async throws {
        let server = try await SekmetServer.start(executable: try TestPrerequisite.sekmet.path())
        defer { server.stop() }
        let folder = try UploadFixtures.syntheaCopy()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let arguments = [folder, "--server", server.base, "--concurrency", "4", "--quiet"]
        let first = try UploadFixtures.startUploader(arguments)
        try await Task.sleep(nanoseconds: 8_000_000_000)
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        #expect(first.terminationReason == .uncaughtSignal)
        let second = try UploadFixtures.startUploader(arguments)
        second.waitUntilExit()
        #expect(second.terminationStatus == 0)
        let third = try await Uploader(folder: folder, options: UploadOptions(server: server.base)).run()
        let total = try UploadFixtures.expectedCounts(folder).values.reduce(0, +)
        #expect(third.written == 0 && third.skipped == total)
        #expect(third.transactionSteps == ["encounters", "conditions", "observations"])
        let verify = try await Verifier(folder: folder, options: UploadOptions(server: server.base), batchSize: 100).run()
        #expect(verify.expected == total && verify.isClean,
                "missing \(verify.missing.count), duplicated \(verify.duplicated.count), links \(verify.links.problems) \(verify.links.examples.prefix(3))")
        #expect(verify.links.checked > 40_000)
        // A search by reference finds a patient's resources: as many as the folder gives that patient.
        let patientBundle = try await server.search("Patient?_count=1")
        let patient = try #require(patientBundle["entry"]?.arrayValue?.first?["resource"])
        let id = try #require(patient["id"]?.stringValue)
        let identifier = try #require(patient["identifier"]?.arrayValue?.first?["value"]?.stringValue)
        for type in ["Encounter", "Condition", "Observation"] {
            let lines = try String(contentsOfFile: folder + "/ndjson/\(type).ndjson", encoding: .utf8).split(separator: "\n")
            let expected = lines.filter { $0.contains("\"subject\":{\"reference\":\"Patient?identifier=") && $0.contains("|\(identifier)\"") }.count
            let found = try await server.search("\(type)?subject=Patient/\(id)&_count=1")
            #expect(found["total"] == .number(String(expected)), "\(type) of Patient/\(id)")
        }
    }

    /// Synthea's own output, rebundled: refused naming the types sekmet lacks; with --skip-preflight everything else
    /// lands exactly once, twice over, and only the lacking types and what refers to them fail.
    @Test func rebundledSyntheaLandsExactlyOnceOnSekmetExceptTheTypesItLacks() async throws {
        let server = try await SekmetServer.start(executable: try TestPrerequisite.sekmet.path())
        defer { server.stop() }
        let folder = try RebundledSynthea.copy()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var options = UploadOptions(server: server.base)
        options.retry = RetryPolicy(maxAttempts: 3, baseDelay: 0.05, maxDelay: 0.2)
        do {
            _ = try await Uploader(folder: folder, options: options).run()
            Issue.record("expected the preflight to refuse")
        } catch let UploadRefusal.preflight(problems) {
            #expect(problems == ["CareTeam (5 resources): the server does not offer this type",
                                 "SupplyDelivery (33 resources): the server does not offer this type"])
        }
        options.skipPreflight = true
        let first = try await Uploader(folder: folder, options: options).run()
        // The CarePlans refer to their CareTeam, the Provenances to every resource of their patient.
        #expect(first.failed == ["CareTeam": 5, "SupplyDelivery": 33, "CarePlan": 5, "Provenance": 3])
        #expect(first.written == 1040 - 46)
        let second = try await Uploader(folder: folder, options: options).run()
        #expect(second.written == 0 && second.skipped == 994 && second.failures == 46)
        let verify = try await Verifier(folder: folder, options: options).run()
        #expect(verify.duplicated.isEmpty)
        #expect(Set(verify.missing.map(\.type)) == ["CareTeam", "SupplyDelivery", "CarePlan"] && verify.missing.count == 43)
        // Every link of what landed resolves on the server (batches with conditional references went as transactions).
        #expect(verify.links.problems.isEmpty, "\(verify.links.examples.prefix(3))")
        let counts = try UploadFixtures.expectedCounts(folder)
        for (type, n) in counts where first.failed[type] == nil {
            let found = try await server.search("\(type)?_count=1")
            #expect(found["total"] == .number(String(n)), "\(type)")
        }
    }

    @Test func anAlteredFolderIsRefusedBeforeAnythingIsSent() async throws {
        let folder = NSTemporaryDirectory() + "upload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try Converter(options: ConvertOptions(mappingPath: TestRepository.fixture("medplum-example/mapping.yaml"), outputPath: folder)).run()
        let path = folder + "/bundles/01-patients/0001.json"
        try (try String(contentsOfFile: path, encoding: .utf8)).replacingOccurrences(of: "Doe", with: "Roe").write(toFile: path, atomically: true, encoding: .utf8)
        // Nothing listens here: a refusal must come before any connection.
        do {
            _ = try await Uploader(folder: folder, options: UploadOptions(server: "http://127.0.0.1:9")).run()
            Issue.record("expected a refusal")
        } catch let UploadRefusal.altered(findings) {
            #expect(findings.contains { $0.rule == "manifest-checksum" && $0.file == "bundles/01-patients/0001.json" })
        }
        // Not even with --force.
        var forced = UploadOptions(server: "http://127.0.0.1:9")
        forced.force = true
        await #expect(throws: UploadRefusal.self) { _ = try await Uploader(folder: folder, options: forced).run() }
    }
}
