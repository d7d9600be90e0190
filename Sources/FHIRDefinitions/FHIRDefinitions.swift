// FHIRDefinitions
