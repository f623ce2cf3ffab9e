"""What recording residual_norms costs the capture pass of SteeringVector.train, in one run.

The capture pass (activations/pooled.capture_pooled) pools each requested layer's output;
since residual_norms it can also hand each layer's INPUT to a ResidualNormStats (one
float32 norm per real token and layer; activations/norms.py). This script times the
capture with and without that pre-read, alternating the two in the same process (ABAB...),
on the embedded SmolLM2-135M-Instruct:

  chat     4 strength-transfer sentiment pairs with the chat template and the 21 default
           suffixes (prefix sharing active: root, groups and leaves all run)
  raw      32 of those pairs as raw text, no suffixes (the plain batched path)

at every layer (train's default) and at a middle block. Reported: the median time of each
variant and their ratio (with / without). Not a benchmark of the forward itself.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_capture_norms.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pairs", type=int, default=4)
    args = p.parse_args(argv)
    import torch

    from activation_steering import SteeringDataset
    from activation_steering.activations.norms import ResidualNormStats
    from activation_steering.activations.pooled import capture_pooled
    from activation_steering.activations.tokens import pad_token_id, pooling_spans, tokenize
    from activation_steering.config import GlobalConfig
    from activation_steering.models import load_default_model

    GlobalConfig.set_verbose(False)
    torch.manual_seed(0)
    model, tok = load_default_model()
    data = json.loads(resources.files("activation_steering").joinpath("data/strength_transfer.json")
                      .read_text(encoding="utf-8"))
    all_pairs = [tuple(x) for x in data["sentiment"]["train"]]
    pairs = all_pairs[:args.pairs]
    n_layers = model.config.num_hidden_layers
    cases = {"chat": SteeringDataset(tok, pairs, use_chat_template=True),
             "raw": SteeringDataset(tok, all_pairs, disable_suffixes=True, use_chat_template=False)}
    print(f"SmolLM2-135M-Instruct, {n_layers} layers, torch threads {torch.get_num_threads()}")
    print("| strings | layers | n strings | tokens | without (s) | with residual norms (s) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, ds in cases.items():
        texts = [s for q in ds.formatted_dataset for s in (q.positive, q.negative)]
        t = tokenize(tok, texts, not ds.use_chat_template)
        start, end, _ = pooling_spans(t, "all")
        for layers in (list(range(n_layers)), list(range(6, 18))):
            def once(with_norms: bool) -> float:
                stats = ResidualNormStats() if with_norms else None
                t0 = time.perf_counter()
                capture_pooled(model, t, start, end, layers, 32, pad_id=pad_token_id(tok), progress=False,
                               norms=stats)
                if stats is not None:
                    stats.medians()
                return time.perf_counter() - t0

            once(False)  # warm-up (and the prefix-sharing probe)
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.repeats):
                for flag in (False, True):
                    times[flag].append(once(flag))
            a, b = statistics.median(times[False]), statistics.median(times[True])
            print(f"| {name} | {layers[0]}-{layers[-1]} | {len(texts)} | {int(t.lengths.sum())} | {a:.3f} | "
                  f"{b:.3f} | {b / a:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
