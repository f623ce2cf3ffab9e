/*
 * as_plan.h — validation and compilation of a steering plan (steer / multisteer).
 *
 * A plan is a list of "items": each item is one steering vector used in one role
 * (a behaviour vector with its strength, or a condition vector) at a list of
 * requested layers. For every item the caller passes what the vector HAS (its
 * layer ids, one direction per layer, one explained-variance ratio per layer) and
 * what is ASKED (the layer ids to use, a scale, whether to multiply by the
 * explained variance). The core checks everything before writing anything:
 *
 *   - every requested layer is in [0, n_layers)              -> AS_ERR_RANGE
 *   - the vector has a direction for every requested layer    -> AS_ERR_INVALID_ARG
 *   - each used direction has exactly hidden_size values      -> AS_ERR_INVALID_ARG
 *   - used directions, scales and (when used) explained
 *     variances are finite                                    -> AS_ERR_NONFINITE
 *
 * and *err says which item, which layer, and what (sizes for a size mismatch).
 * Directions of layers that are not requested are never read: a vector may carry
 * extra layers, and they may even hold garbage.
 *
 * Output, written only on AS_OK (U = sum(n_use), L = n_layers, D = hidden_size):
 *   rows[U, D]            float32; row u (item i's j-th requested layer, items in
 *                         order) = (float)((scale[i] * evr) * (double)direction),
 *                         evr = the layer's explained variance if use_evr[i]
 *                         else 1; computed in double, rounded once.
 *   layer_offsets[L + 1]  CSR offsets into layer_rows: the rows that act at layer
 *   layer_rows[U]         l are layer_rows[layer_offsets[l] : layer_offsets[l+1]],
 *                         in item order (so a layer applies its behaviours in
 *                         the order they were given).
 * A layer requested twice by the same item is AS_ERR_INVALID_ARG (callers dedupe).
 *
 * Inputs (A = sum(n_avail), S = sum(avail_sizes)):
 *   n_avail[I], avail_layers[A], avail_sizes[A], avail_data[S] (the directions
 *   concatenated in the order of avail_layers), avail_evr[A], n_use[I],
 *   use_layers[U], scale[I], use_evr[I]. Item i's entries follow item i-1's.
 * No global state; safe from several threads.
 */
#ifndef AS_PLAN_H
#define AS_PLAN_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t n_layers;            /* L: decoder layers of the model                   */
    int64_t hidden_size;         /* D                                                */
    int64_t n_items;             /* I                                                */
    const int64_t *n_avail;      /* [I]  how many layers item i's vector carries     */
    const int64_t *avail_layers; /* [A]  their layer ids                             */
    const int64_t *avail_sizes;  /* [A]  length of each direction                    */
    const float *avail_data;     /* [S]  the directions, concatenated                */
    const double *avail_evr;     /* [A]  explained-variance ratio of each direction  */
    const int64_t *n_use;        /* [I]  how many layers item i is asked to act at   */
    const int64_t *use_layers;   /* [U]  those layer ids (already normalised, >= 0)  */
    const double *scale;         /* [I]  strength (1 for conditions)                 */
    const uint8_t *use_evr;      /* [I]  1: multiply by the explained variance       */
} as_plan_input_t;

/* What was wrong with a plan. */
typedef enum {
    AS_PLAN_ERR_NONE = 0,
    AS_PLAN_ERR_SIZES,              /* inconsistent counts or NULL arrays (caller bug) */
    AS_PLAN_ERR_LAYER_RANGE,        /* requested layer outside [0, n_layers)           */
    AS_PLAN_ERR_LAYER_TWICE,        /* the same item requests a layer twice            */
    AS_PLAN_ERR_MISSING_LAYER,      /* the vector has no direction for that layer      */
    AS_PLAN_ERR_HIDDEN_SIZE,        /* direction length != hidden_size                 */
    AS_PLAN_ERR_NONFINITE_DIRECTION,
    AS_PLAN_ERR_NONFINITE_EVR,
    AS_PLAN_ERR_NONFINITE_SCALE,
    AS_PLAN_ERR_NOMEM
} as_plan_error_kind;

/* Where a plan failed (filled on error, untouched on AS_OK). */
typedef struct {
    as_plan_error_kind kind;
    int64_t item;        /* offending item, -1 if none          */
    int64_t layer;       /* offending layer id, -1 if none      */
    int64_t expected;    /* hidden-size mismatch: hidden_size   */
    int64_t got;         /* ... and the direction's length      */
    const char *message; /* static, human-readable              */
} as_plan_error_t;

/* Total rows U = sum(n_use) of a plan (AS_ERR_INVALID_ARG on negative counts). */
as_status as_plan_count_rows(const as_plan_input_t *in, int64_t *n_rows);

/* Validate and compile; see the file comment. `err` may be NULL. */
as_status as_plan_compile(const as_plan_input_t *in, float *rows, int64_t *layer_offsets, int64_t *layer_rows,
                          as_plan_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* AS_PLAN_H */
