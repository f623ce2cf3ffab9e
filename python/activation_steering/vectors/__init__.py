"""Steering-vector files, provenance, algebra and figures.

svec.py (the .svec JSON format), gguf.py (llama.cpp control vectors), safetensors.py,
files.py (format by suffix on save, by content on load), errors.py (VectorFileError, the
one exception for an unreadable file), strict_json.py (JSON for untrusted files),
provenance.py (what a vector was trained on; the check steering runs), algebra.py
(a + b, k * a, layer selection, normalisation), plots.py (the PCA analysis figures).
The formats and rules are described in docs/formats.md.
"""
from .errors import VectorFileError

__all__ = ["VectorFileError"]
