import FHIRModel
import FHIRSources

/// Turns the rows of one step into resources. `occurrence()` counts the rows seen so far, so an evaluator is not
/// `Sendable`: each thread has its own, and a step that counts occurrences is evaluated by one, in file order.
public struct StepEvaluator {
    public let mapping: CompiledMapping
    public let step: CompiledStep
    let tables: EvaluationTables
    /// Per resource: its `uuid(...)` values appear only as whole string leaves, so its NDJSON form is its bundle
    /// form with those strings swapped for conditional references (no second rendering).
    let swapsLocalReferences: [Bool]
    /// Each resource's template, flattened for rendering.
    let programs: [TemplateProgram]

    public init(mapping: CompiledMapping, stepIndex: Int, lookups: LookupTables) {
        self.mapping = mapping
        self.step = mapping.steps[stepIndex]
        tables = EvaluationTables(mapping: mapping, lookups: lookups)
        swapsLocalReferences = step.resources.map { $0.usesLocalReferences && LocalReferences.onlyWholeLeaves($0.template) }
        programs = step.resources.map { TemplateProgram($0.template) }
    }

    /// The resources that `row` becomes (members whose `$if` is false are left out), or the reason it cannot.
    public func evaluate(_ row: [FieldValue], group: [[FieldValue]] = []) -> Result<[ProducedResource], RowFailure> {
        let out = RowResources()
        if let failure = evaluate(row, group: group, into: out) { return .failure(failure) }
        return .success(out.resources.indices.map { i in
            let r = out.resources[i]
            let resource = step.resources[r.member]
            let bytes = out.withBundleForm(i) { Array($0) }
            let ndjson = resource.usesLocalReferences ? out.withNDJSONForm(i) { Array($0) } : nil
            return ProducedResource(member: r.member, resourceType: resource.resourceType, identifierSystem: resource.identifierSystem,
                                    identifierValue: r.identifierValue, bytes: bytes, ndjsonBytes: ndjson,
                                    conditionalURL: r.conditionalURL, fullUrl: r.fullUrl)
        })
    }

    /// Renders the resources of `row` into `out` (emptied first); returns why it cannot, or nil. The conversion calls
    /// this for every row with the same `out`, so a row costs no object or array per resource. In a step that
    /// groups rows, `row` is the group's first row and `group` all its rows.
    public func evaluate(_ row: [FieldValue], group: [[FieldValue]] = [], into out: RowResources) -> RowFailure? {
        out.reset()
        var context = RowContext(row: row, aliases: groupAliases(group), memberURNs: [], tables: tables, counting: true)
        do {
            // Conditions and identities first: `uuid(member)` may point at a member rendered later.
            for (i, resource) in step.resources.enumerated() {
                if let condition = resource.condition, !(try context.evaluate(condition).isTruthy) { continue }
                let value = try context.identity(resource)
                // Batch entries carry no fullUrl, so the SHA-1 behind a urn:uuid is spent only where it is written.
                let urn = step.bundle == .batch
                    ? "" : NameUUID.urn(type: resource.resourceType, system: resource.identifierSystem, value: value)
                // `Type?identifier=system|value`: the member's update URL, and what NDJSON refers to it by.
                let url = ConditionalURL.appending(token: value, to: resource.conditionalURLPrefix)
                out.resources.append(RowResources.Resource(
                    member: i, identifierValue: value, conditionalURL: url, conditionalURLHash: FastHash.hash128(url),
                    fullUrl: urn, bundleForm: 0..<0, ndjsonForm: 0..<0))
            }
            if step.usesLocalReferences {
                // Refilled in place: the arrays keep their storage from row to row.
                out.urns.removeAll(keepingCapacity: true)
                out.urns.append(contentsOf: repeatElement(nil, count: step.resources.count))
                out.conditionalURLs.removeAll(keepingCapacity: true)
                out.conditionalURLs.append(contentsOf: repeatElement(nil, count: step.resources.count))
                for r in out.resources {
                    out.urns[r.member] = r.fullUrl
                    out.conditionalURLs[r.member] = r.conditionalURL
                }
                context.memberURNs = out.urns
            }
            for k in out.resources.indices {
                let i = out.resources[k].member
                let start = out.buffer.count
                guard try context.render(programs[i], at: 0, into: &out.buffer) else {
                    throw RowFailure("resource '\(step.resources[i].name)' came out empty")
                }
                let bundleForm = start..<out.buffer.count
                var ndjsonForm = bundleForm
                if swapsLocalReferences[i] {
                    out.scratch.count = 0
                    LocalReferences.swap(in: UnsafeBufferPointer(start: out.buffer.base + start, count: bundleForm.count),
                                         urns: out.urns, conditionalURLs: out.conditionalURLs, into: &out.scratch)
                    ndjsonForm = out.buffer.count..<(out.buffer.count + out.scratch.count)
                    out.buffer.append(bytes: UnsafeBufferPointer(start: out.scratch.base, count: out.scratch.count))
                } else if step.resources[i].usesLocalReferences {
                    // NDJSON has no transaction to resolve urn:uuid references: render again with conditional ones.
                    context.memberURNs = out.conditionalURLs
                    let again = out.buffer.count
                    _ = try context.render(programs[i], at: 0, into: &out.buffer)
                    ndjsonForm = again..<out.buffer.count
                    context.memberURNs = out.urns
                }
                out.resources[k].bundleForm = bundleForm
                out.resources[k].ndjsonForm = ndjsonForm
            }
            return nil
        } catch let failure as RowFailure {
            return failure
        } catch {
            return RowFailure("\(error)")
        }
    }

