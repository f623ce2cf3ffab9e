"""Train-only sweep of the CAST harmful-prompt condition: method x pooling x layer x OR/AND.

What it is for: choosing the demo's condition (extraction method, pooling, layer or
pair of layers combined with OR or AND, threshold rule) by K-fold cross-validation
INSIDE the training split of data/condition_harmful.json, cheaply: the model runs
once per prompt, every later number comes from cached pooled activations.

What it deliberately is not: the product's code path. It restates, in numpy, what the
product computes (so it can refit a direction per fold in microseconds), and
the `check` part compares that restatement with the product on one setting
(SteeringVector.train + the search's similarities). The held-out test
prompts are read ONLY by the `heldout` part, which reports figures for settings given
on the command line (chosen beforehand from the train-CV table); it chooses nothing.

The restated product (docs/semantics.md, docs/extraction_methods.md):
  * a prompt at run time is `format_prompt(tok, p)` (chat template + generation prompt);
  * a condition vector is trained on the SteeringDataset rendering (chat template, no
    generation prompt: a token prefix of the run-time string, so under a causal model
    its hidden states are the same numbers) at the LAYER OUTPUT of layer i
    (hidden_states[i + 1]) and compared at the DECODER LAYER INPUT of layer i
    (hidden_states[i]);
  * pooling pairs (train pooling -> run-time pooling): "all" -> "mean" (every real
    token), 1 -> "last" (the last real token of each string: the rendered turn's last
    token when training, the generation prompt's last token at run time),
    "user_text" -> "user_text" (the tokens of the user's message only);
  * sim = cos(h, tanh(c (c.h)/(c.c))); comparator "larger": met iff sim < t,
    "smaller": met iff sim > t; several layers: OR (any) or AND (all) with one
    shared threshold and comparator;
  * the threshold of a fold is chosen on the fold's training pairs: F1-optimal (the
    product's exact search: midpoints between observed values) or the most true
    positives with at most `fpr_cap` false alarms (thresholds.threshold_at_false_positive_rate).

    PYTHONPATH=python python benchmarks/sweep_cast_conditions.py capture
    PYTHONPATH=python python benchmarks/sweep_cast_conditions.py cv [--folds 5]
    PYTHONPATH=python python benchmarks/sweep_cast_conditions.py heldout --setting probe,user_text,and,9,12
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(os.environ.get("AS_SWEEP_DIR", "/tmp/activation_steering_sweep"))
POOLINGS = ("mean", "last", "user_text")
METHODS = ("pca_pairwise", "mean_diff", "probe")
# extra methods the cv part can add (--methods): the probe at other L2 strengths, "probe@<probe_l2>"


# --------------------------------------------------------------------------- #
# capture: one forward per prompt, every layer, every pooling
# --------------------------------------------------------------------------- #
def _user_span(tok, text: str, rendered: str) -> tuple[int, int, list]:
    """(first, stop) token indices of the user's message inside `rendered`, and the ids."""
    enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
    start = rendered.index("<|im_start|>user\n") + len("<|im_start|>user\n")
    stop = start + len(text)
    assert rendered[start:stop] == text, (text, rendered)
    toks = [k for k, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < stop]
    return toks[0], toks[-1] + 1, enc["input_ids"]


