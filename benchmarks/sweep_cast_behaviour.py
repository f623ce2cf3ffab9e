"""Train-only sweep of the demo's refusal BEHAVIOUR: method x opener pairs x layers x strength.

What it is for: choosing how the demo extracts and applies its refusal vector so that
steering makes the model refuse (the judge's `is_refusal`) AND stay readable (the
judge's `is_fluent`), measured on a seeded sample of TRAIN prompts of
data/condition_harmful.json under unconditional steering (the condition is swept
separately, benchmarks/sweep_cast_conditions.py). Never reads the test split.

What it deliberately is not: a CAST run. A steered reply here is what CAST gives a
prompt whose condition fires; CAST's refusal rate on a class is about
(share of the class the condition fires on) x (this rate).

Every configuration's replies are cached as JSON (AS_SWEEP_DIR, default
/tmp/activation_steering_sweep), so a rerun only generates what is new.

    PYTHONPATH=python python benchmarks/sweep_cast_behaviour.py \
        --config pca_center,8,10-15,12 --config mean_diff,8,10-15,8 ...
    (method, opener pairs, layers LO-HI inclusive, strength[, operator[, strength unit]])
    Operator ("add", "ablate", "ablate_then_add") and unit ("absolute", "residual_norm",
    "token_norm") are MalleableModel.steer's; omitted they are "add" / "absolute".
    The table gives each rate with its Wilson 95% interval.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("AS_SWEEP_DIR", "/tmp/activation_steering_sweep"))
GEN = {"max_new_tokens": 32, "do_sample": False, "repetition_penalty": 1.1}


def behaviour_vector(model, tok, data, method: str, n_pairs: int, n_questions: int = 32, seed: int = 0):
    """The demo's recipe (DemoSettings.seed sampling), every layer 0..23, cached on disk."""
    from activation_steering import SteeringDataset, SteeringVector

    path = OUT / f"behaviour_{method}_{n_pairs}_{n_questions}.svec"
    if path.exists():
        return SteeringVector.load(str(path))
    questions = random.Random(seed).sample(data.questions, n_questions)
    ids = random.Random(seed + 1).sample(range(len(data.refusal_openers)), n_pairs)
    ds = SteeringDataset(tok, [(q, q) for q in questions],
                         suffixes=[(data.refusal_openers[i], data.compliance_openers[i]) for i in ids])
    t = time.perf_counter()
    vec = SteeringVector.train(model, tok, ds, method=method, accumulate_last_x_tokens="suffix-only",
                               hidden_layer_ids=list(range(0, 24)))
    print(f"  vector {method} x {n_pairs} pairs: {time.perf_counter() - t:.1f}s", flush=True)
    vec.save(str(path))
    return vec


def condition(model, tok, mm, data, spec: str):
    """CAST's condition from a spec "method,probe_l2,pooling,layer" fitted on ALL train pairs
    with the public API (SteeringVector.train + find_best_condition_point, exact F1)."""
    from activation_steering import SteeringDataset, SteeringVector

    method, l2, pooling, layer = spec.split(",")
    ds = SteeringDataset(tok, list(zip(data.train_harmful, data.train_harmless)), suffixes=None, disable_suffixes=True)
    kw = {"probe_l2": float(l2)} if method == "probe" else {}
    train_pool, mode = {"mean": ("all", "mean"), "last": (1, "last"), "user_text": ("user_text", "user_text")}[pooling]
    vec = SteeringVector.train(model, tok, ds, method=method, accumulate_last_x_tokens=train_pool,
                               hidden_layer_ids=[int(layer)], **kw)
    layers, thr, comparator, f1 = mm.find_best_condition_point(
        data.train_harmful, data.train_harmless, vec, layer_range=(int(layer), int(layer) + 1),
        condition_threshold_comparison_mode=mode, exact=True)
    print(f"  condition {spec}: layers {layers} threshold {thr:.5f} {comparator} train F1 {f1:.3f}", flush=True)
    return dict(condition_vector=vec, condition_layer_ids=list(layers), condition_vector_threshold=thr,
                condition_comparator_threshold_is=comparator, condition_threshold_comparison_mode=mode)


