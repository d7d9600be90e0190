import FHIRModel
import FHIRTestServer
@testable import FHIRUpload
import Foundation
import Testing

@Suite(.serialized)
struct AuthenticationTests {
    private static let secret = "s3cr3t-client-value"

    @Test func clientCredentialsFetchOneTokenAndRenewItWhenTheServerRefusesIt() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.requireClientCredentials(id: "migrator", secret: Self.secret)
            var options = UploadFixtures.options(server)
            options.credentials = .clientCredentials(tokenURL: server.tokenURL, clientID: "migrator", clientSecret: Self.secret)
            options.concurrency = 1
            server.inject([.pass, .expireTokens])  // the second request finds its token expired
            let report = try await Uploader(folder: folder, options: options).run()
            #expect(report.failures == 0 && report.written == 9)
            #expect(server.statistics.tokenRequests == 2 && server.statistics.unauthorized == 1)
            // Secrets stay out of everything the run wrote.
            for file in ["journal.ndjson", "failures.ndjson", "target.json"] {
                let text = try String(contentsOfFile: UploadFixtures.targetFolder(folder) + "/" + file, encoding: .utf8)
                #expect(!text.contains(Self.secret) && !text.contains("Bearer"))
            }
        }
    }

    @Test func aWrongSecretStopsBeforeAnyBundleIsSentWithoutPrintingTheSecret() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.requireClientCredentials(id: "migrator", secret: Self.secret)
            server.echoSecretInTokenErrors()  // a careless server repeats the secret it was sent
            var options = UploadFixtures.options(server)
            options.credentials = .clientCredentials(tokenURL: server.tokenURL, clientID: "migrator", clientSecret: "wrong-secret-value")
            do {
                _ = try await Uploader(folder: folder, options: options).run()
                Issue.record("expected the token endpoint to refuse")
            } catch let failure as ConnectionFailure {
                #expect(failure.description.contains("invalid_client"))
                #expect(!failure.description.contains("wrong-secret-value"))
            }
            #expect(server.statistics.bundleRequests == 0)
        }
    }

    @Test func aBearerTokenTheServerRefusesStopsTheUpload() async throws {
        try await UploadFixtures.withServer { server, folder in
            server.requireClientCredentials(id: "migrator", secret: Self.secret)
            var options = UploadFixtures.options(server)
            options.credentials = .bearer("not-a-valid-token")
            await #expect(throws: ConnectionFailure.self) { _ = try await Uploader(folder: folder, options: options).run() }
            #expect(server.statistics.unauthorized == 1)
        }
    }

    @Test(arguments: [
        ("https://api.medplum.com/fhir/R4", "https://api.medplum.com/oauth2/token"),
        ("http://localhost:8103/fhir/R4/", "http://localhost:8103/oauth2/token"),
        ("https://fhir.example.org", "https://fhir.example.org/oauth2/token"),
    ])
    func theDefaultTokenURLIsMedplums(server: String, token: String) {
        #expect(Credentials.defaultTokenURL(forServer: server) == token)
    }

    @Test func aTokenIsReusedUntilShortlyBeforeItExpiresThenRenewed() async throws {
        let cache = TokenCache()
        let fetches = Counter()
        let fetch: @Sendable () async throws -> FetchedToken = {
            let n = await fetches.increment()
            return FetchedToken(token: "token-\(n)", lifetime: 0.5, project: nil)  // renewed a tenth of its lifetime early: after 0.45 s
        }
        let first = try await cache.token(rejected: nil, fetch: fetch)
        let again = try await cache.token(rejected: nil, fetch: fetch)
        #expect(first == "token-1" && again == "token-1")
        try await Task.sleep(nanoseconds: 500_000_000)
        #expect(try await cache.token(rejected: nil, fetch: fetch) == "token-2")
        #expect(try await cache.token(rejected: "token-1", fetch: fetch) == "token-2")  // an old rejection changes nothing
        #expect(try await cache.token(rejected: "token-2", fetch: fetch) == "token-3")
    }
}

private actor Counter {
    private var n = 0
    func increment() -> Int {
        n += 1
        return n
    }
}
