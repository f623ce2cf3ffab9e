/* condsearch.c — the find_best_condition_point search. See as_condsearch.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_core.h"

/* ------------------------------------------------------------------------ */
/* Shared pieces                                                            */
/* ------------------------------------------------------------------------ */

as_status as_condsearch_count_combos(int64_t n_layers, int64_t max_combine, int64_t limit, int64_t *n_combos) {
    if (!n_combos || n_layers < 1 || max_combine < 1 || max_combine > n_layers || limit < 1 ||
        limit > ((int64_t)1 << 31))
        return AS_ERR_INVALID_ARG;
    if (n_layers > limit) return AS_ERR_RANGE;
    /* c = C(n, r) built incrementally; c <= limit <= 2^31 and n - r + 1 <= 2^31,
     * so c * (n - r + 1) < 2^62 never overflows. */
    int64_t c = 1, total = 0;
    for (int64_t r = 1; r <= max_combine; r++) {
        c = c * (n_layers - r + 1) / r;
        if (c > limit) return AS_ERR_RANGE;
        total += c;
        if (total > limit) return AS_ERR_RANGE;
    }
    *n_combos = total;
    return AS_OK;
}

/* Common argument checks of both searches; counts positives into *n_pos. */
static as_status check_inputs(const double *sims, int64_t n_strings, int64_t n_layers, const uint8_t *labels,
                              int64_t max_combine, as_condsearch_best_t *best, int64_t *best_cols, int64_t *n_pos,
                              int64_t *n_combos) {
    if (!sims || !labels || !best || !best_cols || n_strings < 1 || n_strings > AS_CONDSEARCH_MAX_STRINGS ||
        n_layers < 1 || max_combine < 1 || max_combine > n_layers)
        return AS_ERR_INVALID_ARG;
    if (n_layers > INT64_MAX / n_strings) return AS_ERR_INVALID_ARG;
    as_status st = as_condsearch_count_combos(n_layers, max_combine, AS_CONDSEARCH_MAX_COMBOS, n_combos);
    if (st != AS_OK) return st;
    int64_t p = 0;
    for (int64_t s = 0; s < n_strings; s++) {
        if (labels[s] > 1) return AS_ERR_INVALID_ARG;
        p += labels[s];
    }
    for (int64_t k = 0; k < n_strings * n_layers; k++)
        if (!isfinite(sims[k])) return AS_ERR_NONFINITE;
    *n_pos = p;
    return AS_OK;
}

/* A score as the exact rational F1 = 2tp / (tp + fp + n_pos) (the 2 is common to
 * all and dropped): num / den with den >= 1. tp = 0 is F1 = 0 = 0 / 1. */
typedef struct {
    int64_t num, den;
} score_t;

static score_t make_score(int64_t tp, int64_t fp, int64_t n_pos) {
    score_t s = {0, 1};
    if (tp > 0) {
        s.num = tp;
        s.den = tp + fp + n_pos;
    }
    return s;
}

/* a > b exactly. num <= 2^30 and den <= 2^31, so the products fit in int64. */
static int score_gt(score_t a, score_t b) { return a.num * b.den > b.num * a.den; }

static double f1_value(int64_t tp, int64_t fp, int64_t n_pos) {
    if (tp <= 0) return 0.0;
    return (double)(2 * tp) / (double)(tp + fp + n_pos);
}

/* Next combination of size r from n in lexicographic order. Returns the lowest
 * position that changed, or -1 when `cols` was the last one. */
static int64_t next_combination(int64_t *cols, int64_t r, int64_t n) {
    int64_t i = r - 1;
    while (i >= 0 && cols[i] == n - r + i) i--;
    if (i < 0) return -1;
    cols[i]++;
    for (int64_t j = i + 1; j < r; j++) cols[j] = cols[j - 1] + 1;
    return i;
}

