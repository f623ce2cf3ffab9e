/* as_plan.h — see as_core.h. (Section to be written by the issue that owns it.) */
#ifndef AS_PLAN_H
#define AS_PLAN_H
#include "as_core.h"
#endif
