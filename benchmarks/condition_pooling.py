"""Condition pooling on the demo's condition data: "mean" vs "last" vs "user_text".

What it measures: for the demo's harmful-prompt condition (the project's own data,
python/activation_steering/data/condition_harmful.json; SmolLM2-135M-Instruct), per
extraction method (pca_pairwise = the demo's, mean_diff, probe) and pooling, the
condition vector is trained with the matching training pooling ("mean" <- "all",
"last" <- 1, "user_text" <- "user_text") on the TRAIN pairs, and then, at every layer
the demo searches (1..10: the range (1, first behaviour layer + 1)):
  - ROC AUC of the condition similarity on train and on held-out prompts (the
    orientation, i.e. the comparator, is fixed on train);
  - the best-F1 operating point on TRAIN (exact threshold search, one layer, as the
    demo's find_best_condition_point), and the F1 of that same point on held-out;
  - for comparison, the ROC AUC of the linear score c.h (what a DiffMean/probe
    detector reads), which CAST's similarity cos(h, tanh(c (c.h)/(c.c))) is not.
Nothing is tuned on held-out prompts.

How: the condition similarity at layer i reads the decoder layer INPUT of i, which is
the OUTPUT of layer i-1, so one pooled capture per pooling (pooled_activations at
layers 0..9, prompts formatted as respond formats them) gives every similarity; a
check compares one configuration against the product path (condition_similarities).

What it is not: a timing benchmark, or a choice of the demo's settings (demo owner).

    PYTHONPATH=python python benchmarks/condition_pooling.py [--methods pca_pairwise,mean_diff,probe] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

POOLINGS = {"mean": "all", "last": 1, "user_text": "user_text"}  # condition pooling -> training pooling


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count 1/2): P(score of a positive > score of a negative)."""
    pos, neg = scores[truth], scores[~truth]
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = ranks[:len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def similarity(pooled: np.ndarray, c: np.ndarray) -> np.ndarray:
    """conditions/similarity.py's formula, float32: cos(h, tanh(c (c.h)/(c.c)))."""
    from activation_steering.conditions.similarity import condition_similarity

    return condition_similarity(torch.from_numpy(pooled), torch.from_numpy(c)).numpy()


def best_f1_point(sims: np.ndarray, truth: np.ndarray):
    """(f1, threshold, comparator) maximising F1 over every distinct operating point (train)."""
    from activation_steering.conditions.thresholds import f1_score

    v = np.unique(sims)
    cands = np.concatenate([[v[0] - 1e-3], (v[:-1] + v[1:]) / 2, [v[-1] + 1e-3]])
    best = (-1.0, 0.0, "larger")
    for comparator in ("larger", "smaller"):
        for t in cands:
            pred = sims < t if comparator == "larger" else sims > t
            f = f1_score(pred, truth)
            if f > best[0]:
                best = (f, float(t), comparator)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="pca_pairwise,mean_diff,probe")
    ap.add_argument("--layers", default="1-10", help="condition layers (the demo's range by default)")
    ap.add_argument("--poolings", default="mean,last,user_text")
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from activation_steering import MalleableModel, SteeringDataset, SteeringVector
    from activation_steering.activations.pooled import pooled_activations
    from activation_steering.activations.prompts import format_prompt
    from activation_steering.conditions.search import condition_similarities
    from activation_steering.conditions.thresholds import f1_score
    from activation_steering.demo.pipeline import project_data
    from activation_steering.models import load_default_model

    lo, hi = (int(x) for x in args.layers.split("-"))
    layers = list(range(lo, hi + 1))
    methods = args.methods.split(",")
    data = project_data()
    model, tok = load_default_model()
    ds = SteeringDataset(tokenizer=tok, examples=list(zip(data.train_harmful, data.train_harmless)),
                         suffixes=None, disable_suffixes=True)
    train_prompts = data.train_harmful + data.train_harmless
    test_prompts = data.test_harmful + data.test_harmless
    y_train = np.array([True] * len(data.train_harmful) + [False] * len(data.train_harmless))
    y_test = np.array([True] * len(data.test_harmful) + [False] * len(data.test_harmless))
    print(f"data: {len(data.train_harmful)} train pairs, {len(data.test_harmful)} + {len(data.test_harmless)} "
          f"held-out prompts; layers {layers}; methods {methods}", flush=True)

    rows = []
    checked = False
    for pooling in args.poolings.split(","):
        train_pool = POOLINGS[pooling]
        t0 = time.perf_counter()
        texts = [format_prompt(tok, p) for p in train_prompts + test_prompts]
        # decoder layer input of layer i == output of layer i-1
        pooled = pooled_activations(model, tok, texts, [i - 1 for i in layers], train_pool, 32,
                                    add_special_tokens=False)                     # [L, N, D]
        p_train, p_test = pooled[:, :len(train_prompts)], pooled[:, len(train_prompts):]
        for method in methods:
            vec = SteeringVector.train(model, tok, ds, method=method, accumulate_last_x_tokens=train_pool,
                                       hidden_layer_ids=layers)
            if not checked:  # the shortcut equals the product path (the runtime's kernel)
                ref = condition_similarities(MalleableModel(model, tok), test_prompts[:8], vec, layers[:2], pooling)
                mine = np.stack([similarity(p_test[j, :8], vec.directions[layers[j]]) for j in range(2)], 1)
                assert np.abs(ref - mine).max() < 1e-4, np.abs(ref - mine).max()
                checked = True
            per_layer = []
            for j, layer in enumerate(layers):
                c = np.asarray(vec.directions[layer], np.float32)
                s_tr, s_te = similarity(p_train[j], c), similarity(p_test[j], c)
                auc_tr = roc_auc(s_tr, y_train)
                flip = auc_tr < 0.5  # orientation fixed on train
                auc_te = roc_auc(s_te, y_test)
                f1_tr, thr, comparator = best_f1_point(s_tr, y_train)
                pred_te = s_te < thr if comparator == "larger" else s_te > thr
                # the linear score c.h for comparison (what a probe/DiffMean detector reads; not what CAST thresholds)
                proj_tr, proj_te = p_train[j] @ c, p_test[j] @ c
                aucp_tr, aucp_te = roc_auc(proj_tr, y_train), roc_auc(proj_te, y_test)
                pflip = aucp_tr < 0.5
                per_layer.append(dict(layer=layer, auc_train=1 - auc_tr if flip else auc_tr,
                                      auc_test=1 - auc_te if flip else auc_te, f1_train=f1_tr,
                                      f1_test=f1_score(pred_te, y_test), threshold=thr, comparator=comparator,
                                      proj_auc_train=1 - aucp_tr if pflip else aucp_tr,
                                      proj_auc_test=1 - aucp_te if pflip else aucp_te))
            best = max(per_layer, key=lambda r: (r["f1_train"], -r["layer"]))  # chosen on TRAIN only
            best_auc = max(per_layer, key=lambda r: (r["auc_train"], -r["layer"]))
            rows.append(dict(pooling=pooling, method=method, per_layer=per_layer, chosen=best, best_auc=best_auc))
            print(f"{pooling:9s} {method:12s} F1-chosen layer {best['layer']:2d}: F1 train {best['f1_train']:.3f} "
                  f"held-out {best['f1_test']:.3f} | AUC there {best['auc_train']:.3f}/{best['auc_test']:.3f} | "
                  f"best train-AUC layer {best_auc['layer']:2d}: AUC {best_auc['auc_train']:.3f}/"
                  f"{best_auc['auc_test']:.3f}", flush=True)
        print(f"  ({pooling}: {time.perf_counter() - t0:.0f}s)", flush=True)

    print("\nper-layer ROC AUC train/held-out:")
    print("pooling   method       " + " ".join(f"{'L' + str(i):>11s}" for i in layers))
    for r in rows:
        print(f"{r['pooling']:9s} {r['method']:12s} " +
              " ".join(f"{x['auc_train']:.3f}/{x['auc_test']:.3f}" for x in r["per_layer"]))
    print("\nper-layer ROC AUC train/held-out of the linear score c.h (for comparison):")
    for r in rows:
        print(f"{r['pooling']:9s} {r['method']:12s} " +
              " ".join(f"{x['proj_auc_train']:.3f}/{x['proj_auc_test']:.3f}" for x in r["per_layer"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
