// FHIRMapping
