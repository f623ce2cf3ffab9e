/* plan.c — steering plan validation and compilation. See as_plan.h.
 *
 * Pass 1 checks every fact and resolves, for each requested layer of each
 * vector, the model layer and the direction it uses; pass 2 writes the
 * per-layer tables. So a plan either compiles completely or leaves every output
 * untouched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_core.h"

#define PLAN_FAIL(st, v, idx, layer, reason, ...) as_error_set(err, st, (v)->name, idx, layer, reason, __VA_ARGS__)

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* "[0, 3, 5]" of the vector's normalised keys, truncated to fit `buf`. */
static void list_layers(const as_plan_vector_t *v, int64_t L, char *buf, size_t size) {
    int64_t *keys = malloc((size_t)(v->n_avail > 0 ? v->n_avail : 1) * sizeof *keys);
    if (!keys) { snprintf(buf, size, "(unknown)"); return; }
    for (int64_t a = 0; a < v->n_avail; a++) keys[a] = v->avail_layers[a] < 0 ? v->avail_layers[a] + L : v->avail_layers[a];
    qsort(keys, (size_t)v->n_avail, sizeof *keys, cmp_i64);
    size_t w = (size_t)snprintf(buf, size, "[");
    for (int64_t a = 0; a < v->n_avail && w < size; a++)
        w += (size_t)snprintf(buf + w, size - w, "%s%lld", a ? ", " : "", (long long)keys[a]);
    if (w < size) snprintf(buf + w, size - w, "]");
    free(keys);
}

/* A behaviour's operator (a zeroed struct means AS_OP_ADD) and the names of its
 * operator / unit arguments (the vector's own name when the caller gave none). */
static int beh_op(const as_plan_vector_t *v) { return v->op == 0 ? AS_OP_ADD : v->op; }
static const char *op_arg(const as_plan_vector_t *v) { return v->op_name ? v->op_name : v->name; }
static const char *unit_arg(const as_plan_vector_t *v) { return v->unit_name ? v->unit_name : "strength_unit"; }

/* |d| in double (0 for an all-zero direction). */
static double dir_norm(const float *d, int64_t D) {
    double ss = 0.0;
    for (int64_t k = 0; k < D; k++) ss += (double)d[k] * (double)d[k];
    return sqrt(ss);
}

/* The per-layer scalar a behaviour row is multiplied by: strength, times the
 * explained variance (use_evr), times the layer's residual norm
 * (AS_UNIT_RESIDUAL_NORM). Pass 1 has checked that what it reads exists. */
static double row_scale(const as_plan_vector_t *v, int64_t a) {
    double s = v->scale * (v->use_evr ? v->avail_evr[a] : 1.0);
    if (v->unit == AS_UNIT_RESIDUAL_NORM) s *= v->avail_norm[a];
    return s;
}

/* Pass 1 for one vector. lay[u]: the model layer of use u;
 * src[u]: the direction it uses. idx: position among behaviours / conditions. */
