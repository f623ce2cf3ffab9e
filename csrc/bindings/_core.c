/*
 * _core.c — the CPython + NumPy C-API binding of the C core: activation_steering._core.
 *
 * One file, one banner section per core subsystem (as msgspec does). Every
 * wrapper follows the same shape:
 *   1. parse arguments, convert to C-contiguous arrays of the exact dtype
 *      (PyArray_FROMANY with NPY_ARRAY_IN_ARRAY), check shapes -> ValueError that
 *      names the argument;
 *   2. allocate outputs as NumPy arrays;
 *   3. call the core with the GIL released (Py_BEGIN/END_ALLOW_THREADS);
 *   4. map the status with raise_status(); `goto error` releases everything.
 * The core never sees a Python object, and this file holds no numerics.
 *
 * EDITING RULE for contributors: add your wrappers inside your subsystem's
 * banner section and your PyMethodDef lines in the matching block of
 * core_methods[] at the bottom. Do not reorder other sections.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

#include "as_core.h"

/* ======================================================================== */
/*  Shared helpers                                                          */
/* ======================================================================== */

/* Map a core status to a Python exception; `what` names the operation. */
static PyObject *raise_status(as_status st, const char *what) {
    PyObject *exc = PyExc_RuntimeError;
    switch (st) {
    case AS_OK: return NULL;
    case AS_ERR_INVALID_ARG:
    case AS_ERR_NONFINITE:
    case AS_ERR_PARSE:
    case AS_ERR_RANGE: exc = PyExc_ValueError; break;
    case AS_ERR_NOMEM: exc = PyExc_MemoryError; break;
    default: break;
    }
    PyErr_Format(exc, "%s: %s", what, as_status_message(st));
    return NULL;
}

/* Borrow `obj` as a C-contiguous, aligned array of `type` with `ndim` dims.
 * Returns a new reference or NULL with a ValueError naming `name`. */
static PyArrayObject *as_array(PyObject *obj, int type, int ndim, const char *name) {
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(obj, type, ndim, ndim, NPY_ARRAY_IN_ARRAY);
    if (!arr) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be convertible to a %d-D %s array", name, ndim,
                     type == NPY_FLOAT32 ? "float32" : type == NPY_FLOAT64 ? "float64" : "numeric");
    }
    return arr;
}

/* ======================================================================== */
/*  version / status                                                        */
/* ======================================================================== */

static PyObject *py_version(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(as_version()); }

static PyObject *py_status_message(PyObject *self, PyObject *arg) {
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred()) return NULL;
    return PyUnicode_FromString(as_status_message((as_status)code));
}

/* ======================================================================== */
/*  linalg                                                                  */
/* ======================================================================== */

