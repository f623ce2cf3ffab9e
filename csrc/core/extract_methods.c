/*
 * extract_methods.c — steering directions beyond PCA: mean_diff (CAA / DiffMean)
 * and probe (L2-regularised logistic regression, exact Newton). See as_methods.h
 * for the definitions, the sign rule, `explained` and the degenerate cases.
 *
 * This file is the numerics only: no Python, no I/O, no global state. It is not
 * a general logistic-regression library (binary, balanced pairs, L2 only).
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "as_core.h"

static const char *const NONFINITE_ROWS = "the pooled activations contain NaN or Inf";
static const char *const IDENTICAL_PAIRS =
    "positive and negative activations are identical for every pair, so there is no difference to extract a "
    "direction from";
static const char *const MEAN_ZERO = "the mean of the pair differences is exactly zero (the differences cancel), so "
                                     "mean_diff has no direction";
static const char *const RAW_OVERFLOW = "the raw mean difference does not fit in float32";
static const char *const PROBE_ZERO =
    "the probe's weight vector is zero: no linear direction separates the positives from the negatives";
static const char *const NO_CONVERGE = "the probe's Newton solver did not converge; try a larger probe_l2";
static const char *const NOT_PD = "the probe's Newton system is not positive definite; try a larger probe_l2";
static const char *const BAD_ARGS =
    "invalid sizes, method or options (probe_l2 must be finite and > 0; normalize=0 is for mean_diff only)";
static const char *const OUT_OF_MEMORY = "out of memory";

/* Newton stops when the decrement g.H^-1.g is at most this times max(1, f). */
#define PROBE_DECREMENT_TOL 1e-20
/* Below this decrement (times max(1, f)) the objective can no longer resolve the
 * remaining decrease (f - f* ~ dec / 2 is near f's rounding), so the line search
 * is blind: full Newton steps are taken (quadratic convergence this close to the
 * optimum of a smooth, strongly convex problem) until the decrement stops
 * halving, which is the double-precision floor. */
#define PROBE_FLOOR_TOL 1e-10
#define PROBE_ARMIJO 1e-4
#define PROBE_MAX_HALVINGS 60

static int fits_blasint(int64_t v) { return v >= 1 && v <= INT_MAX; }


/* sum_p (d_p . c)^2 / (|c|^2 sum_p |d_p|^2), clamped to [0, 1], for the
 * double-precision direction c (before its float32 rounding, so that the value
 * does not depend on normalize; the sign does not matter). */
static double explained_along(const float *rows, int64_t n_pairs, int64_t d, const double *c) {
    double cc = 0.0, num = 0.0, den = 0.0;
    for (int64_t i = 0; i < d; i++) cc += c[i] * c[i];
    for (int64_t p = 0; p < n_pairs; p++) {
        const float *a = rows + (2 * p) * d, *b = rows + (2 * p + 1) * d;
        double pc = 0.0, dd = 0.0;
        for (int64_t i = 0; i < d; i++) {
            double di = (double)a[i] - (double)b[i];
            pc += di * c[i];
            dd += di * di;
        }
        num += pc * pc;
        den += dd;
    }
    if (!(cc > 0.0) || !(den > 0.0)) return 0.0;
    double r = num / (cc * den);
    return r < 0.0 ? 0.0 : r > 1.0 ? 1.0 : r;
}

