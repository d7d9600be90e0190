import FHIRModel

/// What an upload plan asks of a server: per resource type, which writes; and whether batches and transactions.
public struct ServerNeeds: Sendable, Equatable {
    public struct TypeNeeds: Sendable, Equatable {
        public var resources = 0
        /// `PUT Type?identifier=…`: update, conditional update and the `identifier` search.
        public var conditionalUpdates = 0
        /// `PUT Type/id` of a resource that may not exist yet: update as create.
        public var updatesByID = 0
        /// `POST` (with or without `ifNoneExist`).
        public var creates = 0
        public var conditionalCreates = 0
        /// `DELETE Type?identifier=…` (a delta's): delete, conditional delete and the `identifier` search.
        public var conditionalDeletes = 0
    }

    public var types: [String: TypeNeeds] = [:]
    public var batch = false
    public var transaction = false

    public init() {}

    /// Adds one bundle (its entries, nested transactions included).
    mutating func add(bundle: JSONValue, sentAsTransaction: Bool = false) {
        let type = bundle["type"]?.stringValue
        if type == "transaction" || sentAsTransaction { transaction = true } else if type == "batch" { batch = true }
        for entry in bundle["entry"]?.arrayValue ?? [] {
            let method = entry["request"]?["method"]?.stringValue ?? ""
            let url = entry["request"]?["url"]?.stringValue ?? ""
            if method == "POST" && url == "/", let inner = entry["resource"] {
                add(bundle: inner)
                continue
            }
            if method == "DELETE" {
                let resourceType = String(url.prefix { $0 != "?" && $0 != "/" })
                if url.contains("?") && !resourceType.isEmpty { types[resourceType, default: TypeNeeds()].conditionalDeletes += 1 }
                continue
            }
            guard let resourceType = entry["resource"]?["resourceType"]?.stringValue else { continue }
            var needs = types[resourceType] ?? TypeNeeds()
            needs.resources += 1
            switch method {
            case "PUT" where url.contains("?"): needs.conditionalUpdates += 1
            case "PUT": needs.updatesByID += 1
            case "POST":
                needs.creates += 1
                if entry["request"]?["ifNoneExist"] != nil { needs.conditionalCreates += 1 }
            default: break
            }
            types[resourceType] = needs
        }
    }
}

/// Checks a server's CapabilityStatement (`GET [base]/metadata`) against what a folder writes, before anything is
/// sent: a type the server does not offer, or offers without the interaction or search its writes need, would
/// otherwise fail entry by entry halfway through the upload.
///
/// Only what the statement says is held against the server: a flag it leaves out (`conditionalUpdate`) is taken
/// as supported, and a resource listed without search parameters is not checked for `identifier`.
public enum Preflight {
    /// The problems, one line per type or interaction, each naming the type, its count and what is missing.
    public static func problems(capability: JSONValue, needs: ServerNeeds) -> [String] {
        guard capability["resourceType"]?.stringValue == "CapabilityStatement" else { return [] }
        let rests = capability["rest"]?.arrayValue ?? []
        guard let rest = rests.first(where: { $0["mode"]?.stringValue == "server" }) ?? rests.first else { return [] }
        var problems: [String] = []
        if let interactions = rest["interaction"]?.arrayValue {
            let codes = Set(interactions.compactMap { $0["code"]?.stringValue })
            if needs.batch && !codes.contains("batch") { problems.append("the server offers no batch interaction, which this folder's batches need") }
            if needs.transaction && !codes.contains("transaction") { problems.append("the server offers no transaction interaction, which this folder's transactions need") }
        }
        guard let resources = rest["resource"]?.arrayValue, !resources.isEmpty else { return problems }
        var offered: [String: JSONValue] = [:]
        for r in resources { if let type = r["type"]?.stringValue { offered[type] = r } }
        for (type, need) in needs.types.sorted(by: { $0.key < $1.key }) {
            var counted = need.resources > 0 || need.conditionalDeletes == 0 ? ["\(need.resources) resource\(need.resources == 1 ? "" : "s")"] : []
            if need.conditionalDeletes > 0 { counted.append("\(need.conditionalDeletes) delete\(need.conditionalDeletes == 1 ? "" : "s")") }
            let what = "\(type) (\(counted.joined(separator: ", ")))"
            guard let r = offered[type] else {
                problems.append("\(what): the server does not offer this type")
                continue
            }
            let interactions = Set((r["interaction"]?.arrayValue ?? []).compactMap { $0["code"]?.stringValue })
            let listsInteractions = r["interaction"] != nil
            var missing: [String] = []
            if need.conditionalUpdates + need.updatesByID > 0 && listsInteractions && !interactions.contains("update") { missing.append("no update") }
            if need.conditionalUpdates > 0 {
                if case .bool(false)? = r["conditionalUpdate"] { missing.append("no conditional update") }
                let params = (r["searchParam"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
                if !params.isEmpty && !params.contains("identifier") { missing.append("no identifier search, which its conditional updates need") }
            }
            if need.updatesByID > 0, case .bool(false)? = r["updateCreate"] { missing.append("no create by PUT with a client id (updateCreate)") }
            if need.creates > 0 && listsInteractions && !interactions.contains("create") { missing.append("no create") }
            if need.conditionalCreates > 0, case .bool(false)? = r["conditionalCreate"] { missing.append("no conditional create (ifNoneExist)") }
            if need.conditionalDeletes > 0 {
                if listsInteractions && !interactions.contains("delete") { missing.append("no delete") }
                if r["conditionalDelete"]?.stringValue == "not-supported" { missing.append("no conditional delete, which the delta's deletes need") }
                let params = (r["searchParam"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }
                if need.conditionalUpdates == 0 && !params.isEmpty && !params.contains("identifier") { missing.append("no identifier search, which its conditional deletes need") }
            }
            if !missing.isEmpty { problems.append("\(what): \(missing.joined(separator: ", "))") }
        }
        return problems
    }
}
