import FHIRMapping
import FHIRModel
import FHIRSources

/// Compiles mapping YAML against given source columns, as `convert` does after reading headers.
func compileMapping(_ yaml: String, fields: [String: [String]]) throws(MappingError) -> CompiledMapping {
    let document = try MappingDocument.parse(yaml, path: "mapping.yaml")
    return try MappingCompiler.compile(document, fieldNames: fields)
}

/// The error a mapping produces, or nil when it compiles.
func mappingError(_ yaml: String, fields: [String: [String]]) -> MappingError? {
    do {
        _ = try compileMapping(yaml, fields: fields)
        return nil
    } catch {
        return error
    }
}

/// Evaluates one row of step `step` (by name) and returns the resources as compact JSON strings, or the failure.
func evaluate(_ mapping: CompiledMapping, step: String, row: [String], lookups: [(lookup: String, rows: [[String]])] = []) -> Result<[String], RowFailure> {
    var builder = LookupTables.Builder(mapping: mapping)
    for (name, rows) in lookups {
        guard let index = mapping.lookups.firstIndex(where: { $0.name == name }) else {
            return .failure(RowFailure("test setup: the mapping has no lookup '\(name)'"))
        }
        let spec = mapping.lookups[index]
        for r in rows {
            let key = spec.keyColumns.count == 1 ? r[spec.keyColumns[0]] : LookupKey.composite(spec.keyColumns.map { r[$0] })
            _ = builder.add(index: index, key: key, row: r.map { .single($0) }, multiple: spec.multiple)
        }
    }
    guard let stepIndex = mapping.steps.firstIndex(where: { $0.name == step }) else {
        return .failure(RowFailure("test setup: the mapping has no step '\(step)'"))
    }
    let tables = builder.build()
    let evaluator = StepEvaluator(mapping: mapping, stepIndex: stepIndex, lookups: tables)
    return evaluator.evaluate(row.map { .single($0) }).map { $0.map { String(decoding: $0.bytes, as: UTF8.self) } }
}

extension Result {
    var success: Success? { if case .success(let s) = self { return s } else { return nil } }
    var failure: Failure? { if case .failure(let f) = self { return f } else { return nil } }
}