/* gram_f32(x[n, d]) -> float32[d, d] = x^T x (BLAS ssyrk). */
static PyObject *py_gram_f32(PyObject *self, PyObject *arg) {
    PyArrayObject *x = NULL, *out = NULL;
    x = as_array(arg, NPY_FLOAT32, 2, "x");
    if (!x) goto error;
    npy_intp n = PyArray_DIM(x, 0), d = PyArray_DIM(x, 1);
    if (n < 1 || d < 1) {
        PyErr_Format(PyExc_ValueError, "x must be non-empty, got shape (%zd, %zd)", (Py_ssize_t)n, (Py_ssize_t)d);
        goto error;
    }
    npy_intp dims[2] = {d, d};
    out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) goto error;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_linalg_gram_f32((const float *)PyArray_DATA(x), n, d, (float *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (st != AS_OK) { raise_status(st, "gram_f32"); goto error; }
    Py_DECREF(x);
    return (PyObject *)out;
error:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

/* ======================================================================== */
/*  pca (extraction issue)                                                  */
/* ======================================================================== */

/* pca_fit(rows, method="pca_pairwise", n_components=1, projections=False)
 *   rows: float32 [L, 2P, D] (several layers, fitted independently in one
 *   GIL-free call) or [2P, D] (one layer; outputs then lose their L axis).
 *   -> (components float32 [L, k, D], explained float64 [L, k],
 *       projections float64 [L, 2P, k] or None).
 * A failure in one layer raises ValueError(message, layer_position) so the
 * Python caller can name the layer id; str(exc.args[0]) is self-contained. */
static int parse_pca_method(PyObject *obj, as_pca_method *out) {
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "method must be a str: 'pca_pairwise', 'pca_center' or 'pca_diff'");
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(obj);
    if (!s) return -1;
    if (strcmp(s, "pca_pairwise") == 0) *out = AS_PCA_PAIRWISE;
    else if (strcmp(s, "pca_center") == 0) *out = AS_PCA_CENTER;
    else if (strcmp(s, "pca_diff") == 0) *out = AS_PCA_DIFF;
    else {
        PyErr_Format(PyExc_ValueError, "method must be 'pca_pairwise', 'pca_center' or 'pca_diff', got %R", obj);
        return -1;
    }
    return 0;
}

static PyObject *py_pca_fit(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"rows", "method", "n_components", "projections", NULL};
    PyObject *rows_obj = NULL, *method_obj = NULL;
    int n_components = 1, want_proj = 0;
    PyArrayObject *rows = NULL, *comp = NULL, *expl = NULL, *proj = NULL;
    as_pca_method method = AS_PCA_PAIRWISE;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|Oip:pca_fit", kwlist, &rows_obj, &method_obj, &n_components,
                                     &want_proj))
        return NULL;
    if (method_obj && parse_pca_method(method_obj, &method) < 0) return NULL;
    if (n_components != 1 && n_components != 2) {
        PyErr_Format(PyExc_ValueError, "n_components must be 1 or 2, got %d", n_components);
        return NULL;
    }
    rows = (PyArrayObject *)PyArray_FROMANY(rows_obj, NPY_FLOAT32, 2, 3, NPY_ARRAY_IN_ARRAY);
    if (!rows) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "rows must be convertible to a float32 array of shape [2P, D] or [L, 2P, D]");
        goto error;
    }
    const int single = PyArray_NDIM(rows) == 2;
    const npy_intp n_layers = single ? 1 : PyArray_DIM(rows, 0);
    const npy_intp n_rows = PyArray_DIM(rows, single ? 0 : 1), d = PyArray_DIM(rows, single ? 1 : 2);
    if (n_layers < 1 || n_rows < 2 || n_rows % 2 != 0 || d < 1) {
        PyErr_Format(PyExc_ValueError,
                     "rows must hold >= 1 layer of an even number (>= 2) of interleaved positive/negative rows "
                     "of size >= 1, got %zd layer(s) x %zd row(s) x %zd",
                     (Py_ssize_t)n_layers, (Py_ssize_t)n_rows, (Py_ssize_t)d);
        goto error;
    }
    const npy_intp k = n_components;
    npy_intp cdims[3] = {n_layers, k, d}, edims[2] = {n_layers, k}, pdims[3] = {n_layers, n_rows, k};
    comp = (PyArrayObject *)PyArray_SimpleNew(single ? 2 : 3, single ? cdims + 1 : cdims, NPY_FLOAT32);
    expl = (PyArrayObject *)PyArray_SimpleNew(single ? 1 : 2, single ? edims + 1 : edims, NPY_FLOAT64);
    if (!comp || !expl) goto error;
    if (want_proj) {
        proj = (PyArrayObject *)PyArray_SimpleNew(single ? 2 : 3, single ? pdims + 1 : pdims, NPY_FLOAT64);
        if (!proj) goto error;
    }
    as_status st;
    int64_t failed = -1;
    const char *detail = NULL;
    Py_BEGIN_ALLOW_THREADS
    st = as_pca_fit_layers((const float *)PyArray_DATA(rows), n_layers, n_rows / 2, d, method, n_components,
                           (float *)PyArray_DATA(comp), (double *)PyArray_DATA(expl),
                           proj ? (double *)PyArray_DATA(proj) : NULL, &failed, &detail);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        PyObject *exc = st == AS_ERR_NOMEM ? PyExc_MemoryError
                        : (st == AS_ERR_INVALID_ARG || st == AS_ERR_NONFINITE) ? PyExc_ValueError
                                                                              : PyExc_RuntimeError;
        PyObject *msg = PyUnicode_FromFormat("pca_fit: layer position %lld: %s", (long long)failed,
                                             detail ? detail : as_status_message(st));
        if (msg) {
            PyObject *val = Py_BuildValue("(NL)", msg, (long long)failed);
            if (val) {
                PyErr_SetObject(exc, val);
                Py_DECREF(val);
            }
        }
        goto error;
    }
    Py_DECREF(rows);
    if (!proj) {
        Py_INCREF(Py_None);
        proj = (PyArrayObject *)Py_None;
    }
    return Py_BuildValue("(NNN)", comp, expl, proj);
error:
    Py_XDECREF(rows);
    Py_XDECREF(comp);
    Py_XDECREF(expl);
    Py_XDECREF(proj);
    return NULL;
}


/* ======================================================================== */
/*  condsearch (find_best_condition_point issue)                            */
/* ======================================================================== */

/* Checked conversion of the search's common inputs: sims[n, L] float64 and
 * labels[n] (bool or uint8, values 0/1). New references, or -1 with ValueError. */
static int condsearch_inputs(PyObject *sims_obj, PyObject *labels_obj, PyArrayObject **sims, PyArrayObject **labels) {
    *sims = as_array(sims_obj, NPY_FLOAT64, 2, "sims");
    if (!*sims) return -1;
    *labels = (PyArrayObject *)PyArray_FROMANY(labels_obj, NPY_UINT8, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!*labels) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "labels must be a 1-D bool or uint8 array (1 = positive string)");
        return -1;
    }
    npy_intp n = PyArray_DIM(*sims, 0), L = PyArray_DIM(*sims, 1);
    if (n < 1 || L < 1) {
        PyErr_Format(PyExc_ValueError, "sims must be non-empty [n_strings, n_layers], got shape (%zd, %zd)",
                     (Py_ssize_t)n, (Py_ssize_t)L);
        return -1;
    }
    if (PyArray_DIM(*labels, 0) != n) {
        PyErr_Format(PyExc_ValueError, "labels has %zd entries but sims has %zd rows", (Py_ssize_t)PyArray_DIM(*labels, 0),
                     (Py_ssize_t)n);
        return -1;
    }
    if ((int64_t)n > AS_CONDSEARCH_MAX_STRINGS) {
        PyErr_Format(PyExc_ValueError, "sims has %zd rows; the search supports at most %lld strings", (Py_ssize_t)n,
                     (long long)AS_CONDSEARCH_MAX_STRINGS);
        return -1;
    }
    const uint8_t *lab = (const uint8_t *)PyArray_DATA(*labels);
    for (npy_intp s = 0; s < n; s++)
        if (lab[s] > 1) {
            PyErr_Format(PyExc_ValueError, "labels must be 0 or 1, got %d at index %zd", (int)lab[s], (Py_ssize_t)s);
            return -1;
        }
    return 0;
}

