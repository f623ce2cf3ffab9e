/* status.c — status messages and version. See as_core.h. */
#include "as_core.h"

const char *as_status_message(as_status status) {
    switch (status) {
    case AS_OK: return "ok";
    case AS_ERR_INVALID_ARG: return "invalid argument";
    case AS_ERR_NONFINITE: return "input contains NaN or Inf";
    case AS_ERR_NOMEM: return "out of memory";
    case AS_ERR_LAPACK: return "LAPACK eigensolver failed to converge";
    case AS_ERR_PARSE: return "malformed rule";
    case AS_ERR_RANGE: return "index out of range";
    }
    return "unknown status";
}

const char *as_version(void) { return "0.1.0"; }
