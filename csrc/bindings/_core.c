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
 *   4. on failure hand the core's error record (as_core.h as_error_t) to
 *      raise_error(), the ONE status-to-exception translation; `goto error`
 *      releases everything.
 * The core never sees a Python object, this file holds no numerics, and it does
 * not re-validate what the core validates: it only converts objects to arrays
 * and checks what a conversion alone can tell (dimensions, lengths of arrays it
 * must allocate for).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>
#include <stdarg.h>

#include "as_core.h"

/* ======================================================================== */
/*  Shared helpers                                                          */
/* ======================================================================== */

/* THE translation of a core error record into a Python exception: the status
 * picks the class (ValueError for bad input, MemoryError, RuntimeError for a
 * solver failure), the message is the core's, and the record's fields become
 * attributes (status, argument, index, layer, position, reason) so callers can
 * act on them without reading the text. `subject` (may be NULL) is the text
 * argument a position points into (a rule): it is quoted before the message
 * and drawn again with a caret under the position. Always returns NULL. */
static PyObject *raise_error(const as_error_t *e, PyObject *subject) {
    PyObject *exc = PyExc_RuntimeError;
    switch (e->status) {
    case AS_ERR_INVALID_ARG:
    case AS_ERR_NONFINITE:
    case AS_ERR_PARSE:
    case AS_ERR_RANGE: exc = PyExc_ValueError; break;
    case AS_ERR_NOMEM: exc = PyExc_MemoryError; break;
    default: break;
    }
    PyObject *msg = NULL;
    if (subject && e->position >= 0 && e->argument) {
        char *caret = PyMem_Malloc((size_t)e->position + 2);
        if (!caret) return PyErr_NoMemory();
        memset(caret, ' ', (size_t)e->position);
        caret[e->position] = '^';
        caret[e->position + 1] = '\0';
        msg = PyUnicode_FromFormat("%s[%lld] %R %s\n    %U\n    %s", e->argument, (long long)e->index, subject,
                                   e->message, subject, caret);
        PyMem_Free(caret);
    } else {
        msg = PyUnicode_FromString(e->message[0] ? e->message : as_status_message(e->status));
    }
    if (!msg) return NULL;
    PyObject *val = PyObject_CallOneArg(exc, msg);
    Py_DECREF(msg);
    if (!val) return NULL;
    const char *names[6] = {"status", "argument", "index", "layer", "position", "reason"};
    PyObject *vals[6] = {PyLong_FromLong((long)e->status),
                         e->argument ? PyUnicode_FromString(e->argument) : Py_NewRef(Py_None),
                         PyLong_FromLongLong((long long)e->index), PyLong_FromLongLong((long long)e->layer),
                         PyLong_FromLongLong((long long)e->position),
                         PyUnicode_FromString(e->reason ? e->reason : as_status_message(e->status))};
    int ok = 1;
    for (int i = 0; i < 6; i++) {
        if (!vals[i] || (ok && PyObject_SetAttrString(val, names[i], vals[i]) < 0)) ok = 0;
        Py_XDECREF(vals[i]);
    }
    if (!ok) {
        Py_DECREF(val);
        return NULL;
    }
    PyErr_SetObject(exc, val);
    Py_DECREF(val);
    return NULL;
}

/* An error the binding itself finds while converting arguments goes through the
 * same translation. */
static PyObject *raise_arg(as_status st, const char *argument, const char *fmt, ...) {
    as_error_t e;
    va_list ap;
    va_start(ap, fmt);
    char buf[AS_ERROR_MESSAGE_SIZE];
    PyOS_vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    as_error_set(&e, st, argument, -1, -1, NULL, "%s", buf);
    return raise_error(&e, NULL);
}

/* Borrow `obj` as a C-contiguous, aligned array of `type` with `ndim` dims.
 * Returns a new reference or NULL with a ValueError naming `name`. */