/* The number of combinations, or -1 with a ValueError naming max_layers_to_combine. */
static int64_t condsearch_n_combos(int64_t n_layers, int64_t max_combine) {
    if (max_combine < 1 || max_combine > n_layers) {
        PyErr_Format(PyExc_ValueError, "max_layers_to_combine must be in 1..%lld (the number of layers searched), got %lld",
                     (long long)n_layers, (long long)max_combine);
        return -1;
    }
    int64_t n_combos = 0;
    as_status st = as_condsearch_count_combos(n_layers, max_combine, AS_CONDSEARCH_MAX_COMBOS, &n_combos);
    if (st == AS_ERR_RANGE) {
        PyErr_Format(PyExc_ValueError,
                     "max_layers_to_combine=%lld over %lld layers gives more than %lld layer combinations; "
                     "lower max_layers_to_combine or narrow layer_range",
                     (long long)max_combine, (long long)n_layers, (long long)AS_CONDSEARCH_MAX_COMBOS);
        return -1;
    }
    if (st != AS_OK) {
        raise_status(st, "condsearch");
        return -1;
    }
    return n_combos;
}

/* The result dict shared by both searches (steals `extra`, may be Py_None). */
static PyObject *condsearch_result(const as_condsearch_best_t *best, const int64_t *cols, const char *extra_key,
                                   PyObject *extra) {
    PyObject *layers = PyTuple_New((Py_ssize_t)best->combo_size);
    if (!layers) {
        Py_DECREF(extra);
        return NULL;
    }
    for (int64_t k = 0; k < best->combo_size; k++) {
        PyObject *v = PyLong_FromLongLong((long long)cols[k]);
        if (!v) {
            Py_DECREF(layers);
            Py_DECREF(extra);
            return NULL;
        }
        PyTuple_SET_ITEM(layers, (Py_ssize_t)k, v);
    }
    return Py_BuildValue("{s:N,s:L,s:L,s:d,s:s,s:d,s:L,s:L,s:N}", "columns", layers, "combo_index",
                         (long long)best->combo_index, "threshold_index", (long long)best->threshold_index, "threshold",
                         best->threshold, "direction", best->comparator == AS_CMP_LARGER ? "larger" : "smaller", "f1",
                         best->f1, "tp", (long long)best->tp, "fp", (long long)best->fp, extra_key, extra);
}

/* condsearch_count(n_layers, max_combine) -> int: sum_{r=1..max_combine} C(n_layers, r). */
static PyObject *py_condsearch_count(PyObject *self, PyObject *args) {
    long long n_layers, max_combine;
    if (!PyArg_ParseTuple(args, "LL:condsearch_count", &n_layers, &max_combine)) return NULL;
    if (n_layers < 1) {
        PyErr_Format(PyExc_ValueError, "n_layers must be >= 1, got %lld", n_layers);
        return NULL;
    }
    int64_t n = condsearch_n_combos(n_layers, max_combine);
    return n < 0 ? NULL : PyLong_FromLongLong((long long)n);
}

/* condsearch_grid(sims[n, L] f64, labels[n] bool, max_combine, thresholds[T] f64,
 *                 return_scores=False) -> dict (see the method table). */
static PyObject *py_condsearch_grid(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"sims", "labels", "max_combine", "thresholds", "return_scores", NULL};
    PyObject *sims_obj, *labels_obj, *thr_obj;
    long long max_combine;
    int return_scores = 0;
    PyArrayObject *sims = NULL, *labels = NULL, *thr = NULL, *scores = NULL;
    int64_t *cols = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOLO|p:condsearch_grid", kwlist, &sims_obj, &labels_obj,
                                     &max_combine, &thr_obj, &return_scores))
        return NULL;
    if (condsearch_inputs(sims_obj, labels_obj, &sims, &labels) < 0) goto error;
    thr = as_array(thr_obj, NPY_FLOAT64, 1, "thresholds");
    if (!thr) goto error;
    int64_t n = PyArray_DIM(sims, 0), L = PyArray_DIM(sims, 1), T = PyArray_DIM(thr, 0);
    if (T < 1 || T >= INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "thresholds must have 1..%d values, got %lld", INT32_MAX - 1, (long long)T);
        goto error;
    }
    const double *t = (const double *)PyArray_DATA(thr);
    for (int64_t j = 0; j < T; j++) {
        if (!isfinite(t[j])) {
            PyErr_Format(PyExc_ValueError, "thresholds must be finite (NaN or Inf at index %lld)", (long long)j);
            goto error;
        }
        if (j > 0 && t[j] < t[j - 1]) {
            PyErr_Format(PyExc_ValueError, "thresholds must be non-decreasing (index %lld)", (long long)j);
            goto error;
        }
    }
    int64_t n_combos = condsearch_n_combos(L, max_combine);
    if (n_combos < 0) goto error;
    if (return_scores) {
        if (n_combos > (int64_t)(NPY_MAX_INTP / 16) / T) {
            PyErr_Format(PyExc_MemoryError, "a score table of %lld combinations x %lld thresholds is too large",
                         (long long)n_combos, (long long)T);
            goto error;
        }
        npy_intp dims[3] = {(npy_intp)n_combos, (npy_intp)T, 2};
        scores = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT64);
        if (!scores) goto error;
    }
    cols = PyMem_Malloc((size_t)max_combine * sizeof *cols);
    if (!cols) {
        PyErr_NoMemory();
        goto error;
    }
    as_condsearch_best_t best;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_condsearch_grid((const double *)PyArray_DATA(sims), n, L, (const uint8_t *)PyArray_DATA(labels),
                            (int64_t)max_combine, t, T, &best, cols, scores ? (double *)PyArray_DATA(scores) : NULL);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_status(st, st == AS_ERR_NONFINITE ? "condsearch_grid: sims" : "condsearch_grid");
        goto error;
    }
    PyObject *extra = scores ? (PyObject *)scores : Py_NewRef(Py_None);
    scores = NULL; /* stolen by condsearch_result */
    PyObject *res = condsearch_result(&best, cols, "scores", extra);
    PyMem_Free(cols);
    Py_DECREF(sims);
    Py_DECREF(labels);
    Py_DECREF(thr);
    return res;
