"""Plain twins of the condition-point search: literal enumeration.

The fast path is the C search (`_core.condsearch_grid` / `_core.condsearch_exact`,
csrc/core/condsearch.c) and `conditions.thresholds.threshold_at_false_positive_rate`.
The twins below walk every combination x threshold x comparator with itertools
and Python loops, for either layer combination ("or": any layer of the
combination meets the condition; "and": every layer does), in the documented order (combinations in itertools order,
thresholds ascending, "larger" before "smaller"; the FIRST strictly better
candidate wins). They are deliberately slow and obvious: no vectorised scoring,
no early exits. Which side of a threshold fires is conditions/similarity.py's
`condition_met`; F1 is conditions/thresholds.py's `f1_score`.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from ..conditions.similarity import COMPARATORS, condition_met
from ..conditions.thresholds import f1_score


def f1_by_counting(pred, truth) -> float:
    """F1 = 2TP / (2TP + FP + FN), counted pair by pair (0 when TP = 0): the twin of
    conditions.thresholds.f1_score."""
    tp = sum(1 for p, y in zip(pred, truth, strict=True) if p and y)
    fp = sum(1 for p, y in zip(pred, truth, strict=True) if p and not y)
    fn = sum(1 for p, y in zip(pred, truth, strict=True) if not p and y)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


LAYER_COMBINATIONS = ("or", "and")


def predict(sims: np.ndarray, combo, threshold: float, comparator: str, combination: str = "or") -> np.ndarray:
    """bool[N]: does ANY ("or") / EVERY ("and") layer of `combo` (column indices) meet
    the condition, row by row."""
    combine = {"or": any, "and": all}[combination]
    return np.array([combine(bool(condition_met(float(row[c]), threshold, comparator)) for c in combo)
                     for row in sims], dtype=bool)


def all_combos(n_layers: int, max_combine: int) -> list[tuple[int, ...]]:
    """Every combination of 1..max_combine columns, in itertools order."""
    return [c for r in range(1, max_combine + 1) for c in combinations(range(n_layers), r)]


def brute_grid(sims: np.ndarray, labels: np.ndarray, max_combine: int, grid,
               combination: str = "or") -> tuple[dict, np.ndarray]:
    """(best, scores[n_combos, T, 2]) over every grid threshold, in the documented order."""
    labels = np.asarray(labels, dtype=bool)
    combos = all_combos(sims.shape[1], max_combine)
    scores = np.zeros((len(combos), len(grid), 2))
    best = None
    for k, combo in enumerate(combos):
        for j, t in enumerate(grid):
            for c, comparator in enumerate(COMPARATORS):
                f1 = f1_score(predict(sims, combo, float(t), comparator, combination), labels)
                scores[k, j, c] = f1
                if best is None or f1 > best["f1"]:
                    best = dict(columns=combo, combo_index=k, threshold_index=j, threshold=float(t),
                                comparator=comparator, f1=f1)
    return best, scores


def exact_candidates(values, comparator: str) -> list[float]:
    """The exact search's candidate thresholds, ascending: one unit below the
    smallest value, the midpoint of each pair of neighbouring distinct values
    (the upper/lower value when the midpoint rounds onto one of them), one unit
    above the largest."""
    d = sorted(set(float(v) for v in values))
    cands = [d[0] - 1.0]
    for a, b in zip(d, d[1:]):
        m = 0.5 * a + 0.5 * b
        cands.append(m if a < m < b else (b if comparator == "larger" else a))
    cands.append(d[-1] + 1.0)
    return cands


def brute_exact(sims: np.ndarray, labels: np.ndarray, max_combine: int,
                combination: str = "or") -> tuple[dict, np.ndarray]:
    """(best, per_combo[n_combos, 2, 2] = (threshold, f1) per comparator): first best over
    every candidate of every combination, in the order (combination, threshold
    ascending, "larger" before "smaller"). The candidates are those of the value
    each row's prediction depends on: "or" with "larger" (any sim < t) and "and"
    with "smaller" (every sim > t) depend on the row's minimum, the other two on
    its maximum; every prediction is still counted layer by layer."""
    labels = np.asarray(labels, dtype=bool)
    combos = all_combos(sims.shape[1], max_combine)
    best = None
    per_combo = np.zeros((len(combos), 2, 2))
    for k, combo in enumerate(combos):
        cands = []
        for c, comparator in enumerate(COMPARATORS):
            reduce = np.min if (comparator == "larger") == (combination == "or") else np.max
            values = reduce(sims[:, list(combo)], axis=1)
            comparator_best = None
            for t in exact_candidates(values, comparator):
                f1 = f1_score(predict(sims, combo, t, comparator, combination), labels)
                cands.append((t, c, f1))
                if comparator_best is None or f1 > comparator_best[1]:
                    comparator_best = (t, f1)
            per_combo[k, c] = comparator_best
        for t, c, f1 in sorted(cands, key=lambda x: (x[0], x[1])):
            if best is None or f1 > best["f1"]:
                best = dict(columns=combo, combo_index=k, threshold=t, comparator=COMPARATORS[c], f1=f1)
    return best, per_combo


def best_condition_point(sims: np.ndarray, labels: np.ndarray, layer_ids: list[int], max_combine: int,
                         grid) -> tuple[list[int], float, str, float]:
    """(layers, threshold, comparator, f1) as find_best_condition_point returns it, by brute force."""
    best, _ = brute_grid(sims, labels, max_combine, grid)
    return [layer_ids[c] for c in best["columns"]], best["threshold"], best["comparator"], best["f1"]


def fpr_capped_point(pos: np.ndarray, neg: np.ndarray, comparator: str, cap: float,
                     n_grid: int = 4001) -> tuple[float, float]:
    """(tpr, -fpr) of the best operating point under the false-positive cap, over a
    fine grid of thresholds around the data (the twin of threshold_at_false_positive_rate)."""
    pos = np.asarray(pos, dtype=np.float64).reshape(len(pos), -1)   # 1-D: one layer
    neg = np.asarray(neg, dtype=np.float64).reshape(len(neg), -1)
    grid = np.linspace(min(pos.min(), neg.min()) - 1, max(pos.max(), neg.max()) + 1, n_grid)
    best = None
    for t in grid:
        tpr = condition_met(pos, t, comparator).any(1).mean()
        fpr = condition_met(neg, t, comparator).any(1).mean()
        if fpr <= cap and (best is None or (tpr, -fpr) > best):
            best = (tpr, -fpr)
    return best