def capture(split: str) -> Path:
    """Pooled hidden states [pooling, L + 1, N, D] float32 of the split's prompts
    (harmful first, then harmless), pooled from ONE forward per prompt."""
    import torch

    from activation_steering.activations.prompts import format_prompt
    from activation_steering.demo import project_data
    from activation_steering.models import load_default_model
    from activation_steering.steering_dataset import clean_text

    path = OUT / f"pooled_{split}.npz"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    model, tok = load_default_model()
    data = project_data()
    prompts = (data.train_harmful + data.train_harmless) if split == "train" else (data.test_harmful + data.test_harmless)
    # pooling index: 0 mean(run time), 1 last(run time), 2 user_text, 3 all(train rendering), 4 last(train rendering)
    n_layers = model.config.num_hidden_layers
    pooled = np.empty((5, n_layers + 1, len(prompts), model.config.hidden_size), np.float32)
    t = time.perf_counter()
    with torch.inference_mode():
        for n, p in enumerate(prompts):
            p = clean_text(tok, p)
            run = format_prompt(tok, p)
            train = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=False)
            assert run.startswith(train)
            a, b, ids = _user_span(tok, p, run)
            n_train = len(tok(train, add_special_tokens=False)["input_ids"])
            assert ids[:n_train] == tok(train, add_special_tokens=False)["input_ids"]
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            h = torch.stack(hs)[:, 0].float().numpy()                        # [L+1, T, D]
            pooled[0, :, n] = h.mean(axis=1)
            pooled[1, :, n] = h[:, -1]
            pooled[2, :, n] = h[:, a:b].mean(axis=1)
            pooled[3, :, n] = h[:, :n_train].mean(axis=1)
            pooled[4, :, n] = h[:, n_train - 1]
    np.savez(path, pooled=pooled, n_pos=len(prompts) // 2)
    print(f"captured {split}: {len(prompts)} prompts in {time.perf_counter() - t:.1f}s -> {path}", flush=True)
    return path


def load(split: str) -> tuple[np.ndarray, int]:
    z = np.load(capture(split))
    return z["pooled"], int(z["n_pos"])


# pooling name -> (index used to fit the direction, index compared at run time)
POOL_INDEX = {"mean": (3, 0), "last": (4, 1), "user_text": (2, 2)}


# --------------------------------------------------------------------------- #
# the restated product
# --------------------------------------------------------------------------- #
def fit_direction(method: str, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Unit direction [D] from paired rows pos[P, D], neg[P, D], through the product's C core."""
    from activation_steering import _core

    rows = np.empty((1, 2 * len(pos), pos.shape[1]), np.float32)
    rows[0, 0::2], rows[0, 1::2] = pos, neg
    if method.startswith("pca"):
        comps, _, _ = _core.pca_fit(rows, method, 1, False)
        return np.asarray(comps[0, 0], np.float64)
    name, _, l2 = method.partition("@")          # "probe@30": probe_l2=30 (default 1)
    dirs, _, _ = _core.methods_fit(rows, name, normalize=True, probe_l2=float(l2 or 1.0), probe_standardize=False)
    return np.asarray(dirs[0], np.float64)


def similarity(h: np.ndarray, c: np.ndarray) -> np.ndarray:
    """sim[N] = cos(h, tanh(c (c.h)/(c.c))), float64 (docs/semantics.md)."""
    coef = (h @ c) / (c @ c)
    proj = np.tanh(coef[:, None] * c[None, :])
    return (h * proj).sum(1) / (np.linalg.norm(h, axis=1) * np.linalg.norm(proj, axis=1) + 1e-30)


def f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = float(np.sum(pred & truth))
    return 0.0 if tp == 0 else 2 * tp / (np.sum(pred) + np.sum(truth))


def roc_auc(score: np.ndarray, truth: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties count half."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1, n0 = truth.sum(), (~truth).sum()
    return float((r[truth].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def candidate_thresholds(score: np.ndarray) -> np.ndarray:
    u = np.unique(score)
    return np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])


def choose_threshold(score: np.ndarray, truth: np.ndarray, rule: str, fpr_cap: float) -> tuple[float, float]:
    """(threshold t, train metric): predicted positive iff score > t (score already oriented).
    rule "f1": best F1 (first of the ascending candidates); "fpr": most true positives with
    FPR <= fpr_cap (ties: the larger threshold)."""
    ts = candidate_thresholds(score)
    pred = score[None, :] > ts[:, None]                                        # [T, N]
    tp = (pred & truth).sum(1)
    fp = (pred & ~truth).sum(1)
    if rule == "f1":
        f = np.where(tp > 0, 2 * tp / (pred.sum(1) + truth.sum()), 0.0)
        k = int(np.argmax(f))
        return float(ts[k]), float(f[k])
    ok = fp <= fpr_cap * (~truth).sum()
    best = tp[ok].max()
    k = int(np.flatnonzero(ok & (tp == best))[-1])
    return float(ts[k]), float(tp[k] / truth.sum())


def oriented(sims: np.ndarray, comparator: str, combination: str) -> np.ndarray:
    """One score per prompt, larger = condition more met, for sims[N, k] of k layers.
    "smaller" (met iff sim > t): AND -> min, OR -> max; "larger" (met iff sim < t):
    score = -sim, AND -> min(-sim), OR -> max(-sim). One threshold for every layer."""
    s = sims if comparator == "smaller" else -sims
    return s.min(1) if combination == "and" else s.max(1)


def folds_of(n_pairs: int, k: int, seed: int = 7) -> list[np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n_pairs)
    return [idx[j::k] for j in range(k)]


# --------------------------------------------------------------------------- #
# cv: fold-held-out figures per method x pooling x layer (and pairs)
# --------------------------------------------------------------------------- #
def fold_sims(pooled: np.ndarray, n_pos: int, method: str, pooling: str, layers: list[int],
              fit_pairs: np.ndarray) -> np.ndarray:
    """sims[N, len(layers)] of every prompt, directions fitted on `fit_pairs` only."""
    fit_i, run_i = POOL_INDEX[pooling]
    out = np.empty((pooled.shape[2], len(layers)))
    for k, layer in enumerate(layers):
        fit = pooled[fit_i, layer + 1]                                           # layer OUTPUT
        c = fit_direction(method, fit[fit_pairs], fit[n_pos + fit_pairs])
        out[:, k] = similarity(pooled[run_i, layer].astype(np.float64), c)     # decoder layer INPUT
    return out


def cv(folds: int, layers: list[int], fpr_cap: float, methods, poolings) -> dict:
    pooled, n_pos = load("train")
    truth_all = np.r_[np.ones(n_pos, bool), np.zeros(n_pos, bool)]
    parts = folds_of(n_pos, folds)
    cache = OUT / f"cv_sims_{folds}.npz"
    sims: dict[str, np.ndarray] = dict(np.load(cache)) if cache.exists() else {}
    t = time.perf_counter()
    for method in methods:
        for pooling in poolings:
            key = f"{method}|{pooling}"
            if key in sims and sims[key].shape[2] == len(layers):
                continue
            arr = np.empty((folds, 2 * n_pos, len(layers)))
            for j in range(folds):
                fit_pairs = np.sort(np.concatenate([parts[m] for m in range(folds) if m != j]))
                arr[j] = fold_sims(pooled, n_pos, method, pooling, layers, fit_pairs)
            sims[key] = arr
            np.savez(cache, **sims)
            print(f"  sims {key}: {time.perf_counter() - t:.0f}s", flush=True)

    results = []
    combos = [((a,), "or") for a in range(len(layers))]
    combos += [((a, b), comb) for a, b in itertools.combinations(range(len(layers)), 2) for comb in ("or", "and")]
    for method in methods:
        for pooling in poolings:
            arr = sims[f"{method}|{pooling}"]
            for idx, comb in combos:
                row = {"method": method, "pooling": pooling, "layers": [layers[i] for i in idx],
                       "combination": comb if len(idx) > 1 else "one"}
                for rule in ("f1", "fpr"):
                    pred_all = np.zeros(2 * n_pos, bool)
                    aucs = []
                    fit_metric = []
                    for j in range(folds):
                        test_pairs = parts[j]
                        fit_pairs = np.sort(np.concatenate([parts[m] for m in range(folds) if m != j]))
                        fit_rows = np.r_[fit_pairs, n_pos + fit_pairs]
                        test_rows = np.r_[test_pairs, n_pos + test_pairs]
                        s = arr[j][:, list(idx)]
                        best = None
                        for comparator in ("larger", "smaller"):   # the product tries "larger" first
                            sc = oriented(s, comparator, comb)
                            thr, m = choose_threshold(sc[fit_rows], truth_all[fit_rows], rule, fpr_cap)
                            if best is None or m > best[0]:
                                best = (m, comparator, thr)
                        m, comparator, thr = best
                        sc = oriented(s, comparator, comb)
                        pred_all[test_rows] = sc[test_rows] > thr
                        fit_metric.append(m)
                        if rule == "f1":
                            aucs.append(roc_auc(sc[test_rows], truth_all[test_rows]))
                    tpr = float(pred_all[truth_all].mean())
                    fpr = float(pred_all[~truth_all].mean())
                    row[rule] = {"f1": f1(pred_all, truth_all), "tpr": tpr, "fpr": fpr}
                    if rule == "f1":
                        row["auc"] = float(np.mean(aucs))
                results.append(row)
    print(f"cv: {len(results)} settings scored in {time.perf_counter() - t:.0f}s", flush=True)
    (OUT / f"cv_results_{folds}_{'_'.join(methods)}_{'_'.join(poolings)}.json").write_text(json.dumps(results))
    return {"results": results}


def print_tables(results: list[dict], top: int) -> None:
    def fmt(r):
        return (f"| {r['method']} | {r['pooling']} | {r['combination']} | {r['layers']} | {r['auc']:.3f} | "
                f"{r['f1']['f1']:.3f} | {r['f1']['tpr']:.1%} / {r['f1']['fpr']:.1%} | "
                f"{r['fpr']['tpr']:.1%} / {r['fpr']['fpr']:.1%} |")

    head = ("| method | pooling | combination | layers | out-of-fold AUC | out-of-fold F1 | TPR / FPR at F1 threshold "
            "| TPR / FPR at FPR<=5% threshold |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\nBest single layer per method x pooling (by out-of-fold F1):\n" + head)
    methods = sorted({r["method"] for r in results}, key=str)
    for method in methods:
        for pooling in POOLINGS:
            rs = [r for r in results if r["method"] == method and r["pooling"] == pooling and r["combination"] == "one"]
            if rs:
                print(fmt(max(rs, key=lambda r: r["f1"]["f1"])))
    for comb in ("or", "and"):
        print(f"\nBest {comb.upper()} pair per method x pooling (by out-of-fold F1):\n" + head)
        for method in methods:
            for pooling in POOLINGS:
                rs = [r for r in results if r["method"] == method and r["pooling"] == pooling and r["combination"] == comb]
                if rs:
                    print(fmt(max(rs, key=lambda r: r["f1"]["f1"])))
    print(f"\nTop {top} overall by out-of-fold F1:\n" + head)
    for r in sorted(results, key=lambda r: -r["f1"]["f1"])[:top]:
        print(fmt(r))
    print(f"\nTop {top} overall by out-of-fold TPR at the FPR<=5% threshold:\n" + head)
    for r in sorted(results, key=lambda r: -(r["fpr"]["tpr"] - r["fpr"]["fpr"]))[:top]:
        print(fmt(r))


def auc_by_layer(split: str, layers: list[int]) -> None:
    """ROC AUC per method x pooling x layer of the direction fitted on ALL train pairs,
    scored on `split` (train: in-sample; test: held-out). Orientation fixed on train."""
    tr, n_pos = load("train")
    ev, n_ev = load(split)
    truth = np.r_[np.ones(n_ev, bool), np.zeros(n_ev, bool)]
    truth_tr = np.r_[np.ones(n_pos, bool), np.zeros(n_pos, bool)]
    print(f"\nROC AUC on {split} (direction fitted on all train pairs), layers {layers[0]}..{layers[-1]}")
    print("| method | pooling | " + " | ".join(str(l) for l in layers) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in layers) + " |")
    allp = np.arange(n_pos)
    for method in METHODS:
        for pooling in POOLINGS:
            fit_i, run_i = POOL_INDEX[pooling]
            cells = []
            for layer in layers:
                c = fit_direction(method, tr[fit_i, layer + 1][allp], tr[fit_i, layer + 1][n_pos + allp])
                s_tr = similarity(tr[run_i, layer].astype(np.float64), c)
                sign = 1.0 if roc_auc(s_tr, truth_tr) >= 0.5 else -1.0
                cells.append(f"{roc_auc(sign * similarity(ev[run_i, layer].astype(np.float64), c), truth):.3f}")
            print(f"| {method} | {pooling} | " + " | ".join(cells) + " |", flush=True)


def heldout(setting: str, fpr_cap: float) -> None:
    """Held-out figures of ONE setting chosen beforehand: method,pooling,combination,rule,layer[,layer]."""
    method, pooling, comb, rule, *ls = setting.split(",")
    layers = [int(x) for x in ls]
    tr, n_pos = load("train")
    te, n_te = load("test")
    fit_i, run_i = POOL_INDEX[pooling]
    truth_tr = np.r_[np.ones(n_pos, bool), np.zeros(n_pos, bool)]
    truth_te = np.r_[np.ones(n_te, bool), np.zeros(n_te, bool)]
    allp = np.arange(n_pos)
    s_tr = np.empty((2 * n_pos, len(layers)))
    s_te = np.empty((2 * n_te, len(layers)))
    for k, layer in enumerate(layers):
        c = fit_direction(method, tr[fit_i, layer + 1][allp], tr[fit_i, layer + 1][n_pos + allp])
        s_tr[:, k] = similarity(tr[run_i, layer].astype(np.float64), c)
        s_te[:, k] = similarity(te[run_i, layer].astype(np.float64), c)
    best = None
    for comparator in ("larger", "smaller"):
        sc = oriented(s_tr, comparator, comb)
        thr, m = choose_threshold(sc, truth_tr, rule, fpr_cap)
        if best is None or m > best[0]:
            best = (m, comparator, thr)
    m, comparator, thr = best
    p_tr = oriented(s_tr, comparator, comb) > thr
    p_te = oriented(s_te, comparator, comb) > thr
    print(f"{setting}: comparator {comparator}, train F1 {f1(p_tr, truth_tr):.3f} TPR {p_tr[truth_tr].mean():.1%} "
          f"FPR {p_tr[~truth_tr].mean():.1%}; held-out F1 {f1(p_te, truth_te):.3f} TPR {p_te[truth_te].mean():.1%} "
          f"FPR {p_te[~truth_te].mean():.1%}, AUC {roc_auc(oriented(s_te, comparator, comb), truth_te):.3f}")


def check_product(method: str, layers: list[int], probe_l2: float = 1.0, pooling: str = "mean") -> None:
    """The restatement vs the product: the product's condition vector (all train pairs,
    trained with the pooling's train form) and its run-time similarities against this file's."""
    from activation_steering import MalleableModel, SteeringDataset, SteeringVector
    from activation_steering.conditions.search import condition_similarities
    from activation_steering.demo import project_data
    from activation_steering.models import load_default_model

    model, tok = load_default_model()
    data = project_data()
    ds = SteeringDataset(tok, list(zip(data.train_harmful, data.train_harmless)), suffixes=None, disable_suffixes=True)
    kw = {"probe_l2": probe_l2} if method == "probe" else {}
    train_pool = {"mean": "all", "last": 1, "user_text": "user_text"}[pooling]
    vec = SteeringVector.train(model, tok, ds, method=method, accumulate_last_x_tokens=train_pool,
                               hidden_layer_ids=layers, **kw)
    prod = condition_similarities(MalleableModel(model, tok), data.train_harmful + data.train_harmless, vec, layers,
                                  pooling)
    fit_i, run_i = POOL_INDEX[pooling]
    tr, n_pos = load("train")
    allp = np.arange(n_pos)
    for k, layer in enumerate(layers):
        c = fit_direction(method if method != "probe" else f"probe@{probe_l2}", tr[fit_i, layer + 1][allp],
                          tr[fit_i, layer + 1][n_pos + allp])
        mine = similarity(tr[run_i, layer].astype(np.float64), c)
        d = np.asarray(vec.directions[layer], np.float64)
        cos = float(np.dot(c, d) / (np.linalg.norm(c) * np.linalg.norm(d)))
        print(f"{method} {pooling} layer {layer}: direction cos {cos:.6f}, max |sim difference| {np.abs(mine - np.asarray(prod)[:, k]).max():.2e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["capture", "check", "cv", "auc", "heldout"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--layers", default="1-20", help="condition layers to sweep, LO-HI inclusive")
    ap.add_argument("--fpr-cap", type=float, default=0.05)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--methods", default="", help="cv part: comma-separated methods (default: the three)")
    ap.add_argument("--poolings", default="", help="cv part: comma-separated poolings (default: all three)")
    ap.add_argument("--split", default="train", help="auc part: train or test")
    ap.add_argument("--setting", action="append", default=[],
                    help="heldout part: method,pooling,or|and,f1|fpr,layer[,layer]")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.layers.split("-"))
    layers = list(range(lo, hi + 1))
    if args.part == "capture":
        capture("train")
        capture("test")   # features only; nothing in cv reads them
    elif args.part == "check":
        check_product("pca_pairwise", [10])
        check_product("probe", [15], probe_l2=10.0)
        check_product("mean_diff", [13], pooling="user_text")
        check_product("pca_pairwise", [17], pooling="last")
    elif args.part == "cv":
        methods = tuple(args.methods.split(",")) if args.methods else METHODS
        poolings = tuple(args.poolings.split(",")) if args.poolings else POOLINGS
        res = cv(args.folds, layers, args.fpr_cap, methods, poolings)
        print_tables(res["results"], args.top)
    elif args.part == "auc":
        auc_by_layer(args.split, layers)
    else:
        for s in args.setting:
            heldout(s, args.fpr_cap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
