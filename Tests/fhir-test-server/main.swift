import FHIRTestServer
import Foundation

// Runs the test FHIR server until stdin closes; prints its base URL on the first line of stdout.
// Options: --client-id ID --client-secret SECRET (require OAuth2 client credentials).
let arguments = CommandLine.arguments
let server = try await FHIRTestServer.start()
if let i = arguments.firstIndex(of: "--client-id"), let j = arguments.firstIndex(of: "--client-secret"), i + 1 < arguments.count, j + 1 < arguments.count {
    server.requireClientCredentials(id: arguments[i + 1], secret: arguments[j + 1])
}
FileHandle.standardOutput.write(Data((server.baseURL + "\n").utf8))
while readLine() != nil {}
let counts = server.resourceCounts
FileHandle.standardError.write(Data("fhir-test-server: \(counts.values.reduce(0, +)) resources, \(server.statistics.bundleRequests) bundle requests\n".utf8))
try await server.shutdown()
