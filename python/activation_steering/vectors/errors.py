"""The one exception every steering-vector file reader raises for a file it cannot accept.

`VectorFileError` subclasses ValueError (so `except ValueError` keeps working) and always
names the file and the problem: `malformed steering vector file '<path>' (<format>): <problem>`.
It is raised for .svec (JSON), GGUF and safetensors files alike, whatever the underlying
library or parser threw (truncation, wrong dtype or shape, missing keys, hostile JSON).
A missing file stays FileNotFoundError.
"""
from __future__ import annotations

import os


class VectorFileError(ValueError):
    """A steering-vector file that cannot be read (or written) as asked.

    Attributes:
        path: the file, as a str.
        problem: what is wrong with it, in words.
        format: "svec", "gguf", "safetensors" or "unknown".
    """

    def __init__(self, path: str | os.PathLike, problem: str, format: str = "unknown"):
        self.path = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
        self.problem = str(problem)
        self.format = format
        super().__init__(f"malformed steering vector file {self.path!r} ({format}): {self.problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem, self.format))


__all__ = ["VectorFileError"]
