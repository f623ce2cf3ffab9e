"""The .svec file format (SPEC 3): plain JSON, readable by every implementation of this API.

    {"model_type": "llama",
     "directions": {"0": [0.0123, ...], "1": [...]},
     "explained_variances": {"0": 0.41, "1": 0.37}}

Writing: each float32 component is written as the shortest decimal of the
float64 holding it exactly (Python's repr), so reading it back and casting to
float32 gives the same bits. The file is written to a temporary name and then
renamed, so a crash never leaves a half-written .svec behind.

Reading never executes code (json only) and checks everything: valid UTF-8 JSON
object, the three keys, integer layer keys, numeric finite values, one direction
length for all layers, the same layers in both maps. Any problem is a ValueError
that names the file and the problem.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

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
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    raise ValueError(f"layer id {key!r} is not an int")


def save_svec(file_path, model_type: str, directions: dict, explained_variances: dict) -> str:
    """Validate and write a .svec file; returns the path written (parents created)."""
    path = svec_path(file_path)
    if not isinstance(model_type, str):
        raise TypeError(f"model_type must be a str, got {type(model_type).__name__}")
    if not directions:
        raise ValueError("cannot save a SteeringVector without directions")
    dirs: dict[str, list[float]] = {}
    dim = None
    for key, vec in directions.items():
        layer = _layer_key(key)
        arr = np.asarray(vec)
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"direction for layer {layer} must be a non-empty 1-D numeric array, got shape {arr.shape}")
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"direction for layer {layer} contains NaN or Inf")
        if dim is not None and arr.size != dim:
            raise ValueError(f"direction for layer {layer} has {arr.size} values, others have {dim}")
        dim = arr.size
        dirs[str(layer)] = [float(x) for x in arr]  # float32 -> float64 exact; repr round-trips
    if set(map(_layer_key, explained_variances)) != set(map(_layer_key, directions)):
        raise ValueError("explained_variances must have exactly the layers of directions")
    ev: dict[str, float] = {}
    for key, value in explained_variances.items():
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"explained variance for layer {key} is not finite")
        ev[str(_layer_key(key))] = v
    text = json.dumps({"model_type": model_type, "directions": dirs, "explained_variances": ev},
                      allow_nan=False, separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


class _Reject(Exception):
    pass


def _reject_constant(name: str):
    raise _Reject(f"contains {name}, which is not a finite number")


def _parse_layers(obj, what: str) -> dict[int, object]:
    if not isinstance(obj, dict):
        raise _Reject(f'"{what}" must be a JSON object mapping layer ids to values, got {type(obj).__name__}')
    out: dict[int, object] = {}
    for key, value in obj.items():
        k = key.strip()
        if not k or not (k.isdigit() or (k[0] == "-" and k[1:].isdigit())):
            raise _Reject(f'"{what}" has key {key!r}, which is not an integer layer id')
        layer = int(k)
        if layer in out:
            raise _Reject(f'"{what}" names layer {layer} twice')
        out[layer] = value
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_svec(file_path) -> tuple[str, dict[int, np.ndarray], dict[int, float]]:
    """(model_type, directions{int: float32[D]}, explained_variances{int: float}) from a .svec file."""
    path = svec_path(file_path)
    if not path.is_file():
        raise FileNotFoundError(f"no steering vector file at {str(path)!r}")
    try:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Reject(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            hint = " (the file looks truncated)" if exc.pos >= len(text.rstrip()) else ""
            raise _Reject(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}") from None
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
            if bad is not None or any(isinstance(v, bool) for v in values):
                raise _Reject(f"direction for layer {layer} holds a non-number ({bad!r:.40})")
            try:
                arr64 = np.asarray(values, dtype=np.float64)
            except OverflowError:
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
            if not _is_number(v) or not math.isfinite(float(v)):
                raise _Reject(f"explained variance for layer {layer} must be a finite number, got {v!r:.40}")
            explained[layer] = float(v)
    except _Reject as exc:
        raise ValueError(f"malformed steering vector file {str(path)!r}: {exc}") from None
    return model_type, directions, explained
