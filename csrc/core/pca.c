/* pca.c — steering-vector PCA (pca_pairwise / pca_center / pca_diff). See as_pca.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_core.h"

/* A component whose eigenvalue is at most this fraction of the first one lies
 * beyond the numerical rank of the training matrix: it is returned as zeros. */
#define AS_PCA_RANK_TOL 1e-12

static const char *const ZERO_VARIANCE =
    "the training matrix has zero variance (positive and negative activations are identical for every pair, "
    "all rows are equal, or pca_diff was given a single pair)";
static const char *const NONFINITE_ROWS = "the pooled activations contain NaN or Inf";
static const char *const BAD_ARGS = "invalid sizes, method or n_components";

static int valid_method(as_pca_method method) {
    return method == AS_PCA_PAIRWISE || method == AS_PCA_CENTER || method == AS_PCA_DIFF;
}

/* Training matrix (docs/extraction_methods.md) in double: rows[2P, d] -> x[m, d]; returns m.
 * mean[d] is scratch (used by AS_PCA_CENTER). */
static int64_t build_training(const float *rows, int64_t n_pairs, int64_t d, as_pca_method method, double *x,
                              double *mean) {
    if (method == AS_PCA_DIFF) {
        for (int64_t p = 0; p < n_pairs; p++) {
            const float *a = rows + (2 * p) * d, *b = rows + (2 * p + 1) * d;
            double *out = x + p * d;
            for (int64_t i = 0; i < d; i++) out[i] = (double)a[i] - (double)b[i];
        }
        return n_pairs;
    }
    const int64_t m = 2 * n_pairs;
    if (method == AS_PCA_PAIRWISE) {
        /* a - (a+b)/2 and b - (a+b)/2: exact in double for float inputs. */
        for (int64_t p = 0; p < n_pairs; p++) {
            const float *a = rows + (2 * p) * d, *b = rows + (2 * p + 1) * d;
            double *xa = x + (2 * p) * d, *xb = x + (2 * p + 1) * d;
            for (int64_t i = 0; i < d; i++) {
                double mid = 0.5 * ((double)a[i] + (double)b[i]);
                xa[i] = (double)a[i] - mid;
                xb[i] = (double)b[i] - mid;
            }
        }
        return m;
    }
    /* AS_PCA_CENTER: x = rows - mean(rows), rows accumulated in order. */
    memset(mean, 0, (size_t)d * sizeof *mean);
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < d; i++) mean[i] += (double)rows[r * d + i];
    for (int64_t i = 0; i < d; i++) mean[i] /= (double)m;
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < d; i++) x[r * d + i] = (double)rows[r * d + i] - mean[i];
    return m;
}

/* Put component c[d] in canonical sign: its largest-|.| entry (first on ties) >= 0. */
static void canonical_sign(float *c, int64_t d) {
    int64_t best = 0;
    float best_abs = fabsf(c[0]);
    for (int64_t i = 1; i < d; i++) {
        float a = fabsf(c[i]);
        if (a > best_abs) { best_abs = a; best = i; }
    }
    if (c[best] < 0.0f)
        for (int64_t i = 0; i < d; i++) c[i] = -c[i];
}

static double dot_fd(const float *r, const float *c, int64_t d) {
    double s = 0.0;
    for (int64_t i = 0; i < d; i++) s += (double)r[i] * (double)c[i];
    return s;
}

int as_pair_sign(const float *rows, int64_t n_pairs, int64_t d, float *c) {
    int64_t greater = 0, smaller = 0;
    for (int64_t p = 0; p < n_pairs; p++) {
        double pp = dot_fd(rows + (2 * p) * d, c, d), pn = dot_fd(rows + (2 * p + 1) * d, c, d);
        if (pp > pn) greater++;
        else if (pp < pn) smaller++;
    }
    if (smaller <= greater) return 0;
    for (int64_t i = 0; i < d; i++) c[i] = -c[i];
    return 1;
}

/* The whole fit of one layer into caller buffers (which it may leave partial on
 * failure; the public entry points hand it scratch buffers). */
