"""What the behaviour operators and the token_norm unit cost, against plain ActAdd
measured in the same run.

1. The steer_layer op alone, per call, at SmolLM2-135M's width (D = 576): a decode
   step (B rows x 1 position) and a prompt pass (B rows x T positions), float32 and
   bfloat16, gated by a truth table (a conditional rule) or not. Configurations:
   add (the baseline), ablate, ablate_then_add, add in token_norm, and
   ablate_then_add in token_norm. They run interleaved (one call of each per round,
   many rounds), so load on a shared machine hits them alike; the figure is the
   median per-call time and its ratio to add's.
2. With --model: one greedy decode step of a random-weight Llama with SmolLM2-135M's
   shapes (30 layers), unsteered vs steered at layers 10..15 with each operator
   (batch 1, KV cache, interleaved rounds): the ratio of the steered step time to
   add's, and to unsteered.

    .venv/bin/python benchmarks/bench_operators.py [--threads 1] [--model]

What it is not: a measure of what the operators DO to text (see the tests and
docs/semantics.md) or of GPU speed (pass --device cuda on a GPU machine).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

CONFIGS = {  # name -> beh_modes of one behaviour (None = the plain ActAdd call)
    "add": None,
    "ablate": [2],
    "ablate_then_add": [3],
    "add, token_norm": [1 | 4],
    "ablate_then_add, token_norm": [3 | 4],
}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_op(args) -> None:
    from activation_steering.native import ops as _ops

    D = 576
    print(f"steer_layer op, D={D}, {args.rounds} interleaved rounds x {args.calls} calls, median per call "
          f"(compiled op: {_ops.HAVE_COMPILED_OPS})")
    print(f"{'shape':>14} {'dtype':>9} {'gated':>6}  " + "  ".join(f"{n:>27}" for n in CONFIGS))
    for B, T in ((1, 1), (8, 1), (8, 128)):
        for dtype in (torch.float32, torch.bfloat16):
            for gated in (False, True):
                gen = torch.Generator().manual_seed(0)
                hidden = torch.randn(B, T, D, generator=gen).to(dtype).to(args.device)
                state = torch.ones(B, dtype=torch.long, device=args.device)
                vec = (torch.randn(1, D, generator=gen) * 0.01).to(dtype).to(args.device)
                d = torch.nn.functional.normalize(torch.randn(1, D, generator=gen), dim=-1).to(args.device)
                tab = torch.tensor([[0, 1]], dtype=dtype, device=args.device) if gated else None
                times: dict[str, list[float]] = {n: [] for n in CONFIGS}
                for _ in range(args.rounds):
                    for name, modes in CONFIGS.items():
                        sync(args.device)
                        t0 = time.perf_counter()
                        for _ in range(args.calls):
                            _ops.steer_layer(hidden, state, None, None, None, None, vec, tab, False,
                                             None if modes is None else d, modes)
                        sync(args.device)
                        times[name].append((time.perf_counter() - t0) / args.calls)
                med = {n: statistics.median(t) for n, t in times.items()}
                cells = [f"{med[n] * 1e6:9.1f} us ({med[n] / med['add']:4.2f}x add)" for n in CONFIGS]
                print(f"{f'{B}x{T}':>14} {str(dtype).split('.')[-1]:>9} {str(gated):>6}  " + "  ".join(cells),
                      flush=True)


def bench_model(args) -> None:
    import sys
    from pathlib import Path

    import numpy as np

    from activation_steering import MalleableModel, SteeringVector

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_steering import load  # the random-weight SmolLM2-shaped Llama and its word-level tokenizer

    model, tok, _ = load(argparse.Namespace(random_weights=True, device=args.device))
    mm = MalleableModel(model, tok)
    rng = np.random.default_rng(0)
    dirs = {i: (lambda x: x / np.linalg.norm(x))(rng.standard_normal(576).astype(np.float32)) for i in range(30)}
    vec = SteeringVector("llama", dirs, {i: 0.5 for i in range(30)})
    prompt = torch.randint(2, 49152, (1, 32), device=args.device)
    configs = {"unsteered": None, "add": dict(), "ablate": dict(behavior_operator="ablate"),
               "ablate_then_add": dict(behavior_operator="ablate_then_add"),
               "add, token_norm": dict(strength_unit="token_norm", behavior_vector_strength=0.05)}
    times: dict[str, list[float]] = {n: [] for n in configs}
    with torch.no_grad():
        for _ in range(args.model_rounds):
            for name, kw in configs.items():
                if kw is None:
                    mm.reset_leash_to_default()
                else:
                    mm.steer(behavior_vector=vec, behavior_layer_ids=list(range(10, 16)), **kw)
                out = mm(input_ids=prompt, use_cache=True)          # prompt pass (untimed)
                past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                sync(args.device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    out = mm(input_ids=nxt, past_key_values=past, use_cache=True)
                    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                sync(args.device)
                times[name].append((time.perf_counter() - t0) / args.steps)
    mm.reset_leash_to_default()
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"\ndecode step, random-weight Llama with SmolLM2-135M shapes, batch 1, layers 10..15 steered, "
          f"{args.model_rounds} interleaved rounds x {args.steps} steps, median per step")
    for n in configs:
        print(f"{n:>28}: {med[n] * 1e3:7.2f} ms  ({med[n] / med['add']:4.2f}x add, "
              f"{med[n] / med['unsteered']:4.2f}x unsteered)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds per op configuration (default: 15)")
    ap.add_argument("--calls", type=int, default=40, help="op calls per round (default: 40)")
    ap.add_argument("--model", action="store_true", help="also time decode steps of a SmolLM2-shaped model")
    ap.add_argument("--model-rounds", type=int, default=7, help="interleaved rounds for --model (default: 7)")
    ap.add_argument("--steps", type=int, default=16, help="decode steps per round for --model (default: 16)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_op(args)
    if args.model:
        bench_model(args)


if __name__ == "__main__":
    main()
