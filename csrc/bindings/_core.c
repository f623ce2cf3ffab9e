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

/* ======================================================================== */
/*  condsearch (find_best_condition_point issue)                            */
/* ======================================================================== */

/* ======================================================================== */
/*  rules + plan (steering runtime issue)                                   */
/* ======================================================================== */

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
    /* condsearch */
    /* rules + plan */
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