static as_status fit_into(const float *rows, int64_t n_pairs, int64_t d, as_pca_method method, int k,
                          float *components, double *explained, double *projections, const char **detail) {
    /* *detail: the static reason on failure (the caller fills the error record). */
    as_status st = AS_OK;
    const int64_t n_rows = 2 * n_pairs;
    const int64_t m = method == AS_PCA_DIFF ? n_pairs : n_rows;
    const int64_t n_small = m <= d ? m : d;
    /* Always solve for the top two eigenpairs (when they exist), whatever k is:
     * dsyevr's result for the first one depends on how many are requested, and
     * the direction must not change with n_components. */
    const int keff = n_small < 2 ? (int)n_small : 2;
    double *x = NULL, *mu = NULL, *gram = NULL, *vecs = NULL, *v = NULL;
    double vals[2] = {0.0, 0.0};

    for (int64_t i = 0; i < n_rows * d; i++) {
        if (!isfinite(rows[i])) { *detail = NONFINITE_ROWS; return AS_ERR_NONFINITE; }
    }

    x = malloc((size_t)m * (size_t)d * sizeof *x);
    mu = calloc((size_t)d, sizeof *mu);
    v = malloc((size_t)d * sizeof *v);
    if (!x || !mu || !v) { st = AS_ERR_NOMEM; goto done; }

    build_training(rows, n_pairs, d, method, x, mu);
    /* sklearn's PCA centring: mu = column mean of x; x -= mu. */
    memset(mu, 0, (size_t)d * sizeof *mu);
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < d; i++) mu[i] += x[r * d + i];
    for (int64_t i = 0; i < d; i++) mu[i] /= (double)m;
    double trace = 0.0;
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < d; i++) {
            double t = x[r * d + i] - mu[i];
            x[r * d + i] = t;
            trace += t * t;
        }
    if (!isfinite(trace)) { *detail = NONFINITE_ROWS; st = AS_ERR_NONFINITE; goto done; }
    if (!(trace > 0.0)) { *detail = ZERO_VARIANCE; st = AS_ERR_INVALID_ARG; goto done; }

    /* Top eigenpairs of the smaller Gram matrix. */
    const int64_t g = n_small;
    gram = malloc((size_t)g * (size_t)g * sizeof *gram);
    vecs = malloc((size_t)keff * (size_t)g * sizeof *vecs);
    if (!gram || !vecs) { st = AS_ERR_NOMEM; goto done; }
    st = m <= d ? as_linalg_row_gram_f64(x, m, d, gram) : as_linalg_col_gram_f64(x, m, d, gram);
    if (st != AS_OK) { *detail = BAD_ARGS; goto done; }
    st = as_linalg_sym_top_eig(gram, g, keff, vals, vecs);
    if (st != AS_OK) {
        *detail = st == AS_ERR_LAPACK ? "the LAPACK eigensolver did not converge" : NONFINITE_ROWS;
        goto done;
    }
    if (!(vals[0] > 0.0)) { *detail = ZERO_VARIANCE; st = AS_ERR_INVALID_ARG; goto done; }

    for (int j = 0; j < k; j++) {
        float *c = components + (int64_t)j * d;
        int zero = j >= keff || (j > 0 && !(vals[j] > AS_PCA_RANK_TOL * vals[0]));
        double norm2 = 0.0;
        if (!zero) {
            if (m <= d) { /* v = x^T u_j, rows accumulated in order */
                const double *u = vecs + (int64_t)j * m;
                memset(v, 0, (size_t)d * sizeof *v);
                for (int64_t r = 0; r < m; r++) {
                    const double ur = u[r];
                    const double *xr = x + r * d;
                    for (int64_t i = 0; i < d; i++) v[i] += ur * xr[i];
                }
            } else {
                memcpy(v, vecs + (int64_t)j * d, (size_t)d * sizeof *v);
            }
            for (int64_t i = 0; i < d; i++) norm2 += v[i] * v[i];
            if (!(norm2 > 0.0)) zero = 1;
        }
        if (zero) {
            if (j == 0) { *detail = ZERO_VARIANCE; st = AS_ERR_INVALID_ARG; goto done; }
            memset(c, 0, (size_t)d * sizeof *c);
            explained[j] = 0.0;
            continue;
        }
        const double inv = 1.0 / sqrt(norm2);
        for (int64_t i = 0; i < d; i++) c[i] = (float)(v[i] * inv);
        canonical_sign(c, d);
        if (j == 0) (void)as_pair_sign(rows, n_pairs, d, c);
        double ratio = vals[j] / trace;
        explained[j] = ratio < 0.0 ? 0.0 : ratio > 1.0 ? 1.0 : ratio;
    }

    if (projections) {
        /* sklearn's transform: (row - mu) . c_j with mu the training matrix's mean. */
        for (int64_t r = 0; r < n_rows; r++) {
            const float *row = rows + r * d;
            for (int j = 0; j < k; j++) {
                const float *c = components + (int64_t)j * d;
                double s = 0.0;
                for (int64_t i = 0; i < d; i++) s += ((double)row[i] - mu[i]) * (double)c[i];
                projections[r * k + j] = s;
            }
        }
    }

