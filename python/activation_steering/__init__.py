"""activation_steering: exact, fast, batched activation steering and CAST.

    from activation_steering import MalleableModel, SteeringDataset, SteeringVector

The public classes are imported lazily so that `import activation_steering`
stays cheap (no transformers import) and creates no files. Logging follows the
library convention: every module logs under ``logging.getLogger("activation_steering")``,
which gets only a NullHandler here (see ``GlobalConfig`` for switching output on).
"""
from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # the lazy attributes below, as type checkers should see them
    from .config import GlobalConfig
    from .extract import SteeringVector
    from .malleable_model import MalleableModel
    from .steering_dataset import SteeringDataset

__all__ = ["MalleableModel", "SteeringDataset", "SteeringVector", "GlobalConfig", "__version__"]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def _preload_openblas() -> None:
    """Load scipy_openblas32's shared library before `_core` is imported.

    `_core` links ``libscipy_openblas.so``; once a library with that name is loaded,
    the dynamic loader reuses it, so `_core` finds OpenBLAS in every install layout
    (wheel, sdist, editable, ``--user``) without a run path into the build environment.
    """
    try:
        import ctypes
        import os

        import scipy_openblas32
    except ImportError:  # reported by the import of _core itself
        return
    lib_dir = scipy_openblas32.get_lib_dir()
    for name in sorted(os.listdir(lib_dir)):
        if name.startswith("libscipy_openblas") and name.endswith((".so", ".dylib", ".dll")):
            ctypes.CDLL(os.path.join(lib_dir, name), mode=ctypes.RTLD_GLOBAL)
            return


_preload_openblas()

_LAZY = {
    "MalleableModel": "malleable_model",
    "SteeringDataset": "steering_dataset",
    "SteeringVector": "extract",
    "GlobalConfig": "config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'activation_steering' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
