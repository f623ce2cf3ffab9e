"""Train time of mean_diff and probe vs pca_pairwise on the demo workload, as ratios
measured in the same run.

Model: the embedded SmolLM2-135M-Instruct (activation_steering.models.load_default_model:
30 layers, D=576), float32, CPU. Data: the demo's own (python/activation_steering/data,
read through demo.project_data) with the demo's default settings (DemoSettings):
  behaviour  n_questions x n_suffix_pairs refusal/compliance opener pairs,
             accumulate_last_x_tokens="suffix-only", layers behavior_layer_ids
  condition  every TRAIN harmful/harmless pair, disable_suffixes=True,
             accumulate_last_x_tokens="all", layers 1 .. first behaviour layer
and the same two datasets over all 30 layers.

For each (task, layer set) every method runs SteeringVector.train end to end
(tokenize, capture, solve) `--repeats` times, methods interleaved in a rotating
order so that machine drift hits all alike; the MINIMUM wall time of each is
reported, and its ratio to pca_pairwise's. The solve alone is timed too (the C
call on the captured [L, 2P, D] buffer, min over repeats), since capture is the
same for all three methods by construction.

    OMP_NUM_THREADS=1 PYTHONPATH=python .venv/bin/python benchmarks/bench_methods.py [--repeats 3] [--threads 1]
        [--layers demo|all|both]
"""
from __future__ import annotations

import argparse
import random
import time

METHODS = ("pca_pairwise", "mean_diff", "probe")


def datasets(tok, settings, data):
    from activation_steering import SteeringDataset

    questions = random.Random(settings.seed).sample(data.questions, min(settings.n_questions, len(data.questions)))
    pair_ids = random.Random(settings.seed + 1).sample(range(len(data.refusal_openers)),
                                                       min(settings.n_suffix_pairs, len(data.refusal_openers)))
    suffixes = [(data.refusal_openers[i], data.compliance_openers[i]) for i in pair_ids]
    behaviour = SteeringDataset(tokenizer=tok, examples=[(q, q) for q in questions], suffixes=suffixes)
    condition = SteeringDataset(tokenizer=tok, examples=list(zip(data.train_harmful, data.train_harmless)),
                                suffixes=None, disable_suffixes=True)
    return behaviour, condition


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", choices=("demo", "all", "both"), default="both",
                    help="the demo's layer sets, every layer, or both")
    args = ap.parse_args()

    import numpy as np
    import torch

    from activation_steering import SteeringVector, _core
    from activation_steering.config import GlobalConfig
    from activation_steering.demo import DemoSettings, project_data
    from activation_steering.models import load_default_model

    torch.set_num_threads(args.threads)
    for name in ("SteeringVector", "SteeringDataset"):
        GlobalConfig.set_verbose(False, name)
    model, tok = load_default_model()
    settings, data = DemoSettings(), project_data()
    behaviour, condition = datasets(tok, settings, data)
    n_layers = model.config.num_hidden_layers
    first_beh = min(settings.behavior_layer_ids)
    cases = [
        ("behaviour", behaviour, "suffix-only", list(settings.behavior_layer_ids)),
        ("condition", condition, "all", list(range(1, first_beh + 1))),
        ("behaviour", behaviour, "suffix-only", list(range(n_layers))),
        ("condition", condition, "all", list(range(n_layers))),
    ]
    cases = {"demo": cases[:2], "all": cases[2:], "both": cases}[args.layers]
    print(f"torch threads {args.threads}, repeats {args.repeats}, D={model.config.hidden_size}")
    print(f"{'task':10} {'layers':>6} {'pairs':>5} {'method':13} {'train s':>8} {'ratio':>6} "
          f"{'solve s':>8} {'solve ratio':>11}")
    for task, ds, mode, layers in cases:
        kw = dict(accumulate_last_x_tokens=mode, hidden_layer_ids=layers, batch_size=32)
        # warm-up + the captured buffer (recorded through pca_fit: the same capture for every method)
        seen = {}
        real = _core.pca_fit

        def spy(rows, *a, **k):
            seen["rows"] = np.array(rows, copy=True)
            return real(rows, *a, **k)

        _core.pca_fit = spy
        try:
            SteeringVector.train(model, tok, ds, method="pca_pairwise", **kw)
        finally:
            _core.pca_fit = real
        pooled = seen["rows"]
        train_t = {m: [] for m in METHODS}
        solve_t = {m: [] for m in METHODS}
        for r in range(args.repeats):
            order = METHODS[r % 3:] + METHODS[:r % 3]
            for m in order:
                t = time.perf_counter()
                SteeringVector.train(model, tok, ds, method=m, **kw)
                train_t[m].append(time.perf_counter() - t)
                t = time.perf_counter()
                if m == "pca_pairwise":
                    _core.pca_fit(pooled, m, 1, False)
                else:
                    _core.methods_fit(pooled, m)
                solve_t[m].append(time.perf_counter() - t)
        base_train, base_solve = min(train_t["pca_pairwise"]), min(solve_t["pca_pairwise"])
        for m in METHODS:
            tt, st = min(train_t[m]), min(solve_t[m])
            label = f"{layers[0]}-{layers[-1]}"
            print(f"{task:10} {label:>6} {len(ds.formatted_dataset):5d} {m:13} {tt:8.2f} {tt / base_train:6.2f} "
                  f"{st:8.3f} {st / base_solve:11.2f}", flush=True)


if __name__ == "__main__":
    main()
