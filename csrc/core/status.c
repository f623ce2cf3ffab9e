/* status.c — status messages, the error record and the version. See as_core.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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

as_status as_error_set(as_error_t *err, as_status status, const char *argument, int64_t index, int64_t layer,
                       const char *reason, const char *fmt, ...) {
    if (!err) return status;
    err->status = status;
    err->argument = argument;
    err->index = index;
    err->layer = layer;
    err->position = -1;
    err->reason = reason ? reason : as_status_message(status);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    } else {
        snprintf(err->message, sizeof err->message, "%s", err->reason);
    }
    return status;
}

const char *as_version(void) { return "0.1.0"; }
