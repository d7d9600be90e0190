import FHIRArtifacts
import FHIRModel
import FHIRValidation
import Foundation

/// Where a resource of the input was read: its file and the JSON pointer of the resource, or its NDJSON line.
public struct InputLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var pointer: String?
    public var line: Int?

    public var description: String { line.map { "\(file):\($0)" } ?? "\(file)#\(pointer ?? "")" }
}

/// `system|value` of an identifier.
struct Token: Hashable, Sendable, CustomStringConvertible {
    var system: String
    var value: String
    var description: String { system + "|" + value }
}

/// One resource of the input, with what its bundle entry said about it.
struct InputResource {
    var location: InputLocation
    var resource: JSONValue
    var fullUrl: String?
    /// The input transaction it belongs to: its resources were meant to land together.
    var transaction: Int?
    /// The identifier the producer made the write conditional on (`ifNoneExist`, or a conditional update's URL).
    var producerKey: Token?
}

/// The files of a folder that fhirbundle did not write, read in a fixed order: files by path, entries in order.
///
/// Bundles of any type (batch, transaction and their nested transactions, collection, searchset, document,
/// message, history), single resources and NDJSON. A folder with a manifest (fhirbundle's own) is read from its
/// NDJSON files, which hold every resource once.
struct ForeignInput {
    let folder: String
    let files: [String]

    init(folder: String) throws(RebundleError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw RebundleError("\(folder): no such folder")
        }
        self.folder = folder
        var found: [String] = []
        if let walk = FileManager.default.enumerator(atPath: folder) {
            while let path = walk.nextObject() as? String {
                if (path as NSString).pathComponents.contains(where: { $0.hasPrefix(".") }) { continue }
                guard path.hasSuffix(".json") || path.hasSuffix(".ndjson") else { continue }
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: folder + "/" + path, isDirectory: &isDir), !isDir.boolValue { found.append(path) }
            }
        }
        // A Bulk Data export's manifest (or another tool's) beside data from elsewhere: not this tool's, and not data.
        if found.contains(ManifestFile.name) && ManifestFile.isForeign(inFolder: folder) { found.removeAll { $0 == ManifestFile.name } }
        if found.contains(ManifestFile.name) {
            found = found.filter { $0.hasPrefix("ndjson/") && $0.hasSuffix(".ndjson") }
        } else {
            found = found.filter { !$0.hasPrefix("upload/") && $0 != "rejects.ndjson" }
        }
        files = found.sorted()
        if files.isEmpty { throw RebundleError("\(folder) holds no .json or .ndjson file") }
    }

    /// Reads file `index`, handing each resource to `body` and each thing that is not a resource it could use to
    /// `problem` (with where it is and why); returns the file's SHA-256 and size. Throws for a file that cannot be
    /// read or is not JSON.
    @discardableResult
    func read(file index: Int, transactionCounter: inout Int, _ body: (InputResource) throws -> Void,
              problem: (InputLocation, String) throws -> Void) throws -> (sha256: String, bytes: Int) {
        let file = files[index]
        // A FIFO would block the read forever and a link to /dev/zero never end: only regular files are read, and
        // a JSON file (read whole) within the validator's limit.
        if let what = DataFile.irregularity(folder + "/" + file) { throw RebundleError("\(file): \(what), not a regular file; only regular files are read") }
        if file.hasSuffix(".json"), let size = (try? FileManager.default.attributesOfItem(atPath: folder + "/" + file))?[.size] as? Int,
           size > DataFile.defaultMaxBytes {
            throw RebundleError("\(file): \(size) bytes, more than the \(DataFile.defaultMaxBytes) a JSON file may have to be read whole; write it as NDJSON")
        }
        guard let data = FileManager.default.contents(atPath: folder + "/" + file) else {
            throw RebundleError("\(file): cannot be read")
        }
        let digest = (sha256Hex(Array(data)), data.count)
        if file.hasSuffix(".ndjson") {
            var line = 0
            for bytes in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
                line += 1
                if NDJSONLine.isBlank(bytes) { continue }
                let location = InputLocation(file: file, line: line)
                do {
                    let resource = try JSONParser.parse(Array(bytes))
                    guard resource["resourceType"]?.stringValue != nil else {
                        try problem(location, "the line is not a resource (no resourceType)")
                        continue
                    }
                    try body(InputResource(location: location, resource: resource))
                } catch let error as JSONSyntaxError {
                    try problem(location, "not JSON (column \(error.column): \(error.message))")
                }
            }
            return digest
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(Array(data))
        } catch {
            throw RebundleError("\(file):\(error.line):\(error.column): not JSON: \(error.message)")
        }
        guard let type = json["resourceType"]?.stringValue else {
            throw RebundleError("\(file): not a FHIR resource or Bundle (no resourceType)")
        }
        if type != "Bundle" {
            try body(InputResource(location: InputLocation(file: file, pointer: ""), resource: json))
        } else {
            try readBundle(json, pointer: "", file: file, transactionCounter: &transactionCounter, body, problem: problem)
        }
        return digest
    }

    private func readBundle(_ bundle: JSONValue, pointer: String, file: String, transactionCounter: inout Int,
                            _ body: (InputResource) throws -> Void, problem: (InputLocation, String) throws -> Void) throws {
        let type = bundle["type"]?.stringValue ?? ""
        if type.hasSuffix("-response") {
            return try problem(InputLocation(file: file, pointer: pointer + "/type"), "a \(type) bundle holds a server's answers, not data")
        }
        var transaction: Int?
        if type == "transaction" {
            transaction = transactionCounter
            transactionCounter += 1
        }
        for (i, entry) in (bundle["entry"]?.arrayValue ?? []).enumerated() {
            let place = pointer + "/entry/\(i)"
            guard let resource = entry["resource"] else {
                let method = entry["request"]?["method"]?.stringValue
                try problem(InputLocation(file: file, pointer: place),
                            method.map { "a \($0) entry without a resource: only writes are rebundled" } ?? "the entry has no resource")
                continue
            }
            if resource["resourceType"]?.stringValue == "Bundle", ["transaction", "batch"].contains(resource["type"]?.stringValue ?? "") {
                try readBundle(resource, pointer: place + "/resource", file: file, transactionCounter: &transactionCounter, body, problem: problem)
                continue
            }
            let method = entry["request"]?["method"]?.stringValue
            if let method, method != "POST" && method != "PUT" {
                try problem(InputLocation(file: file, pointer: place), "a \(method) entry: only writes (POST, PUT) are rebundled")
                continue
            }
            var key: Token?
            if let search = entry["request"]?["ifNoneExist"]?.stringValue, let parsed = ConditionalURL.parseIdentifier("X?" + search) {
                key = Token(system: parsed.system, value: parsed.value)
            } else if method == "PUT", let url = entry["request"]?["url"]?.stringValue, let parsed = ConditionalURL.parseIdentifier(url) {
                key = Token(system: parsed.system, value: parsed.value)
            }
            try body(InputResource(location: InputLocation(file: file, pointer: place + "/resource"), resource: resource,
                                   fullUrl: entry["fullUrl"]?.stringValue, transaction: transaction, producerKey: key))
        }
    }
}

/// Why a rebundle cannot run (the output is left as it was).
public struct RebundleError: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
