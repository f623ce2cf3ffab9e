"""The FIRST sweep behind the demo's settings (2026-11-27), on TRAINING prompts only.

Superseded for the current settings by benchmarks/sweep_cast_conditions.py (5-fold
CV of method x pooling x layer x OR/AND) and benchmarks/sweep_cast_behaviour.py
(data/DATA_CARD.md, "How the demo's settings were chosen"); kept because its
parts still run against the public API. Never reads the held-out test prompts.
Three parts, each printing a table:

  condition  How to extract and read the harmful condition: extraction method x
             comparison mode x layers combined. 2-fold cross-validation INSIDE the
             training pairs (fit the vector and the condition point on one half,
             score F1 on the other half), so the choice is not judged on the data
             it was fitted to.
  behaviour  Behaviour layer window x strength under unconditional steering: refusal
             rate on a sample of train harmful / harmless prompts, and how often the
             reply is degenerate (empty or one word repeated).
  cast       The chosen condition (fitted on all training pairs, condition layers
             restricted to at most the window's first layer so the prompt pass is
             steered too) with the best behaviour settings: refusal on the same
             train sample, conditional vs unconditional.

    .venv/bin/python benchmarks/sweep_demo_settings.py [condition|behaviour|cast ...]
"""
from __future__ import annotations

import argparse
import random
import sys
import time

import numpy as np

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.conditions.search import condition_predictions
from activation_steering.config import GlobalConfig
from activation_steering.conditions.thresholds import f1_score
from activation_steering.demo import DemoSettings, project_data
from activation_steering.demo.judge import is_refusal
from activation_steering.models import load_default_model

WINDOWS = [(6, 20), (10, 16), (10, 20), (10, 24), (12, 20)]
STRENGTHS = [4.0, 6.0, 8.0, 12.0]


