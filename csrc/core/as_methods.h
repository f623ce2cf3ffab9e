/*
 * as_methods.h — steering-vector extraction beyond PCA: mean_diff and probe.
 *
 * Input, as for as_pca.h: the pooled activations of one layer, P contrastive
 * pairs stored as rows[2P, D] float32, interleaved (row 2p is pair p's positive,
 * row 2p+1 its negative). d_p = row 2p - row 2p+1 (in double) is pair p's
 * difference. Several layers [L, 2P, D] are fitted independently in one call.
 *
 * AS_METHOD_MEAN_DIFF (CAA / DiffMean)
 *   m = (1/P) sum_p d_p, accumulated in double in pair order. The direction is
 *   m / |m| (options.normalize = 1, the default) or m itself (normalize = 0:
 *   CAA's raw magnitude, so strength 1 adds exactly the average pair difference).
 *
 * AS_METHOD_PROBE (L2-regularised logistic regression, positives vs negatives)
 *   Labels y = 1 for the P positive rows, 0 for the P negative rows. With X the
 *   rows centred by their column mean (and, when options.probe_standardize = 1,
 *   every column divided by its population standard deviation, 1 where that is
 *   0 — scikit-learn's StandardScaler), (w, b) minimises
 *       sum_i log(1 + exp(-(2 y_i - 1)(x_i . w + b))) + (l2 / 2) |w|^2,
 *   the intercept b unpenalised: scikit-learn's LogisticRegression with
 *   C = 1 / l2 (penalty="l2", fit_intercept=True). Centring only moves b, so w
 *   is the weight vector of the uncentred problem too. The weights are mapped
 *   back to the original activation space (w_j / scale_j) and returned as a unit
 *   vector (normalize must be 1: the norm of w depends on l2, not on the data).
 *   The solver is Newton's method with an Armijo backtracking line search from
 *   w = 0, b = 0; each Newton step is an exact Cholesky solve (LAPACK dpotrf) in
 *   whichever form is smaller: the primal (D+1)x(D+1) Hessian when D < N = 2P,
 *   otherwise the N x N kernel form (Woodbury identity with the intercept
 *   eliminated by its Schur complement). It stops when the Newton decrement
 *   g.H^-1.g <= 1e-20 * max(1, objective). Once the decrement is below
 *   1e-10 * max(1, objective) the objective can no longer resolve the remaining
 *   decrease, so full Newton steps are taken without line search, and the solver
 *   also stops when such a step fails to halve the decrement (the double
 *   rounding floor). Otherwise, after AS_PROBE_MAX_ITER steps, it fails.
 *
 * Sign (both methods): the project's pair rule, applied to the float32 direction
 * c that is returned, exactly as for PCA: with proj(r) = r . c (double),
 * G = #pairs with proj(positive) > proj(negative) and S = #pairs with <, c is
 * negated iff S > G. (Both methods already point from negatives to positives;
 * the rule only flips a direction that most pairs contradict.)
 *
 * explained (both methods): the fraction of the pair differences' second moment
 * that lies along the direction,
 *       explained = sum_p (d_p . c)^2 / (|c|^2 sum_p |d_p|^2)  in [0, 1],
 * i.e. the explained-variance ratio of uncentred PCA on the differences,
 * evaluated at c instead of at the top component (so it is at most that PC's
 * ratio, 1 iff every pair differs exactly along c). It is computed in double
 * from the direction before its float32 rounding (m, or the probe's w), so it
 * does not depend on normalize; it is comparable across mean_diff and probe.
 *
 * Determinism: fixed loop orders, exact solves, no randomness: the same inputs
 * give the same bits (BLAS/LAPACK with a fixed thread count are deterministic).
 *
 * Degenerate inputs (a defined error, never a crash; outputs untouched):
 *   - NaN or Inf in rows: AS_ERR_NONFINITE.
 *   - every pair's positive equals its negative (all d_p = 0):
 *     AS_ERR_INVALID_ARG, "... identical for every pair ...".
 *   - mean_diff whose differences cancel (m = 0), probe whose weights come out
 *     exactly 0: AS_ERR_INVALID_ARG with a sentence saying so.
 *   - probe not converged: AS_ERR_LAPACK with a sentence saying so.
 * A single pair is valid: mean_diff gives d_0 (explained 1), probe the
 * regularised two-point separator (a multiple of d_0 when not standardised).
 * D > 2P is the usual case and is what the kernel form is for.
 *
 * Errors fill the error record (as_core.h): argument "rows" (or "options"),
 * index = the failing layer's 0-based position in `rows` (-1 when not
 * layer-specific), reason = the static sentence for the case above. Outputs are
 * written only when AS_OK is returned.
 */
#ifndef AS_METHODS_H
#define AS_METHODS_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AS_PROBE_MAX_ITER 100

typedef enum {
    AS_METHOD_MEAN_DIFF = 0,
    AS_METHOD_PROBE = 1
} as_method;

typedef struct {
    int normalize;         /* 1: unit-norm direction (default); 0: raw mean difference (mean_diff only) */
    double probe_l2;       /* probe: L2 penalty on w, finite and > 0 (scikit-learn's C = 1 / probe_l2) */
    int probe_standardize; /* probe: 1 = fit on standardised features (direction still in activation space) */
} as_method_options_t;

/* Per-layer extras, in the returned direction's sign. probe: the weights are
 * w = weight_scale * direction (|weight_scale| = |w|) and the decision function
 * is r . w + intercept for an activation row r as captured (uncentred, unscaled);
 * iterations = Newton steps taken. mean_diff: weight_scale * direction = m
 * (weight_scale = +-|m| with normalize = 1, +-1 with normalize = 0), intercept 0,
 * iterations 0. */
typedef struct {
    double weight_scale;
    double intercept;
    int64_t iterations;
} as_method_info_t;

/* rows[n_layers, 2*n_pairs, d] float32 -> directions[n_layers, d] float32,
 * explained[n_layers] double, info[n_layers] (may be NULL). n_layers, n_pairs,
 * d >= 1. For mean_diff, info.weight_scale is |m| (normalize = 1) or 1
 * (normalize = 0), so weight_scale * direction is m in both cases. */
as_status as_method_fit_layers(const float *rows, int64_t n_layers, int64_t n_pairs, int64_t d, as_method method,
                               const as_method_options_t *options, float *directions, double *explained,
                               as_method_info_t *info, as_error_t *err);

/* The same with the probe's Newton form forced: form 0 = automatic (kernel form
 * iff 2P <= D), 1 = primal, 2 = kernel. Both forms solve the same problem; the
 * tests use this to check that they agree on the same data. */
as_status as_method_fit_layers_form(const float *rows, int64_t n_layers, int64_t n_pairs, int64_t d, as_method method,
                                    const as_method_options_t *options, int form, float *directions, double *explained,
                                    as_method_info_t *info, as_error_t *err);

#ifdef __cplusplus
}
#endif
#endif /* AS_METHODS_H */
