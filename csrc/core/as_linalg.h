/*
 * as_linalg.h — the BLAS/LAPACK layer (OpenBLAS from the scipy-openblas32 wheel).
 *
 * These wrap the few dense routines the core needs, with the core's status
 * conventions and shape checks, so the rest of the core never calls BLAS with
 * raw Fortran conventions.
 */
#ifndef AS_LINALG_H
#define AS_LINALG_H
#include "as_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Gram matrix of the columns: out[d, d] = x^T x for x[n, d] (float32, BLAS ssyrk;
 * both triangles are written). n >= 1, d >= 1. */
as_status as_linalg_gram_f32(const float *x, int64_t n, int64_t d, float *out);

/* Double-precision Gram matrix of the ROWS: out[n, n] = x x^T for x[n, d]
 * (dsyrk; both triangles written). Used when n << d (the usual PCA case). */
as_status as_linalg_row_gram_f64(const double *x, int64_t n, int64_t d, double *out);

/* Double-precision Gram matrix of the COLUMNS: out[d, d] = x^T x for x[n, d]. */
as_status as_linalg_col_gram_f64(const double *x, int64_t n, int64_t d, double *out);

/* The k largest eigenpairs of a symmetric matrix a[n, n] (double, only read;
 * LAPACK dsyevr on a copy, so `a` is left intact). 1 <= k <= n.
 * values[k] descending; vectors[k, n] (row j is the eigenvector of values[j]).
 * Eigenvector signs are as LAPACK returns them: callers fix signs themselves.
 * Deterministic for identical inputs and thread count. */
as_status as_linalg_sym_top_eig(const double *a, int64_t n, int k, double *values, double *vectors);

#ifdef __cplusplus
}
#endif
#endif /* AS_LINALG_H */
