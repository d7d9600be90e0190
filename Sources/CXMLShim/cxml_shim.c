#include "cxml_shim.h"
#include <libxml/parser.h>
#include <libxml/xmlreader.h>
#include <libxml/xmlschemas.h>
#include <stdlib.h>
#include <string.h>

struct cxml_reader {
    xmlTextReaderPtr reader;
    xmlSchemaPtr schema;
    char *error;
    int error_line;
    int error_column;
    int on_attribute;
};

static void record_error(void *context, xmlErrorPtr error) {
    struct cxml_reader *r = context;
    if (r->error != NULL || error == NULL || error->level < XML_ERR_ERROR) return;
    r->error = strdup(error->message ? error->message : "XML error");
    size_t n = strlen(r->error);
    while (n > 0 && (r->error[n - 1] == '\n' || r->error[n - 1] == ' ')) r->error[--n] = 0;
    r->error_line = error->line;
    r->error_column = error->int2;
}

static void silent(void *context, const char *message, ...) {
    (void)context;
    (void)message;
}

/// Refuses every external entity, DTD or schema import libxml2 might try to load.
static xmlParserInputPtr refuse_external(const char *url, const char *id, xmlParserCtxtPtr ctxt) {
    (void)url;
    (void)id;
    (void)ctxt;
    return NULL;
}

cxml_reader *cxml_reader_open(cxml_read_fn read, void *context, const char *name) {
    xmlInitParser();
    xmlSetGenericErrorFunc(NULL, silent);
    xmlSetExternalEntityLoader(refuse_external);
    struct cxml_reader *r = calloc(1, sizeof(struct cxml_reader));
    if (r == NULL) return NULL;
    // XML_PARSE_NONET: no network. No XML_PARSE_NOENT, XML_PARSE_DTDLOAD or XML_PARSE_DTDATTR: entities are never
    // substituted and no DTD is loaded. XML_PARSE_HUGE is left off so libxml2's own amplification limits stay on.
    int options = XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_NOWARNING | XML_PARSE_NOERROR | XML_PARSE_COMPACT | XML_PARSE_BIG_LINES;
    r->reader = xmlReaderForIO((xmlInputReadCallback)read, NULL, context, name, NULL, options);
    if (r->reader == NULL) {
        free(r);
        return NULL;
    }
    xmlTextReaderSetStructuredErrorHandler(r->reader, record_error, r);
    return r;
}

int cxml_reader_use_schema(cxml_reader *r, const char *xsd, int length) {
    // From memory: the external entity loader refuses every file, imports and includes of the XSD too.
    xmlSchemaParserCtxtPtr ctxt = xmlSchemaNewMemParserCtxt(xsd, length);
    if (ctxt == NULL) return -1;
    xmlSchemaSetParserStructuredErrors(ctxt, record_error, r);
    r->schema = xmlSchemaParse(ctxt);
    xmlSchemaFreeParserCtxt(ctxt);
    if (r->schema == NULL) return -1;
    return xmlTextReaderSetSchema(r->reader, r->schema);
}

int cxml_reader_read(cxml_reader *r) {
    r->on_attribute = 0;
    int result = xmlTextReaderRead(r->reader);
    if (result < 0 || r->error != NULL) return -1;
    return result;
}

int cxml_reader_skip_subtree(cxml_reader *r) {
    r->on_attribute = 0;
    int result = xmlTextReaderNext(r->reader);
    if (result < 0 || r->error != NULL) return -1;
    return result;
}

int cxml_reader_node_type(cxml_reader *r) { return xmlTextReaderNodeType(r->reader); }
int cxml_reader_depth(cxml_reader *r) { return xmlTextReaderDepth(r->reader); }
int cxml_reader_is_empty_element(cxml_reader *r) { return xmlTextReaderIsEmptyElement(r->reader); }
int cxml_reader_line(cxml_reader *r) {
    // The node's own line: the parser's line runs ahead of the node being read.
    xmlNodePtr node = xmlTextReaderCurrentNode(r->reader);
    long line = node ? xmlGetLineNo(node) : -1;
    return line > 0 ? (int)line : xmlTextReaderGetParserLineNumber(r->reader);
}

const char *cxml_reader_local_name(cxml_reader *r) { return (const char *)xmlTextReaderConstLocalName(r->reader); }
const char *cxml_reader_namespace_uri(cxml_reader *r) { return (const char *)xmlTextReaderConstNamespaceUri(r->reader); }
const char *cxml_reader_value(cxml_reader *r) { return (const char *)xmlTextReaderConstValue(r->reader); }

int cxml_reader_next_attribute(cxml_reader *r) {
    int moved = r->on_attribute ? xmlTextReaderMoveToNextAttribute(r->reader) : xmlTextReaderMoveToFirstAttribute(r->reader);
    r->on_attribute = moved == 1;
    return moved == 1;
}

void cxml_reader_to_element(cxml_reader *r) {
    xmlTextReaderMoveToElement(r->reader);
    r->on_attribute = 0;
}

const char *cxml_reader_error(cxml_reader *r) { return r->error; }
int cxml_reader_error_line(cxml_reader *r) { return r->error_line; }
int cxml_reader_error_column(cxml_reader *r) { return r->error_column; }

void cxml_reader_free(cxml_reader *r) {
    if (r == NULL) return;
    xmlFreeTextReader(r->reader);
    if (r->schema) xmlSchemaFree(r->schema);
    free(r->error);
    free(r);
}
