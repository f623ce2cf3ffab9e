/* plan.c — steering plan validation and compilation. See as_plan.h.
 *
 * Two passes over the items: the first checks everything and records, for each
 * requested row, where its direction starts in avail_data; the second writes the
 * outputs. So a plan either compiles completely or leaves every output untouched.
 */
#include <math.h>
#include <stdlib.h>

#include "as_core.h"

static as_status plan_fail(as_plan_error_t *err, as_status st, as_plan_error_kind kind, int64_t item, int64_t layer, int64_t expected, int64_t got,
                           const char *message) {
    if (err) {
        err->kind = kind;
        err->item = item;
        err->layer = layer;
        err->expected = expected;
        err->got = got;
        err->message = message;
    }
    return st;
}

as_status as_plan_count_rows(const as_plan_input_t *in, int64_t *n_rows) {
    if (!in || !n_rows || in->n_items < 0 || (in->n_items > 0 && !in->n_use)) return AS_ERR_INVALID_ARG;
    int64_t u = 0;
    for (int64_t i = 0; i < in->n_items; i++) {
        if (in->n_use[i] < 0) return AS_ERR_INVALID_ARG;
        u += in->n_use[i];
    }
    *n_rows = u;
    return AS_OK;
}

as_status as_plan_compile(const as_plan_input_t *in, float *rows, int64_t *layer_offsets, int64_t *layer_rows,
                          as_plan_error_t *err) {
    int64_t n_rows = 0;
    if (!in || as_plan_count_rows(in, &n_rows) != AS_OK || in->n_layers < 1 || in->hidden_size < 1 || !layer_offsets)
        return plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_SIZES, -1, -1, 0, 0, "invalid plan sizes");
    const int64_t n_items = in->n_items, L = in->n_layers, D = in->hidden_size;
    if (n_items > 0 && (!in->n_avail || !in->scale || !in->use_evr))
        return plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_SIZES, -1, -1, 0, 0, "missing per-item arrays");
    int64_t n_avail_total = 0;
    for (int64_t i = 0; i < n_items; i++) {
        if (in->n_avail[i] < 0) return plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_SIZES, i, -1, 0, 0, "negative layer count");
        n_avail_total += in->n_avail[i];
    }
    if ((n_avail_total > 0 && (!in->avail_layers || !in->avail_sizes || !in->avail_evr)) ||
        (n_rows > 0 && (!in->use_layers || !rows || !layer_rows)))
        return plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_SIZES, -1, -1, 0, 0, "missing per-layer arrays");

    /* src[u]: offset of row u's direction in avail_data; evr_of[u]: its evr index. */
    int64_t *src = malloc((size_t)(n_rows > 0 ? n_rows : 1) * sizeof(int64_t));
    int64_t *evr_of = malloc((size_t)(n_rows > 0 ? n_rows : 1) * sizeof(int64_t));
    int64_t *data_off = malloc((size_t)(n_avail_total > 0 ? n_avail_total : 1) * sizeof(int64_t));
    as_status st = AS_OK;
    if (!src || !evr_of || !data_off) { st = plan_fail(err, AS_ERR_NOMEM, AS_PLAN_ERR_NOMEM, -1, -1, 0, 0, "out of memory"); goto done; }

    int64_t off = 0;
    for (int64_t a = 0; a < n_avail_total; a++) {
        if (in->avail_sizes[a] < 0) { st = plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_SIZES, -1, -1, 0, 0, "negative direction length"); goto done; }
        data_off[a] = off;
        off += in->avail_sizes[a];
    }
    if (off > 0 && !in->avail_data) { st = plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_SIZES, -1, -1, 0, 0, "missing direction data"); goto done; }

    /* Pass 1: validate. */
    int64_t a0 = 0, u = 0;
    for (int64_t i = 0; i < n_items; i++) {
        if (!isfinite(in->scale[i])) { st = plan_fail(err, AS_ERR_NONFINITE, AS_PLAN_ERR_NONFINITE_SCALE, i, -1, 0, 0, "the strength is NaN or Inf"); goto done; }
        const int64_t u_first = u;
        for (int64_t j = 0; j < in->n_use[i]; j++, u++) {
            const int64_t layer = in->use_layers[u];
            if (layer < 0 || layer >= L) {
                st = plan_fail(err, AS_ERR_RANGE, AS_PLAN_ERR_LAYER_RANGE, i, layer, L, 0, "layer id out of range");
                goto done;
            }
            for (int64_t v = u_first; v < u; v++)
                if (in->use_layers[v] == layer) {
                    st = plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_LAYER_TWICE, i, layer, 0, 0, "layer requested twice");
                    goto done;
                }
            int64_t found = -1;
            for (int64_t a = a0; a < a0 + in->n_avail[i]; a++)
                if (in->avail_layers[a] == layer) { found = a; break; }
            if (found < 0) {
                st = plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_MISSING_LAYER, i, layer, 0, 0, "the vector has no direction for this layer");
                goto done;
            }
            if (in->avail_sizes[found] != D) {
                st = plan_fail(err, AS_ERR_INVALID_ARG, AS_PLAN_ERR_HIDDEN_SIZE, i, layer, D, in->avail_sizes[found],
                               "the direction's length differs from the model's hidden size");
                goto done;
            }
            const float *d = in->avail_data + data_off[found];
            for (int64_t k = 0; k < D; k++)
                if (!isfinite(d[k])) {
                    st = plan_fail(err, AS_ERR_NONFINITE, AS_PLAN_ERR_NONFINITE_DIRECTION, i, layer, 0, 0, "the direction contains NaN or Inf");
                    goto done;
                }
            if (in->use_evr[i] && !isfinite(in->avail_evr[found])) {
                st = plan_fail(err, AS_ERR_NONFINITE, AS_PLAN_ERR_NONFINITE_EVR, i, layer, 0, 0, "the explained variance is NaN or Inf");
                goto done;
            }
            src[u] = data_off[found];
            evr_of[u] = found;
        }
        a0 += in->n_avail[i];
    }

    /* Pass 2: scaled rows, then the per-layer CSR table (stable: item order). */
    u = 0;
    for (int64_t i = 0; i < n_items; i++) {
        for (int64_t j = 0; j < in->n_use[i]; j++, u++) {
            const double s = in->scale[i] * (in->use_evr[i] ? in->avail_evr[evr_of[u]] : 1.0);
            const float *d = in->avail_data + src[u];
            float *out = rows + u * D;
            for (int64_t k = 0; k < D; k++) out[k] = (float)(s * (double)d[k]);
        }
    }
    for (int64_t l = 0; l <= L; l++) layer_offsets[l] = 0;
    for (int64_t r = 0; r < n_rows; r++) layer_offsets[in->use_layers[r] + 1]++;
    for (int64_t l = 0; l < L; l++) layer_offsets[l + 1] += layer_offsets[l];
    for (int64_t l = 0; l < L; l++) {
        int64_t w = layer_offsets[l];
        for (int64_t r = 0; r < n_rows; r++)
            if (in->use_layers[r] == l) layer_rows[w++] = r;
    }
done:
    free(src);
    free(evr_of);
    free(data_off);
    return st;
}
