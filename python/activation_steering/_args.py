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
