/* condsearch.c — the find_best_condition_point search. See as_condsearch.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "as_core.h"

/* ------------------------------------------------------------------------ */
/* Shared pieces                                                            */
/* ------------------------------------------------------------------------ */

static as_status too_many(as_error_t *err, int64_t n_layers, int64_t max_combine, int64_t limit) {
    return as_error_set(err, AS_ERR_RANGE, "max_layers_to_combine", -1, -1, "too many layer combinations",
                        "max_layers_to_combine=%lld over %lld layers gives more than %lld layer combinations; "
                        "lower max_layers_to_combine or narrow layer_range",
                        (long long)max_combine, (long long)n_layers, (long long)limit);
}

as_status as_condsearch_count_combos(int64_t n_layers, int64_t max_combine, int64_t limit, int64_t *n_combos,
                                     as_error_t *err) {
    if (n_layers < 1)
        return as_error_set(err, AS_ERR_INVALID_ARG, "n_layers", -1, -1, "no layers",
                            "n_layers must be >= 1, got %lld", (long long)n_layers);
    if (max_combine < 1 || max_combine > n_layers)
        return as_error_set(err, AS_ERR_INVALID_ARG, "max_layers_to_combine", -1, -1, "max_layers_to_combine out of range",
                            "max_layers_to_combine must be in 1..%lld (the number of layers searched), got %lld",
                            (long long)n_layers, (long long)max_combine);
    if (!n_combos || limit < 1 || limit > ((int64_t)1 << 31))
        return as_error_set(err, AS_ERR_INVALID_ARG, "limit", -1, -1, "invalid limit or output pointer", NULL);
    if (n_layers > limit) return too_many(err, n_layers, max_combine, limit);
    /* c = C(n, r) built incrementally; c <= limit <= 2^31 and n - r + 1 <= 2^31,
     * so c * (n - r + 1) < 2^62 never overflows. */
    int64_t c = 1, total = 0;
    for (int64_t r = 1; r <= max_combine; r++) {
        c = c * (n_layers - r + 1) / r;
        if (c > limit) return too_many(err, n_layers, max_combine, limit);
        total += c;
        if (total > limit) return too_many(err, n_layers, max_combine, limit);
    }
    *n_combos = total;
    return AS_OK;
}

