"""Which file format a steering vector is saved in and read from.

save: the suffix decides: `.gguf` (llama.cpp control vector), `.safetensors`, `.svec` (JSON,
the default); any other name gets ".svec" appended (as the package always did).
load: the CONTENT decides, whatever the name: b"GGUF" magic -> GGUF; an 8-byte little-endian
header length (its top byte 0, which no JSON text has) followed by "{" -> safetensors; anything else is read as .svec JSON. A name
that does not exist is retried with ".svec" appended. Every unreadable file raises
VectorFileError naming the file (a missing one FileNotFoundError). This module holds no
format details itself; see svec.py, gguf.py and safetensors.py.
"""
from __future__ import annotations

import os
from pathlib import Path

SUFFIXES = {".svec": "svec", ".gguf": "gguf", ".safetensors": "safetensors"}


def _text_path(file_path) -> str:
    """`file_path` as non-empty text (TypeError / ValueError naming file_path otherwise)."""
    if not isinstance(file_path, (str, os.PathLike)):
        raise TypeError(f"file_path must be a str or path, got {type(file_path).__name__}")
    text = os.fspath(file_path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"file_path must be a non-empty text path, got {file_path!r}")
    return text


def save_target(file_path) -> tuple[Path, str]:
    """(path to write, format) for `file_path`."""
    text = _text_path(file_path)
    path = Path(text)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        return Path(text + ".svec"), "svec"
    return path, fmt


def sniff(path: Path) -> str:
    """The format of an existing file from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{" and head[7] == 0:  # a u64 length, then the JSON header
        return "safetensors"
    return "svec"


def load_target(file_path) -> tuple[Path, str]:
    """(existing path, detected format) for `file_path` (".svec" appended when needed)."""
    text = _text_path(file_path)
    path = Path(text)
    if not path.is_file() and not text.endswith(".svec") and Path(text + ".svec").is_file():
        path = Path(text + ".svec")
    if not path.is_file():
        tried = f"{text!r}" if text.endswith(".svec") else f"{text!r} or {text + '.svec'!r}"
        raise FileNotFoundError(f"no steering vector file at {tried}")
    return path, sniff(path)


__all__ = ["save_target", "load_target", "sniff", "SUFFIXES"]
