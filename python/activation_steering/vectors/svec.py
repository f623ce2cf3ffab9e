"""The .svec file format: plain JSON, readable by every implementation of this API.

    {"model_type": "llama",
     "directions": {"0": [0.0123, ...], "1": [...]},
     "explained_variances": {"0": 0.41, "1": 0.37},
     "provenance": {"model_id": "...", "hidden_size": 576, ...},     <- optional, ours
     "residual_norms": {"0": 2.8, "1": 44.6}}                       <- optional, ours

Writing: each float32 component is written as the shortest decimal of the
float64 holding it exactly (Python's repr), so reading it back and casting to
float32 gives the same bits. The file is written to a temporary name and then
renamed, so a crash never leaves a half-written .svec behind. Readers that know
only the first three keys ignore "provenance" and "residual_norms" (the median
residual-stream norm per layer at the decoder layer input, activations/norms.py;
absent in files written before it existed, which load with residual_norms None).

Reading never executes code (json only, through strict_json) and checks everything:
valid UTF-8 JSON object no deeper than 64 levels, no key twice in any object, no
integer longer than 40 digits and no number that overflows, the three keys, layer
keys of ASCII digits (optional '-') within +-1,000,000 and each layer once, numeric
finite float32 values, one direction length for all layers, the same layers in both
maps, provenance of str/int values, residual_norms (when present) a finite
positive number for exactly the directions' layers. Any problem is VectorFileError (a ValueError)
that names the file and the problem.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import VectorFileError
from .strict_json import JSONProblem, layer_id, strict_loads

SUFFIX = ".svec"
_F32_MAX = float(np.finfo(np.float32).max)


def svec_path(file_path: str | os.PathLike) -> Path:
    """`file_path` with ".svec" appended when it does not already end with it."""
    if not isinstance(file_path, (str, os.PathLike)):
        raise TypeError(f"file_path must be a str or path, got {type(file_path).__name__}")
    text = os.fspath(file_path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"file_path must be a non-empty text path, got {file_path!r}")
    return Path(text if text.endswith(SUFFIX) else text + SUFFIX)


def _layer_key(key) -> int:
    if isinstance(key, (bool, np.bool_)):
        raise ValueError(f"layer id {key!r} is not an int")
    if isinstance(key, (int, np.integer)):
        return int(key)
    if isinstance(key, str):
        try:
            return layer_id(key.strip())
        except JSONProblem:
            pass
    raise ValueError(f"layer id {key!r} is not an int")


def check_vector(model_type: str, directions: dict, explained_variances: dict) -> tuple[dict, dict]:
    """Validated {layer: float32[D]} and {layer: float}; ValueError/TypeError naming the problem."""
    if not isinstance(model_type, str):
        raise TypeError(f"model_type must be a str, got {type(model_type).__name__}")
    if not directions:
        raise ValueError("cannot save a SteeringVector without directions")
    dirs: dict[int, np.ndarray] = {}
    dim = None
    for key, vec in directions.items():
        layer = _layer_key(key)
        if layer in dirs:
            raise ValueError(f"directions names layer {layer} twice (keys {key!r} and another)")
        arr = np.asarray(vec)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"direction for layer {layer} must be a non-empty 1-D numeric array, got shape {arr.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"direction for layer {layer} contains NaN or Inf")
        if dim is not None and arr.size != dim:
            raise ValueError(f"direction for layer {layer} has {arr.size} values, others have {dim}")
        dim = arr.size
        dirs[layer] = arr
    ev: dict[int, float] = {}
    for key, value in explained_variances.items():
        layer = _layer_key(key)
        if layer in ev:
            raise ValueError(f"explained_variances names layer {layer} twice")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"explained variance for layer {key} is not finite")
        ev[layer] = v
    if set(ev) != set(dirs):
        raise ValueError("explained_variances must have exactly the layers of directions")
    return dirs, ev


def check_residual_norms(residual_norms, directions: dict) -> dict[int, float] | None:
    """None, or {layer: float} with a finite value > 0 for exactly the layers of `directions`
    (already checked); ValueError/TypeError naming the problem."""
    if residual_norms is None:
        return None
    if not isinstance(residual_norms, dict):
        raise TypeError(f"residual_norms must be a dict {{layer id: float}} or None, got {type(residual_norms).__name__}")
    out: dict[int, float] = {}
    for key, value in residual_norms.items():
        layer = _layer_key(key)
        if layer in out:
            raise ValueError(f"residual_norms names layer {layer} twice")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"residual norm for layer {layer} must be a number, got {type(value).__name__}")
        v = float(value)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"residual norm for layer {layer} must be finite and > 0, got {v!r}")
        out[layer] = v
    if set(out) != set(directions):
        raise ValueError(f"residual_norms must have exactly the layers of directions: {sorted(out)} vs "
                         f"{sorted(directions)} (set it to None when unknown)")
    return {k: out[k] for k in directions}


def write_svec(path: Path, model_type: str, directions: dict, explained_variances: dict,
               provenance: dict | None = None, residual_norms: dict | None = None) -> str:
    """Write checked data to `path` (atomically, parents created); returns the path."""
    dirs, ev = check_vector(model_type, directions, explained_variances)
    norms = check_residual_norms(residual_norms, dirs)
    data = {"model_type": model_type,
            "directions": {str(k): [float(x) for x in v] for k, v in dirs.items()},  # float32 -> float64 exact
            "explained_variances": {str(k): ev[k] for k in dirs}}
    if provenance:
        data["provenance"] = dict(provenance)
    if norms is not None:
        data["residual_norms"] = {str(k): norms[k] for k in dirs}
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


def save_svec(file_path, model_type: str, directions: dict, explained_variances: dict,
              provenance: dict | None = None) -> str:
    """Validate and write a .svec file (".svec" appended when missing); returns the path written."""
    return write_svec(svec_path(file_path), model_type, directions, explained_variances, provenance)


class _Reject(Exception):
    pass


def _parse_layers(obj, what: str) -> dict[int, object]:
    if not isinstance(obj, dict):
        raise _Reject(f'"{what}" must be a JSON object mapping layer ids to values, got {type(obj).__name__}')
    out: dict[int, object] = {}
    for key, value in obj.items():
        try:
            layer = layer_id(key)
        except JSONProblem as exc:
            raise _Reject(f'"{what}" {exc}') from None
        if layer in out:
            raise _Reject(f'"{what}" names layer {layer} twice')
        out[layer] = value
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_residual_norms(raw, layers) -> dict[int, float] | None:
    """residual_norms from a file's decoded JSON value (None: absent); raises _Reject.
    Shared by the .svec and .safetensors readers."""
    if raw is None:
        return None
    values = _parse_layers(raw, "residual_norms")
    if set(values) != set(layers):
        raise _Reject(f'"residual_norms" layers {sorted(values)} differ from "directions" layers {sorted(layers)}')
    out: dict[int, float] = {}
    for layer in layers:
        v = values[layer]
        try:
            ok = _is_number(v) and math.isfinite(float(v)) and float(v) > 0
        except OverflowError:
            ok = False
        if not ok:
            raise _Reject(f"residual norm for layer {layer} must be a finite number > 0, got {v!r:.40}")
        out[layer] = float(v)
    return out


def read_svec(path) -> tuple[str, dict[int, np.ndarray], dict[int, float], dict, dict[int, float] | None]:
    """(model_type, directions, explained_variances, provenance, residual_norms) from an existing .svec
    file; residual_norms is None when the file has none (older files)."""
    path = Path(path)
    try:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise _Reject(f"cannot be read ({exc.strerror or exc})") from None
        if not raw.strip():
            raise _Reject("is empty")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Reject(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            data = strict_loads(text)
        except JSONProblem as exc:
            raise _Reject(str(exc)) from None
        if not isinstance(data, dict):
            raise _Reject(f"must hold a JSON object, got {type(data).__name__}")
        missing = [k for k in ("model_type", "directions", "explained_variances") if k not in data]
        if missing:
            raise _Reject(f"is missing the key(s) {', '.join(repr(k) for k in missing)}")
        model_type = data["model_type"]
        if not isinstance(model_type, str):
            raise _Reject(f'"model_type" must be a string, got {type(model_type).__name__}')
        raw_dirs = _parse_layers(data["directions"], "directions")
        raw_ev = _parse_layers(data["explained_variances"], "explained_variances")
        if not raw_dirs:
            raise _Reject('"directions" is empty')
        directions: dict[int, np.ndarray] = {}
        dim = None
        for layer, values in raw_dirs.items():
            if not isinstance(values, list) or not values:
                raise _Reject(f"direction for layer {layer} must be a non-empty list of numbers")
            bad = next((v for v in values if not _is_number(v)), None)
            if bad is not None:
                raise _Reject(f"direction for layer {layer} holds a non-number ({bad!r:.40})")
            try:
                arr64 = np.asarray(values, dtype=np.float64)
            except (OverflowError, ValueError):
                raise _Reject(f"direction for layer {layer} holds a value that is not a finite float32") from None
            if not np.all(np.isfinite(arr64)) or np.any(np.abs(arr64) > _F32_MAX):
                raise _Reject(f"direction for layer {layer} holds a value that is not a finite float32")
            if dim is not None and arr64.size != dim:
                first = next(iter(directions))
                raise _Reject(f"directions are ragged: layer {layer} has {arr64.size} values, "
                              f"layer {first} has {dim}")
            dim = arr64.size
            directions[layer] = arr64.astype(np.float32)
        if set(raw_ev) != set(raw_dirs):
            raise _Reject(f'"explained_variances" layers {sorted(raw_ev)} differ from "directions" layers '
                          f"{sorted(raw_dirs)}")
        explained: dict[int, float] = {}
        for layer in raw_dirs:
            v = raw_ev[layer]
            try:
                ok = _is_number(v) and math.isfinite(float(v))
            except OverflowError:
                ok = False
            if not ok:
                raise _Reject(f"explained variance for layer {layer} must be a finite number, got {v!r:.40}")
            explained[layer] = float(v)
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise _Reject(f'"provenance" must be a JSON object, got {type(provenance).__name__}')
        from .provenance import clean

        try:
            provenance = clean(provenance, '"provenance"')
        except (TypeError, ValueError) as exc:
            raise _Reject(str(exc)) from None
        norms = parse_residual_norms(data.get("residual_norms"), list(directions))
    except _Reject as exc:
        raise VectorFileError(path, str(exc), "svec") from None
    return model_type, directions, explained, provenance, norms


def load_svec(file_path) -> tuple[str, dict[int, np.ndarray], dict[int, float]]:
    """(model_type, directions{int: float32[D]}, explained_variances{int: float}) from a .svec file."""
    path = svec_path(file_path)
    if not path.is_file():
        raise FileNotFoundError(f"no steering vector file at {str(path)!r}")
    model_type, directions, explained, _, _ = read_svec(path)
    return model_type, directions, explained
