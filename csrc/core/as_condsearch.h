/* as_condsearch.h — see as_core.h. (Section to be written by the issue that owns it.) */
#ifndef AS_CONDSEARCH_H
#define AS_CONDSEARCH_H
#include "as_core.h"
#endif
