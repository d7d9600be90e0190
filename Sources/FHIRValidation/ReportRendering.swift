import FHIRModel

extension ValidationReport {
    /// Findings grouped by rule, errors first, with counts, the first examples and the rule's hint; `annotate` may
    /// add a line under an example (the converter names the reject that explains a dangling reference).
    public func text(examplesPerRule: Int = 5, annotate: (Finding) -> String? = { _ in nil }) -> String {
        var lines: [String] = []
        let byRule = Dictionary(grouping: findings, by: \.rule)
        let order = byRule.keys.sorted { a, b in
            let sa = byRule[a]![0].severity, sb = byRule[b]![0].severity
            return sa != sb ? sa < sb : a < b
        }
        for rule in order {
            let group = byRule[rule]!
            lines.append("\(group[0].severity.rawValue): \(rule) (\(group.count))")
            for f in group.prefix(examplesPerRule) {
                lines.append("  \(f.location): \(f.message)")
                if let note = annotate(f) { lines.append("    \(note)") }
            }
            if group.count > examplesPerRule { lines.append("  ... and \(group.count - examplesPerRule) more (--format json lists all)") }
            lines.append("  hint: \(group[0].hint)")
        }
        if let order = inferredOrder {
            lines.append("Upload order worked out from the references between files (no manifest; `fhirbundle rebundle` makes one):")
            for (i, step) in order.steps.enumerated() {
                let shown = step.prefix(4).joined(separator: ", ") + (step.count > 4 ? ", and \(step.count - 4) more" : "")
                lines.append("  step \(i + 1): \(shown)")
            }
        }
        lines.append("Limits: \(limitsOrigin).")
        lines.append("\(errors) errors, \(warnings) warnings in \(resources) resources, \(files) files"
                     + (unselected > 0 ? " (\(unselected) other findings not selected by --rule or --severity)." : "."))
        return lines.joined(separator: "\n")
    }

    /// Only the findings of `rules` (all when empty) and of `severity` (both when nil); the counts then count them.
    public func selecting(rules: Set<Rule>, severity: Finding.Severity?) -> ValidationReport {
        guard !rules.isEmpty || severity != nil else { return self }
        var selected = self
        selected.findings = findings.filter { f in
            (rules.isEmpty || rules.contains { $0.id == f.rule }) && (severity == nil || f.severity == severity)
        }
        selected.unselected = findings.count - selected.findings.count
        return selected
    }

    /// Every finding, for machines.
    public var json: JSONValue {
        var members = [
            JSONMember("errors", .number(String(errors))),
            JSONMember("warnings", .number(String(warnings))),
            JSONMember("resources", .number(String(resources))),
            JSONMember("files", .number(String(files))),
            JSONMember("unselected", .number(String(unselected))),
            JSONMember("findings", .array(findings.map { f in
                var m = [JSONMember("rule", .string(f.rule)), JSONMember("severity", .string(f.severity.rawValue)), JSONMember("file", .string(f.file))]
                if let line = f.line { m.append(JSONMember("line", .number(String(line)))) }
                if let pointer = f.pointer { m.append(JSONMember("pointer", .string(pointer))) }
                m.append(JSONMember("message", .string(f.message)))
                return .object(m)
            })),
            // Once per rule that fired, not once per finding (it was a quarter of the output).
            JSONMember("hints", .object(Set(findings.map(\.rule)).sorted().map { JSONMember($0, .string(Rule(rawValue: $0)?.hint ?? "")) })),
            JSONMember("limits", .object(BundleLimit.allCases.map { JSONMember($0.rawValue, limits[$0].map { .number(String($0)) } ?? .null) })),
            JSONMember("limitsOrigin", .string(limitsOrigin)),
        ]
        if let order = inferredOrder {
            members.append(JSONMember("inferredOrder", .object([
                JSONMember("steps", .array(order.steps.map { .array($0.map { .string($0) }) })),
                JSONMember("cycles", .array(order.cycles.map { .array($0.map { .string($0) }) })),
            ])))
        }
        return .object(members)
    }
}
