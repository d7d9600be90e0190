#ifndef CXML_SHIM_H
#define CXML_SHIM_H
// Opaque, ICU-free surface over libxml2's streaming reader. Implemented in cxml_shim.c.
typedef struct cxml_reader cxml_reader;
#endif