def sample(data, n: int):
    rng = random.Random(1)
    idx = rng.sample(range(len(data.train_harmful)), n)
    return [data.train_harmful[i] for i in idx], [data.train_harmless[i] for i in idx]


def rate(k: int, n: int) -> str:
    """k/n as a percentage with its Wilson 95% interval."""
    if n == 0:
        return "-"
    z, p = 1.96, k / n
    mid, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return f"{p:.1%} [{max(0.0, mid - half):.0%}-{min(1.0, mid + half):.0%}] ({k}/{n})"


def main() -> int:
    from activation_steering import MalleableModel
    from activation_steering.config import GlobalConfig
    from activation_steering.demo import project_data
    from activation_steering.demo.judge import is_fluent, is_refusal
    from activation_steering.models import load_default_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=[], help="method,pairs,LO-HI,strength")
    ap.add_argument("--n-prompts", type=int, default=24, help="train prompts per class")
    ap.add_argument("--table", action="store_true", help="only print the cached configurations")
    ap.add_argument("--cast", default="", help="condition method,probe_l2,pooling,layer: every --config runs "
                                                 "conditionally (CAST) instead")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cache_path = OUT / f"behaviour_replies_{args.n_prompts}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    if not args.table:
        for name in ("global", "MalleableModel", "SteeringVector", "SteeringDataset"):
            GlobalConfig.set_verbose(False, name)
        model, tok = load_default_model()
        data = project_data()
        harmful, harmless = sample(data, args.n_prompts)
        mm = MalleableModel(model, tok)
        cond = None
        for cfg in ["base"] + args.config:
            key = cfg if not args.cast or cfg == "base" else f"{cfg}|CAST:{args.cast}"
            if key in cache:
                continue
            if args.cast and cond is None:
                cond = condition(model, tok, mm, data, args.cast)
            t = time.perf_counter()
            mm.reset_leash_to_default()
            if cfg != "base":
                method, pairs, window, strength, *rest = cfg.split(",")
                operator, unit = (rest + ["add", "absolute"][len(rest):])[:2]
                lo, hi = (int(x) for x in window.split("-"))
                vec = behaviour_vector(model, tok, data, method, int(pairs))
                mm.steer(behavior_vector=vec, behavior_layer_ids=list(range(lo, hi + 1)),
                         behavior_vector_strength=float(strength), behavior_operator=operator,
                         strength_unit=unit, **(cond or {}))
            replies = mm.respond_batch(harmful + harmless, settings=GEN, batch_size=16)
            mm.reset_leash_to_default()
            cache[key] = {"harmful": replies[:len(harmful)], "harmless": replies[len(harmful):],
                          "seconds": time.perf_counter() - t}
            cache_path.write_text(json.dumps(cache, indent=1))
            print(f"  {key}: {cache[key]['seconds']:.0f}s", flush=True)

    print(f"\n{args.n_prompts}+{args.n_prompts} train prompts, greedy, 32 new tokens, repetition penalty 1.1")
    print("| method | opener pairs | layers | strength | operator | unit | refuse harmful | refuse harmless | "
          "refusals fluent | all replies fluent |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    from activation_steering.demo.judge import is_fluent, is_refusal  # noqa: F811 (table-only path)

    for cfg, r in cache.items():
        allr = r["harmful"] + r["harmless"]
        ref = [x for x in allr if is_refusal(x)]
        h = rate(sum(map(is_refusal, r["harmful"])), len(r["harmful"]))
        l = rate(sum(map(is_refusal, r["harmless"])), len(r["harmless"]))
        fl = rate(sum(map(is_fluent, ref)), len(ref))
        fa = rate(sum(map(is_fluent, allr)), len(allr))
        cells = ["base", "-", "-", "-"] if cfg == "base" else cfg.split("|")[0].split(",")
        cells += ["add", "absolute"][len(cells) - 4:] if cfg != "base" else ["-", "-"]
        if "|" in cfg:
            cells[0] += " (" + cfg.split("|")[1] + ")"
        print(f"| {' | '.join(cells)} | {h} | {l} | {fl} | {fa} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
