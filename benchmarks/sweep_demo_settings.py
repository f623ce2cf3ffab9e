"""Sweep behaviour layers x strength for the demo, on TRAINING prompts only.

The demo's refusal vector must make the model refuse (the "steered" row) while
the text stays coherent enough for the judge to read. This script measures, for
each candidate (layer window, strength), the refusal rate under unconditional
steering on a sample of TRAIN harmful and harmless prompts, and how often the
reply is degenerate (empty or a single token repeated). It never touches the
held-out test prompts. The chosen setting and this table go in data/DATA_CARD.md.

    .venv/bin/python benchmarks/sweep_demo_settings.py [--quick]
"""
from __future__ import annotations

import argparse
import random
import sys
import time

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.demo import DemoSettings, project_data
from activation_steering.judge import is_refusal
from activation_steering.models import load_default_model


def degenerate(text: str) -> bool:
    words = text.split()
    return len(words) < 2 or len(set(words)) <= max(1, len(words) // 6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer prompts and candidates")
    ap.add_argument("--n-prompts", type=int, default=24, help="train prompts per class")
    args = ap.parse_args()

    model, tok = load_default_model()
    data = project_data()
    base = DemoSettings()
    rng = random.Random(1)
    n = 8 if args.quick else args.n_prompts
    harmful = rng.sample(data.train_harmful, n)
    harmless = rng.sample(data.train_harmless, n)
    prompts = harmful + harmless

    questions = random.Random(base.seed).sample(data.questions, base.n_questions)
    ids = random.Random(base.seed + 1).sample(range(len(data.refusal_openers)), base.n_suffix_pairs)
    ds = SteeringDataset(tok, [(q, q) for q in questions],
                         suffixes=[(data.refusal_openers[i], data.compliance_openers[i]) for i in ids])
    t = time.perf_counter()
    vec = SteeringVector.train(model, tok, ds, method="pca_center", accumulate_last_x_tokens="suffix-only",
                               hidden_layer_ids=list(range(0, 24)))
    print(f"behaviour vector over all {len(vec.directions)} layers in {time.perf_counter() - t:.1f}s", flush=True)

    windows = [(6, 14), (6, 20), (10, 20)]
    strengths = [2.0, 4.0, 8.0, 12.0, 16.0]
    if args.quick:
        windows, strengths = [(6, 20)], [4.0, 8.0, 12.0, 16.0]
    mm = MalleableModel(model, tok)
    gen = {"max_new_tokens": 24, "do_sample": False, "repetition_penalty": 1.1}
    print(f"{'layers':>8s} {'strength':>8s} {'refuse harmful':>15s} {'refuse harmless':>16s} {'degenerate':>11s}")
    for lo, hi in windows:
        for s in strengths:
            mm.steer(behavior_vector=vec, behavior_layer_ids=list(range(lo, hi)), behavior_vector_strength=s)
            out = mm.respond_batch(prompts, settings=gen, batch_size=16)
            ref = [is_refusal(r) for r in out]
            deg = sum(degenerate(r) for r in out) / len(out)
            print(f"{lo:>3d}-{hi - 1:<4d} {s:8.1f} {sum(ref[:n]) / n:15.1%} {sum(ref[n:]) / n:16.1%} {deg:11.1%}",
                  flush=True)
    mm.reset_leash_to_default()
    return 0


if __name__ == "__main__":
    sys.exit(main())
