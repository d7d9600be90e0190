import FHIRModel
import Foundation

/// The server an upload goes to, as the journal knows it: the FHIR base URL and who we are there.
///
/// Each target has its own folder under `DIR/upload/`, with its journal and failures file, so a folder uploaded
/// to staging and then to production sends everything to production, and a folder carried across an air gap with
/// its `upload/` resumes only against the server that acknowledged those writes.
public struct UploadTarget: Sendable, Equatable {
    /// The base URL, normalized: lowercase scheme and host, no default port, no trailing slash, query or fragment.
    public let server: String
    /// Who we are there (`Credentials.principal`): two clients of one server have two journals.
    public let principal: String

    public init(server: String, principal: String) {
        self.server = Self.normalized(server)
        self.principal = principal
    }

    /// The target folder's name: the server's host and port, and a hash of the server and principal.
    public var folderName: String {
        let origin = Origin(server)
        var readable = origin.map { $0.host + ($0.port == ($0.scheme == "https" ? 443 : 80) ? "" : "-\($0.port)") } ?? "server"
        readable = String(readable.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" })
        return readable + "-" + String(sha256Hex(Array((server + "\n" + principal).utf8)).prefix(12))
    }

    /// `DIR/upload/<folderName>`.
    public func directory(inFolder folder: String) -> String { directory(inRoot: folder + "/upload") }

    /// `<root>/<folderName>`: the journal folder when the journals are kept elsewhere.
    public func directory(inRoot root: String) -> String { root + "/" + folderName }

    public var description: String { "\(server) (\(principal))" }

    static func normalized(_ url: String) -> String {
        guard let origin = Origin(url), var components = URLComponents(string: url) else { return url }
        components.query = nil
        components.fragment = nil
        var path = components.path
        while path.hasSuffix("/") { path.removeLast() }
        return origin.description + path
    }
}

/// `target.json` in a target's folder: which server and principal the journal belongs to, which manifest it was
/// written for, and what the uploader learnt about the server.
struct TargetRecord: Equatable {
    var server: String
    var principal: String
    /// SHA-256 of the manifest the journal's entries refer to: a regenerated folder starts from nothing.
    var manifestSHA256: String
    /// Whether the server resolves conditional references inside batch entries (nil: not known yet).
    var resolvesBatchConditionalReferences: Bool?

    static let fileName = "target.json"

    var json: JSONValue {
        var members = [JSONMember("server", .string(server)), JSONMember("principal", .string(principal)),
                       JSONMember("manifestSHA256", .string(manifestSHA256))]
        if let resolves = resolvesBatchConditionalReferences {
            members.append(JSONMember("resolvesBatchConditionalReferences", .bool(resolves)))
        }
        return .object(members)
    }

    init(server: String, principal: String, manifestSHA256: String, resolvesBatchConditionalReferences: Bool? = nil) {
        self.server = server
        self.principal = principal
        self.manifestSHA256 = manifestSHA256
        self.resolvesBatchConditionalReferences = resolvesBatchConditionalReferences
    }

    /// The record in `directory`, or nil when there is none or it cannot be read.
    static func read(directory: String) -> TargetRecord? {
        guard let data = FileManager.default.contents(atPath: directory + "/" + fileName),
              let json = try? JSONParser.parse(Array(data)),
              let server = json["server"]?.stringValue, let principal = json["principal"]?.stringValue,
              let manifest = json["manifestSHA256"]?.stringValue else { return nil }
        var resolves: Bool?
        if case .bool(let b)? = json["resolvesBatchConditionalReferences"] { resolves = b }
        return TargetRecord(server: server, principal: principal, manifestSHA256: manifest, resolvesBatchConditionalReferences: resolves)
    }

    /// Writes the record (a temporary file, then a rename: never half a record).
    func write(directory: String) throws {
        var bytes = JSONWriter(indent: 2).bytes(json)
        bytes.append(0x0A)
        let path = directory + "/" + Self.fileName
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes)) else {
            throw UploadError.journal(path: path, message: "cannot be written")
        }
        if rename(temporary, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw UploadError.journal(path: path, message: reason)
        }
    }
}
