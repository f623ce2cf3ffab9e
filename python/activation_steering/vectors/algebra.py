"""Vector algebra on SteeringVectors: a + b, a - b, -a, k * a, a / k, layer selection, normalise, cast.

The rules (docs/formats.md, "Algebra"):
- Operands must come from the same model family: equal model_type and hidden size (and equal
  provenance n_layers when both record it), else ValueError naming what differs.
- Layer sets: the UNION, a layer missing from one operand counting as zero (repeng's rule),
  so `a + b` steers at every layer either steers at. Order: a's layers, then b's new ones.
- Directions are combined in float32 exactly as written (no renormalisation): steering adds
  strength x the direction AS STORED, so 2 * a at strength 1 is a at strength 2.
  `normalized()` is the explicit way back to unit directions.
- Explained variances are PCA statistics of the operands, not of the result. Scaling (k * a,
  -a, a / k, normalized, to, layer selection) keeps them (PC1's variance ratio does not depend
  on scale or sign). A sum or difference keeps, per layer, the larger of the operands' values
  (an operand without the layer contributes nothing): an upper bound that keeps
  `use_explained_variance=True` meaningful, not a fitted number.
- Provenance: model fields are kept where all operands agree, `formula` records the expression,
  and `method` is kept only when every operand has the same one.
- Residual norms (SteeringVector.residual_norms) describe the MODEL's residual stream at each
  layer's input, not the vector, so they never scale: k * a, -a, a / k, normalized, to keep
  them; layer selection keeps those of the selected layers. a + b and a - b: per layer of the
  union, the mean of the operands' values at that layer (two measurements of the same stream
  on different strings; a missing layer or operand contributes nothing); the result has None
  when any of its layers has no value from either operand (a partial map would make
  strength_unit="residual_norm" fail on some layers only).
Any non-finite result raises ValueError. This module does not train or steer.
"""
from __future__ import annotations

import numbers

import numpy as np

from .provenance import MODEL_FIELDS

_STRICT_FIELDS = ("model_type", "hidden_size", "n_layers")


def _dim(vec) -> int | None:
    for d in vec.directions.values():
        return int(np.asarray(d).shape[0])
    return None


def _label(vec) -> str:
    p = vec.provenance or {}
    return p.get("formula") or p.get("method") or "v"


def check_compatible(a, b, op: str) -> None:
    """Raise ValueError naming what differs when a and b cannot be combined."""
    if a.model_type != b.model_type:
        raise ValueError(f"cannot compute a {op} b: model_type {a.model_type!r} vs {b.model_type!r} "
                         "(vectors from different model families)")
    da, db = _dim(a), _dim(b)
    if da is not None and db is not None and da != db:
        raise ValueError(f"cannot compute a {op} b: hidden size {da} vs {db}")
    pa, pb = a.provenance or {}, b.provenance or {}
    for field in _STRICT_FIELDS:
        if field in pa and field in pb and pa[field] != pb[field]:
            raise ValueError(f"cannot compute a {op} b: provenance {field} {pa[field]!r} vs {pb[field]!r}")


def _finite(directions: dict, what: str) -> dict:
    for layer, d in directions.items():
        if not np.all(np.isfinite(d)):
            raise ValueError(f"{what} overflows at layer {layer} (NaN or Inf in the result)")
    return directions


def _merged_provenance(vectors, formula: str) -> dict:
    provs = [v.provenance or {} for v in vectors]
    out = {}
    for field in MODEL_FIELDS + ("read_site", "add_site", "format_version"):
        values = {p.get(field) for p in provs}
        if len(values) == 1 and None not in values:
            out[field] = values.pop()
    methods = {p.get("method") for p in provs}
    if len(methods) == 1 and None not in methods:
        out["method"] = methods.pop()
    out["formula"] = formula[:4096]
    return out


def combine(a, b, sign: int):
    """a + b (sign=+1) or a - b (sign=-1), layer-set union with missing = 0."""
    op = "+" if sign > 0 else "-"
    check_compatible(a, b, op)
    dim = _dim(a) or _dim(b)
    layers = list(a.directions) + [k for k in b.directions if k not in a.directions]
    zero = np.zeros(dim, np.float32)
    dirs = {}
    for k in layers:
        x = np.asarray(a.directions.get(k, zero), dtype=np.float32)
        y = np.asarray(b.directions.get(k, zero), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            dirs[k] = x + y if sign > 0 else x - y
    ev = {}
    for k in layers:
        vals = [float(v.explained_variances[k]) for v in (a, b) if k in v.directions and k in v.explained_variances]
        ev[k] = max(vals) if vals else 0.0
    prov = _merged_provenance([a, b], f"({_label(a)}) {op} ({_label(b)})")
    return type(a)(model_type=a.model_type, directions=_finite(dirs, f"a {op} b"), explained_variances=ev,
                   provenance=prov, residual_norms=_merged_norms([a, b], layers))


def _norms_of(vec) -> dict | None:
    return getattr(vec, "residual_norms", None)


def _merged_norms(vectors, layers) -> dict | None:
    """Per layer the mean of the operands' residual norms there; None if a layer has none."""
    out = {}
    for k in layers:
        vals = [float(n[k]) for n in map(_norms_of, vectors) if n is not None and k in n]
        if not vals:
            return None
        out[k] = sum(vals) / len(vals)
    return out


def _kept_norms(a, layers=None) -> dict | None:
    """a's residual norms (of `layers` only, when given); None when a has none."""
    norms = _norms_of(a)
    if norms is None:
        return None
    keys = list(a.directions) if layers is None else list(layers)
    if any(k not in norms for k in keys):
        return None
    return {k: float(norms[k]) for k in keys}


def check_scalar(k, what: str) -> float:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Real):
        raise TypeError(f"{what} needs a real number, got {type(k).__name__}")
    k = float(k)
    if not np.isfinite(k):
        raise ValueError(f"{what} needs a finite number, got {k}")
    return k