error:
    PyMem_Free(cols);
    Py_XDECREF(sims);
    Py_XDECREF(labels);
    Py_XDECREF(thr);
    Py_XDECREF(scores);
    return NULL;
}

/* condsearch_exact(sims[n, L] f64, labels[n] bool, max_combine, return_per_combo=False) -> dict. */
static PyObject *py_condsearch_exact(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"sims", "labels", "max_combine", "return_per_combo", NULL};
    PyObject *sims_obj, *labels_obj;
    long long max_combine;
    int return_per_combo = 0;
    PyArrayObject *sims = NULL, *labels = NULL, *per = NULL;
    int64_t *cols = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOL|p:condsearch_exact", kwlist, &sims_obj, &labels_obj,
                                     &max_combine, &return_per_combo))
        return NULL;
    if (condsearch_inputs(sims_obj, labels_obj, &sims, &labels) < 0) goto error;
    int64_t n = PyArray_DIM(sims, 0), L = PyArray_DIM(sims, 1);
    int64_t n_combos = condsearch_n_combos(L, max_combine);
    if (n_combos < 0) goto error;
    if (return_per_combo) {
        npy_intp dims[3] = {(npy_intp)n_combos, 2, 2};
        per = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT64);
        if (!per) goto error;
    }
    cols = PyMem_Malloc((size_t)max_combine * sizeof *cols);
    if (!cols) {
        PyErr_NoMemory();
        goto error;
    }
    as_condsearch_best_t best;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_condsearch_exact((const double *)PyArray_DATA(sims), n, L, (const uint8_t *)PyArray_DATA(labels),
                             (int64_t)max_combine, &best, cols, per ? (double *)PyArray_DATA(per) : NULL);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_status(st, st == AS_ERR_NONFINITE ? "condsearch_exact: sims" : "condsearch_exact");
        goto error;
    }
    PyObject *extra = per ? (PyObject *)per : Py_NewRef(Py_None);
    per = NULL; /* stolen by condsearch_result */
    PyObject *res = condsearch_result(&best, cols, "per_combo", extra);
    PyMem_Free(cols);
    Py_DECREF(sims);
    Py_DECREF(labels);
    return res;
error:
    PyMem_Free(cols);
    Py_XDECREF(sims);
    Py_XDECREF(labels);
    Py_XDECREF(per);
    return NULL;
}

/* ======================================================================== */
/*  rules + plan (steering runtime issue)                                   */
/* ======================================================================== */

/* rules_compile(rules: sequence[str], n_conditions: int, n_behaviors: int)
 *   -> uint8 [n_behaviors, 2 ** n_conditions] truth tables (see as_rules.h).
 * A malformed rule raises ValueError quoting the rule, the character position
 * and a caret under the offending token. */
static PyObject *rules_error(PyObject *rule, const char *text, Py_ssize_t nbytes, const as_rules_error_t *e,
                             int64_t n_conditions, int64_t n_behaviors) {
    /* byte offset -> character offset (count UTF-8 lead bytes) */
    Py_ssize_t chars = 0;
    for (Py_ssize_t i = 0; i < e->offset && i < nbytes; i++)
        if (((unsigned char)text[i] & 0xC0) != 0x80) chars++;
    char *caret = PyMem_Malloc((size_t)chars + 2);
    if (!caret) return PyErr_NoMemory();
    memset(caret, ' ', (size_t)chars);
    caret[chars] = '^';
    caret[chars + 1] = '\0';
    PyObject *detail = NULL;
    if (e->kind == 'C' || e->kind == 'B') {
        const int is_c = e->kind == 'C';
        const long long count = (long long)(is_c ? n_conditions : n_behaviors);
        const char *noun = is_c ? "condition" : "behaviour";
        if (count == 0)
            detail = PyUnicode_FromFormat("%c%lld names a %s but none were given", e->kind, (long long)e->number, noun);
        else if (e->number < 1)
            detail = PyUnicode_FromFormat("%c%lld is not a %s: they are numbered from 1 (%c1..%c%lld)", e->kind,
                                          (long long)e->number, noun, e->kind, e->kind, count);
        else
            detail = PyUnicode_FromFormat("it names %c%lld but only %lld %s(s) were given (%c1..%c%lld)", e->kind,
                                          (long long)e->number, count, noun, e->kind, e->kind, count);
    } else {
        detail = PyUnicode_FromString(e->message ? e->message : "malformed rule");
    }
    if (detail)
        PyErr_Format(PyExc_ValueError,
                     "rules[%lld] %R is malformed at character %zd: %U. Rules read 'if <expr> then B<k>' where "
                     "<expr> combines C<j> with and/or/not and parentheses.\n    %U\n    %s",
                     (long long)e->rule, rule, chars, detail, rule, caret);
    Py_XDECREF(detail);
    PyMem_Free(caret);
    return NULL;
}

