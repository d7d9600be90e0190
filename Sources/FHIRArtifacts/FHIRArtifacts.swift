// FHIRArtifacts
