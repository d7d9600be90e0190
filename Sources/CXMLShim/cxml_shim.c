#include "cxml_shim.h"
#include <libxml/xmlreader.h>
