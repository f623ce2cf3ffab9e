"""The condition search's report: the save_analysis JSON and the similarity plot.

The search itself (similarities, the C grid/exact search) is search.py; this
file only lays out what the search found, in the JSON layout of the original
library plus the search settings, and draws one histogram per layer.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .similarity import COMPARATORS

DEFAULT_ANALYSIS_PATH = "optimal_condition_point_analysis.json"


def threshold_keys(grid: np.ndarray) -> list[str]:
    """The reference keys thresholds with 3 decimals; use more only where 3 would merge grid values."""
    for decimals in range(3, 18):
        keys = [f"{t:.{decimals}f}" for t in grid]
        if len(set(keys)) == len(keys):
            return keys
    return [repr(float(t)) for t in grid]


def combination_key(combo, layer_combination: str = "or") -> str:
    """The analysis key of one layer combination: "layers_3_5" for OR (the reference's
    key), "and_layers_3_5" for AND."""
    return ("and_" if layer_combination == "and" else "") + "layers_" + "_".join(map(str, combo))


def analysis_summary(sims: torch.Tensor, labels: np.ndarray, layer_ids: list[int], max_combine: int, grid: np.ndarray,
                     results: dict[str, dict], exact: bool, best_layers, best_threshold, best_comparator, best_f1,
                     mode: str, best_combination: str = "or", layer_combination: str = "or") -> dict:
    """The save_analysis JSON (the reference's layout, plus the search settings).

    results: {"or": core result, "and": core result} for the rules searched. Each
    combination entry carries its rule in "layer_combination"; OR entries keep the
    reference's keys ("layers_3_5"), AND entries are keyed "and_layers_3_5"."""
    analysis: dict[str, Any] = {}
    combos = [c for r in range(1, max_combine + 1) for c in combinations(layer_ids, r)]
    keys = None if exact else threshold_keys(grid)
    for comb, res in results.items():
        for k, combo in enumerate(combos):
            if exact:
                per = res["per_combo"]                               # [n_combos, 2, 2] (threshold, f1)
                scores = {f"{float(per[k, c, 0])!r}_{COMPARATORS[c]}": float(per[k, c, 1])
                          for c in range(2) if per[k, c, 1] > 0}
            else:
                table = res["scores"]                                # [n_combos, T, 2]
                js, cs = np.nonzero(table[k])
                scores = {f"{keys[j]}_{COMPARATORS[c]}": float(table[k, j, c])  # type: ignore[index]
                          for j, c in zip(js.tolist(), cs.tolist())}
            analysis[combination_key(combo, comb)] = {"f1_scores": scores, "similarities": {},
                                                      "layer_combination": comb}
    s = sims.numpy()
    for col, layer in enumerate(layer_ids):
        analysis[f"layer_{layer}"] = {"similarities": {"positive": s[labels, col].tolist(),
                                                       "negative": s[~labels, col].tolist()}}
    return {
        "best_layers": best_layers,
        "best_threshold": best_threshold,
        "best_direction": best_comparator,  # the documented JSON key
        "best_f1_score": best_f1,
        "best_layer_combination": best_combination,
        "search": {"exact": exact, "condition_threshold_comparison_mode": mode, "layer_combination": layer_combination,
                   "layer_range": [layer_ids[0], layer_ids[-1] + 1], "max_layers_to_combine": max_combine,
                   "n_thresholds": None if exact else int(grid.size),
                   "n_positive": int(labels.sum()), "n_negative": int((~labels).sum())},
        "analysis": analysis,
    }


def plot_similarities(sims: np.ndarray, labels: np.ndarray, layer_ids: list[int], best_layers: list[int],
                      best_threshold: float, best_comparator: str, path: str | Path,
                      layer_combination: str = "or") -> Path:
    """One histogram per layer (positives vs negatives) with the best threshold marked; saved as `path`.
    The title says whether the best layers combine with OR (any) or AND (every)."""
    from matplotlib.figure import Figure

    n = len(layer_ids)
    ncols = min(6, n)
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(3.0 * ncols, 2.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    bins = np.linspace(float(sims.min()), float(sims.max()), 41) if sims.max() > sims.min() else 10
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        layer = layer_ids[k]
        ax.hist(sims[labels, k], bins=bins, alpha=0.6, color="tab:red", label="positive")
        ax.hist(sims[~labels, k], bins=bins, alpha=0.6, color="tab:blue", label="negative")
        is_best = layer in best_layers
        ax.axvline(best_threshold, color="black", linestyle="-" if is_best else ":", linewidth=1.5 if is_best else 0.8)
        ax.set_title(f"layer {layer}" + (" (best)" if is_best else ""), fontsize=9,
                     fontweight="bold" if is_best else "normal")
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)
    rule = "" if len(best_layers) < 2 else (" (AND: every layer)" if layer_combination == "and" else " (OR: any layer)")
    fig.suptitle(f"condition similarity per layer; threshold {best_threshold:.4g} ({best_comparator}), "
                 f"best layers {best_layers}{rule}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