static void record_best(as_condsearch_best_t *best, int64_t *best_cols, int64_t max_combine, int64_t combo,
                        const int64_t *cols, int64_t r, int64_t t_index, double t, as_comparator cmp, int64_t tp,
                        int64_t fp, int64_t n_pos) {
    best->combo_index = combo;
    best->combo_size = r;
    best->threshold_index = t_index;
    best->threshold = t;
    best->comparator = cmp;
    best->tp = tp;
    best->fp = fp;
    best->f1 = f1_value(tp, fp, n_pos);
    for (int64_t k = 0; k < max_combine; k++) best_cols[k] = k < r ? cols[k] : -1;
}

/* ------------------------------------------------------------------------ */
/* Grid mode                                                                */
/* ------------------------------------------------------------------------ */

/* Number of thresholds <= x (upper bound) and < x (lower bound) in sorted t[n]. */
static int32_t count_le(const double *t, int64_t n, double x) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (t[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    return (int32_t)lo;
}

static int32_t count_lt(const double *t, int64_t n, double x) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (t[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return (int32_t)lo;
}

as_status as_condsearch_grid(const double *sims, int64_t n_strings, int64_t n_layers, const uint8_t *labels,
                             int64_t max_combine, const double *thresholds, int64_t n_thresholds,
                             as_condsearch_best_t *best, int64_t *best_cols, double *scores) {
    int64_t n_pos = 0, n_combos = 0;
    as_status st = check_inputs(sims, n_strings, n_layers, labels, max_combine, best, best_cols, &n_pos, &n_combos);
    if (st != AS_OK) return st;
    if (!thresholds || n_thresholds < 1 || n_thresholds >= INT32_MAX) return AS_ERR_INVALID_ARG;
    for (int64_t j = 0; j < n_thresholds; j++) {
        if (!isfinite(thresholds[j])) return AS_ERR_NONFINITE;
        if (j > 0 && thresholds[j] < thresholds[j - 1]) return AS_ERR_INVALID_ARG;
    }
    const int64_t n = n_strings, L = n_layers, R = max_combine, T = n_thresholds;

    /* Position of each sim in the grid, column-major [L, n]:
     *   ub = #{t <= sim}: LARGER (sim < t_j) holds iff j >= ub; min over columns.
     *   lb = #{t <  sim}: SMALLER (sim > t_j) holds iff j < lb; max over columns. */
    int32_t *ub = malloc((size_t)(L * n) * sizeof *ub);
    int32_t *lb = malloc((size_t)(L * n) * sizeof *lb);
    int32_t *pmin = malloc((size_t)(R * n) * sizeof *pmin); /* [R, n] prefix min of ub */
    int32_t *pmax = malloc((size_t)(R * n) * sizeof *pmax); /* [R, n] prefix max of lb */
    int64_t *hist = calloc((size_t)(4 * (T + 1)), sizeof *hist); /* [4, T + 1] */
    int64_t *cols = malloc((size_t)R * sizeof *cols);
    if (!ub || !lb || !pmin || !pmax || !hist || !cols) {
        st = AS_ERR_NOMEM;
        goto done;
    }
    for (int64_t s = 0; s < n; s++)
        for (int64_t l = 0; l < L; l++) {
            double x = sims[s * L + l];
            ub[l * n + s] = count_le(thresholds, T, x);
            lb[l * n + s] = count_lt(thresholds, T, x);
        }
    int64_t *h_lp = hist, *h_ln = hist + (T + 1), *h_sp = hist + 2 * (T + 1), *h_sn = hist + 3 * (T + 1);

    int have_best = 0;
    score_t best_score = {0, 1};
    int64_t combo = 0;
    for (int64_t r = 1; r <= R; r++) {
        for (int64_t k = 0; k < r; k++) cols[k] = k;
        int64_t changed = 0;
        while (changed >= 0) {
            /* Refresh the prefix reductions from the first changed position. */
            for (int64_t k = changed; k < r; k++) {
                const int32_t *u = ub + cols[k] * n, *w = lb + cols[k] * n;
                int32_t *pm = pmin + k * n, *px = pmax + k * n;
                if (k == 0) {
                    memcpy(pm, u, (size_t)n * sizeof *pm);
                    memcpy(px, w, (size_t)n * sizeof *px);
                } else {
                    const int32_t *qm = pm - n, *qx = px - n;
                    for (int64_t s = 0; s < n; s++) {
                        pm[s] = u[s] < qm[s] ? u[s] : qm[s];
                        px[s] = w[s] > qx[s] ? w[s] : qx[s];
                    }
                }
            }
            const int32_t *vmin = pmin + (r - 1) * n, *vmax = pmax + (r - 1) * n;
            memset(hist, 0, (size_t)(4 * (T + 1)) * sizeof *hist);
            for (int64_t s = 0; s < n; s++) {
                if (labels[s]) {
                    h_lp[vmin[s]]++;
                    h_sp[vmax[s]]++;
                } else {
                    h_ln[vmin[s]]++;
                    h_sn[vmax[s]]++;
                }
            }
            /* Sweep thresholds ascending, LARGER before SMALLER at each. */
            int64_t lp = 0, ln = 0, sp = 0, sn = 0;
            double *row = scores ? scores + combo * T * 2 : NULL;
            for (int64_t j = 0; j < T; j++) {
                lp += h_lp[j];
                ln += h_ln[j];
                sp += h_sp[j];
                sn += h_sn[j];
                int64_t tps[2] = {lp, n_pos - sp};
                int64_t fps[2] = {ln, (n - n_pos) - sn};
                for (int c = 0; c < 2; c++) {
                    score_t sc = make_score(tps[c], fps[c], n_pos);
                    if (row) row[j * 2 + c] = f1_value(tps[c], fps[c], n_pos);
                    if (!have_best || score_gt(sc, best_score)) {
                        have_best = 1;
                        best_score = sc;
                        record_best(best, best_cols, R, combo, cols, r, j, thresholds[j], (as_comparator)c, tps[c],
                                    fps[c], n_pos);
                    }
                }
            }
            combo++;
            changed = next_combination(cols, r, L);
        }
    }
    st = AS_OK;
done:
    free(ub);
    free(lb);
    free(pmin);
    free(pmax);
    free(hist);
    free(cols);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Exact mode                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    double v;
    uint8_t label;
} item_t;

static int cmp_item(const void *a, const void *b) {
    double x = ((const item_t *)a)->v, y = ((const item_t *)b)->v;
    return (x > y) - (x < y);
}

/* A threshold strictly between consecutive distinct values a < b; when none is
 * representable, the end that yields the same prediction for the comparator. */
static double between(double a, double b, as_comparator cmp) {
    double m = 0.5 * a + 0.5 * b;
    if (a < m && m < b) return m;
    return cmp == AS_CMP_LARGER ? b : a;
}

static double below(double d) {
    double t = d - 1.0;
    return t < d ? t : nextafter(d, -INFINITY);
}

static double above(double d) {
    double t = d + 1.0;
    return t > d ? t : nextafter(d, INFINITY);
}

/* First best (threshold, tp, fp) of one comparator over sorted items[n]. */
static void sweep_exact(const item_t *items, int64_t n, int64_t n_pos, as_comparator cmp, double *t_out,
                        int64_t *tp_out, int64_t *fp_out) {
    const int64_t n_neg = n - n_pos;
    /* Candidate 0: below every value. LARGER predicts none, SMALLER all. */
    double bt = below(items[0].v);
    int64_t btp = cmp == AS_CMP_LARGER ? 0 : n_pos, bfp = cmp == AS_CMP_LARGER ? 0 : n_neg;
    score_t bs = make_score(btp, bfp, n_pos);
    int64_t cum_p = 0, cum_n = 0;
    for (int64_t i = 0; i < n;) {
        double d = items[i].v;
        while (i < n && items[i].v == d) {
            cum_p += items[i].label;
            cum_n += 1 - items[i].label;
            i++;
        }
        /* Threshold just above group d: LARGER predicts every value <= d,
         * SMALLER every value > d. */
        double t = i < n ? between(d, items[i].v, cmp) : above(d);
        int64_t tp = cmp == AS_CMP_LARGER ? cum_p : n_pos - cum_p;
        int64_t fp = cmp == AS_CMP_LARGER ? cum_n : n_neg - cum_n;
        score_t sc = make_score(tp, fp, n_pos);
        if (score_gt(sc, bs)) {
            bs = sc;
            bt = t;
            btp = tp;
            bfp = fp;
        }
    }
    *t_out = bt;
    *tp_out = btp;
    *fp_out = bfp;
}

as_status as_condsearch_exact(const double *sims, int64_t n_strings, int64_t n_layers, const uint8_t *labels,
                              int64_t max_combine, as_condsearch_best_t *best, int64_t *best_cols, double *per_combo) {
    int64_t n_pos = 0, n_combos = 0;
    as_status st = check_inputs(sims, n_strings, n_layers, labels, max_combine, best, best_cols, &n_pos, &n_combos);
    if (st != AS_OK) return st;
    const int64_t n = n_strings, L = n_layers, R = max_combine;

    double *colmajor = malloc((size_t)(L * n) * sizeof *colmajor); /* [L, n] */
    double *pmin = malloc((size_t)(R * n) * sizeof *pmin);         /* [R, n] */
    double *pmax = malloc((size_t)(R * n) * sizeof *pmax);         /* [R, n] */
    item_t *items = malloc((size_t)n * sizeof *items);
    int64_t *cols = malloc((size_t)R * sizeof *cols);
    if (!colmajor || !pmin || !pmax || !items || !cols) {
        st = AS_ERR_NOMEM;
        goto done;
    }
    for (int64_t s = 0; s < n; s++)
        for (int64_t l = 0; l < L; l++) colmajor[l * n + s] = sims[s * L + l];

    int have_best = 0;
    score_t best_score = {0, 1};
    int64_t combo = 0;
    for (int64_t r = 1; r <= R; r++) {
        for (int64_t k = 0; k < r; k++) cols[k] = k;
        int64_t changed = 0;
        while (changed >= 0) {
            for (int64_t k = changed; k < r; k++) {
                const double *u = colmajor + cols[k] * n;
                double *pm = pmin + k * n, *px = pmax + k * n;
                if (k == 0) {
                    memcpy(pm, u, (size_t)n * sizeof *pm);
                    memcpy(px, u, (size_t)n * sizeof *px);
                } else {
                    const double *qm = pm - n, *qx = px - n;
                    for (int64_t s = 0; s < n; s++) {
                        pm[s] = u[s] < qm[s] ? u[s] : qm[s];
                        px[s] = u[s] > qx[s] ? u[s] : qx[s];
                    }
                }
            }
            double t[2];
            int64_t tp[2], fp[2];
            for (int c = 0; c < 2; c++) {
                const double *v = (c == AS_CMP_LARGER ? pmin : pmax) + (r - 1) * n;
                for (int64_t s = 0; s < n; s++) {
                    items[s].v = v[s];
                    items[s].label = labels[s];
                }
                qsort(items, (size_t)n, sizeof *items, cmp_item);
                sweep_exact(items, n, n_pos, (as_comparator)c, &t[c], &tp[c], &fp[c]);
                if (per_combo) {
                    per_combo[(combo * 2 + c) * 2 + 0] = t[c];
                    per_combo[(combo * 2 + c) * 2 + 1] = f1_value(tp[c], fp[c], n_pos);
                }
            }
            /* This combination's first best: higher F1, else lower threshold,
             * else LARGER. */
            score_t sl = make_score(tp[0], fp[0], n_pos), ss = make_score(tp[1], fp[1], n_pos);
            int c = 0;
            if (score_gt(ss, sl) || (!score_gt(sl, ss) && t[1] < t[0])) c = 1;
            score_t sc = c ? ss : sl;
            if (!have_best || score_gt(sc, best_score)) {
                have_best = 1;
                best_score = sc;
                record_best(best, best_cols, R, combo, cols, r, -1, t[c], (as_comparator)c, tp[c], fp[c], n_pos);
            }
            combo++;
            changed = next_combination(cols, r, L);
        }
    }
    st = AS_OK;
done:
    free(colmajor);
    free(pmin);
    free(pmax);
    free(items);
    free(cols);
    return st;
}
