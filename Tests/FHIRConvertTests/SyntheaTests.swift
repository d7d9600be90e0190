import FHIRConvert
import FHIRModel
import Foundation
import Testing

/// The Synthea mapping against a real Synthea CSV export, third-party data (`fixtures/synthea/csv`, see its README).
struct SyntheaTests {
    @Test func syntheaExportConvertsWithZeroRejects() throws {
        let out = temporaryFolder()
        defer { cleanup(out) }
        let summary = try convert(fixture("synthea/mapping.yaml"), out: out + "/out")
        #expect(summary.manifest.rejects == 0)
        #expect(summary.manifest.steps.map(\.name) == ["organizations", "practitioners", "patients", "encounters", "conditions", "observations"])
        #expect(summary.manifest.resourceCounts == [
            "Organization": 173, "Practitioner": 173, "Patient": 59, "Encounter": 2590, "Condition": 1534, "Observation": 21697,
        ])
        // Every row became exactly one resource.
        for step in summary.manifest.steps { #expect(step.rows == step.resources.values.reduce(0, +)) }
        // A conditional reference points at the identifier system of the step that writes the target.
        let encounter = try JSONParser.parse(String(read(out + "/out/ndjson/Encounter.ndjson").split(separator: "\n")[0]))
        #expect(encounter["subject"]?["reference"]?.stringValue?.hasPrefix("Patient?identifier=https://github.com/synthetichealth/synthea/patient|") == true)
        #expect(encounter["serviceProvider"]?["reference"]?.stringValue?.hasPrefix("Organization?identifier=") == true)
    }
}
