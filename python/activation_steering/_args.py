"""Argument checks shared by the public API (the few that are not steering semantics,
which the C core validates). Each raises a TypeError naming the argument."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def check_flag(value: object, name: str) -> bool:
    """`value` if it is a real bool (or numpy bool), else TypeError.

    Truthiness is not accepted: use_chat_template="no" would silently mean True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_writable(path: str | os.PathLike, name: str) -> Path:
    """`path` as a Path if a file can be created there, else ValueError naming `name`.

    Checked before slow work (a search, a training run) so that it fails first, not
    after minutes of compute. Creates nothing: the nearest existing ancestor must be a
    writable folder (missing parents are made when the file is written)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{name}={os.fspath(path)!r} is a folder; give a file name")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{name}={os.fspath(path)!r}: cannot create a file under {parent} (not a writable folder)")
    return target


# generate() arguments whose type transformers does not check before it fails deep
# inside the decode loop (max_new_tokens="3" surfaces as a TypeError from a comparison).
_SETTINGS_INTS = {  # name -> smallest allowed value
    "max_new_tokens": 1, "min_new_tokens": 0, "max_length": 1, "min_length": 0,
    "num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1, "top_k": 0,
    "no_repeat_ngram_size": 0, "pad_token_id": 0, "bos_token_id": 0,
}
_SETTINGS_POSITIVE_FLOATS = {"temperature", "repetition_penalty", "max_time"}
_SETTINGS_FLOATS = {"length_penalty", "diversity_penalty"}
_SETTINGS_PROBABILITIES = {"top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"}
_SETTINGS_FLAGS = {"do_sample", "use_cache", "output_scores", "output_logits", "return_dict_in_generate"}


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value)))


def check_generation_settings(settings: object) -> dict:
    """`settings` (respond's generate() keyword arguments) as a dict, checked before generating.

    Checks the types and ranges of the common numeric and boolean settings; other keys
    pass through to transformers, which validates them. Raises TypeError (wrong type) or
    ValueError (out of range) naming `settings[key]` and the expected value. Returns a
    copy with numpy scalars turned into Python ints/floats and the float settings as
    floats (transformers refuses repetition_penalty=1 or np.float32(1.1))."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict of generate() arguments, got {type(settings).__name__}")
    out = dict(settings)
    for key, value in settings.items():
        name = f"settings[{key!r}]"
        if key in _SETTINGS_INTS:
            if not _is_int(value):
                raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
            if value < _SETTINGS_INTS[key]:
                raise ValueError(f"{name} must be >= {_SETTINGS_INTS[key]}, got {value}")
            out[key] = int(value)
        elif key == "eos_token_id":
            ids = value if isinstance(value, (list, tuple)) else [value]
            if not ids or not all(_is_int(i) and i >= 0 for i in ids):
                raise TypeError(f"{name} must be a token id (int >= 0) or a list of them, got {value!r}")
            out[key] = [int(i) for i in value] if isinstance(value, (list, tuple)) else int(value)
        elif key in _SETTINGS_POSITIVE_FLOATS | _SETTINGS_FLOATS | _SETTINGS_PROBABILITIES:
            if not _is_real(value):
                raise TypeError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
            if key in _SETTINGS_POSITIVE_FLOATS and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
            if key in _SETTINGS_PROBABILITIES and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
            out[key] = float(value)
        elif key in _SETTINGS_FLAGS:
            out[key] = check_flag(value, name)
    return out