static int all_pairs_identical(const float *rows, int64_t n_pairs, int64_t d) {
    for (int64_t p = 0; p < n_pairs; p++) {
        const float *a = rows + (2 * p) * d, *b = rows + (2 * p + 1) * d;
        for (int64_t i = 0; i < d; i++)
            if (a[i] != b[i]) return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/*  mean_diff                                                               */
/* ------------------------------------------------------------------------ */

static as_status fit_mean_diff(const float *rows, int64_t n_pairs, int64_t d, int normalize, float *c, double *expl,
                               as_method_info_t *info, const char **detail) {
    double *m = calloc((size_t)d, sizeof *m);
    if (!m) { *detail = OUT_OF_MEMORY; return AS_ERR_NOMEM; }
    for (int64_t p = 0; p < n_pairs; p++) {
        const float *a = rows + (2 * p) * d, *b = rows + (2 * p + 1) * d;
        for (int64_t i = 0; i < d; i++) m[i] += (double)a[i] - (double)b[i];
    }
    double norm2 = 0.0;
    for (int64_t i = 0; i < d; i++) {
        m[i] /= (double)n_pairs;
        norm2 += m[i] * m[i];
    }
    as_status st = AS_OK;
    if (!isfinite(norm2)) { *detail = NONFINITE_ROWS; st = AS_ERR_NONFINITE; goto done; }
    if (!(norm2 > 0.0)) { *detail = MEAN_ZERO; st = AS_ERR_INVALID_ARG; goto done; }
    const double norm = sqrt(norm2);
    for (int64_t i = 0; i < d; i++) {
        c[i] = normalize ? (float)(m[i] / norm) : (float)m[i];
        if (!isfinite(c[i])) { *detail = RAW_OVERFLOW; st = AS_ERR_NONFINITE; goto done; }
    }
    int flipped = as_pair_sign(rows, n_pairs, d, c);
    *expl = explained_along(rows, n_pairs, d, m);
    info->weight_scale = (normalize ? norm : 1.0) * (flipped ? -1.0 : 1.0);
    info->intercept = 0.0;
    info->iterations = 0;
done:
    free(m);
    return st;
}

/* ------------------------------------------------------------------------ */
/*  probe                                                                   */
/* ------------------------------------------------------------------------ */

/* log(1 + exp(-(2y-1) z)), stable for every z. */
static double logloss(double z, int y) {
    double t = y ? -z : z; /* loss = log(1 + exp(t)) */
    return t > 0.0 ? t + log1p(exp(-t)) : log1p(exp(t));
}

/* sigma(z) = 1 / (1 + exp(-z)), stable. */
static double sigmoid(double z) {
    if (z >= 0.0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

typedef struct {
    int64_t n, d;       /* N = 2P rows, D features */
    double l2;
    int dual;           /* 1: kernel form (N x N), 0: primal ((D+1) x (D+1)) */
    double *x;          /* [N, D] centred (and scaled) rows */
    double *kern;       /* [N, N] x x^T (dual only) */
    double *mat;        /* [m, m] Newton matrix, m = N (dual) or D+1 (primal) */
    double *xs;         /* [N, D+1] sqrt(s)-weighted [x, 1] (primal only) */
    double *w, *dw, *gw, *wt; /* [D] */
    double *cvec, *t1, *t2;   /* [D] (dual) */
    double *z, *zt, *xd, *r, *s, *q, *u; /* [N] */
} probe_ws;

static void probe_ws_free(probe_ws *ws) {
    free(ws->x); free(ws->kern); free(ws->mat); free(ws->xs);
    free(ws->w); free(ws->dw); free(ws->gw); free(ws->wt);
    free(ws->cvec); free(ws->t1); free(ws->t2);
    free(ws->z); free(ws->zt); free(ws->xd); free(ws->r); free(ws->s); free(ws->q); free(ws->u);
}

static int probe_ws_alloc(probe_ws *ws) {
    const size_t n = (size_t)ws->n, d = (size_t)ws->d;
    ws->x = malloc(n * d * sizeof(double));
    if (ws->dual) {
        ws->kern = malloc(n * n * sizeof(double));
        ws->mat = malloc(n * n * sizeof(double));
        ws->cvec = malloc(d * sizeof(double));
        ws->t1 = malloc(d * sizeof(double));
        ws->t2 = malloc(d * sizeof(double));
        if (!ws->kern || !ws->mat || !ws->cvec || !ws->t1 || !ws->t2) return 0;
    } else {
        ws->mat = malloc((d + 1) * (d + 1) * sizeof(double));
        ws->xs = malloc(n * (d + 1) * sizeof(double));
        if (!ws->mat || !ws->xs) return 0;
    }
    ws->w = calloc(d, sizeof(double));
    ws->dw = malloc(d * sizeof(double));
    ws->gw = malloc(d * sizeof(double));
    ws->wt = malloc(d * sizeof(double));
    ws->z = malloc(n * sizeof(double));
    ws->zt = malloc(n * sizeof(double));
    ws->xd = malloc(n * sizeof(double));
    ws->r = malloc(n * sizeof(double));
    ws->s = malloc(n * sizeof(double));
    ws->q = malloc(n * sizeof(double));
    ws->u = malloc(n * sizeof(double));
    return ws->x && ws->w && ws->dw && ws->gw && ws->wt && ws->z && ws->zt && ws->xd && ws->r && ws->s && ws->q &&
           ws->u;
}

/* Row i's label: even rows are positives. */
#define LABEL(i) (((i) & 1) == 0)

/* f = sum_i loss(z_i) + l2/2 |w|^2 */
static double probe_objective(const probe_ws *ws, const double *z, const double *w) {
    double f = 0.0, ww = 0.0;
    for (int64_t i = 0; i < ws->n; i++) f += logloss(z[i], LABEL(i));
    for (int64_t j = 0; j < ws->d; j++) ww += w[j] * w[j];
    return f + 0.5 * ws->l2 * ww;
}

/* z = x w + b */
static void probe_scores(const probe_ws *ws, const double *w, double b, double *z) {
    for (int64_t i = 0; i < ws->n; i++) z[i] = b;
    scipy_cblas_dgemv(CblasRowMajor, CblasNoTrans, (blasint)ws->n, (blasint)ws->d, 1.0, ws->x, (blasint)ws->d, w, 1,
                      1.0, z, 1);
}

/* out[D] = A^-1 v with A = x^T S x + l2 I, by Woodbury on the factored
 * M = l2 I + Q K Q (Q = diag(sqrt(s))): A^-1 v = (v - x^T Q M^-1 Q x v) / l2. */
static as_status dual_apply(probe_ws *ws, const double *v, double *out) {
    const int64_t n = ws->n, d = ws->d;
    scipy_cblas_dgemv(CblasRowMajor, CblasNoTrans, (blasint)n, (blasint)d, 1.0, ws->x, (blasint)d, v, 1, 0.0, ws->u,
                      1);
    for (int64_t i = 0; i < n; i++) ws->u[i] *= ws->q[i];
    lapack_int info = scipy_LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, 1, ws->mat, (lapack_int)n, ws->u, 1);
    if (info != 0) return AS_ERR_LAPACK;
    for (int64_t i = 0; i < n; i++) ws->u[i] *= ws->q[i];
    memcpy(out, v, (size_t)d * sizeof *out);
    scipy_cblas_dgemv(CblasRowMajor, CblasTrans, (blasint)n, (blasint)d, -1.0, ws->x, (blasint)d, ws->u, 1, 1.0, out,
                      1);
    for (int64_t j = 0; j < d; j++) out[j] /= ws->l2;
    return AS_OK;
}

/* The Newton step (dw, *db) = -H^-1 (gw, gb) at the current s. */
static as_status probe_newton_step(probe_ws *ws, double gb, double *db) {
    const int64_t n = ws->n, d = ws->d;
    if (ws->dual) {
        /* M = l2 I + Q K Q (upper triangle), Cholesky. */
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = i; j < n; j++) ws->mat[i * n + j] = ws->q[i] * ws->kern[i * n + j] * ws->q[j];
            ws->mat[i * n + i] += ws->l2;
        }
        if (scipy_LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, ws->mat, (lapack_int)n) != 0) return AS_ERR_LAPACK;
        /* c = x^T s, sigma = sum s; t1 = A^-1 gw, t2 = A^-1 c. */
        scipy_cblas_dgemv(CblasRowMajor, CblasTrans, (blasint)n, (blasint)d, 1.0, ws->x, (blasint)d, ws->s, 1, 0.0,
                          ws->cvec, 1);
        double sigma = 0.0;
        for (int64_t i = 0; i < n; i++) sigma += ws->s[i];
        as_status st = dual_apply(ws, ws->gw, ws->t1);
        if (st == AS_OK) st = dual_apply(ws, ws->cvec, ws->t2);
        if (st != AS_OK) return st;
        double ct1 = 0.0, ct2 = 0.0;
        for (int64_t j = 0; j < d; j++) {
            ct1 += ws->cvec[j] * ws->t1[j];
            ct2 += ws->cvec[j] * ws->t2[j];
        }
        const double schur = sigma - ct2; /* > 0 in exact arithmetic whenever sigma > 0 */
        if (!(schur > 0.0) || !isfinite(schur)) return AS_ERR_LAPACK;
        *db = (-gb + ct1) / schur;
        for (int64_t j = 0; j < d; j++) ws->dw[j] = -ws->t1[j] - ws->t2[j] * *db;
        return AS_OK;
    }
    /* Primal: H = [x, 1]^T S [x, 1] + diag(l2, ..., l2, 0), Cholesky, solve. */
    const int64_t m = d + 1;
    for (int64_t i = 0; i < n; i++) {
        const double qi = ws->q[i];
        const double *xi = ws->x + i * d;
        double *row = ws->xs + i * m;
        for (int64_t j = 0; j < d; j++) row[j] = qi * xi[j];
        row[d] = qi;
    }
    scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)m, (blasint)n, 1.0, ws->xs, (blasint)m, 0.0,
                      ws->mat, (blasint)m);
    for (int64_t j = 0; j < d; j++) ws->mat[j * m + j] += ws->l2;
    if (scipy_LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)m, ws->mat, (lapack_int)m) != 0) return AS_ERR_LAPACK;
    double *rhs = ws->xs; /* xs is no longer needed: its first row holds the [D+1] right-hand side */
    for (int64_t j = 0; j < d; j++) rhs[j] = -ws->gw[j];
    rhs[d] = -gb;
    if (scipy_LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)m, 1, ws->mat, (lapack_int)m, rhs, 1) != 0)
        return AS_ERR_LAPACK;
    memcpy(ws->dw, rhs, (size_t)d * sizeof *ws->dw);
    *db = rhs[d];
    return AS_OK;
}

