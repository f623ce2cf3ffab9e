/*
 * as_plan.h — validation and compilation of a steering plan (steer / multisteer)
 * into the per-layer tables the layer hooks hand to the steer_layer op.
 *
 * Input: the model's size (n_layers L, hidden_size D), the behaviours B1..Bm and
 * conditions C1..Cn, each an as_plan_vector_t: what the vector HAS (its layer
 * keys, one direction per key, one explained-variance ratio per key) and what
 * is ASKED (the layer ids to act at, a scale, whether to multiply by the
 * explained variance; for a condition its threshold, comparator and pooling),
 * plus the rules' truth tables (as_rules.h) or NULL (every behaviour always on).
 *
 * Every fact is checked here, once, before anything is written:
 *   - n_conditions <= AS_MAX_CONDITIONS                              INVALID_ARG
 *   - layer ids (negative = from the end) are in [-L, L)              RANGE
 *   - no layer is listed twice in one list (10 and -20 of 30 count
 *     as the same layer)                                              INVALID_ARG
 *   - the vector has no two keys for the same layer                  INVALID_ARG
 *   - it has a direction for every requested layer                   INVALID_ARG
 *   - each used direction is 1-D with exactly D values               INVALID_ARG
 *   - used directions, scales, thresholds, and (when used) explained
 *     variances are finite, and so is every scaled float32 row        NONFINITE
 *     (a strength of 1e39 overflows float32: refused here)
 *   - a condition direction is not all zeros (0/0 never fires)       INVALID_ARG
 *   - a requested explained variance exists                          INVALID_ARG
 *   - a behaviour's operator is one of as_plan_op and its strength
 *     unit one of as_plan_unit (argument = op_name / unit_name)       INVALID_ARG
 *   - an ablated direction is not all zeros (d = v/|v|)              INVALID_ARG
 *   - AS_UNIT_RESIDUAL_NORM on a behaviour that adds: the vector
 *     records a finite residual norm > 0 for every requested layer
 *     (argument = unit_name)                                         INVALID_ARG
 * and the error record (as_core.h) says which vector (argument = its name,
 * index = its position among the behaviours or the conditions), which layer,
 * and the message names the vector's, layer list's and strength's/threshold's
 * arguments (name / layer_name / value_name) and the fix.
 * Directions of layers that are not requested are never read.
 *
 * Output (caller-allocated; Uc <= sum of the conditions' n_use, Ub <= sum of
 * the behaviours' n_use, S = 2^n_conditions, or 1 without tables), written
 * only on AS_OK. Per layer l, in layer order:
 *   cond_offsets[L+1]   its condition rows are cond_offsets[l]..cond_offsets[l+1]
 *   cond_rows[Uc, D]    float32 directions (conditions are never scaled)
 *   cond_index[Uc]      0-based condition j of each row (conditions in order)
 *   cond_thresholds[Uc] float32 threshold
 *   cond_codes[Uc, 3]   int64 (1 << j, comparator 1 = smaller / 0 = larger,
 *                       pooling 1 = last / 0 = mean): the op's codes
 *   beh_offsets[L+1]    its behaviour rows, likewise
 *   beh_rows[Ub, D]     float32 (float)((scale * evr * norm) * (double)direction),
 *                       computed in double and rounded once; norm is the
 *                       layer's residual norm for AS_UNIT_RESIDUAL_NORM, else
 *                       1; all zeros for AS_OP_ABLATE (nothing is added)
 *   beh_dirs[Ub, D]     float32 unit direction d = v/|v| (|v| in double) for a
 *                       row that ablates; all zeros for AS_OP_ADD rows
 *   beh_modes[Ub]       int64 bits, the op's per-row modes: AS_MODE_ADD (adds
 *                       its row), AS_MODE_ABLATE (removes (h.d) d), and
 *                       AS_MODE_TOKEN_NORM (the added row is multiplied by the
 *                       position's own residual norm |h|, AS_UNIT_TOKEN_NORM)
 *   beh_index[Ub]       0-based behaviour k of each row (behaviours in order;
 *                       a behaviour no rule can switch on has no rows)
 *   beh_tables[Ub, S]   uint8 0/1: row's truth table over condition bitmasks
 *                       (all ones without tables)
 *   layer_gated[L]      1 when some behaviour row of l has a table that is not
 *                       all ones (the op must gate), else 0 (always on)
 *   *n_cond_rows, *n_beh_rows   Uc and Ub actually written.
 * No global state; safe from several threads.
 */