static PyObject *py_rules_compile(PyObject *self, PyObject *args) {
    PyObject *rules_obj = NULL, *seq = NULL;
    long long n_conditions = 0, n_behaviors = 0;
    const char **texts = NULL;
    int64_t *lengths = NULL;
    PyArrayObject *tables = NULL;
    if (!PyArg_ParseTuple(args, "OLL:rules_compile", &rules_obj, &n_conditions, &n_behaviors)) return NULL;
    if (PyUnicode_Check(rules_obj)) {
        PyErr_SetString(PyExc_TypeError, "rules must be a list of str (one rule per item), got a single str");
        return NULL;
    }
    if (n_conditions < 0 || n_conditions > AS_RULES_MAX_CONDITIONS) {
        PyErr_Format(PyExc_ValueError, "rules support at most %d conditions, got %lld", AS_RULES_MAX_CONDITIONS,
                     n_conditions);
        return NULL;
    }
    if (n_behaviors < 1) {
        PyErr_Format(PyExc_ValueError, "rules need at least one behaviour, got %lld", n_behaviors);
        return NULL;
    }
    seq = PySequence_Fast(rules_obj, "rules must be a list of str");
    if (!seq) return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    texts = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(char *));
    lengths = PyMem_Malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!texts || !lengths) { PyErr_NoMemory(); goto error; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(item)) {
            PyErr_Format(PyExc_TypeError, "rules[%zd] must be a str like 'if C1 then B1', got %.100s", i,
                         Py_TYPE(item)->tp_name);
            goto error;
        }
        Py_ssize_t len = 0;
        texts[i] = PyUnicode_AsUTF8AndSize(item, &len); /* owned by `item`, which `seq` keeps alive */
        if (!texts[i]) goto error;
        lengths[i] = len;
    }
    npy_intp dims[2] = {(npy_intp)n_behaviors, (npy_intp)1 << n_conditions};
    tables = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (!tables) goto error;
    as_rules_error_t e = {-1, 0, 0, 0, NULL};
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_rules_compile(texts, lengths, n, n_conditions, n_behaviors, (uint8_t *)PyArray_DATA(tables), &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        if ((st == AS_ERR_PARSE || st == AS_ERR_RANGE) && e.rule >= 0 && e.rule < n)
            rules_error(PySequence_Fast_GET_ITEM(seq, e.rule), texts[e.rule], (Py_ssize_t)lengths[e.rule], &e,
                        n_conditions, n_behaviors);
        else if (e.message)
            PyErr_Format(st == AS_ERR_NOMEM ? PyExc_MemoryError : PyExc_ValueError, "rules_compile: %s", e.message);
        else
            raise_status(st, "rules_compile");
        goto error;
    }
    PyMem_Free(texts);
    PyMem_Free(lengths);
    Py_DECREF(seq);
    return (PyObject *)tables;
error:
    PyMem_Free(texts);
    PyMem_Free(lengths);
    Py_XDECREF(seq);
    Py_XDECREF(tables);
    return NULL;
}

/* plan_compile(n_layers, hidden_size, vector_names, layer_names, n_avail, avail_layers,
 *              avail_sizes, avail_data, avail_evr, n_use, use_layers, scale, use_evr)
 *   -> (rows float32 [U, D], layer_offsets int64 [L + 1], layer_rows int64 [U]).
 * See as_plan.h for the arrays. vector_names[i] / layer_names[i] name item i's
 * vector argument and layer-id argument in error messages (e.g.
 * "condition_vectors[1]" / "condition_layer_ids[1]"). */
static PyObject *plan_error(as_status st, const as_plan_error_t *e, PyObject *vnames, PyObject *lnames,
                            PyArrayObject *n_avail, PyArrayObject *avail_layers) {
    if (e->item < 0) {
        PyErr_Format(PyExc_ValueError, "plan_compile: %s", e->message ? e->message : as_status_message(st));
        return NULL;
    }
    PyObject *vname = PySequence_Fast_GET_ITEM(vnames, e->item);
    PyObject *lname = PySequence_Fast_GET_ITEM(lnames, e->item);
    const long long layer = (long long)e->layer;
    switch (e->kind) {
    case AS_PLAN_ERR_LAYER_RANGE:
        PyErr_Format(PyExc_ValueError, "%U: layer id %lld is out of range for a model with %lld layers", lname, layer,
                     (long long)e->expected);
        break;
    case AS_PLAN_ERR_LAYER_TWICE:
        PyErr_Format(PyExc_ValueError, "%U: layer %lld is listed twice; list each layer once", lname, layer);
        break;
    case AS_PLAN_ERR_NONFINITE_SCALE:
        PyErr_Format(PyExc_ValueError, "the strength for %U is NaN or Inf; pass a finite number", vname);
        break;
    case AS_PLAN_ERR_NONFINITE_DIRECTION:
    case AS_PLAN_ERR_NONFINITE_EVR:
        PyErr_Format(PyExc_ValueError, "%U at layer %lld: %s; fix or retrain the vector", vname, layer, e->message);
        break;
    case AS_PLAN_ERR_HIDDEN_SIZE:
        PyErr_Format(PyExc_ValueError,
                     "%U: the direction for layer %lld has %lld values but the model's hidden size is %lld; "
                     "use a vector trained on this model",
                     vname, layer, (long long)e->got, (long long)e->expected);
        break;
    case AS_PLAN_ERR_MISSING_LAYER: {
        /* list the layers the vector does have */
        const int64_t *na = (const int64_t *)PyArray_DATA(n_avail);
        const int64_t *al = (const int64_t *)PyArray_DATA(avail_layers);
        int64_t a0 = 0;
        for (int64_t i = 0; i < e->item; i++) a0 += na[i];
        PyObject *have = PyList_New(0);
        if (!have) return NULL;
        for (int64_t a = a0; a < a0 + na[e->item]; a++) {
            PyObject *v = PyLong_FromLongLong((long long)al[a]);
            if (!v || PyList_Append(have, v) < 0) {
                Py_XDECREF(v);
                Py_DECREF(have);
                return NULL;
            }
            Py_DECREF(v);
        }
        if (PyList_Sort(have) == 0)
            PyErr_Format(PyExc_ValueError,
                         "%U has no direction for layer %lld (requested in %U); it has layers %R. "
                         "Choose layer ids the vector was trained on",
                         vname, layer, lname, have);
        Py_DECREF(have);
        break;
    }
    default:
        PyErr_Format(st == AS_ERR_NOMEM ? PyExc_MemoryError : PyExc_ValueError, "plan_compile: %s",
                     e->message ? e->message : as_status_message(st));
        break;
    }
    return NULL;
}