def degenerate(text: str) -> bool:
    words = text.split()
    return len(words) < 2 or len(set(words)) <= max(1, len(words) // 6)


def condition_vector(model, tok, harmful, harmless, method, layers):
    ds = SteeringDataset(tok, list(zip(harmful, harmless)), suffixes=None, disable_suffixes=True)
    return SteeringVector.train(model, tok, ds, method=method, accumulate_last_x_tokens="all",
                                hidden_layer_ids=list(layers))


def part_condition(model, tok, mm, data) -> None:
    H, N = data.train_harmful, data.train_harmless
    idx = list(range(len(H)))
    random.Random(7).shuffle(idx)
    folds = [idx[0::2], idx[1::2]]
    n_layers = model.config.num_hidden_layers
    print(f"\ncondition: 2-fold CV inside {len(H)} train pairs, layers 1..{n_layers - 1}, exact thresholds")
    print(f"{'method':14s} {'mode':5s} {'combine':>7s}  {'fold A: layers thr dir fitF1 outF1':40s} "
          f"{'fold B':40s} {'mean out-of-fold F1':>19s}")
    for method in ("pca_center", "pca_pairwise", "pca_diff"):
        for mode in ("mean", "last"):
            for combine in (1, 2):
                cells, scores = [], []
                for k in (0, 1):
                    a, b = folds[k], folds[1 - k]
                    vec = condition_vector(model, tok, [H[i] for i in a], [N[i] for i in a], method,
                                           range(n_layers))
                    layers, thr, dirn, f1 = mm.find_best_condition_point(
                        [H[i] for i in a], [N[i] for i in a], vec, layer_range=(1, n_layers),
                        max_layers_to_combine=combine, condition_threshold_comparison_mode=mode, exact=True)
                    pred = condition_predictions(mm, [H[i] for i in b] + [N[i] for i in b], vec, layers, thr, dirn,
                                                 mode=mode)
                    truth = np.array([True] * len(b) + [False] * len(b))
                    out = f1_score(np.asarray(pred, dtype=bool), truth)
                    scores.append(out)
                    cells.append(f"{str(layers):8s} {thr:7.4f} {dirn:7s} {f1:.3f} {out:.3f}")
                print(f"{method:14s} {mode:5s} {combine:7d}  {cells[0]:40s} {cells[1]:40s} {np.mean(scores):19.3f}",
                      flush=True)


def behaviour_vector(model, tok, data, settings: DemoSettings, layers):
    questions = random.Random(settings.seed).sample(data.questions, settings.n_questions)
    ids = random.Random(settings.seed + 1).sample(range(len(data.refusal_openers)), settings.n_suffix_pairs)
    ds = SteeringDataset(tok, [(q, q) for q in questions],
                         suffixes=[(data.refusal_openers[i], data.compliance_openers[i]) for i in ids])
    return SteeringVector.train(model, tok, ds, method="pca_center", accumulate_last_x_tokens="suffix-only",
                                hidden_layer_ids=list(layers))


def sample(data, n):
    rng = random.Random(1)
    idx = rng.sample(range(len(data.train_harmful)), n)
    return [data.train_harmful[i] for i in idx], [data.train_harmless[i] for i in idx]


def rates(mm, harmful, harmless, gen):
    out = mm.respond_batch(harmful + harmless, settings=gen, batch_size=16)
    ref = [is_refusal(r) for r in out]
    n = len(harmful)
    return sum(ref[:n]) / n, sum(ref[n:]) / len(harmless), sum(degenerate(r) for r in out) / len(out)


def part_behaviour(model, tok, mm, data, n) -> None:
    settings = DemoSettings()
    harmful, harmless = sample(data, n)
    t = time.perf_counter()
    vec = behaviour_vector(model, tok, data, settings, range(0, 24))
    print(f"\nbehaviour: vector over layers 0..23 in {time.perf_counter() - t:.1f}s; {n}+{n} train prompts, "
          f"{settings.max_new_tokens} new tokens, unconditional steering")
    gen = {"max_new_tokens": settings.max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    print(f"{'layers':>8s} {'strength':>8s} {'refuse harmful':>15s} {'refuse harmless':>16s} {'degenerate':>11s}")
    mm.reset_leash_to_default()
    h, l, d = rates(mm, harmful, harmless, gen)
    print(f"{'base':>8s} {'-':>8s} {h:15.1%} {l:16.1%} {d:11.1%}", flush=True)
    for lo, hi in WINDOWS:
        for s in STRENGTHS:
            mm.steer(behavior_vector=vec, behavior_layer_ids=list(range(lo, hi)), behavior_vector_strength=s)
            h, l, d = rates(mm, harmful, harmless, gen)
            print(f"{lo:>3d}-{hi - 1:<4d} {s:8.1f} {h:15.1%} {l:16.1%} {d:11.1%}", flush=True)
    mm.reset_leash_to_default()


def part_cast(model, tok, mm, data, n, candidates) -> None:
    settings = DemoSettings()
    harmful, harmless = sample(data, n)
    n_layers = model.config.num_hidden_layers
    cond = condition_vector(model, tok, data.train_harmful, data.train_harmless, settings.condition_method,
                            range(n_layers))
    beh = behaviour_vector(model, tok, data, settings, range(0, 24))
    gen = {"max_new_tokens": settings.max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    print(f"\ncast: condition {settings.condition_method}/{settings.condition_mode} fitted on all train pairs; "
          f"{n}+{n} train prompts")
    print(f"{'layers':>8s} {'strength':>8s} {'cond layers':>12s} {'train F1':>8s} {'steered h/l':>14s} "
          f"{'CAST h/l':>14s}")
    for (lo, hi), s in candidates:
        layers, thr, dirn, f1 = mm.find_best_condition_point(
            data.train_harmful, data.train_harmless, cond, layer_range=(1, lo + 1),
            condition_threshold_comparison_mode=settings.condition_mode, exact=True)
        mm.steer(behavior_vector=beh, behavior_layer_ids=list(range(lo, hi)), behavior_vector_strength=s)
        sh, sl, _ = rates(mm, harmful, harmless, gen)
        mm.steer(behavior_vector=beh, behavior_layer_ids=list(range(lo, hi)), behavior_vector_strength=s,
                 condition_vector=cond, condition_layer_ids=layers, condition_vector_threshold=thr,
                 condition_comparator_threshold_is=dirn,
                 condition_threshold_comparison_mode=settings.condition_mode)
        ch, cl, _ = rates(mm, harmful, harmless, gen)
        print(f"{lo:>3d}-{hi - 1:<4d} {s:8.1f} {str(layers):>12s} {f1:8.3f} {sh:6.1%}/{sl:6.1%} {ch:6.1%}/{cl:6.1%}",
              flush=True)
    mm.reset_leash_to_default()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["condition", "behaviour", "cast"])
    ap.add_argument("--n-prompts", type=int, default=24, help="train prompts per class for behaviour / cast")
    ap.add_argument("--cast", action="append", default=[], metavar="LO,HI,STRENGTH",
                    help="a (window, strength) for the cast part (default: the demo's)")
    args = ap.parse_args()
    for name in ("global", "MalleableModel", "SteeringVector", "SteeringDataset"):
        GlobalConfig.set_verbose(False, name)
    model, tok = load_default_model()
    data = project_data()
    mm = MalleableModel(model, tok)
    if "condition" in args.parts:
        part_condition(model, tok, mm, data)
    if "behaviour" in args.parts:
        part_behaviour(model, tok, mm, data, args.n_prompts)
    if "cast" in args.parts:
        d = DemoSettings()
        cands = [((int(a), int(b)), float(s)) for a, b, s in (c.split(",") for c in args.cast)] or [
            ((d.behavior_layer_ids[0], d.behavior_layer_ids[-1] + 1), d.behavior_vector_strength)]
        part_cast(model, tok, mm, data, args.n_prompts, cands)
    return 0


if __name__ == "__main__":
    sys.exit(main())