/* Newton + Armijo backtracking from w = 0, b = 0 on the prepared ws->x.
 * On AS_OK, ws->w and *b_out hold the optimum, *iters the Newton steps taken. */
static as_status probe_solve(probe_ws *ws, double *b_out, int64_t *iters, const char **detail) {
    const int64_t n = ws->n, d = ws->d;
    double b = 0.0;
    memset(ws->w, 0, (size_t)d * sizeof *ws->w);
    if (ws->dual)
        scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)n, (blasint)d, 1.0, ws->x, (blasint)d, 0.0,
                          ws->kern, (blasint)n);
    probe_scores(ws, ws->w, b, ws->z);
    double f = probe_objective(ws, ws->z, ws->w);
    double prev_floor_dec = -1.0; /* decrement of the previous full step taken at the floor, -1 if none */
    for (int64_t it = 0; it < AS_PROBE_MAX_ITER; it++) {
        double gb = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const double zi = ws->z[i];
            const double e = exp(-fabs(zi));          /* in (0, 1] */
            ws->s[i] = e / ((1.0 + e) * (1.0 + e));  /* p (1 - p), never rounds to 0 for |z| < 700 */
            ws->q[i] = sqrt(ws->s[i]);
            /* r = p - y: for a positive, -(1 - p) = -sigma(-z); for a negative, sigma(z). */
            ws->r[i] = LABEL(i) ? -sigmoid(-zi) : sigmoid(zi);
            gb += ws->r[i];
        }
        /* gw = x^T r + l2 w */
        memcpy(ws->gw, ws->w, (size_t)d * sizeof *ws->gw);
        scipy_cblas_dgemv(CblasRowMajor, CblasTrans, (blasint)n, (blasint)d, 1.0, ws->x, (blasint)d, ws->r, 1, ws->l2,
                          ws->gw, 1);
        double db = 0.0;
        as_status st = probe_newton_step(ws, gb, &db);
        if (st != AS_OK) { *detail = NOT_PD; return AS_ERR_LAPACK; }
        double dec = -gb * db;
        for (int64_t j = 0; j < d; j++) dec -= ws->gw[j] * ws->dw[j];
        if (!isfinite(dec)) { *detail = NOT_PD; return AS_ERR_LAPACK; }
        const double scale = f > 1.0 ? f : 1.0;
        if (dec <= PROBE_DECREMENT_TOL * scale) {
            *b_out = b;
            *iters = it;
            return AS_OK;
        }
        double t = 1.0;
        if (dec <= PROBE_FLOOR_TOL * scale) {
            /* At the floor: a full step, unless the last one did not halve the decrement. */
            if (prev_floor_dec >= 0.0 && dec > 0.5 * prev_floor_dec) {
                *b_out = b;
                *iters = it;
                return AS_OK;
            }
            prev_floor_dec = dec;
        } else {
            /* xd = x dw; Armijo backtracking t = 1, 1/2, ... */
            scipy_cblas_dgemv(CblasRowMajor, CblasNoTrans, (blasint)n, (blasint)d, 1.0, ws->x, (blasint)d, ws->dw, 1,
                              0.0, ws->xd, 1);
            int accepted = 0;
            for (int h = 0; h < PROBE_MAX_HALVINGS; h++, t *= 0.5) {
                for (int64_t i = 0; i < n; i++) ws->zt[i] = ws->z[i] + t * (ws->xd[i] + db);
                for (int64_t j = 0; j < d; j++) ws->wt[j] = ws->w[j] + t * ws->dw[j];
                if (probe_objective(ws, ws->zt, ws->wt) <= f - PROBE_ARMIJO * t * dec) { accepted = 1; break; }
            }
            if (!accepted) { *detail = NO_CONVERGE; return AS_ERR_LAPACK; }
        }
        for (int64_t j = 0; j < d; j++) ws->w[j] += t * ws->dw[j];
        b += t * db;
        probe_scores(ws, ws->w, b, ws->z); /* recomputed exactly, not accumulated */
        f = probe_objective(ws, ws->z, ws->w);
    }
    *detail = NO_CONVERGE;
    return AS_ERR_LAPACK;
}