static PyObject *py_plan_compile(PyObject *self, PyObject *args) {
    long long n_layers = 0, hidden = 0;
    PyObject *vnames_obj, *lnames_obj, *o_navail, *o_alayers, *o_asizes, *o_adata, *o_aevr, *o_nuse, *o_ulayers,
        *o_scale, *o_useevr;
    PyObject *vnames = NULL, *lnames = NULL;
    PyArrayObject *navail = NULL, *alayers = NULL, *asizes = NULL, *adata = NULL, *aevr = NULL, *nuse = NULL,
                  *ulayers = NULL, *scale = NULL, *useevr = NULL;
    PyArrayObject *rows = NULL, *offsets = NULL, *lrows = NULL;
    if (!PyArg_ParseTuple(args, "LLOOOOOOOOOOO:plan_compile", &n_layers, &hidden, &vnames_obj, &lnames_obj, &o_navail,
                          &o_alayers, &o_asizes, &o_adata, &o_aevr, &o_nuse, &o_ulayers, &o_scale, &o_useevr))
        return NULL;
    if (n_layers < 1 || hidden < 1) {
        PyErr_Format(PyExc_ValueError, "n_layers and hidden_size must be >= 1, got %lld and %lld", n_layers, hidden);
        return NULL;
    }
    vnames = PySequence_Fast(vnames_obj, "vector_names must be a sequence of str");
    if (!vnames) goto error;
    lnames = PySequence_Fast(lnames_obj, "layer_names must be a sequence of str");
    if (!lnames) goto error;
    if (!(navail = as_array(o_navail, NPY_INT64, 1, "n_avail"))) goto error;
    if (!(alayers = as_array(o_alayers, NPY_INT64, 1, "avail_layers"))) goto error;
    if (!(asizes = as_array(o_asizes, NPY_INT64, 1, "avail_sizes"))) goto error;
    if (!(adata = as_array(o_adata, NPY_FLOAT32, 1, "avail_data"))) goto error;
    if (!(aevr = as_array(o_aevr, NPY_FLOAT64, 1, "avail_evr"))) goto error;
    if (!(nuse = as_array(o_nuse, NPY_INT64, 1, "n_use"))) goto error;
    if (!(ulayers = as_array(o_ulayers, NPY_INT64, 1, "use_layers"))) goto error;
    if (!(scale = as_array(o_scale, NPY_FLOAT64, 1, "scale"))) goto error;
    if (!(useevr = as_array(o_useevr, NPY_UINT8, 1, "use_evr"))) goto error;
    const npy_intp n_items = PyArray_DIM(navail, 0);
    if (PySequence_Fast_GET_SIZE(vnames) != n_items || PySequence_Fast_GET_SIZE(lnames) != n_items || PyArray_DIM(nuse, 0) != n_items ||
        PyArray_DIM(scale, 0) != n_items || PyArray_DIM(useevr, 0) != n_items) {
        PyErr_SetString(PyExc_ValueError,
                        "plan_compile: vector_names, layer_names, n_avail, n_use, scale and use_evr must have one entry per item");
        goto error;
    }
    for (npy_intp i = 0; i < n_items; i++)
        if (!PyUnicode_Check(PySequence_Fast_GET_ITEM(vnames, i)) || !PyUnicode_Check(PySequence_Fast_GET_ITEM(lnames, i))) {
            PyErr_SetString(PyExc_TypeError, "plan_compile: vector_names and layer_names must hold str");
            goto error;
        }
    const int64_t *na = (const int64_t *)PyArray_DATA(navail), *nu = (const int64_t *)PyArray_DATA(nuse);
    const int64_t *as = (const int64_t *)PyArray_DATA(asizes);
    int64_t A = 0, U = 0, S = 0;
    for (npy_intp i = 0; i < n_items; i++) {
        if (na[i] < 0 || nu[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "plan_compile: n_avail and n_use must be >= 0");
            goto error;
        }
        A += na[i];
        U += nu[i];
    }
    if (PyArray_DIM(alayers, 0) != A || PyArray_DIM(asizes, 0) != A || PyArray_DIM(aevr, 0) != A ||
        PyArray_DIM(ulayers, 0) != U) {
        PyErr_SetString(PyExc_ValueError,
                        "plan_compile: avail_layers/avail_sizes/avail_evr must have sum(n_avail) entries and "
                        "use_layers sum(n_use)");
        goto error;
    }
    for (int64_t a = 0; a < A; a++) {
        if (as[a] < 0) {
            PyErr_SetString(PyExc_ValueError, "plan_compile: avail_sizes must be >= 0");
            goto error;
        }
        S += as[a];
    }
    if (PyArray_DIM(adata, 0) != S) {
        PyErr_Format(PyExc_ValueError, "plan_compile: avail_data has %zd values, sum(avail_sizes) is %lld",
                     (Py_ssize_t)PyArray_DIM(adata, 0), (long long)S);
        goto error;
    }
    npy_intp rdims[2] = {(npy_intp)U, (npy_intp)hidden}, odims[1] = {(npy_intp)n_layers + 1}, ldims[1] = {(npy_intp)U};
    rows = (PyArrayObject *)PyArray_SimpleNew(2, rdims, NPY_FLOAT32);
    offsets = (PyArrayObject *)PyArray_SimpleNew(1, odims, NPY_INT64);
    lrows = (PyArrayObject *)PyArray_SimpleNew(1, ldims, NPY_INT64);
    if (!rows || !offsets || !lrows) goto error;
    as_plan_input_t in = {
        .n_layers = n_layers, .hidden_size = hidden, .n_items = n_items,
        .n_avail = na, .avail_layers = (const int64_t *)PyArray_DATA(alayers), .avail_sizes = as,
        .avail_data = (const float *)PyArray_DATA(adata), .avail_evr = (const double *)PyArray_DATA(aevr),
        .n_use = nu, .use_layers = (const int64_t *)PyArray_DATA(ulayers),
        .scale = (const double *)PyArray_DATA(scale), .use_evr = (const uint8_t *)PyArray_DATA(useevr),
    };
    as_plan_error_t e = {AS_PLAN_ERR_NONE, -1, -1, 0, 0, NULL};
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_plan_compile(&in, (float *)PyArray_DATA(rows), (int64_t *)PyArray_DATA(offsets),
                         (int64_t *)PyArray_DATA(lrows), &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        plan_error(st, &e, vnames, lnames, navail, alayers);
        goto error;
    }
    Py_DECREF(vnames);
    Py_DECREF(lnames);
    Py_DECREF(navail);
    Py_DECREF(alayers);
    Py_DECREF(asizes);
    Py_DECREF(adata);
    Py_DECREF(aevr);
    Py_DECREF(nuse);
    Py_DECREF(ulayers);
    Py_DECREF(scale);
    Py_DECREF(useevr);
    return Py_BuildValue("(NNN)", rows, offsets, lrows);
error:
    Py_XDECREF(vnames);
    Py_XDECREF(lnames);
    Py_XDECREF(navail);
    Py_XDECREF(alayers);
    Py_XDECREF(asizes);
    Py_XDECREF(adata);
    Py_XDECREF(aevr);
    Py_XDECREF(nuse);
    Py_XDECREF(ulayers);
    Py_XDECREF(scale);
    Py_XDECREF(useevr);
    Py_XDECREF(rows);
    Py_XDECREF(offsets);
    Py_XDECREF(lrows);
    return NULL;
}

