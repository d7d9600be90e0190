import FHIRTestServer
import FHIRTestSupport
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The built `fhirupload`, run as a user would: exit statuses, messages, credentials kept out of the output.
@Suite(.serialized)
struct UploadCommandLineTests {
    private func run(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessResult {
        try runProcess(TestRepository.builtExecutable("fhirupload"), arguments, environment: environment)
    }

    @Test func uploadThenVerifyWithClientCredentialsExitZeroAndNeverShowTheSecret() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.requireClientCredentials(id: "migrator", secret: "cli-secret-4711")
            let auth = ["--client-id", "migrator", "--client-secret-env", "MIGRATION_SECRET", "--token-url", server.tokenURL]
            let upload = try run([folder, "--server", server.baseURL] + auth, environment: ["MIGRATION_SECRET": "cli-secret-4711"])
            #expect(upload.status == 0, "\(upload.stderr)")
            #expect(upload.stderr.contains("9 written, 0 failed"))
            #expect(upload.stderr.contains("Patient: 2 created, 0 updated, 0 failed"))
            let verify = try run(["verify", folder, "--server", server.baseURL] + auth, environment: ["MIGRATION_SECRET": "cli-secret-4711"])
            #expect(verify.status == 0, "\(verify.stderr)")
            #expect(verify.stdout.contains("Verified 9 identifiers") && verify.stdout.contains("0 missing, 0 duplicated"))
            for text in [upload.stdout, upload.stderr, verify.stdout, verify.stderr] { #expect(!text.contains("cli-secret-4711")) }
        }
    }

    @Test func verifyExitsOneAndNamesWhatIsMissing() async throws {
        try await UploadFixtures.withServer { server, folder in
            #expect(try run([folder, "--server", server.baseURL]).status == 0)
            server.delete(type: "Patient", system: "http://your-source-system.com/patientId", value: "P001")
            let verify = try run(["verify", folder, "--server", server.baseURL])
            #expect(verify.status == 1)
            #expect(verify.stdout.contains("1 missing, 0 duplicated"))
            #expect(verify.stdout.contains("missing: Patient?identifier=http://your-source-system.com/patientId|P001"))
        }
    }

    @Test func failedEntriesMakeTheExitStatusOne() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.failEntries([1], status: 422)])
            let upload = try run([folder, "--server", server.baseURL])
            #expect(upload.status == 1)
            #expect(upload.stderr.contains("/failures.ndjson"))
        }
    }

    @Test func medplumsEnvironmentVariablesStandInForTheOptions() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.requireClientCredentials(id: "env-client", secret: "env-secret-0815")
            let origin = "http://127.0.0.1:\(server.port)/"
            let environment = ["MEDPLUM_BASE_URL": origin, "MEDPLUM_CLIENT_ID": "env-client", "MEDPLUM_CLIENT_SECRET": "env-secret-0815"]
            let upload = try run([folder], environment: environment)
            #expect(upload.status == 0, "\(upload.stderr)")
            #expect(upload.stderr.contains("Uploading to \(server.baseURL) (client env-client)"))
            #expect(!upload.stderr.contains("env-secret-0815"))
            let missing = try run([folder], environment: ["MEDPLUM_BASE_URL": ""])
            #expect(missing.status == 64 && missing.stderr.contains("--server (or set MEDPLUM_BASE_URL)"))
        }
    }

    @Test func ctrlCStopsWithWhatWasDoneAndARerunFinishes() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.inject([.pass, .slow(seconds: 20)])  // the second request hangs, so the signal finds it in flight
            let p = Process()
            p.executableURL = URL(fileURLWithPath: TestRepository.builtExecutable("fhirupload"))
            p.arguments = [folder, "--server", server.baseURL, "--concurrency", "1"]
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            for _ in 0..<600 where server.statistics.bundleRequests < 2 { try await Task.sleep(nanoseconds: 100_000_000) }
            try #require(server.statistics.bundleRequests == 2, "the uploader did not reach its second request within 60 s")
            let signalled = Date()
            kill(p.processIdentifier, SIGINT)
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 130, "\(stderr)")
            #expect(Date().timeIntervalSince(signalled) < 15)  // it did not wait for the slow answer (20 s)
            #expect(stderr.contains("interrupting: no new request starts"))
            #expect(stderr.contains("2 written, 0 failed"))
            #expect(stderr.contains("error: interrupted after") && stderr.contains("run the same command again to resume"))
            let rerun = try run([folder, "--server", server.baseURL])
            #expect(rerun.status == 0, "\(rerun.stderr)")
            #expect(rerun.stderr.contains("Resuming the upload to \(server.baseURL) (no credentials): 2 entries were written by earlier runs"))
            #expect(rerun.stderr.contains("7 written, 0 failed, 2 already written"))
            try await expectExactlyTheArtifacts(folder, on: server)
        }
    }

    @Test(arguments: [
        (["out", "--server", "http://fhir.example.org/fhir/R4"], "plain http:// to another machine"),
        (["out", "--server", "ftp://x"], "--server: ftp://x is not an http(s) URL"),
        (["out", "--server", "https://user:pw@x.org/fhir"], "with a user name or password in the URL"),
        (["out", "--server", "https://x.org/fhir", "--timeout", "0"], "--timeout must be a number of seconds above 0"),
        (["out", "--server", "https://x.org/fhir", "--client-id", "a"], "--client-secret-env or --client-secret-file"),
        (["out", "--server", "https://x.org/fhir", "--token-env", "A", "--client-id", "b", "--client-secret-env", "S"], "give one of"),
        (["out", "--server", "https://x.org/fhir", "--concurrency", "0"], "--concurrency must be at least 1"),
    ])
    func badArgumentsExplainThemselvesAndExit64(arguments: [String], message: String) throws {
        let result = try run(arguments)
        #expect(result.status == 64)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(!result.stderr.contains("pw@"))  // a password given in the URL is never repeated
    }

    @Test func helpDescribesBothSubcommands() throws {
        let help = try run(["--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("upload (default)") && help.stdout.contains("verify"))
        let upload = try run(["upload", "--help"])
        #expect(upload.stdout.contains("--client-id") && upload.stdout.contains("--split-transactions") && upload.stdout.contains("--dry-run"))
    }
}