/* Common argument checks of both searches; counts positives into *n_pos. */
static as_status check_inputs(const double *sims, int64_t n_strings, int64_t n_layers, const uint8_t *labels,
                              int64_t max_combine, as_combination combination, as_condsearch_best_t *best,
                              int64_t *best_cols, int64_t *n_pos, int64_t *n_combos, as_error_t *err) {
    if (!sims || !labels || !best || !best_cols)
        return as_error_set(err, AS_ERR_INVALID_ARG, NULL, -1, -1, "NULL pointer", "condsearch: a pointer is NULL");
    if (combination != AS_COMBINE_OR && combination != AS_COMBINE_AND)
        return as_error_set(err, AS_ERR_INVALID_ARG, "layer_combination", -1, -1, "unknown layer combination",
                            "layer_combination must be 'or' (any layer of a combination meets the condition) or "
                            "'and' (every layer meets it), got code %d",
                            (int)combination);
    if (n_strings < 1 || n_strings > AS_CONDSEARCH_MAX_STRINGS || n_layers < 1 || n_layers > INT64_MAX / n_strings)
        return as_error_set(err, AS_ERR_INVALID_ARG, "sims", -1, -1, "sims has no rows, no columns or too many rows",
                            "sims must be [n_strings, n_layers] with 1..%lld strings and >= 1 layer, got (%lld, %lld)",
                            (long long)AS_CONDSEARCH_MAX_STRINGS, (long long)n_strings, (long long)n_layers);
    as_status st = as_condsearch_count_combos(n_layers, max_combine, AS_CONDSEARCH_MAX_COMBOS, n_combos, err);
    if (st != AS_OK) return st;
    int64_t p = 0;
    for (int64_t s = 0; s < n_strings; s++) {
        if (labels[s] > 1)
            return as_error_set(err, AS_ERR_INVALID_ARG, "labels", s, -1, "labels must be 0 or 1",
                                "labels must be 0 or 1 (1 = positive string), got %d at index %lld", (int)labels[s],
                                (long long)s);
        p += labels[s];
    }
    for (int64_t k = 0; k < n_strings * n_layers; k++)
        if (!isfinite(sims[k]))
            return as_error_set(err, AS_ERR_NONFINITE, "sims", k / n_layers, -1, "a similarity is NaN or Inf",
                                "sims[%lld, %lld] is NaN or Inf: the similarities must be finite (a zero condition "
                                "direction or a NaN activation produces them)",
                                (long long)(k / n_layers), (long long)(k % n_layers));
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

/* THE combination iterator of both searches and both layer combinations. It
 * enumerates every combination of 1..R columns out of L (by size, then
 * lexicographic: itertools.combinations order) and keeps, for the current one,
 * the per-string reductions both searches score:
 *   vmin[s] = min over the combination's columns of key_min[col, s]
 *   vmax[s] = max over the combination's columns of key_max[col, s]
 * with key_min / key_max column-major [L, n]. Prefix reductions [R, n] are
 * shared between consecutive combinations: only the positions from the first
 * changed column on are recomputed.
 *
 * OR and AND differ only in which reduction each comparator reads:
 *   LARGER  (met iff sim < t): OR  = any column  <=> min sim < t,
 *                              AND = every column <=> max sim < t;
 *   SMALLER (met iff sim > t): OR  <=> max sim > t,  AND <=> min sim > t. */
typedef struct {
    const double *key_min, *key_max; /* [L, n]                                 */
    int64_t n, L, R;
    int64_t r;                       /* size of the current combination        */
    int64_t combo;                   /* its rank in the enumeration            */
    int64_t *cols;                   /* [R] its columns, ascending             */
    double *pmin, *pmax;             /* [R, n] prefix reductions               */
    const double *vmin, *vmax;       /* [n] the current combination's values   */
} combo_iter_t;

static as_status combo_iter_init(combo_iter_t *it, const double *key_min, const double *key_max, int64_t n,
                                 int64_t L, int64_t R) {
    memset(it, 0, sizeof *it);
    it->key_min = key_min;
    it->key_max = key_max;
    it->n = n;
    it->L = L;
    it->R = R;
    it->cols = malloc((size_t)R * sizeof *it->cols);
    it->pmin = malloc((size_t)(R * n) * sizeof *it->pmin);
    it->pmax = malloc((size_t)(R * n) * sizeof *it->pmax);
    return it->cols && it->pmin && it->pmax ? AS_OK : AS_ERR_NOMEM;
}

static void combo_iter_free(combo_iter_t *it) {
    free(it->cols);
    free(it->pmin);
    free(it->pmax);
}

/* Recompute the prefix reductions from position `from` on. */
static void combo_iter_refresh(combo_iter_t *it, int64_t from) {
    const int64_t n = it->n;
    for (int64_t k = from; k < it->r; k++) {
        const double *u = it->key_min + it->cols[k] * n, *w = it->key_max + it->cols[k] * n;
        double *pm = it->pmin + k * n, *px = it->pmax + k * n;
        if (k == 0) {
            memcpy(pm, u, (size_t)n * sizeof *pm);
            memcpy(px, w, (size_t)n * sizeof *px);
        } else {
            const double *qm = pm - n, *qx = px - n;
            for (int64_t s = 0; s < n; s++) {
                pm[s] = u[s] < qm[s] ? u[s] : qm[s];
                px[s] = w[s] > qx[s] ? w[s] : qx[s];
            }
        }
    }
    it->vmin = it->pmin + (it->r - 1) * n;
    it->vmax = it->pmax + (it->r - 1) * n;
}

/* Advance to the next combination (the first call gives the first one).
 * Returns 0 when the enumeration is exhausted. */
static int combo_iter_next(combo_iter_t *it) {
    if (it->r == 0) { /* first call */
        it->r = 1;
        it->combo = 0;
        it->cols[0] = 0;
        combo_iter_refresh(it, 0);
        return 1;
    }
    const int64_t r = it->r, L = it->L;
    int64_t i = r - 1;
    while (i >= 0 && it->cols[i] == L - r + i) i--;
    it->combo++;
    if (i < 0) { /* last of size r: first of size r + 1 */
        if (r == it->R) return 0;
        it->r = r + 1;
        for (int64_t k = 0; k < it->r; k++) it->cols[k] = k;
        combo_iter_refresh(it, 0);
        return 1;
    }
    it->cols[i]++;
    for (int64_t j = i + 1; j < r; j++) it->cols[j] = it->cols[j - 1] + 1;
    combo_iter_refresh(it, i);
    return 1;
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
                             int64_t max_combine, as_combination combination, const double *thresholds,
                             int64_t n_thresholds, as_condsearch_best_t *best, int64_t *best_cols, double *scores,
                             as_error_t *err) {
    int64_t n_pos = 0, n_combos = 0;
    as_status st = check_inputs(sims, n_strings, n_layers, labels, max_combine, combination, best, best_cols, &n_pos,
                                &n_combos, err);
    if (st != AS_OK) return st;
    if (!thresholds || n_thresholds < 1 || n_thresholds >= INT32_MAX)
        return as_error_set(err, AS_ERR_INVALID_ARG, "thresholds", -1, -1, "no thresholds or too many",
                            "thresholds must have 1..%d values, got %lld (check threshold_range and threshold_step)",
                            INT32_MAX - 1, (long long)n_thresholds);
    for (int64_t j = 0; j < n_thresholds; j++) {
        if (!isfinite(thresholds[j]))
            return as_error_set(err, AS_ERR_NONFINITE, "thresholds", j, -1, "a threshold is NaN or Inf",
                                "thresholds must be finite (NaN or Inf at index %lld)", (long long)j);
        if (j > 0 && thresholds[j] < thresholds[j - 1])
            return as_error_set(err, AS_ERR_INVALID_ARG, "thresholds", j, -1, "thresholds decrease",
                                "thresholds must be non-decreasing (index %lld)", (long long)j);
    }
    const int64_t n = n_strings, L = n_layers, R = max_combine, T = n_thresholds;

    /* Position of each sim in the grid, column-major [L, n] (exact small integers
     * in double, so the iterator's reductions are shared with the exact mode):
     *   ub = #{t <= sim}: LARGER (sim < t_j) holds at a column iff j >= ub;
     *   lb = #{t <  sim}: SMALLER (sim > t_j) holds at a column iff j < lb.
     * OR:  LARGER holds iff j >= min ub, SMALLER iff j < max lb;
     * AND: LARGER holds iff j >= max ub, SMALLER iff j < min lb. */
    double *ub = malloc((size_t)(L * n) * sizeof *ub);
    double *lb = malloc((size_t)(L * n) * sizeof *lb);
    int64_t *hist = calloc((size_t)(4 * (T + 1)), sizeof *hist); /* [4, T + 1] */
    const int and_mode = combination == AS_COMBINE_AND;
    combo_iter_t it;
    st = combo_iter_init(&it, and_mode ? lb : ub, and_mode ? ub : lb, n, L, R);
    if (st != AS_OK || !ub || !lb || !hist) {
        st = as_error_set(err, AS_ERR_NOMEM, NULL, -1, -1, "out of memory", "condsearch_grid: out of memory");
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
    while (combo_iter_next(&it)) {
        /* the reduced ub (LARGER) and lb (SMALLER) of each string */
        const double *vl = and_mode ? it.vmax : it.vmin, *vs = and_mode ? it.vmin : it.vmax;
        memset(hist, 0, (size_t)(4 * (T + 1)) * sizeof *hist);
        for (int64_t s = 0; s < n; s++) {
            if (labels[s]) {
                h_lp[(int64_t)vl[s]]++;
                h_sp[(int64_t)vs[s]]++;
            } else {
                h_ln[(int64_t)vl[s]]++;
                h_sn[(int64_t)vs[s]]++;
            }
        }
        /* Sweep thresholds ascending, LARGER before SMALLER at each. */
        int64_t lp = 0, ln = 0, sp = 0, sn = 0;
        double *row = scores ? scores + it.combo * T * 2 : NULL;
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
                    record_best(best, best_cols, R, it.combo, it.cols, it.r, j, thresholds[j], (as_comparator)c,
                                tps[c], fps[c], n_pos);
                }
            }
        }
    }
    st = AS_OK;