def scale(a, k: float, formula: str):
    """k * a (directions multiplied in float32; explained variances kept)."""
    f = np.float32(k)
    with np.errstate(over="ignore", invalid="ignore"):
        dirs = {layer: np.asarray(d, dtype=np.float32) * f for layer, d in a.directions.items()}
    prov = dict(a.provenance or {})
    prov["formula"] = formula[:4096]
    return type(a)(model_type=a.model_type, directions=_finite(dirs, formula),
                   explained_variances=dict(a.explained_variances), provenance=prov, residual_norms=_kept_norms(a))


def negate(a):
    dirs = {layer: -np.asarray(d, dtype=np.float32) for layer, d in a.directions.items()}
    prov = dict(a.provenance or {})
    prov["formula"] = f"-({_label(a)})"[:4096]
    return type(a)(model_type=a.model_type, directions=dirs, explained_variances=dict(a.explained_variances),
                   provenance=prov, residual_norms=_kept_norms(a))


def divide(a, k: float):
    if k == 0.0:
        raise ZeroDivisionError("cannot divide a steering vector by 0")
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        dirs = {layer: np.asarray(d, dtype=np.float32) / np.float32(k) for layer, d in a.directions.items()}
    prov = dict(a.provenance or {})
    prov["formula"] = f"({_label(a)}) / {k!r}"[:4096]
    return type(a)(model_type=a.model_type, directions=_finite(dirs, f"a / {k!r}"),
                   explained_variances=dict(a.explained_variances), provenance=prov, residual_norms=_kept_norms(a))


def select(a, layer_ids):
    """The vector restricted to `layer_ids` (in that order); a missing layer raises KeyError naming it."""
    if isinstance(layer_ids, (int, np.integer)) and not isinstance(layer_ids, bool):
        layer_ids = [layer_ids]
    try:
        ids = list(layer_ids)
    except TypeError:
        raise TypeError(f"layers() needs a list of layer ids, got {type(layer_ids).__name__}") from None
    for k in ids:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"layer ids must be ints, got {k!r}")
    ids = [int(k) for k in ids]
    if len(set(ids)) != len(ids):
        raise ValueError(f"layers() got a layer id twice: {ids}")
    missing = [k for k in ids if k not in a.directions]
    if missing:
        raise KeyError(f"the vector has no direction for layer(s) {missing}; it has {list(a.directions)}")
    if not ids:
        raise ValueError("layers() needs at least one layer id")
    return type(a)(model_type=a.model_type, directions={k: a.directions[k] for k in ids},
                   explained_variances={k: a.explained_variances[k] for k in ids if k in a.explained_variances},
                   provenance=dict(a.provenance or {}), residual_norms=_kept_norms(a, ids))


def slice_layers(a, sl: slice):
    """Layers whose ids fall in range(start, stop, step) (ids, not positions); None = unbounded."""
    step = 1 if sl.step is None else sl.step
    if step == 0:
        raise ValueError("slice step cannot be zero")
    have = list(a.directions)
    if step > 0:
        lo = sl.start if sl.start is not None else min(have)
        hi = sl.stop if sl.stop is not None else max(have) + 1
    else:
        lo = sl.start if sl.start is not None else max(have)
        hi = sl.stop if sl.stop is not None else min(have) - 1
    wanted = range(int(lo), int(hi), int(step))
    ids = [k for k in sorted(have, reverse=step < 0) if k in wanted]
    if not ids:
        raise KeyError(f"no layer of the vector falls in {sl}; it has {list(a.directions)}")
    return select(a, ids)


def normalized(a):
    dirs = {}
    for layer, d in a.directions.items():
        x = np.asarray(d, dtype=np.float64)
        n = float(np.linalg.norm(x))
        if not n > 0.0:
            raise ValueError(f"cannot normalise layer {layer}: its direction is all zeros")
        dirs[layer] = (x / n).astype(np.float32)
    prov = dict(a.provenance or {})
    prov["formula"] = f"normalized({_label(a)})"[:4096]
    return type(a)(model_type=a.model_type, directions=dirs, explained_variances=dict(a.explained_variances),
                   provenance=prov, residual_norms=_kept_norms(a))


def cast(a, dtype):
    """Directions as numpy `dtype` (numpy or torch float dtypes, or their names)."""
    name = str(dtype)
    if name.startswith("torch."):
        name = {"float": "float32", "half": "float16", "double": "float64"}.get(name[6:], name[6:])
        dtype = name
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"to() needs a float dtype (float16, float32, float64), got {dtype!r}") from None
    if np_dtype.kind != "f":
        raise TypeError(f"to() needs a float dtype (float16, float32, float64), got {dtype!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        dirs = {layer: np.asarray(d).astype(np_dtype) for layer, d in a.directions.items()}
    _finite(dirs, f"to({name})")
    return type(a)(model_type=a.model_type, directions=dirs, explained_variances=dict(a.explained_variances),
                   provenance=dict(a.provenance or {}), residual_norms=_kept_norms(a))


__all__ = ["combine", "scale", "negate", "divide", "select", "slice_layers", "normalized", "cast",
           "check_compatible", "check_scalar"]