static as_status check_vector(const as_plan_input_t *in, const as_plan_vector_t *v, int64_t idx, int is_cond,
                              int64_t *lay, int64_t *src, as_error_t *err) {
    const int64_t L = in->n_layers, D = in->hidden_size;
    if (v->n_avail < 0 || v->n_use < 0 || (v->n_avail > 0 && (!v->avail_layers || !v->avail_ndim || !v->avail_shape ||
                                                                !v->avail_data || !v->avail_evr || !v->avail_has_evr)) ||
        (v->n_use > 0 && !v->use_layers) || !v->name || !v->layer_name || !v->value_name)
        return as_error_set(err, AS_ERR_INVALID_ARG, v->name, idx, -1, "inconsistent sizes or NULL arrays",
                            "plan: vector %lld has inconsistent sizes or NULL arrays", (long long)idx);
    if (v->n_avail == 0)
        return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, -1, "the vector has no directions",
                         "%s has no directions; train it with SteeringVector.train first", v->name);
    if (v->n_use == 0)
        return as_error_set(err, AS_ERR_INVALID_ARG, v->layer_name, idx, -1, "no layer ids",
                            "%s is empty: name at least one decoder layer (0..%lld)", v->layer_name, (long long)(L - 1));
    if (!is_cond && !isfinite(v->scale))
        return as_error_set(err, AS_ERR_NONFINITE, v->value_name, idx, -1, "the strength is NaN or Inf",
                            "the strength for %s is NaN or Inf (%s = %g); pass a finite number", v->name,
                            v->value_name, v->scale);
    if (is_cond && !isfinite(v->threshold))
        return as_error_set(err, AS_ERR_NONFINITE, v->value_name, idx, -1, "the threshold is NaN or Inf",
                            "%s must be finite, got %g", v->value_name, v->threshold);
    const int op = beh_op(v);
    if (!is_cond && op != AS_OP_ADD && op != AS_OP_ABLATE && op != AS_OP_ABLATE_THEN_ADD)
        return as_error_set(err, AS_ERR_INVALID_ARG, op_arg(v), idx, -1, "unknown operator",
                            "%s: unknown operator code %d; use \"add\" (%d), \"ablate\" (%d) or "
                            "\"ablate_then_add\" (%d)",
                            op_arg(v), op, AS_OP_ADD, AS_OP_ABLATE, AS_OP_ABLATE_THEN_ADD);
    if (!is_cond && v->unit != AS_UNIT_ABSOLUTE && v->unit != AS_UNIT_RESIDUAL_NORM && v->unit != AS_UNIT_TOKEN_NORM)
        return as_error_set(err, AS_ERR_INVALID_ARG, unit_arg(v), idx, -1, "unknown strength unit",
                            "%s: unknown strength unit code %d; use \"absolute\" (%d), \"residual_norm\" (%d) or "
                            "\"token_norm\" (%d)",
                            unit_arg(v), v->unit, AS_UNIT_ABSOLUTE, AS_UNIT_RESIDUAL_NORM, AS_UNIT_TOKEN_NORM);
    const int adds = !is_cond && (op & AS_OP_ADD), ablates = !is_cond && (op & AS_OP_ABLATE);
    if (adds && v->unit == AS_UNIT_RESIDUAL_NORM && (!v->avail_norm || !v->avail_has_norm))
        return as_error_set(err, AS_ERR_INVALID_ARG, unit_arg(v), idx, -1, "the vector records no residual norms",
                            "%s = \"residual_norm\" needs %s.residual_norms, which this vector does not have (a "
                            "vector built in code, or a file from before they were recorded); retrain it (train "
                            "records them), or use %s = \"absolute\"",
                            unit_arg(v), v->name, unit_arg(v));
    /* keys: normalised, never two for one layer */
    for (int64_t a = 0; a < v->n_avail; a++) {
        const int64_t ka = v->avail_layers[a] < 0 ? v->avail_layers[a] + L : v->avail_layers[a];
        for (int64_t b = 0; b < a; b++) {
            const int64_t kb = v->avail_layers[b] < 0 ? v->avail_layers[b] + L : v->avail_layers[b];
            if (ka == kb)
                return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, ka, "two directions for one layer",
                                 "%s has two directions for layer %lld (keys %lld and %lld); keep one",
                                 v->name, (long long)ka, (long long)v->avail_layers[b], (long long)v->avail_layers[a]);
        }
    }
    for (int64_t u = 0; u < v->n_use; u++) {
        const int64_t given = v->use_layers[u];
        const int64_t l = given < 0 ? given + L : given;
        if (l < 0 || l >= L)
            return as_error_set(err, AS_ERR_RANGE, v->layer_name, idx, given, "layer id out of range",
                                "%s: layer id %lld is out of range for a model with %lld layers (valid: 0..%lld or "
                                "-%lld..-1)",
                                v->layer_name, (long long)given, (long long)L, (long long)(L - 1), (long long)L);
        lay[u] = l;
        src[u] = -1;
        for (int64_t w = 0; w < u; w++)
            if (lay[w] == l) /* a repeat is a mistake (twice the strength? once?), never silently merged */
                return as_error_set(err, AS_ERR_INVALID_ARG, v->layer_name, idx, l, "a layer listed twice",
                                    "%s lists layer %lld twice (as %lld and %lld); give each layer once",
                                    v->layer_name, (long long)l, (long long)v->use_layers[w], (long long)given);
        int64_t found = -1;
        for (int64_t a = 0; a < v->n_avail; a++)
            if ((v->avail_layers[a] < 0 ? v->avail_layers[a] + L : v->avail_layers[a]) == l) { found = a; break; }
        if (found < 0) {
            char have[256];
            list_layers(v, L, have, sizeof have);
            return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "the vector has no direction for this layer",
                             "%s has no direction for layer %lld (requested in %s); it has layers %s. Choose layer "
                             "ids the vector was trained on",
                             v->name, (long long)l, v->layer_name, have);
        }
        const int64_t nd = v->avail_ndim[found], s0 = v->avail_shape[2 * found], s1 = v->avail_shape[2 * found + 1];
        if (nd != 1) {
            if (nd == 2)
                return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "the direction is not 1-D",
                                 "%s: the direction for layer %lld must be 1-D [hidden_size], got shape (%lld, %lld)",
                                 v->name, (long long)l, (long long)s0, (long long)s1);
            return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "the direction is not 1-D",
                             "%s: the direction for layer %lld must be 1-D [hidden_size], got a %lld-D array",
                             v->name, (long long)l, (long long)nd);
        }
        if (s0 != D)
            return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "the direction's length differs from the hidden size",
                             "%s: the direction for layer %lld has %lld values but the model's hidden size is %lld; "
                             "use a vector trained on this model",
                             v->name, (long long)l, (long long)s0, (long long)D);
        const float *d = v->avail_data[found];
        if (!d)
            return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "missing direction data", "%s: no data for layer %lld",
                             v->name, (long long)l);
        int any = 0;
        for (int64_t k = 0; k < D; k++) {
            if (!isfinite(d[k]))
                return PLAN_FAIL(AS_ERR_NONFINITE, v, idx, l, "the direction contains NaN or Inf",
                                 "%s at layer %lld: the direction contains NaN or Inf; fix or retrain the vector",
                                 v->name, (long long)l);
            any |= d[k] != 0.0f;
        }
        if (is_cond && !any)
            return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "the condition direction is all zeros",
                             "%s at layer %lld: the direction is all zeros, so the condition similarity is 0/0 and "
                             "the condition never fires; use a trained condition vector",
                             v->name, (long long)l);
        if (ablates && !(dir_norm(d, D) > 0.0))
            return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "the ablated direction is all zeros",
                             "%s at layer %lld: the direction is all zeros, so there is no direction to ablate "
                             "(d = v/|v| is 0/0); use a trained vector or %s = \"add\"",
                             v->name, (long long)l, op_arg(v));
        if (adds && v->unit == AS_UNIT_RESIDUAL_NORM) {
            const double nrm = v->avail_has_norm[found] ? v->avail_norm[found] : NAN;
            if (!(isfinite(nrm) && nrm > 0.0))
                return as_error_set(err, AS_ERR_INVALID_ARG, unit_arg(v), idx, l,
                                    "no residual norm for this layer",
                                    "%s = \"residual_norm\": %s.residual_norms has no finite norm > 0 for layer %lld; "
                                    "retrain the vector on this layer, or use %s = \"absolute\"",
                                    unit_arg(v), v->name, (long long)l, unit_arg(v));
        }
        if (adds) {
            if (v->use_evr) {
                if (!v->avail_has_evr[found])
                    return PLAN_FAIL(AS_ERR_INVALID_ARG, v, idx, l, "no explained variance for this layer",
                                     "%s has no explained variance for layer %lld; pass use_explained_variance=False",
                                     v->name, (long long)l);
                if (!isfinite(v->avail_evr[found]))
                    return PLAN_FAIL(AS_ERR_NONFINITE, v, idx, l, "the explained variance is NaN or Inf",
                                     "%s at layer %lld: the explained variance is NaN or Inf; fix or retrain the "
                                     "vector",
                                     v->name, (long long)l);
            }
            const double s = row_scale(v, found);
            for (int64_t k = 0; k < D; k++)
                if (!isfinite((float)(s * (double)d[k])))
                    return as_error_set(err, AS_ERR_NONFINITE, v->value_name, idx, l, "the scaled vector overflows float32",
                                        "%s at layer %lld: %s = %g times the direction overflows float32 (|x| > "
                                        "3.4e38); use a smaller strength",
                                        v->name, (long long)l, v->value_name, v->scale);
        }
        src[u] = found;
    }
    return AS_OK;
}

