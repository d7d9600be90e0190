import FHIRTestServer
import Foundation

// Runs the test FHIR server until stdin closes; prints its base URL on the first line of stdout.
// Options:
//   --client-id ID --client-secret SECRET   require OAuth2 client credentials
//   --fault KIND                           answer every bundle request with a fault: stall-body, trickle,
//                                          retry-after=SECONDS, status=CODE, echo-authorization, reverse
//   --unresolved-batch-references          store conditional references in batch entries as written
let arguments = CommandLine.arguments

func value(after option: String) -> String? {
    guard let i = arguments.firstIndex(of: option), i + 1 < arguments.count else { return nil }
    return arguments[i + 1]
}

func fault(_ text: String) -> Fault? {
    let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
    switch (parts[0], parts.count > 1 ? Int(parts[1]) : nil) {
    case ("stall-body", _): return .stallBody(afterBytes: 25)
    case ("trickle", _): return .trickle(interval: 1)
    case ("retry-after", let seconds?): return .status(429, retryAfter: seconds)
    case ("status", let code?): return .status(code)
    case ("echo-authorization", _): return .echoAuthorization(status: 403)
    case ("reverse", _): return .reverseResponses
    default: return nil
    }
}

var limits = ServerLimits()
if arguments.contains("--unresolved-batch-references") { limits.resolvesBatchConditionalReferences = false }
let server = try await FHIRTestServer.start(limits: limits)
if let id = value(after: "--client-id"), let secret = value(after: "--client-secret") {
    server.requireClientCredentials(id: id, secret: secret)
}
if let text = value(after: "--fault") {
    guard let kind = fault(text) else {
        FileHandle.standardError.write(Data("fhir-test-server: unknown --fault \(text)\n".utf8))
        exit(64)
    }
    server.chaos(rate: 1, seed: 1, kinds: [kind])
}
FileHandle.standardOutput.write(Data((server.baseURL + "\n").utf8))
while readLine() != nil {}
let counts = server.resourceCounts
FileHandle.standardError.write(Data("fhir-test-server: \(counts.values.reduce(0, +)) resources, \(server.statistics.bundleRequests) bundle requests\n".utf8))
try await server.shutdown()
