import FHIRTestServer
import Foundation

// Runs the test FHIR server until stdin closes; prints its base URL on the first line of stdout.
// Options:
//   --client-id ID --client-secret SECRET   require OAuth2 client credentials
//   --fault KIND                           answer every bundle request with a fault: stall-body, trickle,
//                                          retry-after=SECONDS, status=CODE, echo-authorization, reverse
//   --unresolved-batch-references          store conditional references in batch entries as written
//   --quota POINTS/SECONDS                 Medplum's FHIR interaction quota, scaled: POINTS per client per window
//                                          of SECONDS (Medplum: 50000/60; a conditional update costs 120)
//   --async-seconds-per-entry SECONDS      how long an asynchronous job spends on each entry
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
if let text = value(after: "--quota") {
    let parts = text.split(separator: "/").map(String.init)
    guard parts.count == 2, let points = Int(parts[0]), let seconds = Double(parts[1]), points > 0, seconds > 0 else {
        FileHandle.standardError.write(Data("fhir-test-server: --quota takes POINTS/SECONDS, e.g. 50000/60\n".utf8))
        exit(64)
    }
    limits.quota = InteractionQuota(points: points, windowSeconds: seconds)
}
if let text = value(after: "--async-seconds-per-entry"), let seconds = Double(text) { limits.asyncSecondsPerEntry = seconds }
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
let stats = server.statistics
FileHandle.standardError.write(Data(("fhir-test-server: \(counts.values.reduce(0, +)) resources, \(stats.bundleRequests) bundle requests, "
    + "\(stats.asyncJobs) asynchronous jobs, \(stats.asyncPolls) polls, \(stats.throttled) answered 429 by the quota\n").utf8))
try await server.shutdown()
