"""The C condition-point search (csrc/core/condsearch.c) against plain brute force.

The references (activation_steering/oracles/search.py) are written the obvious
way: itertools over combinations x thresholds x comparators, "any layer meets the condition" evaluated literally,
F1 = 2TP / (2TP + FP + FN) (0 when TP = 0), and the first strictly better
candidate kept. The C search must return the same first best, the same score
for every candidate, and (exact mode) the same optimum as brute force over every
midpoint between sorted distinct values.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activation_steering import _core
from activation_steering.conditions.similarity import COMPARATORS
from activation_steering.conditions.thresholds import f1_score
from activation_steering.oracles.search import all_combos, brute_exact, brute_grid, predict


def assert_same_best(got, ref, grid_mode=True):
    assert tuple(got["columns"]) == tuple(ref["columns"])
    assert got["combo_index"] == ref["combo_index"]
    assert got["direction"] == ref["comparator"]
    assert got["f1"] == ref["f1"]
    assert got["threshold"] == ref["threshold"]
    if grid_mode:
        assert got["threshold_index"] == ref["threshold_index"]
    else:
        assert got["threshold_index"] == -1


# --------------------------------------------------------------------------- #
# Property tests on random similarity matrices
# --------------------------------------------------------------------------- #
GRIDS = [(0.0, 1.0, 0.1), (-0.2, 0.3, 0.05), (0.0, 0.1, 0.01), (0.25, 0.75, 0.125), (-1.0, 1.0, 0.3)]


@st.composite
def problems(draw):
    lo, hi, step = draw(st.sampled_from(GRIDS))
    grid = np.arange(lo, hi, step)
    n = draw(st.integers(1, 12))
    n_layers = draw(st.integers(1, 4))
    # Values: grid values themselves (sim == threshold, strict comparisons), a few
    # shared values (ties and duplicates), and arbitrary floats in and around the grid.
    pool = [float(v) for v in grid] + [lo - 0.5, hi + 0.5, 0.3333, -0.01]
    value = st.one_of(st.sampled_from(pool), st.floats(lo - 1.0, hi + 1.0, allow_nan=False, width=64))
    sims = np.array(draw(st.lists(st.lists(value, min_size=n_layers, max_size=n_layers), min_size=n, max_size=n)),
                    dtype=np.float64)
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    max_combine = draw(st.integers(1, n_layers))
    return sims, labels, max_combine, grid


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_grid_equals_brute_force(problem):
    sims, labels, max_combine, grid = problem
    got = _core.condsearch_grid(sims, labels, max_combine, grid, return_scores=True)
    ref, ref_scores = brute_grid(sims, labels, max_combine, grid)
    assert_same_best(got, ref)
    np.testing.assert_array_equal(got["scores"], ref_scores)
    tp = int(got["tp"])
    assert got["f1"] == (0.0 if tp == 0 else 2 * tp / (tp + got["fp"] + labels.sum()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_exact_equals_brute_force_over_midpoints_and_beats_grid(problem):
    sims, labels, max_combine, grid = problem
    got = _core.condsearch_exact(sims, labels, max_combine, return_per_combo=True)
    ref, ref_per = brute_exact(sims, labels, max_combine)
    assert_same_best(got, ref, grid_mode=False)
    np.testing.assert_array_equal(got["per_combo"], ref_per)
    grid_best = _core.condsearch_grid(sims, labels, max_combine, grid)
    assert got["f1"] >= grid_best["f1"]
    # The returned threshold really achieves the returned F1.
    cols = got["columns"]
    assert f1_score(predict(sims, cols, got["threshold"], got["direction"]), labels) == got["f1"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_and_combinations_equal_brute_force_grid_and_exact(problem):
    """layer_combination="and": a string is positive only when EVERY layer of the
    combination meets the condition (evaluated literally by the twin)."""
    sims, labels, max_combine, grid = problem
    got = _core.condsearch_grid(sims, labels, max_combine, grid, return_scores=True, layer_combination="and")
    ref, ref_scores = brute_grid(sims, labels, max_combine, grid, "and")
    assert_same_best(got, ref)
    np.testing.assert_array_equal(got["scores"], ref_scores)
    got = _core.condsearch_exact(sims, labels, max_combine, return_per_combo=True, layer_combination="and")
    ref, ref_per = brute_exact(sims, labels, max_combine, "and")
    assert_same_best(got, ref, grid_mode=False)
    np.testing.assert_array_equal(got["per_combo"], ref_per)
    assert f1_score(predict(sims, got["columns"], got["threshold"], got["direction"], "and"), labels) == got["f1"]
    # one-layer combinations are the same candidates under both rules
    one_and = _core.condsearch_grid(sims, labels, 1, grid, return_scores=True, layer_combination="and")
    one_or = _core.condsearch_grid(sims, labels, 1, grid, return_scores=True)
    np.testing.assert_array_equal(one_and["scores"], one_or["scores"])


# --------------------------------------------------------------------------- #
# Hand-made cases: ties, strictness, degenerate predictions
# --------------------------------------------------------------------------- #
def test_first_best_wins_ties_in_spec_order():
    # Two identical columns: combination (0,) and (1,) tie -> (0,). Within it the
    # best F1 is reached at several thresholds -> the lowest one.
    col = np.array([0.1, 0.2, 0.7, 0.8])
    sims = np.stack([col, col], axis=1)
    labels = np.array([1, 1, 0, 0], dtype=bool)
    grid = np.arange(0.0, 1.0, 0.1)
    got = _core.condsearch_grid(sims, labels, 2, grid)
    assert got["columns"] == (0,) and got["direction"] == "larger" and got["f1"] == 1.0
    assert got["threshold_index"] == 3  # 0.2 < t needs t = 0.30000000000000004 (strict), the first such grid value
    assert got["threshold"] == grid[3]


def test_larger_before_smaller_at_equal_score():
    # Column values make "larger" at t and "smaller" at t both score F1 = 2/3.
    sims = np.array([[0.5], [0.5]])
    labels = np.array([1, 0], dtype=bool)
    grid = np.array([0.4, 0.6])
    got = _core.condsearch_grid(sims, labels, 1, grid, return_scores=True)
    # t = 0.4: larger predicts none (F1 0), smaller predicts both (2/3) -> (0.4, smaller)
    assert (got["threshold_index"], got["direction"]) == (0, "smaller")
    np.testing.assert_array_equal(got["scores"][0], [[0.0, 2 / 3], [2 / 3, 0.0]])


def test_comparisons_are_strict_at_the_threshold():
    sims = np.array([[0.5], [0.5], [0.2]])
    labels = np.array([1, 1, 0], dtype=bool)
    grid = np.array([np.nextafter(0.5, 0.0), 0.5, np.nextafter(0.5, 1.0)])
    got = _core.condsearch_grid(sims, labels, 1, grid, return_scores=True)
    # Just below 0.5: "smaller" catches both 0.5s. At 0.5: sim == t meets neither
    # "sim < t" nor "sim > t" (larger predicts only the negative 0.2). Just above:
    # "larger" predicts all three.
    np.testing.assert_array_equal(got["scores"][0], [[0.0, 1.0], [0.0, 0.0], [0.8, 0.0]])


def test_all_zero_scores_return_the_first_candidate():
    sims = np.array([[0.9, 0.95], [0.8, 0.85]])
    labels = np.array([1, 0], dtype=bool)
    grid = np.array([0.0, 0.1, 0.2])  # larger: nothing below; smaller: everything above -> F1 2/3
    got = _core.condsearch_grid(sims, labels, 2, grid)
    assert got["f1"] == pytest.approx(2 / 3)
    assert (got["combo_index"], got["threshold_index"], got["direction"]) == (0, 0, "smaller")
    no_pos = np.zeros(2, dtype=bool)
    got = _core.condsearch_grid(sims, no_pos, 2, grid)
    assert got["f1"] == 0.0
    assert (got["columns"], got["combo_index"], got["threshold_index"], got["direction"]) == ((0,), 0, 0, "larger")


def test_exact_handles_adjacent_doubles_and_single_value():
    a = 0.3
    b = np.nextafter(a, 1.0)
    sims = np.array([[a], [b]])
    for labels, direction in (([1, 0], "larger"), ([0, 1], "smaller")):
        got = _core.condsearch_exact(sims, np.array(labels, dtype=bool), 1)
        assert got["f1"] == 1.0 and got["direction"] == direction
        pred = predict(sims, (0,), got["threshold"], direction)
        assert pred.tolist() == [bool(x) for x in labels]
    # One value: "larger" at 0.5 + 1 and "smaller" at 0.5 - 1 both predict it; the
    # lower threshold comes first in the order.
    one = _core.condsearch_exact(np.array([[0.5]]), np.array([True]), 1, return_per_combo=True)
    assert one["f1"] == 1.0 and one["threshold"] == -0.5 and one["direction"] == "smaller"
    np.testing.assert_array_equal(one["per_combo"][0], [[1.5, 1.0], [-0.5, 1.0]])


def test_many_layers_full_combination_depth():
    rng = np.random.default_rng(3)
    sims = rng.choice(np.linspace(0, 1, 7), size=(6, 6))
    labels = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    grid = np.arange(0.0, 1.0, 1 / 6)
    got = _core.condsearch_grid(sims, labels, 6, grid, return_scores=True)
    ref, ref_scores = brute_grid(sims, labels, 6, grid)
    assert_same_best(got, ref)
    np.testing.assert_array_equal(got["scores"], ref_scores)
    got_e = _core.condsearch_exact(sims, labels, 6)
    ref_e, _ = brute_exact(sims, labels, 6)
    assert_same_best(got_e, ref_e, grid_mode=False)


def test_benchmark_sized_problem_matches_vectorised_reference():
    """400 strings x 12 layers, pairs, 1000 thresholds, against a numpy reference."""
    rng = np.random.default_rng(7)
    n, n_layers = 400, 12
    labels = np.arange(n) < n // 2
    sims = np.round(rng.normal(0.05, 0.02, size=(n, n_layers)) + 0.01 * labels[:, None], 4)  # ties on the grid
    grid = np.arange(0.0, 0.1, 1e-4)
    got = _core.condsearch_grid(sims, labels, 2, grid, return_scores=True)
    P = labels.sum()
    best = (-1.0, None)
    for k, combo in enumerate(all_combos(n_layers, 2)):
        sub = sims[:, list(combo)]
        for c, pred in enumerate((sub.min(1)[None, :] < grid[:, None], sub.max(1)[None, :] > grid[:, None])):
            tp = (pred & labels).sum(1)
            fp = (pred & ~labels).sum(1)
            f1 = np.where(tp == 0, 0.0, 2 * tp / np.maximum(2 * tp + fp + (P - tp), 1))
            np.testing.assert_array_equal(got["scores"][k, :, c], f1)
    flat = got["scores"].reshape(-1)
    first = int(np.argmax(flat))  # argmax returns the first maximum: the documented order
    k, j, c = np.unravel_index(first, got["scores"].shape)
    assert (got["combo_index"], got["threshold_index"], got["direction"]) == (k, j, COMPARATORS[c])


# --------------------------------------------------------------------------- #
# Counting and bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n,r", [(1, 1), (5, 1), (5, 3), (13, 13), (28, 2), (20, 20)])
def test_count_matches_math_comb(n, r):
    assert _core.condsearch_count(n, r) == sum(math.comb(n, k) for k in range(1, r + 1))


def test_count_limit_names_the_argument():
    with pytest.raises(ValueError, match="max_layers_to_combine"):
        _core.condsearch_count(100, 5)
    with pytest.raises(ValueError, match="max_layers_to_combine"):
        _core.condsearch_grid(np.zeros((2, 40)), np.array([1, 0], bool), 40, np.array([0.5]))
    with pytest.raises(ValueError, match="max_layers_to_combine"):
        _core.condsearch_exact(np.zeros((2, 3)), np.array([1, 0], bool), 0)
    with pytest.raises(ValueError, match="max_layers_to_combine"):
        _core.condsearch_exact(np.zeros((2, 3)), np.array([1, 0], bool), 4)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    sims = np.zeros((3, 2))
    labels = np.array([1, 0, 1], dtype=bool)
    grid = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match="sims"):
        _core.condsearch_grid(np.zeros(3), labels, 1, grid)
    with pytest.raises(ValueError, match="sims"):
        _core.condsearch_grid(np.zeros((0, 2)), labels[:0], 1, grid)
    with pytest.raises(ValueError, match="labels"):
        _core.condsearch_grid(sims, labels[:2], 1, grid)
    with pytest.raises(ValueError, match="labels"):
        _core.condsearch_grid(sims, np.array([0, 1, 2], np.uint8), 1, grid)
    with pytest.raises(ValueError, match="thresholds"):
        _core.condsearch_grid(sims, labels, 1, np.array([0.2, 0.1]))
    with pytest.raises(ValueError, match="thresholds"):
        _core.condsearch_grid(sims, labels, 1, np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="thresholds"):
        _core.condsearch_grid(sims, labels, 1, np.array([]))
    bad = sims.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        _core.condsearch_grid(bad, labels, 1, grid)
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        _core.condsearch_exact(bad, labels, 1)


def test_inputs_are_converted_not_mutated():
    rng = np.random.default_rng(0)
    sims32 = rng.random((8, 3)).astype(np.float32)
    fortran = np.asfortranarray(sims32.astype(np.float64))
    labels = np.array([1, 0] * 4, dtype=bool)
    grid = np.arange(0, 1, 0.05)
    a = _core.condsearch_grid(sims32.astype(np.float64), labels, 2, grid)
    b = _core.condsearch_grid(fortran, labels.astype(np.uint8), 2, list(grid))
    assert {k: v for k, v in a.items() if k != "scores"} == {k: v for k, v in b.items() if k != "scores"}
    np.testing.assert_array_equal(fortran, sims32.astype(np.float64))
