import FHIRArtifacts

extension ArtifactFolder {
    /// Validates the staging folder before it replaces the target, as `convert` and `rebundle` do: with errors it is
    /// moved aside (`<target>.invalid`) for review and the target stays as it was.
    ///
    /// - Returns: the report, and where the folder was kept when it has errors (nil: it may be committed).
    public func validateBeforeCommit(_ options: ValidationOptions) throws -> (report: ValidationReport, keptAt: String?) {
        let report = try ArtifactValidator(folder: staging, options: options).run()
        return (report, try keepIfInvalid(report))
    }

    /// After a validation of the staging folder: with errors it is moved aside (`<target>.invalid`) for review.
    ///
    /// - Returns: where the folder was kept (nil: no errors, it may be committed).
    public func keepIfInvalid(_ report: ValidationReport) throws -> String? {
        guard report.errors > 0 else { return nil }
        let keptAt = target + ".invalid"
        try keep(at: keptAt)
        return keptAt
    }
}
