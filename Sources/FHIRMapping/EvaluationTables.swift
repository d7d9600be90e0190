import FHIRModel
import FHIRSources

/// Counts how often a combination of values has occurred so far in a step, for `occurrence()`: identical source
/// rows (Synthea repeats some lab results) get distinct, still deterministic, identifiers.
/// Row-order dependent: one step's rows, on one thread, in file order (it is no `Sendable`, so the compiler keeps it
/// there).
final class OccurrenceCounter {
    private var seen: [String: Int] = [:]
    private var last: (key: String, value: Int)?

    func next(_ key: String, counting: Bool) -> Int {
        if !counting {
            // Recomputing the key of the row just evaluated: give the same number again.
            if let last, last.key == key { return last.value }
            return (seen[key] ?? 0) + 1
        }
        let n = (seen[key] ?? 0) + 1
        seen[key] = n
        last = (key, n)
        return n
    }
}

/// What expressions read besides the row: lookup tables and specs, value maps, occurrence counts. One object, so
/// that each row's evaluation context holds a single reference to it.
final class EvaluationTables {
    let lookupSpecs: [CompiledLookup]
    let lookups: LookupTables
    let maps: [ValueMap]
    let occurrences = OccurrenceCounter()

    init(mapping: CompiledMapping, lookups: LookupTables) {
        lookupSpecs = mapping.lookups
        self.lookups = lookups
        maps = mapping.maps
    }
}
