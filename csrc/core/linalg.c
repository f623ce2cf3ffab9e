/* linalg.c — BLAS/LAPACK wrappers. See as_linalg.h. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "as_core.h"

/* scipy-openblas32 uses 32-bit BLAS integers: reject sizes it cannot address. */
static int fits_blasint(int64_t v) { return v >= 0 && v <= INT_MAX; }

as_status as_linalg_gram_f32(const float *x, int64_t n, int64_t d, float *out) {
    if (!x || !out || n < 1 || d < 1 || !fits_blasint(n) || !fits_blasint(d)) return AS_ERR_INVALID_ARG;
    /* out = x^T x: C[d,d] = A^T A with A[n,d] row-major. */
    scipy_cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)n, 1.0f, x, (blasint)d, 0.0f, out,
                      (blasint)d);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < i; j++) out[i * d + j] = out[j * d + i];
    return AS_OK;
}

static void mirror_upper_f64(double *a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) a[i * n + j] = a[j * n + i];
}

as_status as_linalg_row_gram_f64(const double *x, int64_t n, int64_t d, double *out) {
    if (!x || !out || n < 1 || d < 1 || !fits_blasint(n) || !fits_blasint(d)) return AS_ERR_INVALID_ARG;
    /* out[n,n] = x x^T */
    scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)n, (blasint)d, 1.0, x, (blasint)d, 0.0, out,
                      (blasint)n);
    mirror_upper_f64(out, n);
    return AS_OK;
}

as_status as_linalg_col_gram_f64(const double *x, int64_t n, int64_t d, double *out) {
    if (!x || !out || n < 1 || d < 1 || !fits_blasint(n) || !fits_blasint(d)) return AS_ERR_INVALID_ARG;
    /* out[d,d] = x^T x */
    scipy_cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)n, 1.0, x, (blasint)d, 0.0, out,
                      (blasint)d);
    mirror_upper_f64(out, d);
    return AS_OK;
}

as_status as_linalg_sym_top_eig(const double *a, int64_t n, int k, double *values, double *vectors) {
    if (!a || !values || !vectors || n < 1 || k < 1 || k > n || !fits_blasint(n)) return AS_ERR_INVALID_ARG;
    as_status st = AS_OK;
    double *work = NULL, *w = NULL, *z = NULL;
    lapack_int *isuppz = NULL;
    size_t nn = (size_t)n * (size_t)n;

    work = malloc(nn * sizeof *work);
    w = malloc((size_t)n * sizeof *w);
    z = malloc((size_t)n * (size_t)k * sizeof *z);
    isuppz = malloc(2 * (size_t)k * sizeof *isuppz);
    if (!work || !w || !z || !isuppz) { st = AS_ERR_NOMEM; goto done; }
    memcpy(work, a, nn * sizeof *work);
    for (size_t i = 0; i < nn; i++) {
        if (work[i] != work[i] || work[i] - work[i] != 0.0) { st = AS_ERR_NONFINITE; goto done; }
    }

    /* Eigenvalues are returned ascending: ask for indices n-k+1 .. n (1-based). */
    lapack_int m = 0;
    lapack_int info = scipy_LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', (lapack_int)n, work, (lapack_int)n, 0.0,
                                           0.0, (lapack_int)(n - k + 1), (lapack_int)n, 0.0, &m, w, z, (lapack_int)k,
                                           isuppz);
    if (info != 0 || m != k) { st = AS_ERR_LAPACK; goto done; }
    /* z is [n, k] row-major, column j <-> w[j] ascending. Emit descending, rows. */
    for (int j = 0; j < k; j++) {
        int src = k - 1 - j;
        values[j] = w[src];
        for (int64_t i = 0; i < n; i++) vectors[(int64_t)j * n + i] = z[i * k + src];
    }
done:
    free(work);
    free(w);
    free(z);
    free(isuppz);
    return st;
}
