import FHIRArtifacts
import FHIRDefinitions
import FHIRModel
import FHIRValidation
import Foundation

/// What to rebundle, where to, and for which server.
public struct RebundleOptions: Sendable {
    /// The folder of FHIR data (Bundle JSON, single resources, NDJSON).
    public var inputPath: String
    /// The artifact folder to write (replaced when the run completes, like `convert`'s).
    public var outputPath: String
    public var profile: ServerProfile = .medplum
    public var limitOverrides: [BundleLimit: Int?] = [:]
    public var layout: BundleLayout = .entryPerLine
    /// Validate the new folder before it replaces the output (errors keep it aside, in `<out>.invalid`).
    public var validate = true
    /// `Type|system|value` or `Type/id` of resources already on the server, which references outside the input
    /// may point at (as `fhirbundle validate --known-identifiers` takes them).
    public var knownIdentifiers: Set<String> = []
    public var toolVersion = FHIRBundleVersion.current

    public init(inputPath: String, outputPath: String) {
        self.inputPath = inputPath
        self.outputPath = outputPath
    }
}

/// What a rebundle wrote.
public struct RebundleSummary: Sendable {
    public var manifest: Manifest
    public var validation: ValidationReport?
    /// Resources (and unusable entries or lines) read from the input.
    public var read: Int
    public var seconds: Double
    /// Changes to the input's structure, and why.
    public var notes: [String]
}

/// Why a rebundle stopped before writing its folder; the previous output is unchanged.
public enum RebundleFailure: Error, CustomStringConvertible {
    case input(RebundleError)
    case artifacts(ArtifactError)
    case invalid(ValidationReport, keptAt: String)

    public var description: String {
        switch self {
        case .input(let e): return e.description
        case .artifacts(let e): return "cannot write artifacts: \(e)"
        case .invalid(let report, let keptAt):
            return "the new artifacts have \(report.errors) validation errors; the previous output folder is unchanged and the new artifacts are in \(keptAt) for review"
        }
    }
}

/// Turns FHIR data that fhirbundle did not write into an artifact folder, as `convert` does from CSV: every write a
/// conditional update on an identifier the resource carries (or one derived from its full URL or id), references
/// between resources rewritten to conditional references by identifier (`urn:uuid:` kept inside a transaction),
/// steps in dependency order, bundles within the profile's limits, NDJSON, rejects and a manifest.
///
/// Two passes over the input: the first keeps a few facts per resource (identifiers, references) to decide
/// identities and order; the second rewrites each resource, writes its NDJSON line and spills its entry to its
/// step's file, from which the bundles are assembled. Memory grows with the facts, not with the resources.
///
/// ```swift
/// let summary = try Rebundler(options: RebundleOptions(inputPath: "synthea/fhir", outputPath: "out")).run()
/// print(summary.manifest.resourceCounts)
/// ```
public final class Rebundler {
    private let options: RebundleOptions

    public init(options: RebundleOptions) {
        self.options = options
    }

    /// Rebundles, or throws leaving the previous output untouched.
    public func run() throws(RebundleFailure) -> RebundleSummary {
        let started = Date()
        var limits = options.profile.limits
        for (limit, value) in options.limitOverrides { limits[limit] = value }
        let input: ForeignInput
        do { input = try ForeignInput(folder: options.inputPath) } catch { throw .input(error) }

        // Pass 1: facts.
        var facts: [ResourceFacts] = []
        var problems: [(index: Int, location: InputLocation, reason: String)] = []
        var fileOf: [Int] = []
        do {
            var transactions = 0
            for index in input.files.indices {
                try input.read(file: index, transactionCounter: &transactions) { resource in
                    facts.append(Self.facts(of: resource))
                    fileOf.append(index)
                } problem: { location, reason in
                    problems.append((facts.count, location, reason))
                }
            }
        } catch let error as RebundleError {
            throw .input(error)
        } catch {
            throw .input(RebundleError("\(error)"))
        }
        let plan = RebundlePlan.make(facts, limits: limits, keepTransactions: !options.profile.isMedplum)

        let folder: ArtifactFolder
        do { folder = try ArtifactFolder(target: options.outputPath) } catch { throw .artifacts(error) }
        do {
            let writer = try RebundleWriter(folder: folder, plan: plan, facts: facts, limits: limits, layout: options.layout)
            writer.knownIdentifiers = options.knownIdentifiers
            // Pass 2: rewrite and write, in the same order.
            var k = 0
            var transactions = 0
            var fileRows = Array(repeating: 0, count: input.files.count)
            var fileRejects = Array(repeating: 0, count: input.files.count)
            var problemIndex = 0
            for index in input.files.indices {
                let digest = try input.read(file: index, transactionCounter: &transactions) { resource in
                    fileRows[index] += 1
                    if plan.planned[k] == nil { fileRejects[index] += 1 }
                    try writer.add(resource, index: k)
                    k += 1
                } problem: { location, reason in
                    fileRows[index] += 1
                    fileRejects[index] += 1
                    try writer.reject(location, type: nil, reason: reason)
                    problemIndex += 1
                }
                writer.sources.append(Manifest.Source(name: input.files[index], file: input.files[index], sha256: digest.sha256,
                                                      bytes: digest.bytes, rows: fileRows[index], rejects: fileRejects[index]))
            }
            let manifest = try writer.finish(profile: options.profile, toolVersion: options.toolVersion)
            var validation: ValidationReport?
            if options.validate {
                let (report, keptAt) = try folder.validateBeforeCommit(ValidationOptions(limits: limits, knownIdentifiers: options.knownIdentifiers))
                if let keptAt { throw RebundleFailure.invalid(report, keptAt: keptAt) }
                validation = report
            }
            try folder.commit()
            return RebundleSummary(manifest: manifest, validation: validation, read: facts.count + problems.count,
                                   seconds: Date().timeIntervalSince(started), notes: plan.notes)
        } catch let failure as RebundleFailure {
            folder.discard()
            throw failure
        } catch let error as ArtifactError {
            folder.discard()
            throw .artifacts(error)
        } catch let error as RebundleError {
            folder.discard()
            throw .input(error)
        } catch {
            folder.discard()
            throw .artifacts(ArtifactError(path: options.outputPath, message: "\(error)"))
        }
    }

    /// What pass one keeps of a resource.
    static func facts(of input: InputResource) -> ResourceFacts {
        let resource = input.resource
        var identifiers: [Token] = []
        let list = resource["identifier"].map { $0.arrayValue ?? [$0] } ?? []
        for identifier in list {
            if let system = identifier["system"]?.stringValue, let value = identifier["value"]?.stringValue {
                identifiers.append(Token(system: system, value: value))
            }
        }
        let references = ReferenceWalk.references(in: resource).map { ReferenceWalkResult(pointer: $0.pointer, reference: $0.reference) }
        return ResourceFacts(type: resource["resourceType"]?.stringValue ?? "", location: input.location, fullUrl: input.fullUrl,
                             id: resource["id"]?.stringValue, identifiers: identifiers,
                             contentHash: JSONWriter().bytes(RebundleWriter.withoutServerFields(resource)).withUnsafeBufferPointer { FastHash.hash128($0) },
                             references: references, transaction: input.transaction, producerKey: input.producerKey)
    }
}