done:
    free(ub);
    free(lb);
    free(hist);
    combo_iter_free(&it);
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
                              int64_t max_combine, as_combination combination, as_condsearch_best_t *best,
                              int64_t *best_cols, double *per_combo, as_error_t *err) {
    int64_t n_pos = 0, n_combos = 0;
    as_status st = check_inputs(sims, n_strings, n_layers, labels, max_combine, combination, best, best_cols, &n_pos,
                                &n_combos, err);
    if (st != AS_OK) return st;
    const int64_t n = n_strings, L = n_layers, R = max_combine;

    double *colmajor = malloc((size_t)(L * n) * sizeof *colmajor); /* [L, n] */
    item_t *items = malloc((size_t)n * sizeof *items);
    combo_iter_t it;
    st = combo_iter_init(&it, colmajor, colmajor, n, L, R);
    if (st != AS_OK || !colmajor || !items) {
        st = as_error_set(err, AS_ERR_NOMEM, NULL, -1, -1, "out of memory", "condsearch_exact: out of memory");
        goto done;
    }
    for (int64_t s = 0; s < n; s++)
        for (int64_t l = 0; l < L; l++) colmajor[l * n + s] = sims[s * L + l];

    int have_best = 0;
    score_t best_score = {0, 1};
    while (combo_iter_next(&it)) {
        double t[2];
        int64_t tp[2], fp[2];
        for (int c = 0; c < 2; c++) {
            /* OR: LARGER reads the min, SMALLER the max; AND the other way round */
            const double *v = (c == AS_CMP_LARGER) != (combination == AS_COMBINE_AND) ? it.vmin : it.vmax;
            for (int64_t s = 0; s < n; s++) {
                items[s].v = v[s];
                items[s].label = labels[s];
            }
            qsort(items, (size_t)n, sizeof *items, cmp_item);
            sweep_exact(items, n, n_pos, (as_comparator)c, &t[c], &tp[c], &fp[c]);
            if (per_combo) {
                per_combo[(it.combo * 2 + c) * 2 + 0] = t[c];
                per_combo[(it.combo * 2 + c) * 2 + 1] = f1_value(tp[c], fp[c], n_pos);
            }
        }
        /* This combination's first best: higher F1, else lower threshold, else LARGER. */
        score_t sl = make_score(tp[0], fp[0], n_pos), ss = make_score(tp[1], fp[1], n_pos);
        int c = 0;
        if (score_gt(ss, sl) || (!score_gt(sl, ss) && t[1] < t[0])) c = 1;
        score_t sc = c ? ss : sl;
        if (!have_best || score_gt(sc, best_score)) {
            have_best = 1;
            best_score = sc;
            record_best(best, best_cols, R, it.combo, it.cols, it.r, -1, t[c], (as_comparator)c, tp[c], fp[c], n_pos);
        }
    }
    st = AS_OK;
done:
    free(colmajor);
    free(items);
    combo_iter_free(&it);
    return st;
}
