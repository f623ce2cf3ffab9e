"""Fast path vs plain twin over hostile inputs: one small harness for every pair.

    check_against_twin(fast, twin, [case("nan", x), case("empty", y, raises=ValueError), ...])

For each named case both functions are called on their own deep copy of the
arguments (a fast path may work in place). Outcomes must agree:
  - `raises=E` given: the input breaks the documented contract, so the fast path
    must raise exactly E (the twin states values, not argument checks, and is not
    asked);
  - otherwise: both return and `compare(got, want)` holds, or both raise
    exceptions of the same type.
The default comparison is exact and NaN-aware, recursing through tuples, lists
and dicts; pass `compare=close(atol=..., rtol=...)` where float summation order
legitimately differs. All failures are reported together, by case name.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class Case:
    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    raises: type[BaseException] | None = None


def case(name: str, *args, raises: type[BaseException] | None = None, **kwargs) -> Case:
    return Case(name, args, kwargs, raises)


def _as_array(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def close(atol: float = 0.0, rtol: float = 0.0) -> Callable[[Any, Any], None]:
    """A comparison: equal structure, numbers equal within atol + rtol * |want| (NaN == NaN)."""
    def compare(got, want, where: str = "result") -> None:
        if isinstance(want, dict):
            assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
            for k in want:
                compare(got[k], want[k], f"{where}[{k!r}]")
        elif isinstance(want, (tuple, list)) and not all(isinstance(w, (int, float, bool, np.number)) for w in want):
            assert isinstance(got, (tuple, list)) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
            for i, (g, w) in enumerate(zip(got, want)):
                compare(g, w, f"{where}[{i}]")
        elif isinstance(want, str) or want is None:
            assert got == want, f"{where}: {got!r} != {want!r}"
        else:
            g, w = _as_array(got), _as_array(want)
            assert g.shape == w.shape, f"{where}: shape {g.shape} != {w.shape}"
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), atol=atol, rtol=rtol,
                                       equal_nan=True, err_msg=where)
    return compare


def _outcome(fn, c: Case):
    try:
        return fn(*copy.deepcopy(c.args), **copy.deepcopy(c.kwargs)), None
    except Exception as exc:  # noqa: BLE001 - the exception type is the outcome being compared
        return None, exc


def check_against_twin(fast: Callable, twin: Callable, cases: list[Case],
                       compare: Callable[[Any, Any], None] | None = None) -> None:
    """Run every case; raise one AssertionError listing each case where fast and twin disagree."""
    compare = compare or close()
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), f"case names must be unique: {names}"
    failures = []
    for c in cases:
        got, got_exc = _outcome(fast, c)
        if c.raises is not None:
            if type(got_exc) is not c.raises:
                failures.append(f"{c.name}: expected {c.raises.__name__}, fast path gave "
                                f"{type(got_exc).__name__ + ': ' + str(got_exc) if got_exc else repr(got)}")
            continue
        want, want_exc = _outcome(twin, c)
        if got_exc is not None or want_exc is not None:
            if type(got_exc) is not type(want_exc):
                failures.append(f"{c.name}: fast {type(got_exc).__name__ if got_exc else 'returned'} ({got_exc}), "
                                f"twin {type(want_exc).__name__ if want_exc else 'returned'} ({want_exc})")
            continue
        try:
            compare(got, want)
        except AssertionError as exc:
            failures.append(f"{c.name}: {exc}")
    assert not failures, "fast path and twin disagree:\n" + "\n".join(failures)
