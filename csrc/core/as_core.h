/*
 * as_core.h — the public header of activation_steering's C core, and its manual.
 *
 * The core owns the numerics and the steering semantics that are not Python
 * objects: exact PCA for steering-vector extraction, the condition-point search,
 * the multisteer rule compiler and the validation/compilation of a steering plan.
 * It is pure C11, never includes Python.h and never aborts or exits: every entry
 * point returns an as_status, writes its outputs only when it returns AS_OK, and
 * keeps no global state (safe to call from several threads on distinct buffers).
 * The CPython binding (csrc/bindings/_core.c) turns statuses into exceptions and
 * releases the GIL around every call that may take time.
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
 *   as_plan.h        steering plan validation (layer sets, vectors, strengths)
 */
#ifndef AS_CORE_H
#define AS_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. The binding maps AS_ERR_INVALID_ARG/RANGE/PARSE -> ValueError,
 * AS_ERR_NONFINITE -> ValueError, AS_ERR_NOMEM -> MemoryError, others ->
 * RuntimeError. Functions that can say *where* an error is (rules: the character
 * offset; plan: the layer) do so through an out-parameter documented with them. */
typedef enum {
    AS_OK = 0,
    AS_ERR_INVALID_ARG = 1, /* a pointer, size or enum argument is wrong          */
    AS_ERR_NONFINITE = 2,   /* NaN or Inf in an input that must be finite          */
    AS_ERR_NOMEM = 3,       /* an allocation failed                                */
    AS_ERR_LAPACK = 4,      /* the eigensolver reported failure (no convergence)   */
    AS_ERR_PARSE = 5,       /* a rule is malformed                                 */
    AS_ERR_RANGE = 6        /* an index names something that does not exist       */
} as_status;

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
