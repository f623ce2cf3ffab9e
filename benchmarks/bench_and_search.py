"""AND vs OR layer combinations in the condition search: cost and train F1, same run.

What it measures, on the demo's condition data (the package's
data/condition_harmful.json, TRAIN prompts only: 173 harmful + 173 harmless)
with the embedded SmolLM2-135M-Instruct and the demo's condition settings
(demo/pipeline.py: pca_pairwise condition vector trained on the train pairs
(--method picks another; --mode / --train-tokens other poolings),
all tokens; mean pooling; layers (1, 11), i.e. up to the first behaviour layer):

1. Cost. The similarities [346, 10] are computed once; then the C search runs
   OR and AND alternately on them (grid: the demo's numpy.arange(0, 0.1, 1e-4),
   1000 thresholds; exact: every threshold), max_layers_to_combine 1, 2, 3.
   Reported: median seconds of each and the ratio AND / OR (same process, same
   input, interleaved repetitions, 1 thread).
2. Quality. The best TRAIN F1 of OR and of AND (exact search) at
   max_layers_to_combine 1, 2, 3, with the chosen point (layers, threshold,
   comparator) and its rates on the train prompts. For information only, the
   same fixed point is also scored on the held-out prompts (nothing here is
   chosen on them). One cell (max 2, AND) is re-run end to end through
   find_best_condition_point to check it returns the same point as the core
   call on the shared similarities.
3. The strict operating point (what the demo's CAST-strict row needs): over
   every combination of up to max layers, comparator and threshold, the highest
   TRAIN true-positive rate at a TRAIN false-positive rate <= --fpr-cap, OR vs
   AND (plain numpy sweep over each combination's reduced values).
4. What the shared threshold costs: AND of two layers where EACH layer has its
   own threshold and comparator (not a search mode of the product; multisteer
   installs it as two conditions C1, C2 and "if C1 and C2 then B1"), best train
   F1 and best train TPR at FPR <= --fpr-cap over every pair and every pair of
   thresholds (plain numpy).

    .venv/bin/python benchmarks/bench_and_search.py [--reps 5] [--max-combine 3] [--json out.json]

Not here: the demo's steering and judge (demo/), the comparison with the
reference library's search (bench_condition_search.py).

Measured 2026-11-30 (2 shared cores, load 6-8, 1 thread; layers 1..10):
- cost, demo vector: AND/OR 0.87-1.00 (grid, max 1-3) and 0.97-1.02 (exact),
  e.g. exact max 3 (175 combinations): 0.0206 s OR, 0.0210 s AND;
- best train F1, OR = AND at max 1, 2 and 3 in every run (the single layer 10
  wins): pca_pairwise/mean 0.8767, mean_diff/mean 0.8835, probe/mean 0.9913;
  with the usertext branch merged, user_text pooling: pca_pairwise 0.8624,
  mean_diff 0.8822. At train FPR <= 5% AND found nothing above one layer either.
- part 4 (own threshold and comparator per layer): train F1 +0.004 to +0.015;
  at train FPR <= 5%, mean_diff/user_text train TPR 0.711 -> 0.786 (held-out
  TPR 0.500 -> 0.629 at FPR 0.043), and the best pairs often use OPPOSITE
  comparators at the two layers, which one shared comparator cannot express.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def _rates(pred: np.ndarray, labels: np.ndarray) -> dict:
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    return {"f1": 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn), "tpr": tp / max(int(labels.sum()), 1),
            "fpr": fp / max(int((~labels).sum()), 1)}


def _predict(sims: np.ndarray, cols, threshold: float, comparator: str, combination: str) -> np.ndarray:
    from activation_steering.conditions.similarity import condition_met

    met = condition_met(sims[:, list(cols)], threshold, comparator)
    return met.all(axis=1) if combination == "and" else met.any(axis=1)


def _best_tpr_at_fpr(sims: np.ndarray, labels: np.ndarray, max_combine: int, combination: str, cap: float):
    """(tpr, fpr, layers-columns, threshold, comparator) with the highest train TPR at
    FPR <= cap (ties: lower FPR, then the first in itertools order), every threshold."""
    from itertools import combinations

    pos_n, neg_n = int(labels.sum()), int((~labels).sum())
    best = None
    for r in range(1, max_combine + 1):
        for cols in combinations(range(sims.shape[1]), r):
            sub = sims[:, list(cols)]
            for comparator in ("larger", "smaller"):
                # the value each row's prediction depends on (see docs/semantics.md)
                v = sub.min(1) if (comparator == "larger") == (combination == "or") else sub.max(1)
                vp, vn = np.sort(v[labels]), np.sort(v[~labels])
                u = np.unique(v)
                if comparator == "larger":        # met iff v < t
                    ts = np.append(u, u[-1] + 1.0)
                    tp, fp = np.searchsorted(vp, ts, "left"), np.searchsorted(vn, ts, "left")
                else:                             # met iff v > t
                    ts = np.insert(u, 0, u[0] - 1.0)
                    tp, fp = pos_n - np.searchsorted(vp, ts, "right"), neg_n - np.searchsorted(vn, ts, "right")
                ok = fp / neg_n <= cap
                if not ok.any():
                    continue
                k = np.flatnonzero(ok)[np.lexsort((fp[ok], -tp[ok]))[0]]
                cand = (tp[k] / pos_n, fp[k] / neg_n, cols, float(ts[k]), comparator)
                if best is None or (cand[0], -cand[1]) > (best[0], -best[1]):
                    best = cand
    return best


def _and_pairs_own_thresholds(sims: np.ndarray, labels: np.ndarray, cap: float):
    """Best (train F1 point, strict point) of "layer a meets (t_a, cmp_a) AND layer b meets
    (t_b, cmp_b)" over every pair and every pair of thresholds. A point is
    (score, a, b, sign_a, sign_b, t_a, t_b, tpr, fpr) with the prediction
    (sign_a * x_a < t_a) & (sign_b * x_b <= t_b): sign +1 is "larger", -1 "smaller"."""
    from itertools import combinations, product

    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    best_f1: tuple = (-1.0,)
    best_strict: tuple = (-1.0,)
    for a, b in combinations(range(sims.shape[1]), 2):
        for sa, sb in product((1, -1), (1, -1)):
            ya, yb = sa * sims[:, a], sb * sims[:, b]
            order = np.argsort(yb, kind="stable")
            ybs, ls = yb[order], labels[order]
            last = np.r_[ybs[1:] != ybs[:-1], True]           # the end of each group of equal yb
            for ta in np.r_[np.unique(ya), np.inf]:
                mk = (ya < ta)[order]
                tp, fp = np.cumsum(mk & ls)[last], np.cumsum(mk & ~ls)[last]
                f1 = np.where(tp > 0, 2 * tp / np.maximum(tp + fp + n_pos, 1), 0.0)
                k = int(np.argmax(f1))
                if f1[k] > best_f1[0]:
                    best_f1 = (float(f1[k]), a, b, sa, sb, float(ta), float(ybs[last][k]), tp[k] / n_pos,
                               fp[k] / n_neg)
                ok = np.flatnonzero(fp / n_neg <= cap)
                if ok.size:
                    k = ok[np.lexsort((fp[ok], -tp[ok]))[0]]
                    if (tp[k] / n_pos, -fp[k] / n_neg) > (best_strict[0], -(best_strict[-1] if len(best_strict) > 1
                                                                           else 0.0)):
                        best_strict = (tp[k] / n_pos, a, b, sa, sb, float(ta), float(ybs[last][k]), tp[k] / n_pos,
                                       fp[k] / n_neg)
    return best_f1, best_strict


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions of each search (median reported)")
    ap.add_argument("--max-combine", type=int, default=3)
    ap.add_argument("--layer-range", type=int, nargs=2, default=(1, 11))
    ap.add_argument("--method", default="pca_pairwise",
                    help="condition vector method (default: the demo's pca_pairwise; also mean_diff, probe, ...)")
    ap.add_argument("--mode", default="mean", help="condition pooling (condition_threshold_comparison_mode)")
    ap.add_argument("--train-tokens", default="all", help="accumulate_last_x_tokens of the condition vector")
    ap.add_argument("--fpr-cap", type=float, default=0.05, help="train false-positive cap of part 3")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from activation_steering import MalleableModel, SteeringDataset, SteeringVector, _core
    from activation_steering.conditions.search import condition_similarities, find_best_condition_point
    from activation_steering.demo.pipeline import project_data
    from activation_steering.models import load_default_model

    data = project_data()
    model, tok = load_default_model()
    mm = MalleableModel(model, tok)
    lo, hi = args.layer_range
    layer_ids = list(range(lo, hi))
    t = time.perf_counter()
    ds = SteeringDataset(tokenizer=tok, examples=list(zip(data.train_harmful, data.train_harmless)), suffixes=None,
                         disable_suffixes=True)
    cv = SteeringVector.train(model=model, tokenizer=tok, steering_dataset=ds, method=args.method,
                              accumulate_last_x_tokens=args.train_tokens, hidden_layer_ids=layer_ids)
    train = data.train_harmful + data.train_harmless
    labels = np.zeros(len(train), bool)
    labels[:len(data.train_harmful)] = True
    sims = condition_similarities(mm, train, cv, layer_ids, args.mode).astype(np.float64)
    test = data.test_harmful + data.test_harmless
    test_labels = np.zeros(len(test), bool)
    test_labels[:len(data.test_harmful)] = True
    test_sims = condition_similarities(mm, test, cv, layer_ids, args.mode).astype(np.float64)
    print(f"condition vector ({args.method}, {args.train_tokens} tokens; pooling {args.mode}) + similarities: {time.perf_counter() - t:.1f}s; train sims {sims.shape}, "
          f"layers {lo}..{hi - 1}, threads 1, load {os.getloadavg()[0]:.1f}")

    grid = np.arange(0.0, 0.1, 1e-4)
    out: dict = {"method": args.method, "mode": args.mode, "train_tokens": args.train_tokens, "layers": layer_ids, "n_train": len(train), "n_test": len(test), "timing": [], "quality": []}

    # -- 1. cost: OR and AND interleaved on the same similarities ------------ #
    print(f"\n{'search':8s} {'max':>3s} {'OR s':>10s} {'AND s':>10s} {'AND/OR':>8s}")
    for exact in (False, True):
        for r in range(1, args.max_combine + 1):
            times: dict[str, list[float]] = {"or": [], "and": []}
            for _ in range(args.reps):
                for comb in ("or", "and"):
                    t = time.perf_counter()
                    if exact:
                        _core.condsearch_exact(sims, labels, r, layer_combination=comb)
                    else:
                        _core.condsearch_grid(sims, labels, r, grid, layer_combination=comb)
                    times[comb].append(time.perf_counter() - t)
            m_or, m_and = statistics.median(times["or"]), statistics.median(times["and"])
            name = "exact" if exact else "grid"
            print(f"{name:8s} {r:3d} {m_or:10.5f} {m_and:10.5f} {m_and / m_or:8.2f}")
            out["timing"].append({"search": name, "max_layers_to_combine": r, "or_s": m_or, "and_s": m_and,
                                  "ratio_and_over_or": m_and / m_or, "n_combinations": _core.condsearch_count(
                                      len(layer_ids), r)})

    # -- 2. quality: best train F1, OR vs AND (exact) ------------------------ #
    print(f"\n{'max':>3s} {'rule':4s} {'train F1':>8s} {'TPR':>6s} {'FPR':>6s}  point"
          f"{'':28s} {'held-out F1':>11s} {'TPR':>6s} {'FPR':>6s}")
    points = {}
    for r in range(1, args.max_combine + 1):
        for comb in ("or", "and"):
            res = _core.condsearch_exact(sims, labels, r, layer_combination=comb)
            cols = list(res["columns"])
            tr = _rates(_predict(sims, cols, res["threshold"], res["direction"], comb), labels)
            assert abs(tr["f1"] - res["f1"]) < 1e-12
            te = _rates(_predict(test_sims, cols, res["threshold"], res["direction"], comb), test_labels)
            layers = [layer_ids[c] for c in cols]
            points[(r, comb)] = (layers, res["threshold"], res["direction"], res["f1"])
            print(f"{r:3d} {comb:4s} {tr['f1']:8.4f} {tr['tpr']:6.3f} {tr['fpr']:6.3f}  "
                  f"{str(layers):12s} {res['threshold']:.5f} {res['direction']:8s} "
                  f"{te['f1']:11.4f} {te['tpr']:6.3f} {te['fpr']:6.3f}")
            out["quality"].append({"max_layers_to_combine": r, "layer_combination": comb, "layers": layers,
                                   "threshold": res["threshold"], "comparator": res["direction"], "train": tr,
                                   "held_out_same_point": te})

    # -- 3. strict operating point: best train TPR at train FPR <= cap ------- #
    print(f"\n{'max':>3s} {'rule':4s} {'train TPR':>9s} {'FPR':>6s}  point (train FPR <= {args.fpr_cap:.0%})"
          f"{'':8s} {'held-out TPR':>12s} {'FPR':>6s}")
    out["strict"] = []
    for r in range(1, args.max_combine + 1):
        for comb in ("or", "and"):
            tpr, fpr, cols, thr, cmp_ = _best_tpr_at_fpr(sims, labels, r, comb, args.fpr_cap)
            te = _rates(_predict(test_sims, cols, thr, cmp_, comb), test_labels)
            layers = [layer_ids[c] for c in cols]
            print(f"{r:3d} {comb:4s} {tpr:9.3f} {fpr:6.3f}  {str(layers):12s} {thr:.5f} {cmp_:8s}"
                  f"{'':10s} {te['tpr']:12.3f} {te['fpr']:6.3f}")
            out["strict"].append({"max_layers_to_combine": r, "layer_combination": comb, "layers": layers,
                                  "threshold": thr, "comparator": cmp_, "train_tpr": tpr, "train_fpr": fpr,
                                  "held_out_same_point": te})

    # -- 4. AND of two layers with a threshold and comparator each ----------- #
    print("\nAND of 2 layers, each with its own threshold and comparator (multisteer form; not a search mode):")
    out["and_pairs_own_thresholds"] = {}
    for name, pt in zip(("best train F1", f"best train TPR at FPR <= {args.fpr_cap:.0%}"),
                        _and_pairs_own_thresholds(sims, labels, args.fpr_cap)):
        _, a, b, sa, sb, ta, tb, tpr, fpr = pt
        pred = (sa * test_sims[:, a] < ta) & (sb * test_sims[:, b] <= tb)
        te = _rates(pred, test_labels)
        tr = _rates((sa * sims[:, a] < ta) & (sb * sims[:, b] <= tb), labels)
        cmps = ["larger" if s_ == 1 else "smaller" for s_ in (sa, sb)]
        print(f"  {name}: layers {layer_ids[a]}, {layer_ids[b]} ({cmps[0]}, {cmps[1]}): train F1 {tr['f1']:.4f} "
              f"TPR {tpr:.3f} FPR {fpr:.3f}; held-out F1 {te['f1']:.4f} TPR {te['tpr']:.3f} FPR {te['fpr']:.3f}")
        out["and_pairs_own_thresholds"][name] = {"layers": [layer_ids[a], layer_ids[b]], "comparators": cmps,
                                                 "train": tr, "held_out_same_point": te}

    # -- the same cell end to end through the public API --------------------- #
    r = min(2, args.max_combine)
    t = time.perf_counter()
    point = find_best_condition_point(mm, data.train_harmful, data.train_harmless, cv, layer_range=(lo, hi),
                                      max_layers_to_combine=r, exact=True, layer_combination="and",
                                      condition_threshold_comparison_mode=args.mode)
    same = tuple(point) == points[(r, "and")]
    print(f"\nfind_best_condition_point(max {r}, 'and', exact) in {time.perf_counter() - t:.1f}s: {tuple(point)} "
          f"-> {'same point as the core call' if same else 'DIFFERENT from the core call'}")
    out["api_check_same_point"] = same
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