/* ======================================================================== */
/*  extraction methods beyond PCA: mean_diff, probe (as_methods.h)          */
/* ======================================================================== */

/* methods_fit(rows, method, normalize=True, probe_l2=1.0, probe_standardize=False, form=0)
 *   rows: float32 [L, 2P, D] or [2P, D] (interleaved positive/negative rows).
 *   -> (directions float32 [L, D], explained float64 [L],
 *       info float64 [L, 3] = (weight_scale, intercept, iterations))
 *   (the L axis is dropped for a 2-D input). A failure in one layer raises
 *   ValueError/RuntimeError(message, layer_position), like pca_fit. */
static PyObject *py_methods_fit(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"rows", "method", "normalize", "probe_l2", "probe_standardize", "form", NULL};
    PyObject *rows_obj = NULL;
    const char *method_s = NULL;
    int normalize = 1, standardize = 0, form = 0;
    double l2 = 1.0;
    PyArrayObject *rows = NULL, *dirs = NULL, *expl = NULL, *info_arr = NULL;
    as_method_info_t *info = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Os|pdpi:methods_fit", kwlist, &rows_obj, &method_s, &normalize,
                                     &l2, &standardize, &form))
        return NULL;
    as_method method;
    if (strcmp(method_s, "mean_diff") == 0) method = AS_METHOD_MEAN_DIFF;
    else if (strcmp(method_s, "probe") == 0) method = AS_METHOD_PROBE;
    else {
        PyErr_Format(PyExc_ValueError, "method must be 'mean_diff' or 'probe', got '%s'", method_s);
        return NULL;
    }
    if (method == AS_METHOD_PROBE && !(isfinite(l2) && l2 > 0.0)) {
        PyObject *got = PyFloat_FromDouble(l2);
        if (got) {
            PyErr_Format(PyExc_ValueError, "probe_l2 must be a finite number > 0 (scikit-learn's C = 1 / probe_l2), got %R",
                         got);
            Py_DECREF(got);
        }
        return NULL;
    }
    if (method == AS_METHOD_PROBE && !normalize) {
        PyErr_SetString(PyExc_ValueError,
                        "normalize=False is for method='mean_diff' only: the probe's weight norm depends on probe_l2");
        return NULL;
    }
    if (form < 0 || form > 2) {
        PyErr_Format(PyExc_ValueError, "form must be 0 (automatic), 1 (primal) or 2 (kernel), got %d", form);
        return NULL;
    }
    rows = (PyArrayObject *)PyArray_FROMANY(rows_obj, NPY_FLOAT32, 2, 3, NPY_ARRAY_IN_ARRAY);
    if (!rows) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "rows must be convertible to a float32 array of shape [2P, D] or [L, 2P, D]");
        goto error;
    }
    const int single = PyArray_NDIM(rows) == 2;
    const npy_intp n_layers = single ? 1 : PyArray_DIM(rows, 0);
    const npy_intp n_rows = PyArray_DIM(rows, single ? 0 : 1), d = PyArray_DIM(rows, single ? 1 : 2);
    if (n_layers < 1 || n_rows < 2 || n_rows % 2 != 0 || d < 1) {
        PyErr_Format(PyExc_ValueError,
                     "rows must hold >= 1 layer of an even number (>= 2) of interleaved positive/negative rows "
                     "of size >= 1, got %zd layer(s) x %zd row(s) x %zd",
                     (Py_ssize_t)n_layers, (Py_ssize_t)n_rows, (Py_ssize_t)d);
        goto error;
    }
    npy_intp ddims[2] = {n_layers, d}, idims[2] = {n_layers, 3};
    dirs = (PyArrayObject *)PyArray_SimpleNew(single ? 1 : 2, single ? ddims + 1 : ddims, NPY_FLOAT32);
    expl = (PyArrayObject *)PyArray_SimpleNew(single ? 0 : 1, ddims, NPY_FLOAT64);
    info_arr = (PyArrayObject *)PyArray_SimpleNew(single ? 1 : 2, single ? idims + 1 : idims, NPY_FLOAT64);
    info = PyMem_Malloc((size_t)n_layers * sizeof *info);
    if (!dirs || !expl || !info_arr) goto error;
    if (!info) { PyErr_NoMemory(); goto error; }
    const as_method_options_t opt = {normalize, l2, standardize};
    as_status st;
    int64_t failed = -1;
    const char *detail = NULL;
    Py_BEGIN_ALLOW_THREADS
    st = as_method_fit_layers_form((const float *)PyArray_DATA(rows), n_layers, n_rows / 2, d, method, &opt, form,
                                   (float *)PyArray_DATA(dirs), (double *)PyArray_DATA(expl), info, &failed, &detail);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        PyObject *exc = st == AS_ERR_NOMEM ? PyExc_MemoryError
                        : (st == AS_ERR_INVALID_ARG || st == AS_ERR_NONFINITE) ? PyExc_ValueError
                                                                              : PyExc_RuntimeError;
        PyObject *msg = PyUnicode_FromFormat("methods_fit(%s): layer position %lld: %s", method_s, (long long)failed,
                                             detail ? detail : as_status_message(st));
        if (msg) {
            PyObject *val = Py_BuildValue("(NL)", msg, (long long)failed);
            if (val) {
                PyErr_SetObject(exc, val);
                Py_DECREF(val);
            }
        }
        goto error;
    }
    double *io = (double *)PyArray_DATA(info_arr);
    for (npy_intp l = 0; l < n_layers; l++) {
        io[3 * l] = info[l].weight_scale;
        io[3 * l + 1] = info[l].intercept;
        io[3 * l + 2] = (double)info[l].iterations;
    }
    PyMem_Free(info);
    Py_DECREF(rows);
    return Py_BuildValue("(NNN)", dirs, expl, info_arr);
