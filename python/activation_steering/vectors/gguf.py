"""llama.cpp control vectors (GGUF): write them as llama.cpp reads them, read theirs back.

What llama.cpp reads (its common library's control-vector loader and llama_adapter_cvec):
every tensor must be named `direction.K` with an integer K >= 1, be 1-D float32 and have
the model's hidden size; anything else makes the loader skip the whole file. It reads no
metadata. Its graph adds `direction.K` (times the `--control-vector-scaled` scale) to the
OUTPUT of block K, for K = 1 .. n_layer-1 (there is no slot for K = 0).

Layer mapping (docs/formats.md): this package adds a vector's layer i to the INPUT of
decoder layer i, which is the output of block i-1. So our layer i <-> `direction.(i-1)`:
- our layers 0 (the embeddings) and 1 (block 0's output, K = 0) cannot be expressed and are
  left out of an exported file, with a warning naming them;
- `direction.(L-1)` (the last block's output, before the final norm; llama.cpp's
  cvector-generator and repeng write it) is the input of no decoder layer: importing drops it
  with a warning naming it.
Strength: a direction is stored as it is (never multiplied by a strength): steering here with
`behavior_vector_strength=s` equals llama.cpp's `--control-vector-scaled FILE:s`.

Everything else (our layer ids, explained variances, residual norms, provenance) goes into metadata keys
under `activation_steering.`, never into tensors, so llama.cpp still loads the file. Files
are read with the `gguf` package's reader; every problem becomes VectorFileError naming
the file. This is not a reader for model GGUFs.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from .errors import VectorFileError

ARCH = "controlvector"
PREFIX = "activation_steering."
KEY_MODEL_HINT = f"{ARCH}.model_hint"
KEY_LAYER_COUNT = f"{ARCH}.layer_count"
KEY_FORMAT = PREFIX + "format_version"
KEY_MODEL_TYPE = PREFIX + "model_type"
KEY_LAYERS = PREFIX + "layers"
KEY_EV = PREFIX + "explained_variances"
KEY_NORMS = PREFIX + "residual_norms"
KEY_PROV = PREFIX + "provenance."
KEY_MAPPING = PREFIX + "layer_mapping"
MAPPING_TEXT = ("direction.K is added to the output of block K = the input of decoder layer K+1 "
                "(activation_steering layer id K+1)")
FORMAT_VERSION = 1
_DIRECTION = re.compile(r"direction\.([0-9]{1,6})", re.ASCII)


def _resolve_layers(directions: dict, n_layers: int | None, path) -> list[tuple[int, np.ndarray]]:
    out = []
    for key, vec in directions.items():
        layer = int(key)
        if layer < 0:
            if not n_layers:
                raise ValueError(f"{path}: layer id {layer} counts from the end, but the vector does not record "
                                 "its model's number of layers (provenance['n_layers']); use non-negative layer "
                                 "ids (e.g. vector.layers(...) after renumbering) to export it as GGUF")
            layer += n_layers
        out.append((layer, vec))
    return out


def write_gguf(path: str | os.PathLike, model_type: str, directions: dict, explained_variances: dict,
               provenance: dict, residual_norms: dict | None = None) -> str:
    """Write a llama.cpp control vector; returns the path written. Layers 0 and 1 are left out (warned)."""
    import gguf

    path = Path(os.fspath(path))
    n_layers = provenance.get("n_layers")
    resolved = _resolve_layers(directions, n_layers, path)
    dropped = sorted(layer for layer, _ in resolved if layer < 2)
    kept = sorted((layer, vec) for layer, vec in resolved if layer >= 2)
    if dropped:
        warnings.warn(f"{path}: our layer(s) {dropped} cannot be expressed in a llama.cpp control vector "
                      "(llama.cpp adds direction.K to block K's output with K >= 1, i.e. our layer K+1 >= 2); "
                      "they were left out of the file", UserWarning, stacklevel=3)
    if not kept:
        raise ValueError(f"{path}: nothing to write: a llama.cpp control vector can only hold layers >= 2, "
                         f"this vector has {sorted(layer for layer, _ in resolved)}")
    ev_by_layer = {}
    for key, value in explained_variances.items():
        layer = int(key)
        ev_by_layer[layer + n_layers if layer < 0 and n_layers else layer] = float(value)
    norm_by_layer = {}
    for key, value in (residual_norms or {}).items():
        layer = int(key)
        norm_by_layer[layer + n_layers if layer < 0 and n_layers else layer] = float(value)

    writer = gguf.GGUFWriter(None, ARCH)
    writer.add_string(KEY_MODEL_HINT, model_type or "unknown")
    writer.add_int32(KEY_LAYER_COUNT, len(kept))
    writer.add_uint32(KEY_FORMAT, FORMAT_VERSION)
    writer.add_string(KEY_MAPPING, MAPPING_TEXT)
    if model_type:
        writer.add_string(KEY_MODEL_TYPE, model_type)
    writer.add_key_value(KEY_LAYERS, [int(layer) for layer, _ in kept], gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.INT32)
    if all(layer in ev_by_layer for layer, _ in kept):
        writer.add_key_value(KEY_EV, [ev_by_layer[layer] for layer, _ in kept], gguf.GGUFValueType.ARRAY,
                             sub_type=gguf.GGUFValueType.FLOAT64)
    if residual_norms is not None and all(layer in norm_by_layer for layer, _ in kept):
        writer.add_key_value(KEY_NORMS, [norm_by_layer[layer] for layer, _ in kept], gguf.GGUFValueType.ARRAY,
                             sub_type=gguf.GGUFValueType.FLOAT64)
    for key, value in sorted(provenance.items()):
        if isinstance(value, str):
            if value:
                writer.add_string(KEY_PROV + key, value)
        else:
            writer.add_int64(KEY_PROV + key, int(value))
    for layer, vec in kept:
        writer.add_tensor(f"direction.{layer - 1}", np.ascontiguousarray(np.asarray(vec, dtype=np.float32)))

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(path)


def _scalar(field):
    value = field.contents()
    if isinstance(value, (np.generic,)):
        value = value.item()
    return value


def read_gguf(path: str | os.PathLike, n_layers: int | None = None
              ) -> tuple[str, dict[int, np.ndarray], dict[int, float], dict, dict[int, float] | None]:
    """(model_type, directions, explained_variances, provenance, residual_norms) from a
    control-vector GGUF; residual_norms is None unless the file is ours and records them.

    `direction.K` becomes our layer K+1. The number of layers of the model it was made for
    comes from `n_layers`, else our provenance key, else (for files of llama.cpp's
    cvector-generator and repeng, which hold direction.1 .. direction.(L-1) and
    layer_count = L-1) from the file's layer_count; a direction for the last block's output
    (K = L-1) is then dropped with a warning.
    """
    import gguf

    def bad(problem: str) -> VectorFileError:
        return VectorFileError(path, problem, "gguf")

    try:
        reader = gguf.GGUFReader(os.fspath(path), "r")
    except (OSError, MemoryError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise bad(f"cannot be read ({exc})") from None
    except Exception as exc:  # the gguf reader raises ValueError/IndexError/KeyError... on damaged files
        raise bad(f"is not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    try:
        fields = reader.fields
        try:
            meta = {name: _scalar(f) for name, f in fields.items()
                    if not name.startswith("GGUF.")}
        except Exception as exc:
            raise bad(f"has a metadata value that cannot be decoded ({type(exc).__name__}: {exc})") from None
        arch = meta.get("general.architecture")
        if arch is None:
            raise bad("is missing the key 'general.architecture' (a control vector has 'controlvector')")
        if arch != ARCH:
            raise bad(f"general.architecture is {arch!r}, not {ARCH!r}: this is not a control vector "
                      "(a model GGUF?)")
        if not reader.tensors:
            raise bad("holds no direction tensors")
        by_k: dict[int, np.ndarray] = {}
        dim = None
        for t in reader.tensors:
            m = _DIRECTION.fullmatch(t.name)
            if m is None:
                raise bad(f"tensor {t.name!r:.80} is not named direction.<K> with a decimal K "
                          "(llama.cpp rejects such a file)")
            k = int(m.group(1))
            if k == 0:
                raise bad("has direction.0, which llama.cpp rejects (there is no block before block 0)")
            if k in by_k:
                raise bad(f"has direction.{k} twice")
            if t.tensor_type != gguf.GGMLQuantizationType.F32:
                raise bad(f"direction.{k} has type {t.tensor_type.name}, not F32")
            shape = [int(s) for s in t.shape]
            if len(shape) != 1 and not (len(shape) > 1 and all(s == 1 for s in shape[1:])):
                raise bad(f"direction.{k} has shape {shape}, not 1-D")
            data = np.asarray(t.data)
            if data.dtype != np.float32 or data.size != shape[0] or int(t.n_elements) != shape[0]:
                raise bad(f"direction.{k} holds {data.size} float32 values, its header says {shape[0]} "
                          "(the file looks truncated)")
            if shape[0] == 0:
                raise bad(f"direction.{k} is empty")
            if dim is not None and shape[0] != dim:
                raise bad(f"direction.{k} has {shape[0]} values, other directions have {dim}")
            dim = shape[0]
            vec = np.array(data, dtype=np.float32, copy=True).reshape(-1)
            if not np.all(np.isfinite(vec)):
                raise bad(f"direction.{k} holds NaN or Inf")
            by_k[k] = vec
    finally:
        mm = getattr(reader, "data", None)
        del reader
        if isinstance(mm, np.memmap) and getattr(mm, "_mmap", None) is not None:
            try:
                mm._mmap.close()
            except (BufferError, ValueError):
                pass

    prov: dict = {}
    for name, value in meta.items():
        if name.startswith(KEY_PROV) and isinstance(value, (str, int)) and not isinstance(value, bool):
            prov[name[len(KEY_PROV):]] = value
    model_type = meta.get(KEY_MODEL_TYPE)
    if not isinstance(model_type, str):
        hint = meta.get(KEY_MODEL_HINT)
        model_type = hint if isinstance(hint, str) else ""
    prov.setdefault("model_type", model_type)

    layers_meta = meta.get(KEY_LAYERS)
    ev_meta = meta.get(KEY_EV)
    ours = isinstance(layers_meta, list)
    if ours:
        expected = sorted(int(layer) - 1 for layer in layers_meta)
        if expected != sorted(by_k):
            raise bad(f"{KEY_LAYERS} {layers_meta} does not match its tensors "
                      f"{['direction.%d' % k for k in sorted(by_k)]}")
    if n_layers is None:
        n_layers = prov.get("n_layers")
    if n_layers is None and not ours:  # our files list their layers: no guessing from the count
        count = meta.get(KEY_LAYER_COUNT)
        if isinstance(count, int) and not isinstance(count, bool) and sorted(by_k) == list(range(1, count + 1)):
            n_layers = count + 1  # cvector-generator / repeng: direction.1 .. direction.(L-1)
    dropped = sorted(k for k in by_k if n_layers is not None and k + 1 >= n_layers)
    if dropped:
        warnings.warn(f"{path}: dropped direction.{', direction.'.join(map(str, dropped))}: it is added to the "
                      f"output of the last block (before the final norm) of a {n_layers}-layer model, which is "
                      "the input of no decoder layer, so this package cannot steer there", UserWarning,
                      stacklevel=3)
    directions = {k + 1: by_k[k] for k in sorted(by_k) if k not in dropped}
    if not directions:
        raise bad("has no direction that maps to a decoder layer input")
    variances: dict[int, float] = {}
    if ours and isinstance(ev_meta, list) and len(ev_meta) == len(layers_meta):
        ev_of = {int(layer): float(v) for layer, v in zip(layers_meta, ev_meta)}
        variances = {layer: ev_of[layer] for layer in directions if layer in ev_of}
    if set(variances) != set(directions):
        # a foreign file records none: 0.0 means "not known" (see docs/formats.md)
        variances = {layer: variances.get(layer, 0.0) for layer in directions}
    norms: dict[int, float] | None = None
    norms_meta = meta.get(KEY_NORMS)
    if norms_meta is not None:
        if not (ours and isinstance(norms_meta, list) and len(norms_meta) == len(layers_meta)):
            raise bad(f"{KEY_NORMS} must be a list aligned with {KEY_LAYERS}")
        norm_of = {}
        for layer, v in zip(layers_meta, norms_meta):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (np.isfinite(v) and v > 0):
                raise bad(f"{KEY_NORMS}: the value for layer {layer} must be a finite number > 0, got {v!r:.40}")
            norm_of[int(layer)] = float(v)
        norms = {layer: norm_of[layer] for layer in directions}
    if n_layers is not None:
        prov.setdefault("n_layers", int(n_layers))
    prov.setdefault("hidden_size", int(dim))
    return model_type, directions, variances, prov, norms


__all__ = ["write_gguf", "read_gguf", "ARCH", "MAPPING_TEXT"]
