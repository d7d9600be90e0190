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
    /// For a nested transaction: the location of each of its entries.
    public var innerLocations: [String?] = []

    public init(status: Int, location: String?, issues: [String], innerStatuses: [Int] = [], innerLocations: [String?] = []) {
        self.status = status
        self.location = location
        self.issues = issues
        self.innerStatuses = innerStatuses
        self.innerLocations = innerLocations
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
            var innerLocations: [String?] = []
            if entry["resource"]?["type"]?.stringValue == "transaction-response" {
                let innerEntries = entry["resource"]?["entry"]?.arrayValue ?? []
                inner = innerEntries.map { status($0["response"]) }
                innerLocations = innerEntries.map { $0["response"]?["location"]?.stringValue }
            }
            return EntryOutcome(status: status(response), location: response?["location"]?.stringValue,
                                issues: operationOutcomeIssues(response?["outcome"]), innerStatuses: inner, innerLocations: innerLocations)
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

/// What a `response.location` says: `Patient/123/_history/1`, or the same below an absolute base URL.
public enum ResourceLocation {
    /// The resource type a location names, or nil when it does not look like `[base/]Type/id[/_history/v]`.
    public static func type(of location: String) -> String? {
        var path = Substring(location)
        if let cut = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<cut] }
        let parts = path.split(separator: "/").map(String.init)
        if let h = parts.lastIndex(of: "_history") { return h >= 2 ? parts[h - 2] : nil }
        return parts.count >= 2 ? parts[parts.count - 2] : nil
    }

    /// The URL to read the resource at `location` from, below `base`; nil for a location on another origin.
    static func readURL(_ location: String, base: String) -> String? {
        var path = location
        if let h = path.range(of: "/_history/") { path = String(path[..<h.lowerBound]) }
        if Origin(path) != nil { return Origin(path) == Origin(base) ? path : nil }
        return base + "/" + path.drop { $0 == "/" }
    }
}
