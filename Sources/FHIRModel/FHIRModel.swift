// FHIRModel
