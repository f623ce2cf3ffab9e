/*
 * as_pca.h — steering-vector PCA (docs/extraction_methods.md): pca_pairwise / pca_center / pca_diff.
 *
 * Input: the pooled activations of one layer, P contrastive pairs stored as
 * rows[2P, D] float32 with rows interleaved positive, negative, positive, ...
 * (row 2p is pair p's positive, row 2p+1 its negative).
 *
 * 1. The training matrix X (double precision) is built per method:
 *      AS_PCA_PAIRWISE  X[2P, D]: every row minus its pair's midpoint (= ±(p-n)/2)
 *      AS_PCA_CENTER    X[2P, D]: every row minus the mean of all 2P rows
 *      AS_PCA_DIFF      X[P, D] : p - n per pair
 * 2. PCA as scikit-learn does it: X is centred by its column mean mu[D], and the
 *    principal components are the top eigenvectors of Xc^T Xc. Computed exactly
 *    (LAPACK dsyevr, no randomisation) from whichever Gram matrix is smaller:
 *    the row Gram Xc Xc^T [m, m] when m <= D (then v = Xc^T u / |Xc^T u|), the
 *    column Gram Xc^T Xc [D, D] otherwise.
 *    explained[j] = lambda_j / trace(Xc^T Xc), i.e. sklearn's
 *    explained_variance_ratio_ (the ddof cancels in the ratio).
 * 3. Signs. Every component is first put in a canonical sign: its entry of
 *    largest magnitude (the first such entry on ties) is positive. Component 0 then
 *    gets the pair sign rule, applied to the float32 direction c that is returned:
 *    proj(r) = sum_i r_i c_i (double, over the ORIGINAL rows); with G = #pairs where
 *    proj(p) > proj(n) and S = #pairs where proj(p) < proj(n), c is negated iff S > G.
 * 4. Optional projections[2P, k] (for the analysis scatter, sklearn's transform):
 *    projections[r, j] = (rows[r] - mu) . c_j, double.
 *
 * Determinism: the same inputs give the same bits on every call (fixed loop
 * orders; BLAS/LAPACK with a fixed thread count are deterministic), and
 * component 0 has the same bits whether n_components is 1 or 2 (the top two
 * eigenpairs are always solved for).
 *
 * Degenerate inputs (defined, never a crash):
 *   - trace(Xc^T Xc) == 0 (all pairs identical for pairwise/diff, all rows equal
 *     for center, a single pair for diff): AS_ERR_INVALID_ARG, err->reason says
 *     the training matrix has zero variance.
 *   - A component beyond the numerical rank of Xc (lambda_j <= 1e-12 * lambda_0,
 *     e.g. component 1 of a single pair) is returned as all zeros with explained 0
 *     and zero projections. Component 0 is always a unit vector on AS_OK.
 *   - NaN or Inf anywhere in rows: AS_ERR_NONFINITE.
 *
 * Errors fill the error record (as_core.h): argument "rows", index = the failing
 * layer's 0-based position in `rows` (-1 when not layer-specific), reason = the
 * static sentence above. Outputs are written only when AS_OK is returned.
 */
#ifndef AS_PCA_H
#define AS_PCA_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AS_PCA_PAIRWISE = 0, /* default of SteeringVector.train */
    AS_PCA_CENTER = 1,
    AS_PCA_DIFF = 2
} as_pca_method;

/* One layer.
 *   rows[2*n_pairs, d]        float32, interleaved pos/neg; n_pairs >= 1, d >= 1
 *   method                    as_pca_method
 *   n_components              1 or 2
 *   components[n_components, d]  out, float32; row 0 unit norm (see degenerate cases)
 *   explained[n_components]   out, explained-variance ratio in [0, 1]
 *   projections[2*n_pairs, n_components]  out, or NULL when not wanted
 *   err                       out, may be NULL (see above) */
as_status as_pca_fit(const float *rows, int64_t n_pairs, int64_t d, as_pca_method method, int n_components,
                     float *components, double *explained, double *projections, as_error_t *err);

/* Many layers in one call (SteeringVector.train hands over its whole capture
 * buffer so the binding releases the GIL once):
 *   rows[n_layers, 2*n_pairs, d] -> components[n_layers, n_components, d],
 *   explained[n_layers, n_components], projections[n_layers, 2*n_pairs, n_components]
 *   (or NULL). Layers are fitted independently, in order, each exactly as
 *   as_pca_fit would. On the first failure the call stops and returns that status;
 *   err->index is the failing layer's 0-based position in `rows`. Like every core
 *   call, outputs are written only on AS_OK. */
as_status as_pca_fit_layers(const float *rows, int64_t n_layers, int64_t n_pairs, int64_t d, as_pca_method method,
                            int n_components, float *components, double *explained, double *projections,
                            as_error_t *err);

/* The pair sign rule shared by every extraction method: project each row of
 * rows[2P, d] (pos, neg, pos, neg, ...) onto c[d] in double; if more pairs have
 * proj(positive) < proj(negative) than >, negate c in place. Returns 1 when it
 * negated, else 0. Never fails. */
int as_pair_sign(const float *rows, int64_t n_pairs, int64_t d, float *c);

#ifdef __cplusplus
}
#endif
#endif /* AS_PCA_H */