static as_status fit_probe(const float *rows, int64_t n_pairs, int64_t d, const as_method_options_t *opt, int form,
                           float *c, double *expl, as_method_info_t *info, const char **detail) {
    const int64_t n = 2 * n_pairs;
    probe_ws ws;
    memset(&ws, 0, sizeof ws);
    ws.n = n;
    ws.d = d;
    ws.l2 = opt->probe_l2;
    ws.dual = form == 1 ? 0 : form == 2 ? 1 : (n <= d);
    double *mu = calloc((size_t)d, sizeof *mu), *scale = malloc((size_t)d * sizeof *scale);
    as_status st = AS_OK;
    if (!mu || !scale || !probe_ws_alloc(&ws) || !fits_blasint(n) || !fits_blasint(d + 1)) {
        *detail = OUT_OF_MEMORY;
        st = AS_ERR_NOMEM;
        goto done;
    }
    /* Centre (and optionally standardise) the columns, in row order. */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) mu[j] += (double)rows[i * d + j];
    for (int64_t j = 0; j < d; j++) mu[j] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) ws.x[i * d + j] = (double)rows[i * d + j] - mu[j];
    for (int64_t j = 0; j < d; j++) scale[j] = 1.0;
    if (opt->probe_standardize) {
        for (int64_t j = 0; j < d; j++) {
            double v = 0.0;
            for (int64_t i = 0; i < n; i++) v += ws.x[i * d + j] * ws.x[i * d + j];
            double sd = sqrt(v / (double)n);
            scale[j] = sd > 0.0 ? sd : 1.0;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < d; j++) ws.x[i * d + j] /= scale[j];
    }
    double b = 0.0;
    int64_t iters = 0;
    st = probe_solve(&ws, &b, &iters, detail);
    if (st != AS_OK) goto done;
    /* Back to activation space: w_orig = w / scale, b_orig = b - w_orig . mu. */
    double norm2 = 0.0, wmu = 0.0;
    for (int64_t j = 0; j < d; j++) {
        ws.w[j] /= scale[j];
        norm2 += ws.w[j] * ws.w[j];
        wmu += ws.w[j] * mu[j];
    }
    if (!isfinite(norm2)) { *detail = NO_CONVERGE; st = AS_ERR_LAPACK; goto done; }
    if (!(norm2 > 0.0)) { *detail = PROBE_ZERO; st = AS_ERR_INVALID_ARG; goto done; }
    const double norm = sqrt(norm2);
    for (int64_t j = 0; j < d; j++) c[j] = (float)(ws.w[j] / norm);
    int flipped = as_pair_sign(rows, n_pairs, d, c);
    *expl = explained_along(rows, n_pairs, d, ws.w);
    info->weight_scale = flipped ? -norm : norm;
    info->intercept = b - wmu;
    info->iterations = iters;
