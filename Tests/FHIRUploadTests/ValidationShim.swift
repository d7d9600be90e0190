import FHIRValidation

/// The number of validation errors of a folder (the uploader validates before sending).
enum FHIRValidationShim {
    static func validate(_ folder: String) throws -> Int {
        try ArtifactValidator(folder: folder).run().errors
    }
}
