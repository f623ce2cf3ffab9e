"""activation_steering: exact, fast, batched activation steering and CAST.

    from activation_steering import MalleableModel, SteeringDataset, SteeringVector

The public classes are imported lazily so that `import activation_steering`
stays cheap (no transformers import) and creates no files.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["MalleableModel", "SteeringDataset", "SteeringVector", "GlobalConfig", "__version__"]

_LAZY = {
    "MalleableModel": "malleable_model",
    "SteeringDataset": "steering_dataset",
    "SteeringVector": "extract",
    "GlobalConfig": "config",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'activation_steering' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