error:
    PyMem_Free(info);
    Py_XDECREF(rows);
    Py_XDECREF(dirs);
    Py_XDECREF(expl);
    Py_XDECREF(info_arr);
    return NULL;
}

/* ======================================================================== */
/*  Module                                                                  */
/* ======================================================================== */

static PyMethodDef core_methods[] = {
    /* version / status */
    {"version", py_version, METH_NOARGS, "version() -> str: the C core's version."},
    {"status_message", py_status_message, METH_O, "status_message(code) -> str"},
    /* linalg */
    {"gram_f32", py_gram_f32, METH_O, "gram_f32(x[n, d] float32) -> float32[d, d] = x.T @ x (OpenBLAS ssyrk)."},
    /* pca */
    {"pca_fit", (PyCFunction)(void (*)(void))py_pca_fit, METH_VARARGS | METH_KEYWORDS,
     "pca_fit(rows[L, 2P, D] or [2P, D] float32, method='pca_pairwise', n_components=1, projections=False) -> "
     "(components, explained, projections|None): exact steering PCA per layer (see as_pca.h)."},
    /* condsearch */
    {"condsearch_count", py_condsearch_count, METH_VARARGS,
     "condsearch_count(n_layers, max_combine) -> int: number of layer combinations of size 1..max_combine."},
    {"condsearch_grid", (PyCFunction)(void (*)(void))py_condsearch_grid, METH_VARARGS | METH_KEYWORDS,
     "condsearch_grid(sims[n, L] f64, labels[n] bool, max_combine, thresholds[T] f64, return_scores=False) -> dict "
     "columns, combo_index, threshold_index, threshold, direction, f1, tp, fp, scores ([n_combos, T, 2] or None)."},
    {"condsearch_exact", (PyCFunction)(void (*)(void))py_condsearch_exact, METH_VARARGS | METH_KEYWORDS,
     "condsearch_exact(sims[n, L] f64, labels[n] bool, max_combine, return_per_combo=False) -> dict "
     "as condsearch_grid (threshold_index -1), per_combo ([n_combos, 2, 2] (threshold, f1) or None)."},
    /* rules + plan */
    {"rules_compile", py_rules_compile, METH_VARARGS,
     "rules_compile(rules, n_conditions, n_behaviors) -> uint8[n_behaviors, 2**n_conditions] truth tables."},
    {"plan_compile", py_plan_compile, METH_VARARGS,
     "plan_compile(n_layers, hidden_size, vector_names, layer_names, n_avail, avail_layers, avail_sizes, avail_data, "
     "avail_evr, n_use, use_layers, scale, use_evr) -> (rows[U, D] float32, layer_offsets[L+1], layer_rows[U])."},
    /* extraction methods beyond PCA */
    {"methods_fit", (PyCFunction)(void (*)(void))py_methods_fit, METH_VARARGS | METH_KEYWORDS,
     "methods_fit(rows[L, 2P, D] or [2P, D] float32, method, normalize=True, probe_l2=1.0, probe_standardize=False, "
     "form=0) -> (directions float32 [L, D], explained float64 [L], info float64 [L, 3]): mean_diff / probe "
     "directions per layer (see as_methods.h)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "activation_steering._core",
    "activation_steering's C core (csrc/core) behind a thin CPython/NumPy binding.", -1, core_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    return PyModule_Create(&core_module);
}
