/*
 * as_condsearch.h — the find_best_condition_point search (docs/semantics.md), grid and exact.
 *
 * Input: a similarity matrix sims[n_strings, n_layers] (double; sims[s, l] is the
 * condition similarity of string s at the l-th layer of the searched range) and
 * labels[n_strings] (1 = positive string, 0 = negative). Columns are addressed
 * by their index 0..n_layers-1; the caller maps them to model layer ids.
 *
 * Candidates (docs/semantics.md):
 *   - every combination of 1..max_combine columns, enumerated by size, then in
 *     lexicographic order within a size (Python's itertools.combinations order);
 *     the rank of a combination in that enumeration is its "combo index";
 *   - a threshold t and a comparator: AS_CMP_LARGER ("the threshold is larger"):
 *     the condition is met at a column iff sim < t (strict); AS_CMP_SMALLER: met
 *     iff sim > t (strict);
 *   - the layer combination (as_combination): with AS_COMBINE_OR a string is
 *     predicted positive iff the condition is met at ANY column of the
 *     combination (for LARGER that is min_l sim < t, for SMALLER max_l sim > t);
 *     with AS_COMBINE_AND iff it is met at EVERY column (LARGER: max_l sim < t,
 *     SMALLER: min_l sim > t). One threshold and one comparator are shared by all
 *     columns of a combination. Either way every combination reduces to one value
 *     per string, which is what makes the search cheap; a search runs ONE
 *     combination mode (the caller runs both and merges when it wants both).
 * Score: F1 with label 1 as the positive class, F1 = 2TP / (2TP + FP + FN), and
 * F1 = 0 when TP = 0. Scores are compared exactly (integer cross-multiplication),
 * so equal F1 values tie even when their counts differ, and the FIRST candidate
 * in the order (combination, threshold ascending, LARGER before SMALLER) wins.
 * The f1 reported is the double nearest to the exact rational value.
 *
 * Grid mode (as_condsearch_grid): the candidate thresholds are given (the
 * numpy.arange grid, non-decreasing). Each sim is mapped once to its position in
 * the grid by binary search; per combination the reduced positions are counted
 * into a histogram and one prefix sweep scores every threshold:
 * O(n_strings * n_layers * log T) once, then O(n_strings * r + T) per combination
 * (prefix reductions are shared between consecutive combinations).
 *
 * Exact mode (as_condsearch_exact): all real thresholds. Per combination and
 * comparator the reduced values are sorted and swept; every threshold that
 * gives a distinct prediction is represented by one candidate (below the
 * smallest distinct value, the midpoint between consecutive distinct values,
 * above the largest). O(n_strings log n_strings) per combination.
 *
 * Sizes: 1 <= n_strings <= AS_CONDSEARCH_MAX_STRINGS (keeps the exact F1
 * comparison in 64-bit integers), 1 <= max_combine <= n_layers, and at most
 * AS_CONDSEARCH_MAX_COMBOS combinations (AS_ERR_RANGE beyond). sims and
 * thresholds must be finite (AS_ERR_NONFINITE). Every failure fills the error
 * record (argument "sims", "labels", "thresholds", "max_layers_to_combine" or
 * "layer_combination").
 * Outputs are written only on AS_OK. Deterministic; no global state; safe from
 * several threads.
 *
 * Both searches walk the candidates with ONE combination iterator (condsearch.c
 * combo_iter_t), which keeps the per-string min / max over the combination's
 * columns with prefix reductions shared between consecutive combinations.
 */
#ifndef AS_CONDSEARCH_H
#define AS_CONDSEARCH_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AS_CONDSEARCH_MAX_COMBOS ((int64_t)10000000)
#define AS_CONDSEARCH_MAX_STRINGS ((int64_t)1 << 30)

/* Comparator of a condition: which side of the similarity the threshold is on. */
typedef enum {
    AS_CMP_LARGER = 0, /* met iff sim < threshold */
    AS_CMP_SMALLER = 1 /* met iff sim > threshold */
} as_comparator;

/* How the columns of a combination are combined (docs/semantics.md). */
typedef enum {
    AS_COMBINE_OR = 0, /* met at ANY column (the seed's rule)  */
    AS_COMBINE_AND = 1 /* met at EVERY column                  */
} as_combination;

