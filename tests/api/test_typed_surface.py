"""The typed surface: py.typed ships, public methods carry annotations, and
find_best_condition_point shows its real signature."""
from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest

from activation_steering import GlobalConfig, MalleableModel, SteeringDataset, SteeringVector
from activation_steering.conditions import search

ROOT = Path(__file__).resolve().parents[2]


def test_py_typed_is_package_data():
    """py.typed sits in the imported package (source tree or installed) and is declared as package data."""
    from importlib import resources

    assert resources.files("activation_steering").joinpath("py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["activation_steering"]


def test_find_best_condition_point_has_the_real_signature():
    ours = inspect.signature(MalleableModel.find_best_condition_point)
    impl = inspect.signature(search.find_best_condition_point)
    assert list(ours.parameters)[1:] == list(impl.parameters)[1:]  # self vs model
    for name, p in list(impl.parameters.items())[1:]:
        assert ours.parameters[name].default == p.default, name
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in ours.parameters.values())


PUBLIC = [(cls, name) for cls in (SteeringVector, SteeringDataset, MalleableModel, GlobalConfig)
          for name, fn in vars(cls).items()
          if (not name.startswith("_") or name == "__init__") and callable(getattr(cls, name, None))
          and not isinstance(fn, property)]


@pytest.mark.parametrize("cls, name", PUBLIC, ids=[f"{c.__name__}.{n}" for c, n in PUBLIC])
def test_public_methods_are_annotated_and_documented(cls, name):
    fn = getattr(cls, name)
    sig = inspect.signature(fn)
    missing = [p for p, v in sig.parameters.items() if p not in ("self", "cls") and v.annotation is v.empty]
    assert not missing, f"{cls.__name__}.{name}: parameters without annotations {missing}"
    if name != "__init__":
        assert sig.return_annotation is not sig.empty, f"{cls.__name__}.{name}: no return annotation"
        assert inspect.getdoc(fn), f"{cls.__name__}.{name}: no docstring"
