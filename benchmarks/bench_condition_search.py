"""find_best_condition_point: ours vs the common approach, in the same run.

Setting (issue 5): the embedded SmolLM2-135M-Instruct, 200 harmful (positive) +
200 harmless (negative) TRAIN prompts from ../shared/data/ibm-demo/
condition_harmful.json, layers (1, L), thresholds numpy.arange(0, 0.1, 1e-4)
(1000 values), max_layers_to_combine 1 and 2, mean pooling.

Baseline (what the reference library does): one `generate(max_new_tokens=1)` per
string with a forward pre-hook per layer recording the condition similarity of
the prompt pass, then a Python loop over combinations x thresholds x directions
computing F1 (plain counting, already faster than the reference's sklearn call).
The full baseline loop for pairs (406 pairs x 1000 thresholds x 2 x 400 strings)
takes too long to run: it is timed on the first pairs and extrapolated linearly
(every pair costs the same), as the output says.

Ours: find_best_condition_point (batched truncated forward + the C search).

The condition vector: SteeringVector.train (pca_center, all tokens) when
activation_steering.extract exists, else a mean-difference direction per layer
computed here (said in the output). The chosen point is also evaluated on
held-out prompts from the file's "test" split.

    .venv/bin/python benchmarks/bench_condition_search.py [--pairs-subset 12]
    # on a GPU machine the weights cannot reach: same architecture, random weights
    python benchmarks/bench_condition_search.py --device cuda --random-weights-from DIR_WITH_CONFIG_AND_TOKENIZER

On 2 CPU cores the similarity phase is compute-bound (both sides run the same
tokens through the model), so end-to-end ratios there are far below the GPU's,
and they swing with machine load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibm-demo"
GRID = (0.0, 0.1, 1e-4)


def f1_plain(pred: list[bool], truth: list[bool]) -> float:
    tp = sum(1 for p, y in zip(pred, truth) if p and y)
    fp = sum(1 for p, y in zip(pred, truth) if p and not y)
    fn = sum(1 for p, y in zip(pred, truth) if not p and y)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


# --------------------------------------------------------------------------- #
# Condition vector
# --------------------------------------------------------------------------- #
def condition_vector(model, tok, harmful, harmless, n_layers):
    try:
        from activation_steering import SteeringDataset, SteeringVector

        ds = SteeringDataset(tokenizer=tok, examples=list(zip(harmful, harmless)), suffixes=None,
                             disable_suffixes=True)
        vec = SteeringVector.train(model=model, tokenizer=tok, steering_dataset=ds, method="pca_center",
                                   accumulate_last_x_tokens="all")
        return vec, "SteeringVector.train(method='pca_center', accumulate_last_x_tokens='all')"
    except ImportError:
        pass
    # Fallback: mean difference of h_out[i] (hidden_states[i + 1]) over all real tokens.
    from activation_steering.activations.prompts import encode, format_prompt

    def mean_states(texts):
        acc = torch.zeros(n_layers, model.config.hidden_size, dtype=torch.float64)
        for i in range(0, len(texts), 16):
            enc = encode(tok, [format_prompt(tok, t) for t in texts[i:i + 16]], True, padding_side="right",
                         device=model.device)
            with torch.no_grad():
                hs = model(**enc, output_hidden_states=True).hidden_states
            m = enc["attention_mask"].unsqueeze(-1).to("cpu", torch.float64)
            for layer in range(n_layers):
                h = hs[layer + 1].to("cpu", torch.float64)
                acc[layer] += ((h * m).sum(1) / m.sum(1)).sum(0)
        return acc / len(texts)

    diff = mean_states(harmful) - mean_states(harmless)
    directions = {i: (diff[i] / diff[i].norm()).to(torch.float32).numpy() for i in range(n_layers)}
    import types

    return types.SimpleNamespace(directions=directions), "mean difference of h_out per layer (extract.py not available)"


# --------------------------------------------------------------------------- #
# Baseline
# --------------------------------------------------------------------------- #
def baseline_similarities(model, tok, strings, vector, layers, mode="mean"):
    """One generate(max_new_tokens=1) per string; pre-hooks record the prompt pass."""
    from activation_steering.activations.prompts import format_prompt
    from activation_steering.activations.layers import find_decoder_layers
    from activation_steering.conditions.similarity import condition_similarity

    decoder = find_decoder_layers(model)
    record: dict[int, float] = {}
    dirs = {i: torch.as_tensor(np.asarray(vector.directions[i], dtype=np.float32)).to(model.device) for i in layers}

    def hook(i):
        def fn(_m, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if i not in record:  # first call = prompt pass
                pooled = h[0].mean(0) if mode == "mean" else h[0, -1]
                record[i] = float(condition_similarity(pooled, dirs[i]))
        return fn

    handles = [decoder[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in layers]
    out = []
    try:
        for s in strings:
            record.clear()
            enc = tok(format_prompt(tok, s), return_tensors="pt", add_special_tokens=False).to(model.device)
            with torch.no_grad():
                model.generate(**enc, max_new_tokens=1, do_sample=False, repetition_penalty=1.1,
                               pad_token_id=tok.eos_token_id)
            out.append(dict(record))
    finally:
        for h in handles:
            h.remove()
    return out


def baseline_search(similarities, truth, layers, max_combine, grid, combo_limit=None):
    """The Python loop: combinations x thresholds x directions, F1 per candidate.
    Returns (best, n_combos_run, seconds per size)."""
    best, best_f1 = None, -1.0
    per_size = {}
    for r in range(1, max_combine + 1):
        combos = list(combinations(layers, r))
        if combo_limit is not None and r > 1:
            combos = combos[:combo_limit]
        t0 = time.perf_counter()
        for combo in combos:
            for t in grid:
                for direction in ("larger", "smaller"):
                    pred = [any((d[l] < t) if direction == "larger" else (d[l] > t) for l in combo)
                            for d in similarities]
                    f1 = f1_plain(pred, truth)
                    if f1 > best_f1:
                        best_f1, best = f1, (list(combo), float(t), direction, f1)
        per_size[r] = (len(combos), time.perf_counter() - t0)
    return best, per_size


# --------------------------------------------------------------------------- #
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=200, help="positive and negative train prompts each")
    ap.add_argument("--n-test", type=int, default=200, help="held-out prompts of each class")
    ap.add_argument("--pairs-subset", type=int, default=12, help="baseline: pairs actually run for combine=2")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="e.g. cuda")
    ap.add_argument("--data", type=Path, default=SHARED / "condition_harmful.json")
    ap.add_argument("--random-weights-from", type=Path, default=None,
                    help="a folder with config.json + tokenizer: same architecture, random weights (timing only, "
                         "for machines the 540 MB weights cannot reach)")
    args = ap.parse_args()
    path = args.data
    if not path.is_file():
        print(f"skipped: {path} not found")
        return 0

    from activation_steering import _core
    from activation_steering.conditions.search import condition_similarities, find_best_condition_point
    from activation_steering.activations.layers import find_decoder_layers
    from activation_steering.models import load_default_model

    data = json.loads(path.read_text())
    harmful = [p["harmful"] for p in data["train"][:args.n_train]]
    harmless = [p["harmless"] for p in data["train"][:args.n_train]]
    test_harmful = [p["harmful"] for p in data["test"][:args.n_test]]
    test_harmless = [p["harmless"] for p in data["test"][:args.n_test]]
    if args.random_weights_from is not None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(args.random_weights_from)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(args.random_weights_from)
        tok.pad_token = tok.pad_token or tok.eos_token
        print("RANDOM WEIGHTS (SmolLM2-135M architecture): timings are meaningful, F1 values are not")
    else:
        model, tok = load_default_model()
    model = model.to(args.device)
    L = len(find_decoder_layers(model))
    layers = list(range(1, L))
    grid = np.arange(*GRID)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, torch threads {torch.get_num_threads()}"
    print(f"model SmolLM2-135M-Instruct ({L} layers) on {dev}, "
          f"{len(harmful)}+{len(harmless)} train prompts, {len(test_harmful)}+{len(test_harmless)} held-out, "
          f"layers (1, {L}), {grid.size} thresholds")

    t0 = time.perf_counter()
    vector, how = condition_vector(model, tok, harmful, harmless, L)
    print(f"condition vector: {how} ({time.perf_counter() - t0:.1f}s, not part of either timing)")

    strings = harmful + harmless
    truth = [True] * len(harmful) + [False] * len(harmless)
    labels = np.array(truth)
    test_truth = np.array([True] * len(test_harmful) + [False] * len(test_harmless))

    # warm-up (allocator, kernels, caches) so that neither side pays it in its timing
    condition_similarities(model, strings[:8], vector, layers, tokenizer=tok)
    baseline_similarities(model, tok, strings[:2], vector, layers)

    # -- ours: end to end, then the two phases separately --------------------- #
    ours = {}
    for c in (1, 2):
        t0 = time.perf_counter()
        point = find_best_condition_point(model, harmful, harmless, vector, layer_range=(1, L),
                                          max_layers_to_combine=c, threshold_range=GRID[:2], threshold_step=GRID[2],
                                          tokenizer=tok, batch_size=args.batch_size, show_progress=False)
        ours[c] = {"e2e": time.perf_counter() - t0, "point": point}
    t0 = time.perf_counter()
    sims = condition_similarities(model, strings, vector, layers, batch_size=args.batch_size, tokenizer=tok)
    ours_sim_time = time.perf_counter() - t0
    for c in (1, 2):
        reps = []
        for _ in range(5):
            t0 = time.perf_counter()
            _core.condsearch_grid(sims.astype(np.float64), labels, c, grid)
            reps.append(time.perf_counter() - t0)
        ours[c]["search"] = float(np.median(reps))
    t0 = time.perf_counter()
    exact = find_best_condition_point(model, harmful, harmless, vector, layer_range=(1, L), max_layers_to_combine=2,
                                      exact=True, tokenizer=tok, batch_size=args.batch_size, show_progress=False)
    exact_time = time.perf_counter() - t0

    # -- baseline ----------------------------------------------------------- #
    t0 = time.perf_counter()
    base_sims = baseline_similarities(model, tok, strings, vector, layers)
    base_sim_time = time.perf_counter() - t0
    base_mat = np.array([[d[l] for l in layers] for d in base_sims], dtype=np.float32)
    base_best1, sizes1 = baseline_search(base_sims, truth, layers, 1, grid)
    base_search1 = sizes1[1][1]
    n_pairs = len(list(combinations(layers, 2)))
    base_best2_partial, sizes2 = baseline_search(base_sims, truth, layers, 2, grid, combo_limit=args.pairs_subset)
    pairs_run, pairs_time = sizes2[2]
    base_search2 = base_search1 + pairs_time / pairs_run * n_pairs

    # -- report ------------------------------------------------------------- #
    print(f"\nsimilarities: max |ours - baseline| = {np.abs(sims - base_mat).max():.2e} "
          f"(batched truncated forward vs one generate per prompt)")
    rows = [
        (f"similarities ({len(strings)} prompts)", base_sim_time, ours_sim_time, ""),
        ("search, combine=1", base_search1, ours[1]["search"], ""),
        ("search, combine=2", base_search2, ours[2]["search"],
         f"baseline: {pairs_run}/{n_pairs} pairs run, extrapolated linearly"),
        ("end to end, combine=1", base_sim_time + base_search1, ours[1]["e2e"], ""),
        ("end to end, combine=2", base_sim_time + base_search2, ours[2]["e2e"], "baseline extrapolated (above)"),
    ]
    print(f"\n{'phase':28s} {'baseline s':>12s} {'ours s':>10s} {'ratio':>10s}")
    for name, b, o, note in rows:
        print(f"{name:28s} {b:12.3f} {o:10.4f} {b / o:9.0f}x  {note}")
    print(f"(exact mode, combine=2, end to end: {exact_time:.2f}s)")

    print(f"\n{'search':26s} {'layers':>10s} {'threshold':>10s} {'direction':>9s} {'train F1':>9s} {'held-out F1':>12s}")
    # Held-out similarities once for all layers; each point's predictions are then
    # exactly condition_predictions' rule (any chosen layer meets the condition).
    test_sims = condition_similarities(model, test_harmful + test_harmless, vector, layers, tokenizer=tok,
                                       batch_size=args.batch_size)
    for name, point in (("ours combine=1", ours[1]["point"]), ("ours combine=2", ours[2]["point"]),
                        ("ours exact combine=2", exact), ("baseline combine=1", base_best1)):
        layers_, t, d, f1 = point
        cols = test_sims[:, [layers.index(x) for x in layers_]]
        pred = (cols < t if d == "larger" else cols > t).any(axis=1)
        tp = int((pred & test_truth).sum())
        fp = int((pred & ~test_truth).sum())
        fn = int((~pred & test_truth).sum())
        test_f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
        print(f"{name:26s} {str(layers_):>10s} {t:10.4f} {d:>9s} {f1:9.4f} {test_f1:12.4f}")
    same = tuple(ours[1]["point"][:3]) == tuple(base_best1[:3])
    print(f"\nbaseline and ours choose the same combine=1 point: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
