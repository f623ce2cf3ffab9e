"""The condition search with AND combinations of layers (a string is positive only
when EVERY layer of the combination meets the condition) against its literal twin
(oracles/search.py brute_grid / brute_exact), for AND and for OR, on random and
tie-heavy similarity matrices, scores and per-combination tables included."""
import numpy as np
import pytest
from harness import case, check_against_twin

from activation_steering import _core
from activation_steering.oracles.search import brute_exact, brute_grid

GRID = np.arange(-0.25, 1.0, 0.125)


def _random_cases(seed: int, n_cases: int) -> list:
    """Random matrices: half continuous, half on a few values (ties within and across
    layers, and values exactly on grid thresholds)."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(n_cases):
        n, n_layers = int(rng.integers(1, 13)), int(rng.integers(1, 5))
        if k % 2:
            sims = rng.integers(-1, 5, (n, n_layers)) / 4.0     # tie-heavy, on the grid
        else:
            sims = rng.uniform(-0.4, 1.2, (n, n_layers))
        labels = rng.random(n) < 0.5
        depth = int(rng.integers(1, n_layers + 1))
        cases.append(case(f"{'ties' if k % 2 else 'random'} {k}: {n}x{n_layers}, depth {depth}", sims, labels, depth))
    return cases


def _grid_point(res) -> dict:
    return {"columns": tuple(res["columns"]), "threshold": float(res["threshold"]),
            "comparator": res.get("comparator", res.get("direction")), "f1": float(res["f1"]),
            "scores": res["scores"]}


def _exact_point(res) -> dict:
    return {"columns": tuple(res["columns"]), "threshold": float(res["threshold"]),
            "comparator": res.get("comparator", res.get("direction")), "f1": float(res["f1"]),
            "per_combo": res["per_combo"]}


@pytest.mark.parametrize("combination", ["and", "or"])
def test_grid_search_equals_brute_force_on_random_and_tied_inputs(combination):
    def fast(sims, labels, depth):
        return _grid_point(_core.condsearch_grid(sims, labels, depth, GRID, return_scores=True,
                                                 layer_combination=combination))

    def twin(sims, labels, depth):
        best, scores = brute_grid(sims, labels, depth, GRID, combination)
        return _grid_point({**best, "scores": scores})

    check_against_twin(fast, twin, _random_cases(1, 60))


@pytest.mark.parametrize("combination", ["and", "or"])
def test_exact_search_equals_brute_force_on_random_and_tied_inputs(combination):
    def fast(sims, labels, depth):
        return _exact_point(_core.condsearch_exact(sims, labels, depth, return_per_combo=True,
                                                   layer_combination=combination))

    def twin(sims, labels, depth):
        best, per = brute_exact(sims, labels, depth, combination)
        return _exact_point({**best, "per_combo": per})

    check_against_twin(fast, twin, _random_cases(2, 60))


def test_and_differs_from_or_and_one_layer_is_the_same():
    # Two layers, each alone catches a positive and a negative; only both together
    # single out the positives: AND reaches F1 1, OR cannot.
    sims = np.array([[0.1, 0.1], [0.1, 0.1], [0.1, 0.9], [0.9, 0.1]])
    labels = np.array([True, True, False, False])
    grid = np.arange(0.0, 1.0, 0.25)
    a = _core.condsearch_grid(sims, labels, 2, grid, layer_combination="and")
    o = _core.condsearch_grid(sims, labels, 2, grid, layer_combination="or")
    assert (tuple(a["columns"]), a["direction"], a["f1"]) == ((0, 1), "larger", 1.0) and o["f1"] < 1.0
    for exact in (False, True):
        one = [(_core.condsearch_exact(sims, labels, 1, layer_combination=c) if exact
                else _core.condsearch_grid(sims, labels, 1, grid, layer_combination=c)) for c in ("or", "and")]
        assert one[0] == one[1]


def test_core_refuses_an_unknown_layer_combination():
    sims, labels = np.array([[0.1], [0.9]]), np.array([True, False])
    for bad in ("xor", "AND", ""):
        with pytest.raises(ValueError, match="layer_combination") as info:
            _core.condsearch_grid(sims, labels, 1, GRID, layer_combination=bad)
        assert info.value.argument == "layer_combination"
        with pytest.raises(ValueError, match="layer_combination"):
            _core.condsearch_exact(sims, labels, 1, layer_combination=bad)
