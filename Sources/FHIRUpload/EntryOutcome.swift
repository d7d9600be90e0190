import FHIRModel

/// The result of one entry of a batch or transaction, as the server's response bundle reports it.
public struct EntryOutcome: Sendable, Equatable {
    /// The HTTP status code of `response.status` ("201 Created" → 201).
    public var status: Int
    /// `response.location`: where the resource now lives.
    public var location: String?
    /// The diagnostics of `response.outcome` (an OperationOutcome), one line per issue.
    public var issues: [String]
    /// For a nested transaction: the status of each of its entries, from the inner transaction-response.
    public var innerStatuses: [Int] = []

    public init(status: Int, location: String?, issues: [String], innerStatuses: [Int] = []) {
        self.status = status
        self.location = location
        self.issues = issues
        self.innerStatuses = innerStatuses
    }

    public var succeeded: Bool { (200...299).contains(status) }
    /// A failure that resending the same entry may fix (rate limit, server error).
    public var isRetryable: Bool { RetryPolicy.isRetryable(status: status) }

    /// Reads a batch-response or transaction-response bundle; nil when the body is not one. The count of outcomes
    /// equals the count of entries sent when the server follows the specification.
    public static func parse(responseBundle json: JSONValue) -> [EntryOutcome]? {
        guard json["resourceType"]?.stringValue == "Bundle",
              let type = json["type"]?.stringValue, type == "batch-response" || type == "transaction-response" else { return nil }
        return (json["entry"]?.arrayValue ?? []).map { entry in
            let response = entry["response"]
            var inner: [Int] = []
            if entry["resource"]?["type"]?.stringValue == "transaction-response" {
                inner = (entry["resource"]?["entry"]?.arrayValue ?? []).map { status($0["response"]) }
            }
            return EntryOutcome(status: status(response), location: response?["location"]?.stringValue,
                                issues: operationOutcomeIssues(response?["outcome"]), innerStatuses: inner)
        }
    }

    /// "201 Created" → 201.
    private static func status(_ response: JSONValue?) -> Int {
        Int((response?["status"]?.stringValue ?? "").prefix { $0.isNumber }) ?? 0
    }

    /// `severity code: diagnostics (expression)` for each issue of an OperationOutcome.
    public static func operationOutcomeIssues(_ outcome: JSONValue?) -> [String] {
        guard let outcome, outcome["resourceType"]?.stringValue == "OperationOutcome" else { return [] }
        return (outcome["issue"]?.arrayValue ?? []).map { issue in
            var s = (issue["severity"]?.stringValue ?? "error") + " " + (issue["code"]?.stringValue ?? "")
            if let text = issue["diagnostics"]?.stringValue ?? issue["details"]?["text"]?.stringValue { s += ": " + text }
            if let expression = issue["expression"]?.arrayValue?.compactMap(\.stringValue), !expression.isEmpty {
                s += " (" + expression.joined(separator: ", ") + ")"
            }
            return s
        }
    }
}
