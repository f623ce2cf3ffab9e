"""SteeringVector.train vs the common implementation and vs the physical floor, in one run.

Model: the embedded SmolLM2-135M-Instruct (30 layers, D=576), float32, CPU.
Data (../shared/data/ibm-demo, skipped cleanly when absent):
  behaviour  64 Alpaca questions x 8 refusal/compliance opener pairs
             -> SteeringDataset([(q, q)], suffixes=pairs): 512 pairs, 1024 strings;
             method="pca_center", accumulate_last_x_tokens="suffix-only" (the FAQ's CAST step 2)
  condition  128 harmful/harmless train pairs, disable_suffixes=True: 256 strings;
             method="pca_center", accumulate_last_x_tokens="all"
Layer sets: every layer (the SPEC default) and the demo's (behaviour 6..19, condition 1..19).

Variants, each in its own fresh subprocess (same model, same dataset object built
before the clock starts, one warm-up forward of one string first):
  ours      SteeringVector.train(..., batch_size=32): everything (tokenize, capture, C PCA);
            shared prefixes (chat template's system turn, each rendered example
            before its suffixes) run once through a KV cache (see activations/prefix_sharing.py)
  plain     the same steps with prefix sharing switched off (capture_pooled(...,
            share_prefixes=False)): every string runs whole, like the floor
  baseline  what the common implementation does (the reference library's shape,
            made correct): batches of 32 in dataset order, RIGHT-padded, the full
            model with output_hidden_states=True (all layers + LM head), pooling
            in Python per row and layer over the real tokens (the suffix span as
            the last len(tokenize(suffix)) tokens), sklearn PCA + sign rule per layer
  floor     a bare forward of the plain path's batches (same length-sorted,
            right-padded batches of whole strings), truncated after the deepest
            requested layer, no hooks, no pooling, no PCA: the least any method
            that runs every string through the model can cost. Prefix sharing
            runs fewer tokens, so "ours" can be below it; "plain" is the
            like-for-like comparison

Memory: peak resident memory of the subprocess DURING the variant, above its
resident memory just before it (the model weights and the dataset are there for
every variant). Measured exactly with the kernel's high-water mark: the
subprocess resets VmHWM (echo 5 > /proc/self/clear_refs) right before the
variant and reads VmHWM after it, so every allocation torch or numpy makes is
seen, however short-lived. The absolute peak is printed too.

The directions of ours and the baseline are compared (min |cos| over layers).

    .venv/bin/python benchmarks/bench_extraction.py [--repeats 1] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibm-demo"
VARIANTS = ("ours", "plain", "baseline", "floor")


# --------------------------------------------------------------------------- #
# Data and settings
# --------------------------------------------------------------------------- #
def load_task(task: str, tok):
    from activation_steering import SteeringDataset

    if task == "behavior":
        questions = [it["question"] for it in json.loads((SHARED / "alpaca.json").read_text())["train"][:64]]
        ref = json.loads((SHARED / "behavior_refusal.json").read_text())
        pairs = list(zip(ref["non_compliant_responses"][:8], ref["compliant_responses"][:8]))
        ds = SteeringDataset(tokenizer=tok, examples=[(q, q) for q in questions], suffixes=pairs)
        return ds, "pca_center", "suffix-only"
    rows = json.loads((SHARED / "condition_harmful.json").read_text())["train"][:128]
    ds = SteeringDataset(tokenizer=tok, examples=[(r["harmful"], r["harmless"]) for r in rows], suffixes=None,
                         disable_suffixes=True)
    return ds, "pca_center", "all"


def layer_ids(task: str, layers: str, n_layers: int) -> list[int]:
    if layers == "all":
        return list(range(n_layers))
    return list(range(6, 20)) if task == "behavior" else list(range(1, 20))


# --------------------------------------------------------------------------- #
# Variants (run inside the child)
# --------------------------------------------------------------------------- #
def run_ours(model, tok, ds, method, mode, layers):
    from activation_steering import SteeringVector

    vec = SteeringVector.train(model, tok, ds, method=method, accumulate_last_x_tokens=mode,
                               hidden_layer_ids=layers, batch_size=32)
    return {k: v for k, v in vec.directions.items()}


def run_plain(model, tok, ds, method, mode, layers):
    """train() step by step (see extract.py) with prefix sharing off."""
    from activation_steering import _core
    from activation_steering.activations.pooled import capture_pooled
    from activation_steering.activations.tokens import pooling_spans, tokenize

    pairs = ds.formatted_dataset
    texts = [s for p in pairs for s in (p.positive, p.negative)]
    starts = [c for p in pairs for c in (p.positive_suffix_start, p.negative_suffix_start)]
    tk = tokenize(tok, texts, not ds.use_chat_template, starts if mode == "suffix-only" else None)
    start, end, _ = pooling_spans(tk, mode)
    pooled = capture_pooled(model, tk, start, end, layers, 32, pad_id=tok.pad_token_id or 0, progress=False,
                            share_prefixes=False)
    comps, _, _ = _core.pca_fit(pooled, method, 1, False)
    return {layer: comps[j, 0].copy() for j, layer in enumerate(layers)}


def run_baseline(model, tok, ds, method, mode, layers):
    import numpy as np
    import torch
    from sklearn.decomposition import PCA

    pairs = ds.formatted_dataset
    texts = [s for p in pairs for s in (p.positive, p.negative)]
    suffix_text = [t[c:] if c is not None else "" for p in pairs
                   for t, c in ((p.positive, p.positive_suffix_start), (p.negative, p.negative_suffix_start))]
    hidden = {layer: [] for layer in layers}
    old = tok.padding_side
    tok.padding_side = "right"
    try:
        for i in range(0, len(texts), 32):
            batch = texts[i:i + 32]
            enc = tok(batch, padding=True, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model(**enc, output_hidden_states=True)
            lengths = enc["attention_mask"].sum(1).tolist()
            for layer in layers:
                hs = out.hidden_states[layer + 1]
                for b, n in enumerate(lengths):
                    if mode == "all":
                        a = 0
                    else:
                        k = len(tok(suffix_text[i + b], add_special_tokens=False)["input_ids"])
                        a = n - max(k, 1)
                    hidden[layer].append(hs[b, a:n].mean(0).numpy())
            del out
    finally:
        tok.padding_side = old
    directions = {}
    for layer in layers:
        h = np.vstack(hidden[layer])
        if method == "pca_center":
            train = h - h.mean(0)
        elif method == "pca_diff":
            train = h[0::2] - h[1::2]
        else:
            mid = (h[0::2] + h[1::2]) / 2
            train = h.copy()
            train[0::2] -= mid
            train[1::2] -= mid
        d = PCA(n_components=1).fit(train).components_[0].astype(np.float32)
        proj = h @ d
        if np.mean(proj[0::2] < proj[1::2]) > np.mean(proj[0::2] > proj[1::2]):
            d = -d
        directions[layer] = d
    return directions


def run_floor(model, tok, ds, method, mode, layers):
    import numpy as np
    import torch

    from activation_steering.activations.runner import input_device
    from activation_steering.activations.tokens import length_sorted_batches, pad_right, tokenize
    from activation_steering.activations.layers import find_layers_and_base

    texts = [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]
    tk = tokenize(tok, texts, not ds.use_chat_template)
    base, decoder = find_layers_and_base(model)
    deepest = max(layers)

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    handle = None if deepest == len(decoder) - 1 else decoder[deepest].register_forward_hook(stop)
    dev = input_device(model)
    try:
        with torch.no_grad():
            for rows in length_sorted_batches(tk.lengths, 32):
                ids, mask = pad_right(tk.input_ids, np.asarray(rows), tok.pad_token_id or 0)
                try:
                    base(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
                except Stop:
                    pass
    finally:
        if handle is not None:
            handle.remove()
    return None


def _mem_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def child(args) -> None:
    import gc

    import numpy as np
    import torch

    from activation_steering.config import GlobalConfig
    from activation_steering.models import load_default_model

    if args.threads:
        torch.set_num_threads(args.threads)
    GlobalConfig.set_verbose(False)
    model, tok = load_default_model()
    ds, method, mode = load_task(args.task, tok)
    layers = layer_ids(args.task, args.layers, model.config.num_hidden_layers)
    with torch.no_grad():  # warm-up: one string, whole model
        enc = tok(ds.formatted_dataset[0].positive, return_tensors="pt", add_special_tokens=False)
        model(**enc)
    fn = {"ours": run_ours, "plain": run_plain, "baseline": run_baseline, "floor": run_floor}[args.variant]
    gc.collect()
    rss0 = _mem_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    directions = fn(model, tok, ds, method, mode, layers)
    wall = time.perf_counter() - t0
    peak = _mem_kib("VmHWM")
    if directions is not None and args.out:
        np.savez(args.out, **{str(k): v for k, v in directions.items()})
    print(json.dumps({"wall": wall, "rss0_mib": rss0 / 1024, "peak_mib": peak / 1024,
                      "extra_mib": (peak - rss0) / 1024, "n_strings": 2 * len(ds.formatted_dataset),
                      "n_layers": len(layers), "deepest": max(layers)}))


# --------------------------------------------------------------------------- #
# Driver
# --------------------------------------------------------------------------- #
def spawn(variant, task, layers, threads, out=None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--variant", variant, "--task", task, "--layers", layers]
    if threads:
        cmd += ["--threads", str(threads)]
    if out:
        cmd += ["--out", out]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{variant}/{task} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=VARIANTS)
    ap.add_argument("--task", choices=("behavior", "condition"))
    ap.add_argument("--layers", choices=("all", "demo"), default="all")
    ap.add_argument("--out")
    ap.add_argument("--repeats", type=int, default=1, help="runs per variant; the fastest is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch's default)")
    ap.add_argument("--tasks", default="behavior,condition")
    ap.add_argument("--layer-sets", default="demo,all")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    if not all((SHARED / f).is_file() for f in ("alpaca.json", "behavior_refusal.json", "condition_harmful.json")):
        print(f"skipped: {SHARED} not found")
        return 0
    import numpy as np

    print(f"# bench_extraction: SmolLM2-135M-Instruct, CPU, {os.cpu_count()} cores, repeats={args.repeats}")
    header = (f"{'task':<10}{'layers':<7}{'strings':>8}{'ours s':>8}{'plain s':>8}{'base s':>8}{'floor s':>8}"
              f"{'base/ours':>10}{'ours/floor':>11}{'plain/floor':>12}{'ours MiB':>9}{'base MiB':>9}"
              f"{'mem ours/base':>14}{'min|cos|':>9}")
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            for layers in args.layer_sets.split(","):
                res = {}
                for v in VARIANTS:
                    runs = [spawn(v, task, layers, args.threads, out=f"{tmp}/{task}-{layers}-{v}.npz")
                            for _ in range(args.repeats)]
                    res[v] = min(runs, key=lambda r: r["wall"])
                    res[v]["extra_mib"] = min(r["extra_mib"] for r in runs)
                a = np.load(f"{tmp}/{task}-{layers}-ours.npz")
                b = np.load(f"{tmp}/{task}-{layers}-baseline.npz")
                c = np.load(f"{tmp}/{task}-{layers}-plain.npz")
                cos = min(abs(float(np.dot(a[k], b[k]))) for k in a.files)
                cos_plain = min(float(np.dot(a[k], c[k])) for k in a.files)
                o, pl, bl, fl = res["ours"], res["plain"], res["baseline"], res["floor"]
                print(f"{task:<10}{layers:<7}{o['n_strings']:>8}{o['wall']:>8.2f}{pl['wall']:>8.2f}{bl['wall']:>8.2f}"
                      f"{fl['wall']:>8.2f}{bl['wall'] / o['wall']:>9.2f}x{o['wall'] / fl['wall']:>10.2f}x"
                      f"{pl['wall'] / fl['wall']:>11.2f}x{o['extra_mib']:>9.0f}{bl['extra_mib']:>9.0f}"
                      f"{o['extra_mib'] / bl['extra_mib']:>13.3f}x{cos:>9.5f}", flush=True)
                print(f"#   peak RSS MiB (absolute): ours {o['peak_mib']:.0f}, plain {pl['peak_mib']:.0f}, "
                      f"baseline {bl['peak_mib']:.0f}, floor {fl['peak_mib']:.0f} (model+data before the run: "
                      f"{o['rss0_mib']:.0f}); extra MiB plain {pl['extra_mib']:.0f}, floor {fl['extra_mib']:.0f}; "
                      f"deepest layer {o['deepest']}; ours vs plain min cos {cos_plain:.6f}", flush=True)
    print("targets: base/ours >= 4x, mem ours/base <= 0.5x, ours/floor (like-for-like: plain/floor) <= 1.15x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