done:
    free(mu);
    free(scale);
    probe_ws_free(&ws);
    return st;
}

/* ------------------------------------------------------------------------ */
/*  entry point                                                             */
/* ------------------------------------------------------------------------ */

static int options_ok(as_method method, const as_method_options_t *o) {
    if (!o) return 0;
    if (method == AS_METHOD_MEAN_DIFF) return o->normalize == 0 || o->normalize == 1;
    if (method != AS_METHOD_PROBE) return 0;
    return o->normalize == 1 && isfinite(o->probe_l2) && o->probe_l2 > 0.0 &&
           (o->probe_standardize == 0 || o->probe_standardize == 1);
}

static const char *method_name(as_method method) {
    return method == AS_METHOD_MEAN_DIFF ? "mean_diff" : method == AS_METHOD_PROBE ? "probe" : "?";
}

as_status as_method_fit_layers_form(const float *rows, int64_t n_layers, int64_t n_pairs, int64_t d, as_method method,
                                    const as_method_options_t *options, int form, float *directions, double *explained,
                                    as_method_info_t *info, as_error_t *err) {
    const char *why = NULL;
    int64_t failed = -1;
    if (!rows || !directions || !explained || n_layers < 1 || n_pairs < 1 || d < 1 || form < 0 || form > 2 ||
        n_pairs > INT64_MAX / 4 / d || n_layers > INT64_MAX / 2 / n_pairs / d)
        return as_error_set(err, AS_ERR_INVALID_ARG, "rows", -1, -1, BAD_ARGS,
                            "%s: %s (n_layers %lld, n_pairs %lld, d %lld, form %d)", method_name(method), BAD_ARGS,
                            (long long)n_layers, (long long)n_pairs, (long long)d, form);
    if (!options_ok(method, options))
        return as_error_set(err, AS_ERR_INVALID_ARG, "options", -1, -1, BAD_ARGS, "%s: %s", method_name(method),
                            BAD_ARGS);
    const int64_t n_rows = 2 * n_pairs;
    float *dirs = malloc((size_t)n_layers * (size_t)d * sizeof *dirs);
    double *expl = malloc((size_t)n_layers * sizeof *expl);
    as_method_info_t *inf = malloc((size_t)n_layers * sizeof *inf);
    as_status st = AS_OK;
    if (!dirs || !expl || !inf) { why = OUT_OF_MEMORY; st = AS_ERR_NOMEM; goto done; }
    for (int64_t l = 0; l < n_layers; l++) {
        const float *r = rows + l * n_rows * d;
        for (int64_t i = 0; i < n_rows * d; i++)
            if (!isfinite(r[i])) { why = NONFINITE_ROWS; st = AS_ERR_NONFINITE; break; }
        if (st == AS_OK && all_pairs_identical(r, n_pairs, d)) { why = IDENTICAL_PAIRS; st = AS_ERR_INVALID_ARG; }
        if (st == AS_OK)
            st = method == AS_METHOD_MEAN_DIFF
                     ? fit_mean_diff(r, n_pairs, d, options->normalize, dirs + l * d, expl + l, inf + l, &why)
                     : fit_probe(r, n_pairs, d, options, form, dirs + l * d, expl + l, inf + l, &why);
        if (st != AS_OK) {
            failed = l;
            goto done;
        }
    }
    memcpy(directions, dirs, (size_t)n_layers * (size_t)d * sizeof *dirs);
    memcpy(explained, expl, (size_t)n_layers * sizeof *expl);
    if (info) memcpy(info, inf, (size_t)n_layers * sizeof *inf);
done:
    if (st != AS_OK)
        as_error_set(err, st, "rows", failed, -1, why, "%s: layer position %lld of rows: %s", method_name(method),
                     (long long)failed, why ? why : as_status_message(st));
    free(dirs);
    free(expl);
    free(inf);
    return st;
}

as_status as_method_fit_layers(const float *rows, int64_t n_layers, int64_t n_pairs, int64_t d, as_method method,
                               const as_method_options_t *options, float *directions, double *explained,
                               as_method_info_t *info, as_error_t *err) {
    return as_method_fit_layers_form(rows, n_layers, n_pairs, d, method, options, 0, directions, explained, info, err);
}
