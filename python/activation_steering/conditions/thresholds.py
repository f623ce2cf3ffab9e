"""Scores and operating points of a condition: F1 and the FPR-capped threshold.

F1 here is the one definition used by the search's plain twin, the demo and
the tests (the C search computes the same quantity, see csrc/core/condsearch.c).
Which side of a threshold "fires" is conditions/similarity.py's `condition_met`.
"""
from __future__ import annotations

import numpy as np

from .similarity import COMPARATORS, condition_met


def f1_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """F1 of boolean predictions against boolean truth (0 when there is no true positive)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    for name, a in (("pred", pred), ("truth", truth)):
        if a.dtype != np.bool_:
            raise TypeError(f"{name} must be a bool array, got dtype {a.dtype}; compare with a threshold first")
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"pred and truth must be 1-D of the same length, got shapes {pred.shape} and {truth.shape}")
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def threshold_at_false_positive_rate(positive_sims: np.ndarray, negative_sims: np.ndarray, comparator: str,
                                     max_false_positive_rate: float) -> tuple[float, float, float]:
    """(threshold, true positive rate, false positive rate) of the operating point
    that fires on the most positives while firing on at most
    `max_false_positive_rate` of the negatives.

    An F1-optimal condition point (find_best_condition_point) weighs a missed
    positive like a false alarm; when a false alarm costs more (CAST refusing a
    harmless prompt), cap the false positive rate instead. Inputs are similarity
    matrices [strings, layers] of one condition at fixed layers (columns combined
    with ANY, as steering does), e.g. from `condition_similarities`. The threshold
    returned is a midpoint between two observed similarities (or one unit beyond
    the extremes), like exact search; ties prefer the lower false positive rate.
    """
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator must be one of {COMPARATORS}, got {comparator!r}")
    if not (isinstance(max_false_positive_rate, (int, float)) and 0.0 <= max_false_positive_rate <= 1.0):
        raise ValueError(f"max_false_positive_rate must be in [0, 1], got {max_false_positive_rate!r}")
    pos = np.atleast_2d(np.asarray(positive_sims, dtype=np.float64).T).T
    neg = np.atleast_2d(np.asarray(negative_sims, dtype=np.float64).T).T
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1] or not len(pos) or not len(neg):
        raise ValueError("positive_sims and negative_sims must be non-empty [strings, layers] arrays with the same "
                         "number of layers")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("positive_sims and negative_sims must be finite (a NaN similarity comes from an all-zero "
                         "pooled activation or condition direction)")
    values = np.unique(np.concatenate([pos.ravel(), neg.ravel()]))
    # every distinct outcome of "any column meets the condition" is reached by one of these thresholds
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    best = None
    for t in candidates:
        tpr = float(np.asarray(condition_met(pos, t, comparator)).any(1).mean())  # numpy in, numpy out
        fpr = float(np.asarray(condition_met(neg, t, comparator)).any(1).mean())
        if fpr <= max_false_positive_rate and (best is None or (tpr, -fpr) > (best[1], -best[2])):
            best = (float(t), float(tpr), float(fpr))
    assert best is not None  # the empty operating point (fires on nothing) always qualifies
    return best