done:
    free(x);
    free(mu);
    free(gram);
    free(vecs);
    free(v);
    return st;
}

static int args_ok(const float *rows, int64_t n_pairs, int64_t d, as_pca_method method, int n_components,
                   const float *components, const double *explained) {
    return rows && components && explained && n_pairs >= 1 && d >= 1 && valid_method(method) &&
           (n_components == 1 || n_components == 2) && n_pairs <= INT64_MAX / 4 / d;
}

as_status as_pca_fit(const float *rows, int64_t n_pairs, int64_t d, as_pca_method method, int n_components,
                     float *components, double *explained, double *projections, as_error_t *err) {
    return as_pca_fit_layers(rows, 1, n_pairs, d, method, n_components, components, explained, projections, err);
}

as_status as_pca_fit_layers(const float *rows, int64_t n_layers, int64_t n_pairs, int64_t d, as_pca_method method,
                            int n_components, float *components, double *explained, double *projections,
                            as_error_t *err) {
    const char *why = NULL;
    int64_t failed = -1;
    if (!args_ok(rows, n_pairs, d, method, n_components, components, explained) || n_layers < 1)
        return as_error_set(err, AS_ERR_INVALID_ARG, "rows", -1, -1, BAD_ARGS,
                            "pca: %s (n_layers %lld, n_pairs %lld, d %lld, n_components %d)", BAD_ARGS,
                            (long long)n_layers, (long long)n_pairs, (long long)d, n_components);
    const int k = n_components;
    const int64_t n_rows = 2 * n_pairs;
    const size_t n_comp = (size_t)n_layers * (size_t)k * (size_t)d;
    const size_t n_expl = (size_t)n_layers * (size_t)k;
    const size_t n_proj = projections ? (size_t)n_layers * (size_t)n_rows * (size_t)k : 0;
    /* Scratch outputs: the caller's buffers are written only on success. */
    float *comp = malloc(n_comp * sizeof *comp);
    double *expl = malloc(n_expl * sizeof *expl);
    double *proj = projections ? malloc(n_proj * sizeof *proj) : NULL;
    as_status st = AS_OK;
    if (!comp || !expl || (projections && !proj)) { st = AS_ERR_NOMEM; goto done; }
    for (int64_t l = 0; l < n_layers; l++) {
        st = fit_into(rows + l * n_rows * d, n_pairs, d, method, k, comp + l * k * d, expl + l * k,
                      proj ? proj + l * n_rows * k : NULL, &why);
        if (st != AS_OK) {
            failed = l;
            goto done;
        }
    }
    memcpy(components, comp, n_comp * sizeof *comp);
    memcpy(explained, expl, n_expl * sizeof *expl);
    if (projections) memcpy(projections, proj, n_proj * sizeof *proj);
done:
    if (st == AS_ERR_NOMEM && !why) why = "out of memory";
    if (st != AS_OK)
        as_error_set(err, st, "rows", failed, -1, why, "pca: layer position %lld of rows: %s", (long long)failed,
                     why ? why : as_status_message(st));
    free(comp);
    free(expl);
    free(proj);
    return st;
}