    /// What a row became, for the conversion: its resources (rendered into `out`, emptied first), or the reason it
    /// did not with what its reject names. The same on any thread, for a step that does not count occurrences.
    public func convert(_ row: [FieldValue], group: [[FieldValue]] = [], into out: RowResources) -> RowOutcome {
        if let failure = evaluate(row, group: group, into: out) {
            return .failed(failure, rejectKey: rejectKey(row, group: group), identities: identities(ofRejected: row, group: group))
        }
        return out.resources.isEmpty ? .filtered(rejectKey: rejectKey(row, group: group)) : .produced
    }

    /// The aliases a group's templates start with: its rows, in the group's slot.
    private func groupAliases(_ group: [[FieldValue]]) -> [Value] {
        guard let g = step.group else { return [] }
        var aliases = [Value](repeating: .null, count: g.slot + 1)
        aliases[g.slot] = .list(group.map { .row($0) })
        return aliases
    }

    /// Whether a row joins a group (`group.where`); true in steps without a condition.
    public func joinsGroup(_ row: [FieldValue]) -> Result<Bool, RowFailure> {
        guard let condition = step.group?.condition else { return .success(true) }
        var context = RowContext(row: row, aliases: [], memberURNs: [], tables: tables, counting: false)
        do {
            return .success(try context.evaluate(condition).isTruthy)
        } catch let failure as RowFailure {
            return .failure(failure)
        } catch {
            return .failure(RowFailure("\(error)"))
        }
    }

    /// The identities (`Type?identifier=system|value`, unescaped) of the resources a rejected row would have
    /// written, where they can be computed: a reference to one of them is dangling because of this reject.
    public func identities(ofRejected row: [FieldValue], group: [[FieldValue]] = []) -> [String] {
        var context = RowContext(row: row, aliases: groupAliases(group), memberURNs: [], tables: tables, counting: false)
        return step.resources.compactMap { resource in
            if let condition = resource.condition, let holds = try? context.evaluate(condition).isTruthy, !holds { return nil }
            guard let value = try? context.identity(resource), !value.isEmpty else { return nil }
            return "\(resource.resourceType)?identifier=\(resource.identifierSystem)|\(value)"
        }
    }

    /// The key a reject is filed under: the first resource's identifier value, when it can be computed.
    public func rejectKey(_ row: [FieldValue], group: [[FieldValue]] = []) -> String? {
        guard let first = step.resources.first(where: { $0.condition == nil }) ?? step.resources.first else { return nil }
        var context = RowContext(row: row, aliases: groupAliases(group), memberURNs: [], tables: tables, counting: false)
        return try? context.identity(first)
    }
}
