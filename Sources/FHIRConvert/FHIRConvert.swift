// FHIRConvert