#ifndef AS_PLAN_H
#define AS_PLAN_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A behaviour's operator (docs/semantics.md, "Operators"). */
typedef enum {
    AS_OP_ADD = 1,             /* h + s v                 */
    AS_OP_ABLATE = 2,          /* h - (h.d) d, d = v/|v|  */
    AS_OP_ABLATE_THEN_ADD = 3  /* h - (h.d) d + s v       */
} as_plan_op;

/* A behaviour's strength unit (docs/strength_units.md). */
typedef enum {
    AS_UNIT_ABSOLUTE = 0,      /* s v                                     */
    AS_UNIT_RESIDUAL_NORM = 1, /* s * residual_norms[layer] * v           */
    AS_UNIT_TOKEN_NORM = 2     /* s * |h| * v, |h| per position (the op)  */
} as_plan_unit;

/* Bits of beh_modes, the steer_layer op's per-behaviour modes (ops.cpp). */
#define AS_MODE_ADD 1
#define AS_MODE_ABLATE 2
#define AS_MODE_TOKEN_NORM 4

/* One vector in one role. A = n_avail, U = n_use. */
typedef struct {
    int present;                    /* 0: no vector (a multisteer behaviour given as None) */
    const char *name;               /* its argument, e.g. "condition_vectors[1]"          */
    const char *layer_name;         /* its layer-id argument, e.g. "condition_layer_ids[1]" */
    int64_t n_avail;                /* A: how many layer keys the vector carries          */
    const int64_t *avail_layers;    /* [A] the keys (negative counts from the end)        */
    const int64_t *avail_ndim;      /* [A] ndim of each direction                          */
    const int64_t *avail_shape;     /* [A, 2] its first two dims (-1 when absent)          */
    const float *const *avail_data; /* [A] each direction's values (prod(shape) floats)    */
    const double *avail_evr;        /* [A] explained-variance ratio of each direction      */
    const uint8_t *avail_has_evr;   /* [A] 1 when the vector has that ratio                 */
    int64_t n_use;                  /* U: how many layer ids are asked                      */
    const int64_t *use_layers;      /* [U] those ids, as given (negative = from the end)   */
    double scale;                   /* strength (ignored for conditions)                   */
    int use_evr;                    /* 1: multiply by the explained variance               */
    double threshold;               /* conditions: the threshold                            */
    int smaller;                    /* conditions: comparator "smaller" (else "larger")    */
    int last;                       /* conditions: pooling "last" (else "mean")             */
    const char *value_name;         /* argument of the strength (behaviours) or threshold
                                       (conditions), e.g. "behavior_vector_strengths[0]"  */
    /* Behaviours only; a zeroed struct means AS_OP_ADD in AS_UNIT_ABSOLUTE:              */
    int op;                         /* as_plan_op; 0 reads as AS_OP_ADD                      */
    const char *op_name;            /* its argument, e.g. "behavior_operators[1]" (or NULL) */
    int unit;                       /* as_plan_unit                                         */
    const char *unit_name;          /* its argument, e.g. "strength_unit" (or NULL)         */
    const double *avail_norm;       /* [A] residual norm at each key's layer, or NULL       */
    const uint8_t *avail_has_norm;  /* [A] 1 when the vector records that norm, or NULL     */
} as_plan_vector_t;

typedef struct {
    int64_t n_layers;                     /* L                                           */
    int64_t hidden_size;                  /* D                                           */
    int64_t n_behaviors;                  /* m >= 0                                      */
    const as_plan_vector_t *behaviors;    /* [m]                                         */
    int64_t n_conditions;                 /* n, 0..AS_MAX_CONDITIONS                     */
    const as_plan_vector_t *conditions;   /* [n]                                         */
    const uint8_t *tables;                /* [m, 2^n] truth tables, or NULL: always on   */
} as_plan_input_t;

typedef struct {
    int64_t *cond_offsets;   /* [L + 1] */
    float *cond_rows;        /* [Uc, D] */
    int64_t *cond_index;     /* [Uc]    */
    float *cond_thresholds;  /* [Uc]    */
    int64_t *cond_codes;     /* [Uc, 3] */
    int64_t *beh_offsets;    /* [L + 1] */
    float *beh_rows;         /* [Ub, D] */
    int64_t *beh_index;      /* [Ub]    */
    uint8_t *beh_tables;     /* [Ub, S] */
    float *beh_dirs;         /* [Ub, D] */
    int64_t *beh_modes;      /* [Ub]    */
    uint8_t *layer_gated;    /* [L]     */
    int64_t n_cond_rows;     /* out: Uc */
    int64_t n_beh_rows;      /* out: Ub */
} as_plan_t;

/* Validate and compile; see the file comment. `err` may be NULL. */
as_status as_plan_compile(const as_plan_input_t *in, as_plan_t *out, as_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* AS_PLAN_H */
