// Carrier for libxml2's compiler and linker flags (pkg-config libxml-2.0).
// Only the C target CXMLShim includes these headers; Swift never sees them, because
// libxml2's headers pull in the system ICU, which clashes with Foundation's bundled ICU.
#include <libxml/xmlversion.h>