/* The winning candidate of a search; its columns are written to best_cols. */
typedef struct {
    int64_t combo_index;     /* rank of the combination in the enumeration order */
    int64_t combo_size;      /* r: how many columns it has (1..max_combine)       */
    int64_t threshold_index; /* grid mode: index into thresholds; exact mode: -1  */
    double threshold;        /* the threshold value itself                        */
    as_comparator comparator;
    double f1;               /* 2TP / (2TP + FP + FN), 0 when TP = 0              */
    int64_t tp, fp;          /* confusion counts at the optimum (FN = n_pos - tp) */
} as_condsearch_best_t;

/* Number of combinations of 1..max_combine out of n_layers columns:
 * sum_{r=1..max_combine} C(n_layers, r). AS_ERR_INVALID_ARG unless
 * 1 <= max_combine <= n_layers and 1 <= limit <= 2^31; AS_ERR_RANGE when the
 * count exceeds `limit` (the searches use AS_CONDSEARCH_MAX_COMBOS). */
as_status as_condsearch_count_combos(int64_t n_layers, int64_t max_combine, int64_t limit, int64_t *n_combos,
                                     as_error_t *err);

/* Grid search.
 *   sims[n_strings, n_layers]   finite doubles
 *   labels[n_strings]           0 or 1 (anything else: AS_ERR_INVALID_ARG)
 *   combination                 AS_COMBINE_OR or AS_COMBINE_AND (else AS_ERR_INVALID_ARG,
 *                               argument "layer_combination")
 *   thresholds[n_thresholds]    finite, non-decreasing, 1 <= n_thresholds < 2^31
 *   best                        out: the first best candidate in the documented order. When
 *                               every candidate scores 0 it is the very first one
 *                               (combination 0, threshold 0, LARGER).
 *   best_cols[max_combine]      out: the winning columns, ascending, in the first
 *                               best->combo_size slots (the rest set to -1)
 *   scores                      NULL, or out [n_combos, n_thresholds, 2]: the F1 of
 *                               every candidate ([..., 0] LARGER, [..., 1] SMALLER;
 *                               n_combos from as_condsearch_count_combos)       */
as_status as_condsearch_grid(const double *sims, int64_t n_strings, int64_t n_layers, const uint8_t *labels,
                             int64_t max_combine, as_combination combination, const double *thresholds,
                             int64_t n_thresholds, as_condsearch_best_t *best, int64_t *best_cols, double *scores,
                             as_error_t *err);

/* Exact search over all real thresholds (same inputs as the grid search minus
 * the thresholds). Candidates per combination and comparator, with v the
 * combination's reduced value (OR: min for LARGER, max for SMALLER; AND: max
 * for LARGER, min for SMALLER) and d_0 < ... < d_k
 * the distinct values of v, in ascending order:
 *   d_0 - 1,  (d_0 + d_1) / 2,  ...,  (d_{k-1} + d_k) / 2,  d_k + 1
 * (midpoints computed as 0.5 * d_j + 0.5 * d_{j+1}, the ends as d_0 - 1.0 and
 * d_k + 1.0; when no double lies strictly between d_j and d_{j+1}, the midpoint is replaced
 * by d_{j+1} for LARGER and d_j for SMALLER, which predict the same; when d +- 1
 * rounds to d, the next representable value beyond d is used). Every real
 * threshold predicts the same set as one of these candidates, so the exact
 * optimum is >= the optimum over any grid. Order among equal F1: combination,
 * then threshold ascending, then LARGER before SMALLER at an equal threshold.
 *   best, best_cols    as for as_condsearch_grid; best->threshold_index = -1
 *   per_combo          NULL, or out [n_combos, 2, 2]: for each combination and
 *                      comparator (0 LARGER, 1 SMALLER) its first best
 *                      (threshold, f1)                                          */
as_status as_condsearch_exact(const double *sims, int64_t n_strings, int64_t n_layers, const uint8_t *labels,
                              int64_t max_combine, as_combination combination, as_condsearch_best_t *best,
                              int64_t *best_cols, double *per_combo, as_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* AS_CONDSEARCH_H */