static PyArrayObject *as_array(PyObject *obj, int type, int ndim, const char *name) {
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY(obj, type, ndim, ndim, NPY_ARRAY_IN_ARRAY);
    if (!arr) {
        PyErr_Clear();
        raise_arg(AS_ERR_INVALID_ARG, name, "%s must be convertible to a %d-D %s array", name, ndim,
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
        raise_arg(AS_ERR_INVALID_ARG, "x", "x must be non-empty, got shape (%zd, %zd)", (Py_ssize_t)n, (Py_ssize_t)d);
        goto error;
    }
    npy_intp dims[2] = {d, d};
    out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) goto error;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_linalg_gram_f32((const float *)PyArray_DATA(x), n, d, (float *)PyArray_DATA(out));
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_arg(st, "x", "gram_f32: %s", as_status_message(st));
        goto error;
    }
    Py_DECREF(x);
    return (PyObject *)out;
error:
    Py_XDECREF(x);
    Py_XDECREF(out);
    return NULL;
}

/* ======================================================================== */
/*  pca                                                                     */
/* ======================================================================== */

/* pca_fit(rows, method="pca_pairwise", n_components=1, projections=False)
 *   rows: float32 [L, 2P, D] (several layers, fitted independently in one
 *   GIL-free call) or [2P, D] (one layer; outputs then lose their L axis).
 *   -> (components float32 [L, k, D], explained float64 [L, k],
 *       projections float64 [L, 2P, k] or None).
 * A failure raises through raise_error: exc.index is the failing layer's
 * position in rows, exc.reason the core's sentence. */
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
        raise_arg(AS_ERR_INVALID_ARG, "method", "method must be 'pca_pairwise', 'pca_center' or 'pca_diff', got '%s'", s);
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
    if (n_components != 1 && n_components != 2) /* sizes the outputs: checked before allocating them */
        return raise_arg(AS_ERR_INVALID_ARG, "n_components", "n_components must be 1 or 2, got %d", n_components);
    rows = (PyArrayObject *)PyArray_FROMANY(rows_obj, NPY_FLOAT32, 2, 3, NPY_ARRAY_IN_ARRAY);
    if (!rows) {
        PyErr_Clear();
        raise_arg(AS_ERR_INVALID_ARG, "rows", "rows must be convertible to a float32 array of shape [2P, D] or [L, 2P, D]");
        goto error;
    }
    const int single = PyArray_NDIM(rows) == 2;
    const npy_intp n_layers = single ? 1 : PyArray_DIM(rows, 0);
    const npy_intp n_rows = PyArray_DIM(rows, single ? 0 : 1), d = PyArray_DIM(rows, single ? 1 : 2);
    if (n_layers < 1 || n_rows < 2 || n_rows % 2 != 0 || d < 1) {
        raise_arg(AS_ERR_INVALID_ARG, "rows",
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
    as_error_t e;
    Py_BEGIN_ALLOW_THREADS
    st = as_pca_fit_layers((const float *)PyArray_DATA(rows), n_layers, n_rows / 2, d, method, n_components,
                           (float *)PyArray_DATA(comp), (double *)PyArray_DATA(expl),
                           proj ? (double *)PyArray_DATA(proj) : NULL, &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_error(&e, NULL);
        goto error;
    }
    Py_DECREF(rows);
    if (!proj) proj = (PyArrayObject *)Py_NewRef(Py_None);
    return Py_BuildValue("(NNN)", comp, expl, proj);
error:
    Py_XDECREF(rows);
    Py_XDECREF(comp);
    Py_XDECREF(expl);
    Py_XDECREF(proj);
    return NULL;
}


/* ======================================================================== */
/*  condsearch                                                              */
/* ======================================================================== */

/* Conversion of the search's common inputs: sims[n, L] float64 and labels[n]
 * (bool or uint8). The core checks their values. New references, or -1. */
static int condsearch_inputs(PyObject *sims_obj, PyObject *labels_obj, PyArrayObject **sims, PyArrayObject **labels) {
    *sims = as_array(sims_obj, NPY_FLOAT64, 2, "sims");
    if (!*sims) return -1;
    *labels = (PyArrayObject *)PyArray_FROMANY(labels_obj, NPY_UINT8, 1, 1, NPY_ARRAY_IN_ARRAY);
    if (!*labels) {
        PyErr_Clear();
        raise_arg(AS_ERR_INVALID_ARG, "labels", "labels must be a 1-D bool or uint8 array (1 = positive string)");
        return -1;
    }
    if (PyArray_DIM(*labels, 0) != PyArray_DIM(*sims, 0)) {
        raise_arg(AS_ERR_INVALID_ARG, "labels", "labels has %zd entries but sims has %zd rows",
                  (Py_ssize_t)PyArray_DIM(*labels, 0), (Py_ssize_t)PyArray_DIM(*sims, 0));
        return -1;
    }
    return 0;
}

/* The number of combinations (sizes the optional score tables), or -1 with the
 * core's error raised. */
static int64_t condsearch_n_combos(int64_t n_layers, int64_t max_combine) {
    int64_t n_combos = 0;
    as_error_t e;
    if (as_condsearch_count_combos(n_layers, max_combine, AS_CONDSEARCH_MAX_COMBOS, &n_combos, &e) != AS_OK) {
        raise_error(&e, NULL);
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

/* layer_combination "or" / "and" -> its code. Any other value maps to -1, which the
 * core refuses through its error record (argument "layer_combination"). */
static int condsearch_combination(const char *name) {
    if (!name || strcmp(name, "or") == 0) return AS_COMBINE_OR;
    if (strcmp(name, "and") == 0) return AS_COMBINE_AND;
    return -1;
}

/* condsearch_count(n_layers, max_combine) -> int: sum_{r=1..max_combine} C(n_layers, r). */
static PyObject *py_condsearch_count(PyObject *self, PyObject *args) {
    long long n_layers, max_combine;
    if (!PyArg_ParseTuple(args, "LL:condsearch_count", &n_layers, &max_combine)) return NULL;
    int64_t n = condsearch_n_combos(n_layers, max_combine);
    return n < 0 ? NULL : PyLong_FromLongLong((long long)n);
}

/* condsearch_grid(sims[n, L] f64, labels[n] bool, max_combine, thresholds[T] f64,
 *                 return_scores=False) -> dict (see the method table). */
static PyObject *py_condsearch_grid(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"sims", "labels", "max_combine", "thresholds", "return_scores", "layer_combination", NULL};
    PyObject *sims_obj, *labels_obj, *thr_obj;
    long long max_combine;
    int return_scores = 0;
    const char *combination = NULL;
    PyArrayObject *sims = NULL, *labels = NULL, *thr = NULL, *scores = NULL;
    int64_t *cols = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOLO|p$s:condsearch_grid", kwlist, &sims_obj, &labels_obj,
                                     &max_combine, &thr_obj, &return_scores, &combination))
        return NULL;
    if (condsearch_inputs(sims_obj, labels_obj, &sims, &labels) < 0) goto error;
    thr = as_array(thr_obj, NPY_FLOAT64, 1, "thresholds");
    if (!thr) goto error;
    int64_t n = PyArray_DIM(sims, 0), L = PyArray_DIM(sims, 1), T = PyArray_DIM(thr, 0);
    if (return_scores) { /* the score table is sized by the combinations */
        int64_t n_combos = condsearch_n_combos(L, max_combine);
        if (n_combos < 0) goto error;
        if (T > 0 && n_combos > (int64_t)(NPY_MAX_INTP / 16) / T) {
            raise_arg(AS_ERR_NOMEM, "thresholds", "a score table of %lld combinations x %lld thresholds is too large",
                      (long long)n_combos, (long long)T);
            goto error;
        }
        npy_intp dims[3] = {(npy_intp)n_combos, (npy_intp)T, 2};
        scores = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT64);
        if (!scores) goto error;
    }
    cols = PyMem_Malloc((size_t)(max_combine > 0 ? max_combine : 1) * sizeof *cols);
    if (!cols) {
        PyErr_NoMemory();
        goto error;
    }
    as_condsearch_best_t best;
    as_error_t e;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_condsearch_grid((const double *)PyArray_DATA(sims), n, L, (const uint8_t *)PyArray_DATA(labels),
                            (int64_t)max_combine, (as_combination)condsearch_combination(combination),
                            (const double *)PyArray_DATA(thr), T, &best, cols,
                            scores ? (double *)PyArray_DATA(scores) : NULL, &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_error(&e, NULL);
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
    static char *kwlist[] = {"sims", "labels", "max_combine", "return_per_combo", "layer_combination", NULL};
    PyObject *sims_obj, *labels_obj;
    long long max_combine;
    int return_per_combo = 0;
    const char *combination = NULL;
    PyArrayObject *sims = NULL, *labels = NULL, *per = NULL;
    int64_t *cols = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOL|p$s:condsearch_exact", kwlist, &sims_obj, &labels_obj,
                                     &max_combine, &return_per_combo, &combination))
        return NULL;
    if (condsearch_inputs(sims_obj, labels_obj, &sims, &labels) < 0) goto error;
    int64_t n = PyArray_DIM(sims, 0), L = PyArray_DIM(sims, 1);
    if (return_per_combo) {
        int64_t n_combos = condsearch_n_combos(L, max_combine);
        if (n_combos < 0) goto error;
        npy_intp dims[3] = {(npy_intp)n_combos, 2, 2};
        per = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT64);
        if (!per) goto error;
    }
    cols = PyMem_Malloc((size_t)(max_combine > 0 ? max_combine : 1) * sizeof *cols);
    if (!cols) {
        PyErr_NoMemory();
        goto error;
    }
    as_condsearch_best_t best;
    as_error_t e;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_condsearch_exact((const double *)PyArray_DATA(sims), n, L, (const uint8_t *)PyArray_DATA(labels),
                             (int64_t)max_combine, (as_combination)condsearch_combination(combination), &best, cols,
                             per ? (double *)PyArray_DATA(per) : NULL, &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_error(&e, NULL);
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
/*  rules + plan                                                            */
/* ======================================================================== */

/* rules_compile(rules: sequence[str], n_conditions: int, n_behaviors: int)
 *   -> uint8 [n_behaviors, 2 ** n_conditions] truth tables (see as_rules.h).
 * A malformed rule raises ValueError quoting the rule, the character position
 * and a caret under the offending token. */
static PyObject *py_rules_compile(PyObject *self, PyObject *args) {
    PyObject *rules_obj = NULL, *seq = NULL;
    long long n_conditions = 0, n_behaviors = 0;
    const char **texts = NULL;
    int64_t *lengths = NULL;
    uint8_t *work = NULL;
    PyArrayObject *tables = NULL;
    if (!PyArg_ParseTuple(args, "OLL:rules_compile", &rules_obj, &n_conditions, &n_behaviors)) return NULL;
    if (PyUnicode_Check(rules_obj)) {
        PyErr_SetString(PyExc_TypeError, "rules must be a list of str (one rule per item), got a single str");
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
    /* The core checks the counts; the table it fills is sized from them only once they are sane. */
    const int counts_ok = n_conditions >= 0 && n_conditions <= AS_MAX_CONDITIONS && n_behaviors >= 1;
    const size_t n_masks = counts_ok ? (size_t)1 << n_conditions : 1;
    work = PyMem_Malloc(counts_ok ? (size_t)n_behaviors * n_masks : 1);
    if (!work) { PyErr_NoMemory(); goto error; }
    as_error_t e;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_rules_compile(texts, lengths, n, n_conditions, n_behaviors, work, &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_error(&e, e.position >= 0 && e.index >= 0 && e.index < n ? PySequence_Fast_GET_ITEM(seq, e.index) : NULL);
        goto error;
    }
    npy_intp dims[2] = {(npy_intp)n_behaviors, (npy_intp)n_masks};
    tables = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (!tables) goto error;
    memcpy(PyArray_DATA(tables), work, (size_t)n_behaviors * n_masks);
    PyMem_Free(work);
    PyMem_Free(texts);
    PyMem_Free(lengths);
    Py_DECREF(seq);
    return (PyObject *)tables;
error:
    PyMem_Free(work);
    PyMem_Free(texts);
    PyMem_Free(lengths);
    Py_XDECREF(seq);
    Py_XDECREF(tables);
    return NULL;
}

/* plan_compile(n_layers, hidden_size, behaviors, conditions, tables) -> dict
 *   behaviors[m]: None (no vector) or a vector tuple; conditions[n]: vector tuples;
 *   tables: uint8 [m, 2**n] (as rules_compile returns) or None (always on).
 *   A vector tuple is
 *     (name, layer_name, value_name, keys int64[A], directions [A] (anything
 *      numpy converts to float32), evr float64[A], has_evr uint8[A],
 *      use_layers int64[U], value (strength or threshold), use_evr, smaller, last)
 *   The result holds the per-layer tables of as_plan.h: cond_offsets [L+1],
 *   cond_rows [Uc, D] f32, cond_index [Uc], cond_thresholds [Uc] f32,
 *   cond_codes [Uc, 3], beh_offsets [L+1], beh_rows [Ub, D] f32, beh_index [Ub],
 *   beh_tables [Ub, S] u8, layer_gated [L] u8. Every check is the core's. */
typedef struct {
    PyObject *refs;            /* list keeping every converted array alive */
    as_plan_vector_t *vecs;
    int64_t n;
} plan_vectors_t;

static PyArrayObject *plan_keep(PyObject *refs, PyArrayObject *arr) {
    if (!arr) return NULL;
    if (PyList_Append(refs, (PyObject *)arr) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    Py_DECREF(arr); /* the list holds it */
    return arr;
}

static void *plan_alloc(PyObject *refs, size_t bytes) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(bytes > 0 ? bytes : 1));
    if (!b) return NULL;
    if (PyList_Append(refs, b) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    Py_DECREF(b);
    return PyBytes_AS_STRING(b);
}

/* Convert one vector tuple into *v (arrays kept alive by `refs`). */
static int plan_vector(PyObject *refs, PyObject *tup, const char *what, Py_ssize_t i, as_plan_vector_t *v) {
    PyObject *keys_o, *dirs_o, *evr_o, *has_o, *use_o;
    const char *name, *layer_name, *value_name;
    double value;
    int use_evr, smaller, last;
    memset(v, 0, sizeof *v);
    if (!PyTuple_Check(tup) ||
        !PyArg_ParseTuple(tup, "sssOOOOOdiii", &name, &layer_name, &value_name, &keys_o, &dirs_o, &evr_o, &has_o,
                          &use_o, &value, &use_evr, &smaller, &last)) {
        if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "plan_compile: %s[%zd] must be a 12-tuple (see the docstring)", what, i);
        }
        return -1;
    }
    PyArrayObject *keys = plan_keep(refs, as_array(keys_o, NPY_INT64, 1, "keys"));
    PyArrayObject *evr = keys ? plan_keep(refs, as_array(evr_o, NPY_FLOAT64, 1, "evr")) : NULL;
    PyArrayObject *has = evr ? plan_keep(refs, as_array(has_o, NPY_UINT8, 1, "has_evr")) : NULL;
    PyArrayObject *use = has ? plan_keep(refs, as_array(use_o, NPY_INT64, 1, "use_layers")) : NULL;
    if (!use) return -1;
    PyObject *dirs = PySequence_Fast(dirs_o, "directions must be a sequence");
    if (!dirs) return -1;
    const Py_ssize_t A = PySequence_Fast_GET_SIZE(dirs);
    if (PyList_Append(refs, dirs) < 0) { Py_DECREF(dirs); return -1; }
    Py_DECREF(dirs);
    if (PyArray_DIM(keys, 0) != A || PyArray_DIM(evr, 0) != A || PyArray_DIM(has, 0) != A) {
        raise_arg(AS_ERR_INVALID_ARG, name, "plan_compile: %s: keys, directions, evr and has_evr differ in length", name);
        return -1;
    }
    int64_t *ndim = plan_alloc(refs, (size_t)A * sizeof(int64_t));
    int64_t *shape = plan_alloc(refs, (size_t)A * 2 * sizeof(int64_t));
    const float **data = plan_alloc(refs, (size_t)A * sizeof(float *));
    if (!ndim || !shape || !data) return -1;
    const int64_t *kp = (const int64_t *)PyArray_DATA(keys);
    for (Py_ssize_t a = 0; a < A; a++) {
        PyArrayObject *d = (PyArrayObject *)PyArray_FROMANY(PySequence_Fast_GET_ITEM(dirs, a), NPY_FLOAT32, 0, 0,
                                                            NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
        if (!d) {
            PyErr_Clear();
            raise_arg(AS_ERR_INVALID_ARG, name, "%s: the direction for layer %lld is not a float array", name,
                      (long long)kp[a]);
            return -1;
        }
        if (!plan_keep(refs, d)) return -1;
        ndim[a] = PyArray_NDIM(d);
        shape[2 * a] = ndim[a] > 0 ? PyArray_DIM(d, 0) : -1;
        shape[2 * a + 1] = ndim[a] > 1 ? PyArray_DIM(d, 1) : -1;
        data[a] = (const float *)PyArray_DATA(d);
    }
    v->present = 1;
    v->name = name; /* owned by the tuple, which the caller's list keeps alive */
    v->layer_name = layer_name;
    v->value_name = value_name;
    v->n_avail = A;
    v->avail_layers = kp;
    v->avail_ndim = ndim;
    v->avail_shape = shape;
    v->avail_data = data;
    v->avail_evr = (const double *)PyArray_DATA(evr);
    v->avail_has_evr = (const uint8_t *)PyArray_DATA(has);
    v->n_use = PyArray_DIM(use, 0);
    v->use_layers = (const int64_t *)PyArray_DATA(use);
    v->scale = value;
    v->threshold = value;
    v->use_evr = use_evr != 0;
    v->smaller = smaller != 0;
    v->last = last != 0;
    return 0;
}

static int plan_vectors(PyObject *refs, PyObject *obj, const char *what, int allow_none, plan_vectors_t *out) {
    PyObject *seq = PySequence_Fast(obj, "plan_compile: behaviors and conditions must be lists");
    if (!seq) return -1;
    if (PyList_Append(refs, seq) < 0) { Py_DECREF(seq); return -1; }
    Py_DECREF(seq);
    out->n = PySequence_Fast_GET_SIZE(seq);
    out->vecs = plan_alloc(refs, (size_t)out->n * sizeof(as_plan_vector_t));
    if (!out->vecs) return -1;
    for (Py_ssize_t i = 0; i < out->n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (item == Py_None && allow_none) {
            memset(&out->vecs[i], 0, sizeof out->vecs[i]);
            continue;
        }
        if (plan_vector(refs, item, what, i, &out->vecs[i]) < 0) return -1;
    }
    return 0;
}

static PyObject *py_plan_compile(PyObject *self, PyObject *args) {
    long long n_layers = 0, hidden = 0;
    PyObject *beh_obj, *cond_obj, *tables_obj;
    PyObject *refs = NULL, *res = NULL;
    PyArrayObject *tables = NULL;
    PyArrayObject *o[10] = {NULL};
    if (!PyArg_ParseTuple(args, "LLOOO:plan_compile", &n_layers, &hidden, &beh_obj, &cond_obj, &tables_obj)) return NULL;
    if (n_layers < 1 || hidden < 1)
        return raise_arg(AS_ERR_INVALID_ARG, "n_layers", "n_layers and hidden_size must be >= 1, got %lld and %lld",
                         n_layers, hidden);
    refs = PyList_New(0);
    if (!refs) return NULL;
    plan_vectors_t beh = {0}, cond = {0};
    if (plan_vectors(refs, beh_obj, "behaviors", 1, &beh) < 0 || plan_vectors(refs, cond_obj, "conditions", 0, &cond) < 0)
        goto error;
    int64_t ub = 0, uc = 0;
    for (int64_t k = 0; k < beh.n; k++) ub += beh.vecs[k].present ? beh.vecs[k].n_use : 0;
    for (int64_t j = 0; j < cond.n; j++) uc += cond.vecs[j].n_use;
    npy_intp S = 1;
    if (tables_obj != Py_None) {
        tables = as_array(tables_obj, NPY_UINT8, 2, "tables");
        if (!tables) goto error;
        if (cond.n > AS_MAX_CONDITIONS || PyArray_DIM(tables, 0) != beh.n ||
            PyArray_DIM(tables, 1) != ((npy_intp)1 << cond.n)) {
            raise_arg(AS_ERR_INVALID_ARG, "tables",
                      "tables must be [len(behaviors), 2**len(conditions)] (as rules_compile returns) with at most %d "
                      "conditions, got (%zd, %zd) for %lld behaviour(s) and %lld condition(s)",
                      AS_MAX_CONDITIONS, (Py_ssize_t)PyArray_DIM(tables, 0), (Py_ssize_t)PyArray_DIM(tables, 1),
                      (long long)beh.n, (long long)cond.n);
            goto error;
        }
        S = PyArray_DIM(tables, 1);
    }
    const npy_intp L = (npy_intp)n_layers, D = (npy_intp)hidden;
    npy_intp d_off[1] = {L + 1}, d_crow[2] = {uc, D}, d_c[1] = {uc}, d_code[2] = {uc, 3}, d_brow[2] = {ub, D},
             d_b[1] = {ub}, d_tab[2] = {ub, S}, d_l[1] = {L};
    o[0] = (PyArrayObject *)PyArray_SimpleNew(1, d_off, NPY_INT64);
    o[1] = (PyArrayObject *)PyArray_SimpleNew(2, d_crow, NPY_FLOAT32);
    o[2] = (PyArrayObject *)PyArray_SimpleNew(1, d_c, NPY_INT64);
    o[3] = (PyArrayObject *)PyArray_SimpleNew(1, d_c, NPY_FLOAT32);
    o[4] = (PyArrayObject *)PyArray_SimpleNew(2, d_code, NPY_INT64);
    o[5] = (PyArrayObject *)PyArray_SimpleNew(1, d_off, NPY_INT64);
    o[6] = (PyArrayObject *)PyArray_SimpleNew(2, d_brow, NPY_FLOAT32);
    o[7] = (PyArrayObject *)PyArray_SimpleNew(1, d_b, NPY_INT64);
    o[8] = (PyArrayObject *)PyArray_SimpleNew(2, d_tab, NPY_UINT8);
    o[9] = (PyArrayObject *)PyArray_SimpleNew(1, d_l, NPY_UINT8);
    for (int i = 0; i < 10; i++)
        if (!o[i]) goto error;
    as_plan_input_t in = {
        .n_layers = n_layers, .hidden_size = hidden, .n_behaviors = beh.n, .behaviors = beh.vecs,
        .n_conditions = cond.n, .conditions = cond.vecs,
        .tables = tables ? (const uint8_t *)PyArray_DATA(tables) : NULL,
    };
    as_plan_t out = {
        .cond_offsets = PyArray_DATA(o[0]), .cond_rows = PyArray_DATA(o[1]), .cond_index = PyArray_DATA(o[2]),
        .cond_thresholds = PyArray_DATA(o[3]), .cond_codes = PyArray_DATA(o[4]), .beh_offsets = PyArray_DATA(o[5]),
        .beh_rows = PyArray_DATA(o[6]), .beh_index = PyArray_DATA(o[7]), .beh_tables = PyArray_DATA(o[8]),
        .layer_gated = PyArray_DATA(o[9]),
    };
    as_error_t e;
    as_status st;
    Py_BEGIN_ALLOW_THREADS
    st = as_plan_compile(&in, &out, &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_error(&e, NULL);
        goto error;
    }
    /* Rows beyond the counts written (layers repeated by one vector) are cut off. */
    static const char *keys[10] = {"cond_offsets", "cond_rows", "cond_index", "cond_thresholds", "cond_codes",
                                   "beh_offsets", "beh_rows", "beh_index", "beh_tables", "layer_gated"};
    res = PyDict_New();
    if (!res) goto error;
    for (int i = 0; i < 10; i++) {
        PyObject *val = (PyObject *)o[i];
        const int is_cond = i >= 1 && i <= 4, is_beh = i >= 6 && i <= 8;
        if (is_cond || is_beh) {
            PyObject *stop = PyLong_FromLongLong((long long)(is_cond ? out.n_cond_rows : out.n_beh_rows));
            PyObject *sl = stop ? PySlice_New(NULL, stop, NULL) : NULL;
            Py_XDECREF(stop);
            val = sl ? PyObject_GetItem((PyObject *)o[i], sl) : NULL;
            Py_XDECREF(sl);
            if (!val) goto error;
            PyObject *copy = PyArray_NewCopy((PyArrayObject *)val, NPY_CORDER);
            Py_DECREF(val);
            if (!copy) goto error;
            val = copy;
        } else {
            Py_INCREF(val);
        }
        int rc = PyDict_SetItemString(res, keys[i], val);
        Py_DECREF(val);
        if (rc < 0) goto error;
    }
    for (int i = 0; i < 10; i++) Py_DECREF(o[i]);
    Py_XDECREF(tables);
    Py_DECREF(refs);
    return res;
error:
    for (int i = 0; i < 10; i++) Py_XDECREF(o[i]);
    Py_XDECREF(tables);
    Py_XDECREF(refs);
    Py_XDECREF(res);
    return NULL;
}

/* ======================================================================== */
/*  extraction methods beyond PCA: mean_diff, probe (as_methods.h)          */
/* ======================================================================== */

/* methods_fit(rows, method, normalize=True, probe_l2=1.0, probe_standardize=False, form=0)
 *   rows: float32 [L, 2P, D] or [2P, D] (interleaved positive/negative rows).
 *   -> (directions float32 [L, D], explained float64 [L],
 *       info float64 [L, 3] = (weight_scale, intercept, iterations))
 *   (the L axis is dropped for a 2-D input). A failure raises through
 *   raise_error, like pca_fit: exc.index is the failing layer's position. */
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
    as_error_t e;
    Py_BEGIN_ALLOW_THREADS
    st = as_method_fit_layers_form((const float *)PyArray_DATA(rows), n_layers, n_rows / 2, d, method, &opt, form,
                                   (float *)PyArray_DATA(dirs), (double *)PyArray_DATA(expl), info, &e);
    Py_END_ALLOW_THREADS
    if (st != AS_OK) {
        raise_error(&e, NULL);
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
     "(components, explained, projections|None): exact steering PCA per layer (see as_pca.h). Errors carry "
     ".index (the failing layer's position in rows) and .reason."},
    /* condsearch */
    {"condsearch_count", py_condsearch_count, METH_VARARGS,
     "condsearch_count(n_layers, max_combine) -> int: number of layer combinations of size 1..max_combine."},
    {"condsearch_grid", (PyCFunction)(void (*)(void))py_condsearch_grid, METH_VARARGS | METH_KEYWORDS,
     "condsearch_grid(sims[n, L] f64, labels[n] bool, max_combine, thresholds[T] f64, return_scores=False, *, "
     "layer_combination='or'|'and') -> dict "
     "columns, combo_index, threshold_index, threshold, direction, f1, tp, fp, scores ([n_combos, T, 2] or None)."},
    {"condsearch_exact", (PyCFunction)(void (*)(void))py_condsearch_exact, METH_VARARGS | METH_KEYWORDS,
     "condsearch_exact(sims[n, L] f64, labels[n] bool, max_combine, return_per_combo=False, *, "
     "layer_combination='or'|'and') -> dict "
     "as condsearch_grid (threshold_index -1), per_combo ([n_combos, 2, 2] (threshold, f1) or None)."},
    /* rules + plan */
    {"rules_compile", py_rules_compile, METH_VARARGS,
     "rules_compile(rules, n_conditions, n_behaviors) -> uint8[n_behaviors, 2**n_conditions] truth tables."},
    {"plan_compile", py_plan_compile, METH_VARARGS,
     "plan_compile(n_layers, hidden_size, behaviors, conditions, tables) -> dict of per-layer tables: "
     "cond_offsets, cond_rows, cond_index, cond_thresholds, cond_codes, beh_offsets, beh_rows, beh_index, "
     "beh_tables, layer_gated (see as_plan.h). A vector is None (behaviours only) or the tuple (name, layer_name, "
     "value_name, keys, directions, evr, has_evr, use_layers, value, use_evr, smaller, last)."},
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
    PyObject *m = PyModule_Create(&core_module);
    if (m && PyModule_AddIntConstant(m, "MAX_CONDITIONS", AS_MAX_CONDITIONS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
