"""Provenance of a steering vector: what it was trained on and where it is read and added.

A SteeringVector carries `provenance`, a flat dict of JSON scalars (str or int) that every
file format stores (docs/formats.md): the model it was trained on (model type, model id and
revision when known, hidden size, number of decoder layers, a hash of the model config),
how it was made (method, pooling, number of pairs, or the algebra formula that combined
vectors), and the two sites of the residual stream it refers to: directions are READ from
a decoder layer's output and ADDED to a decoder layer's input (see docs/formats.md for why,
and for what that means for llama.cpp's control vectors).

`check_vector_matches` is the one check that steering runs on every vector before it is
installed: a hidden size that differs raises; a layer count, model type or config that
differs warns, naming what differs. This module is not a registry of models and downloads
nothing.
"""
from __future__ import annotations

import hashlib
import json
import warnings

FORMAT_VERSION = 1
READ_SITE = "decoder_layer_output"
ADD_SITE = "decoder_layer_input"

# field -> type; every field is optional (unknown = absent)
FIELDS: dict[str, type] = {
    "format_version": int,
    "model_type": str,
    "model_id": str,
    "model_revision": str,
    "hidden_size": int,
    "n_layers": int,
    "config_sha256": str,
    "method": str,
    "pooling": str,
    "n_pairs": int,
    "read_site": str,
    "add_site": str,
    "formula": str,
    "package_version": str,
}
# fields that describe the model (kept by algebra only when every operand agrees)
MODEL_FIELDS = ("model_type", "model_id", "model_revision", "hidden_size", "n_layers", "config_sha256")
# config entries that do not change what the residual stream means
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype",
                         "use_cache", "_attn_implementation", "_attn_implementation_internal",
                         "output_hidden_states", "output_attentions", "return_dict"}


def clean(provenance, where: str = "provenance") -> dict:
    """A validated copy: known fields of the right type; unknown str/int fields are kept too.

    Raises ValueError naming the field for a value that is not a str or int.
    """
    if provenance is None:
        return {}
    if not isinstance(provenance, dict):
        raise TypeError(f"{where} must be a dict of str/int values, got {type(provenance).__name__}")
    out = {}
    for key, value in provenance.items():
        if not isinstance(key, str) or not key or len(key) > 100:
            raise ValueError(f"{where}: key {key!r:.60} is not a short non-empty str")
        if value is None:
            continue
        want = FIELDS.get(key)
        ok = (isinstance(value, want) and not isinstance(value, bool)) if want is not None else (
            isinstance(value, (str, int)) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{where}: {key!r} must be {(want.__name__ if want else 'a str or int')}, "
                             f"got {type(value).__name__}")
        if isinstance(value, int) and not -2**62 <= value <= 2**62:
            raise ValueError(f"{where}: {key!r} = {value} is out of range")
        if isinstance(value, str) and len(value) > 4096:
            raise ValueError(f"{where}: {key!r} is longer than 4096 characters")
        out[key] = value
    return out


def config_sha256(config) -> str | None:
    """sha256 of the model config's meaningful entries (sorted JSON), or None if unavailable."""
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        return None
    try:
        data = {k: v for k, v in to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    except Exception:  # a config that cannot be serialised simply has no hash
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def from_model(model, n_layers: int, method: str | None = None, pooling=None, n_pairs: int | None = None) -> dict:
    """Provenance of a vector trained on `model` (an unwrapped HF model)."""
    import activation_steering

    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_id = getattr(config, "_name_or_path", None) or None
    hidden = getattr(text, "hidden_size", None)
    prov = {
        "format_version": FORMAT_VERSION,
        "model_type": str(getattr(config, "model_type", "") or type(model).__name__),
        "model_id": str(model_id) if model_id else None,
        "model_revision": getattr(config, "_commit_hash", None) or None,
        "hidden_size": int(hidden) if isinstance(hidden, int) else None,
        "n_layers": int(n_layers),
        "config_sha256": config_sha256(config),
        "method": method,
        "pooling": None if pooling is None else str(pooling),
        "n_pairs": n_pairs,
        "read_site": READ_SITE,
        "add_site": ADD_SITE,
        "package_version": getattr(activation_steering, "__version__", None),
    }
    return clean(prov)


def check_vector_matches(vector, name: str, n_layers: int, hidden_size: int, config=None) -> None:
    """Raise if `vector` cannot steer this model, warn if it was trained on a different one.

    Called by the steering plan for every vector before anything is installed.
    - hidden size: from provenance or the directions' length; a mismatch raises ValueError.
    - number of layers, model type, config hash (when `config` is given): a mismatch warns
      (UserWarning), naming the field, the vector's value and the model's.
    Vectors without provenance (built in code, older files) are checked by length only.
    """
    prov = getattr(vector, "provenance", None) or {}
    trained = prov.get("model_id") or prov.get("model_type") or getattr(vector, "model_type", None) or "?"
    vec_hidden = prov.get("hidden_size")
    if isinstance(vec_hidden, int) and hidden_size and vec_hidden != hidden_size:
        raise ValueError(f"{name} was trained on {trained} with hidden size {vec_hidden}, but this model's hidden "
                         f"size is {hidden_size}: a steering vector only fits the model family it was trained on")
    diffs = []
    vec_layers = prov.get("n_layers")
    if isinstance(vec_layers, int) and n_layers and vec_layers != n_layers:
        diffs.append(f"n_layers: vector {vec_layers}, model {n_layers}")
    if config is not None:
        model_type = getattr(config, "model_type", None)
        vec_type = prov.get("model_type") or getattr(vector, "model_type", None)
        if model_type and vec_type and vec_type != model_type:
            diffs.append(f"model_type: vector {vec_type!r}, model {model_type!r}")
        want = prov.get("config_sha256")
        if want and not diffs:
            have = config_sha256(config)
            if have and have != want:
                diffs.append("config: the vector's config hash differs from this model's (another checkpoint "
                             "or a modified config)")
    if diffs:
        warnings.warn(f"{name} does not match the model being steered ("
                      + "; ".join(diffs) + f"; it was trained on {trained}): steering may not mean what it "
                      "meant there", UserWarning,
                      stacklevel=3)


__all__ = ["FIELDS", "FORMAT_VERSION", "READ_SITE", "ADD_SITE", "clean", "config_sha256", "from_model",
           "check_vector_matches"]
