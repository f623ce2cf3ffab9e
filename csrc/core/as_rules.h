/* as_rules.h — see as_core.h. (Section to be written by the issue that owns it.) */
#ifndef AS_RULES_H
#define AS_RULES_H
#include "as_core.h"
#endif
