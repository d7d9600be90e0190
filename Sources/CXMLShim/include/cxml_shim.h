#ifndef CXML_SHIM_H
#define CXML_SHIM_H
// An opaque, ICU-free surface over libxml2's streaming reader (xmlTextReader).
// libxml2's own headers pull in the system ICU, which clashes with Foundation's bundled ICU in any Swift module that
// sees both, so only cxml_shim.c includes them.

typedef struct cxml_reader cxml_reader;

/// Supplies input bytes: returns the number of bytes written to buffer, 0 at the end, -1 on error.
typedef int (*cxml_read_fn)(void *context, char *buffer, int length);

enum {
    CXML_ELEMENT = 1,
    CXML_TEXT = 3,
    CXML_CDATA = 4,
    CXML_ENTITY_REFERENCE = 5,
    CXML_DOCUMENT_TYPE = 10,
    CXML_SIGNIFICANT_WHITESPACE = 14,
    CXML_END_ELEMENT = 15,
};

/// Opens a reader over `read`. Never loads DTDs or external entities and never touches the network.
cxml_reader *cxml_reader_open(cxml_read_fn read, void *context, const char *name);
/// Validates the document against an XSD (its text, `length` bytes) while reading. Returns 0 on success.
/// The XSD's own imports and includes are not loaded.
int cxml_reader_use_schema(cxml_reader *reader, const char *xsd, int length);
/// Advances to the next node: 1 when there is one, 0 at the end, -1 on an error.
int cxml_reader_read(cxml_reader *reader);
/// Moves past the current node's subtree to the node after it (xmlTextReaderNext): 1, 0 at the end, -1 on error.
int cxml_reader_skip_subtree(cxml_reader *reader);
int cxml_reader_node_type(cxml_reader *reader);
int cxml_reader_depth(cxml_reader *reader);
int cxml_reader_is_empty_element(cxml_reader *reader);
/// Line of the current node (1-based).
int cxml_reader_line(cxml_reader *reader);
/// Local name, namespace URI (NULL when none) and text value of the current node; valid until the next call.
const char *cxml_reader_local_name(cxml_reader *reader);
const char *cxml_reader_namespace_uri(cxml_reader *reader);
const char *cxml_reader_value(cxml_reader *reader);
/// Moves through the attributes of the current element: 1 while on an attribute, 0 when there are no more.
int cxml_reader_next_attribute(cxml_reader *reader);
/// Returns from the attributes to their element.
void cxml_reader_to_element(cxml_reader *reader);
/// The first error libxml2 reported, or NULL; with its line and column.
const char *cxml_reader_error(cxml_reader *reader);
int cxml_reader_error_line(cxml_reader *reader);
int cxml_reader_error_column(cxml_reader *reader);
void cxml_reader_free(cxml_reader *reader);

#endif