/* Does behaviour k's table switch it on for some / every bitmask? */
static int table_any(const uint8_t *t, int64_t S) {
    for (int64_t m = 0; m < S; m++)
        if (t[m]) return 1;
    return 0;
}
static int table_all(const uint8_t *t, int64_t S) {
    for (int64_t m = 0; m < S; m++)
        if (!t[m]) return 0;
    return 1;
}

as_status as_plan_compile(const as_plan_input_t *in, as_plan_t *out, as_error_t *err) {
    if (!in || !out || in->n_layers < 1 || in->hidden_size < 1 || in->n_behaviors < 0 || in->n_conditions < 0 ||
        (in->n_behaviors > 0 && !in->behaviors) || (in->n_conditions > 0 && !in->conditions))
        return as_error_set(err, AS_ERR_INVALID_ARG, NULL, -1, -1, "invalid plan sizes",
                            "plan: n_layers and hidden_size must be >= 1 and the vector arrays given");
    if (in->n_conditions > AS_MAX_CONDITIONS)
        return as_error_set(err, AS_ERR_INVALID_ARG, "condition_vectors", -1, -1, "too many conditions",
                            "condition_vectors has %lld conditions; multisteer supports at most %d",
                            (long long)in->n_conditions, AS_MAX_CONDITIONS);
    const int64_t L = in->n_layers, D = in->hidden_size, m = in->n_behaviors, n = in->n_conditions;
    const int64_t S = in->tables ? (int64_t)1 << n : 1;
    int64_t total = 0;
    for (int64_t k = 0; k < m + n; k++) {
        const as_plan_vector_t *v = k < m ? &in->behaviors[k] : &in->conditions[k - m];
        if (v->present && v->n_use > 0) total += v->n_use;
    }
    if (!out->cond_offsets || !out->beh_offsets || !out->layer_gated ||
        (total > 0 && (!out->cond_rows || !out->cond_index || !out->cond_thresholds || !out->cond_codes ||
                       !out->beh_rows || !out->beh_index || !out->beh_tables || !out->beh_dirs || !out->beh_modes)))
        return as_error_set(err, AS_ERR_INVALID_ARG, NULL, -1, -1, "missing output arrays", "plan: missing output arrays");
    int64_t *lay = malloc((size_t)(total > 0 ? total : 1) * sizeof *lay);
    int64_t *src = malloc((size_t)(total > 0 ? total : 1) * sizeof *src);
    if (!lay || !src) {
        free(lay);
        free(src);
        return as_error_set(err, AS_ERR_NOMEM, NULL, -1, -1, "out of memory", "plan: out of memory");
    }
    as_status st = AS_OK;
    /* Pass 1: validate. first[k]: where vector k's uses start in lay/src. */
    int64_t off = 0;
    for (int64_t k = 0; k < m + n && st == AS_OK; k++) {
        const int is_cond = k >= m;
        const as_plan_vector_t *v = is_cond ? &in->conditions[k - m] : &in->behaviors[k];
        if (!v->present) {
            if (is_cond) st = as_error_set(err, AS_ERR_INVALID_ARG, "condition_vectors", k - m, -1, "missing condition",
                                           "condition_vectors[%lld] is None; give a condition vector", (long long)(k - m));
            continue;
        }
        st = check_vector(in, v, is_cond ? k - m : k, is_cond, lay + off, src + off, err);
        off += v->n_use;
    }
    if (st != AS_OK) goto done;

    /* Pass 2: the per-layer tables. */
    int64_t uc = 0, ub = 0;
    for (int64_t l = 0; l < L; l++) {
        out->cond_offsets[l] = uc;
        out->beh_offsets[l] = ub;
        out->layer_gated[l] = 0;
        off = 0;
        int64_t offs_c = 0;
        for (int64_t k = 0; k < m; k++) offs_c += in->behaviors[k].present ? in->behaviors[k].n_use : 0;
        for (int64_t j = 0; j < n; j++) {
            const as_plan_vector_t *v = &in->conditions[j];
            for (int64_t u = 0; u < v->n_use; u++) {
                if (lay[offs_c + u] != l) continue;
                memcpy(out->cond_rows + uc * D, v->avail_data[src[offs_c + u]], (size_t)D * sizeof(float));
                out->cond_index[uc] = j;
                out->cond_thresholds[uc] = (float)v->threshold;
                out->cond_codes[uc * 3 + 0] = (int64_t)1 << j;
                out->cond_codes[uc * 3 + 1] = v->smaller ? 1 : 0;
                out->cond_codes[uc * 3 + 2] = v->last ? 1 : 0;
                uc++;
            }
            offs_c += v->n_use;
        }
        for (int64_t k = 0; k < m; k++) {
            const as_plan_vector_t *v = &in->behaviors[k];
            if (!v->present) continue;
            const uint8_t *tab = in->tables ? in->tables + k * S : NULL;
            const int live = !tab || table_any(tab, S);
            for (int64_t u = 0; live && u < v->n_use; u++) {
                if (lay[off + u] != l) continue;
                const int64_t a = src[off + u];
                const int op = beh_op(v), adds = op & AS_OP_ADD, ablates = op & AS_OP_ABLATE;
                const double s = adds ? row_scale(v, a) : 0.0;
                const double inv = ablates ? 1.0 / dir_norm(v->avail_data[a], D) : 0.0;
                const float *d = v->avail_data[a];
                float *row = out->beh_rows + ub * D, *unit = out->beh_dirs + ub * D;
                for (int64_t i = 0; i < D; i++) {
                    row[i] = adds ? (float)(s * (double)d[i]) : 0.0f;
                    unit[i] = ablates ? (float)((double)d[i] * inv) : 0.0f;
                }
                out->beh_modes[ub] = (adds ? AS_MODE_ADD : 0) | (ablates ? AS_MODE_ABLATE : 0) |
                                     (adds && v->unit == AS_UNIT_TOKEN_NORM ? AS_MODE_TOKEN_NORM : 0);
                out->beh_index[ub] = k;
                for (int64_t q = 0; q < S; q++) out->beh_tables[ub * S + q] = tab ? (tab[q] ? 1 : 0) : 1;
                if (tab && !table_all(tab, S)) out->layer_gated[l] = 1;
                ub++;
            }
            off += v->n_use;
        }
    }
    out->cond_offsets[L] = uc;
    out->beh_offsets[L] = ub;
    out->n_cond_rows = uc;
    out->n_beh_rows = ub;
done:
    free(lay);
    free(src);
    return st;
}
