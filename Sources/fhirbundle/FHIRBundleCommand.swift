import ArgumentParser
import FHIRArtifacts
import FHIRConvert

@main
struct FHIRBundleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fhirbundle",
        abstract: "Turn legacy CSV and XML exports into reviewable FHIR R4 artifacts.",
        discussion: """
            A mapping file (YAML) says which export files to read and which FHIR resources each row becomes. \
            `convert` writes an artifact folder: NDJSON per resource type, bundles of conditional updates in \
            upload order, rejects.ndjson and a manifest with checksums. Upload it later with fhirupload.

            Start with the bundled example:
              fhirbundle convert fixtures/medplum-example/mapping.yaml
            The mapping language is described in docs/mapping.md.
            """,
        version: FHIRBundleVersion.current,
        subcommands: [Convert.self, Validate.self, Rebundle.self, Diff.self]
    )
}
