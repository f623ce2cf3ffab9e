/*
 * as_core.h — the public header of activation_steering's C core, and its manual.
 *
 * The core owns the numerics and the steering semantics that are not Python
 * objects: exact PCA for steering-vector extraction, the condition-point search,
 * the multisteer rule compiler and the validation/compilation of a steering plan.
 * It is pure C11, never includes Python.h and never aborts or exits: every entry
 * point returns an as_status, writes its outputs only when it returns AS_OK, and
 * keeps no global state (safe to call from several threads on distinct buffers).
 * The CPython binding (csrc/bindings/_core.c) turns the error record into an
 * exception (one function) and releases the GIL around every call that may take
 * time.
 *
 * A call, start to finish (the exact PCA of one layer; every entry point looks
 * like this: inputs, caller-allocated outputs, an error record, a status):
 *
 *     #include "as_core.h"
 *
 *     float rows[4 * 3] = {1, 0, 0,   0, 1, 0,      // pair 0: positive, negative
 *                          2, 0, 1,   0, 2, 1};     // pair 1: positive, negative
 *     float direction[3];
 *     double explained[1];
 *     as_error_t err;
 *     as_status st = as_pca_fit(rows, 2, 3, AS_PCA_PAIRWISE, 1, direction, explained, NULL, &err);
 *     if (st != AS_OK) {
 *         fprintf(stderr, "%s (argument %s, index %lld)\n", err.message,
 *                 err.argument ? err.argument : "-", (long long)err.index);
 *         return 1;                                 // nothing was written to direction
 *     }
 *     // direction: unit PC1, signed so positives project above their negatives;
 *     // explained[0]: its explained-variance ratio.
 *
 * Conventions
 *   - Arrays are C-contiguous, row-major. Shapes are written [rows, cols] next to
 *     each pointer. Sizes are int64_t.
 *   - Names: types as_*_t, enums AS_*, functions as_<object>_<action>.
 *   - Caller allocates every output buffer with the documented shape.
 *
 * Module headers (one per subsystem, each its own manual section):
 *   as_linalg.h      BLAS/LAPACK helpers (Gram matrix, symmetric eigensolver)
 *   as_pca.h         steering-vector PCA: pca_pairwise / pca_center / pca_diff
 *   as_condsearch.h  find_best_condition_point search (grid + exact sweep)
 *   as_rules.h       multisteer rule parser -> per-behaviour truth tables
 *   as_plan.h        steering plan validation -> per-layer tables for the hooks
 */
#ifndef AS_CORE_H
#define AS_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. The binding maps every status through ONE function
 * (csrc/bindings/_core.c raise_error): AS_ERR_INVALID_ARG / NONFINITE / PARSE /
 * RANGE -> ValueError, AS_ERR_NOMEM -> MemoryError, AS_ERR_LAPACK -> RuntimeError. */
typedef enum {
    AS_OK = 0,
    AS_ERR_INVALID_ARG = 1, /* a pointer, size or enum argument is wrong          */
    AS_ERR_NONFINITE = 2,   /* NaN or Inf in an input that must be finite          */
    AS_ERR_NOMEM = 3,       /* an allocation failed                                */
    AS_ERR_LAPACK = 4,      /* the eigensolver reported failure (no convergence)   */
    AS_ERR_PARSE = 5,       /* a rule is malformed                                 */
    AS_ERR_RANGE = 6        /* an index names something that does not exist       */
} as_status;

/* The most conditions a steering plan may have: truth tables over condition
 * bitmasks have 2^AS_MAX_CONDITIONS entries. The binding exposes it as
 * _core.MAX_CONDITIONS; nothing else defines it. */
#define AS_MAX_CONDITIONS 16

/* THE error record. Every entry point that can fail takes `as_error_t *err`
 * (may be NULL) and, when it returns a status other than AS_OK, fills it:
 *   status    the returned status;
 *   argument  static name of the offending argument ("rows", "sims", "rules",
 *             ...), or NULL when the failure is not about one argument;
 *   index     position inside that argument (a layer position of a stacked
 *             array, a rule, a plan item), -1 when none;
 *   layer     the model layer id involved, -1 when none;
 *   position  character offset inside a text argument (rules), -1 when none;
 *   reason    static: what is wrong, without where (e.g. "the training matrix
 *             has zero variance ...");
 *   message   the complete sentence for a user: where, what, and the fix.
 *             For a text argument (position >= 0) it continues
 *             "<argument>[<index>] <the text> ", which the binding quotes.
 * On AS_OK the record is left untouched. The binding turns it into an
 * exception and copies the fields onto it as attributes, so Python callers
 * read `exc.index` / `exc.layer` instead of parsing messages. */
#define AS_ERROR_MESSAGE_SIZE 512
typedef struct {
    as_status status;
    const char *argument;
    int64_t index;
    int64_t layer;
    int64_t position;
    const char *reason;
    char message[AS_ERROR_MESSAGE_SIZE];
} as_error_t;

/* Fill *err (when not NULL) and return `status`. `fmt` (printf-style) writes
 * `message`; NULL fmt copies `reason`. Never fails (truncates long messages). */
as_status as_error_set(as_error_t *err, as_status status, const char *argument, int64_t index, int64_t layer,
                       const char *reason, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 7, 8)))
#endif
    ;

/* Static, human-readable text for a status (never NULL). */
const char *as_status_message(as_status status);

/* "MAJOR.MINOR.PATCH" of the core. */
const char *as_version(void);

#ifdef __cplusplus
}
#endif

#include "as_linalg.h"
#include "as_pca.h"
#include "as_methods.h"
#include "as_condsearch.h"
#include "as_rules.h"
#include "as_plan.h"

#endif /* AS_CORE_H */
