"""Steering vectors as safetensors: one float32 tensor per layer plus string metadata.

    tensors:  "layers.<id>"  float32 [hidden_size]   (id = our layer id, may be negative)
    metadata: format = "activation_steering.steering_vector", format_version = "1",
              model_type, explained_variances (JSON {"<id>": float}), provenance (JSON),
              layer_convention (read at a decoder layer's output, added at its input),
              residual_norms (JSON {"<id>": float}; only when the vector has them; older
              files without it load with residual_norms None)

safetensors files hold only a JSON header and raw little-endian numbers, so loading never
executes code; the header is parsed by the safetensors library and our metadata strings by
a strict JSON reader. Every problem becomes VectorFileError naming the file. Other
safetensors files (model weights, LoRA adapters) are refused, not guessed at.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import VectorFileError
from .strict_json import JSONProblem, layer_id, strict_loads

FORMAT = "activation_steering.steering_vector"
FORMAT_VERSION = "1"
LAYER_CONVENTION = ("layers.<i>: read at the output of decoder layer i, added to the input of decoder layer i "
                    "(strength x direction, as stored)")
_NAME = re.compile(r"layers\.(-?[0-9]{1,9})", re.ASCII)


def write_safetensors(path: str | os.PathLike, model_type: str, directions: dict, explained_variances: dict,
                      provenance: dict, residual_norms: dict | None = None) -> str:
    """Write the file (atomically, parents created); returns the path written."""
    from safetensors.numpy import save

    path = Path(os.fspath(path))
    tensors = {f"layers.{int(k)}": np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in directions.items()}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": model_type,
        "layer_order": json.dumps([int(k) for k in directions]),
        "explained_variances": json.dumps({str(int(k)): float(v) for k, v in explained_variances.items()},
                                          allow_nan=False),
        "provenance": json.dumps(provenance, sort_keys=True),
        "layer_convention": LAYER_CONVENTION,
    }
    if residual_norms is not None:
        metadata["residual_norms"] = json.dumps({str(int(k)): float(v) for k, v in residual_norms.items()},
                                                allow_nan=False)
    blob = save(tensors, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


def read_safetensors(path: str | os.PathLike
                     ) -> tuple[str, dict[int, np.ndarray], dict[int, float], dict, dict[int, float] | None]:
    """(model_type, directions, explained_variances, provenance, residual_norms) from our safetensors
    file; residual_norms is None when the file has none."""
    from safetensors import safe_open

    def bad(problem: str) -> VectorFileError:
        return VectorFileError(path, problem, "safetensors")

    raw: dict[int, np.ndarray] = {}
    try:
        with safe_open(os.fspath(path), framework="np") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise bad(f"its metadata 'format' is {metadata.get('format')!r:.60}, not {FORMAT!r}: "
                          "not a steering vector written by this package (model weights? an adapter?)")
            names = list(f.keys())
            for name in names:
                m = _NAME.fullmatch(name)
                if m is None:
                    raise bad(f"tensor {name!r:.80} is not named layers.<id>")
                layer = layer_id(m.group(1))
                if layer in raw:
                    raise bad(f"names layer {layer} twice")
                sl = f.get_slice(name)
                dtype = sl.get_dtype()
                shape = list(sl.get_shape())
                if dtype != "F32":
                    raise bad(f"tensor {name} has dtype {dtype}, not F32")
                if len(shape) != 1 or shape[0] == 0:
                    raise bad(f"tensor {name} has shape {shape}, not [hidden_size]")
                raw[layer] = np.array(f.get_tensor(name), dtype=np.float32, copy=True)
    except VectorFileError:
        raise
    except JSONProblem as exc:
        raise bad(f"tensor name {exc}") from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises SafetensorError / OSError on damaged headers and data
        raise bad(f"is not a readable safetensors file ({type(exc).__name__}: {str(exc)[:200]})") from None

    if not raw:
        raise bad("holds no direction tensors")
    dims = {v.size for v in raw.values()}
    if len(dims) != 1:
        raise bad(f"directions are ragged: sizes {sorted(dims)}")
    for layer, vec in raw.items():
        if not np.all(np.isfinite(vec)):
            raise bad(f"the direction for layer {layer} holds NaN or Inf")
    model_type = metadata.get("model_type")
    if not isinstance(model_type, str):
        raise bad("is missing the metadata key 'model_type'")
    try:
        order = strict_loads(metadata.get("layer_order", "null"))
        ev_raw = strict_loads(metadata["explained_variances"]) if "explained_variances" in metadata else None
        prov = strict_loads(metadata.get("provenance", "{}"))
        norms_raw = strict_loads(metadata["residual_norms"]) if "residual_norms" in metadata else None
    except JSONProblem as exc:
        raise bad(f"metadata {exc}") from None
    if ev_raw is None:
        raise bad("is missing the metadata key 'explained_variances'")
    if not isinstance(ev_raw, dict):
        raise bad("metadata 'explained_variances' must be a JSON object {layer: float}")
    try:
        ev = {}
        for key, value in ev_raw.items():
            layer = layer_id(key)
            if layer in ev:
                raise bad(f"metadata 'explained_variances' names layer {layer} twice")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(f"explained variance for layer {layer} is not a number")
            ev[layer] = float(value)
    except JSONProblem as exc:
        raise bad(f"metadata 'explained_variances' {exc}") from None
    if set(ev) != set(raw):
        raise bad(f"explained_variances layers {sorted(ev)} differ from tensor layers {sorted(raw)}")
    if isinstance(order, list) and sorted(order) == sorted(raw) and all(isinstance(x, int) for x in order):
        layers = list(order)
    else:
        layers = sorted(raw)
    if not isinstance(prov, dict):
        raise bad("metadata 'provenance' must be a JSON object")
    from .provenance import clean

    try:
        prov = clean(prov, "provenance")
    except (TypeError, ValueError) as exc:
        raise bad(f"metadata {exc}") from None
    from .svec import _Reject, parse_residual_norms

    try:
        norms = parse_residual_norms(norms_raw, layers)
    except _Reject as exc:
        raise bad(f"metadata {exc}") from None
    return model_type, {k: raw[k] for k in layers}, {k: ev[k] for k in layers}, prov, norms


__all__ = ["write_safetensors", "read_safetensors", "FORMAT"]
