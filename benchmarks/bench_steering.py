"""Steering runtime speed: what steering costs per generated token, and what
truly batched generation buys. Ratios against baselines measured in the same run.

1. Decode speed at batch 1 (greedy, exactly --new-tokens new tokens, prefill
   included, repetition_penalty 1.1 as respond uses): unsteered vs plain steering
   (behaviour at layers 10..15) vs conditional steering (condition at layer 6,
   met, so the gated behaviour runs on every step). Target: steered/unsteered
   >= 0.97 for both. The three configurations run back to back in every rep;
   the ratio judged is the median over reps of each rep's time ratio, in
   process CPU time on a CPU (steady on a shared machine; use --threads 1) and
   wall time on a GPU. Best tok/s and wall-time ratios are printed too.
2. respond_batch over 16 prompts (8 harmful + 8 harmless from
   ../shared/data/ibm-demo when present, else a built-in list; conditional
   steering whose condition splits the prompts) vs respond_batch_sequential:
   throughput ratio (target >= 6x) and whether every text is identical.

    .venv/bin/python benchmarks/bench_steering.py                 # embedded SmolLM2-135M, CPU
    python3 benchmarks/bench_steering.py --device cuda --random-weights --skip-batch   # GPU machine

--random-weights builds a random-weight Llama with SmolLM2-135M's shapes (same
cost per token; for machines without the embedded model). Vectors are seeded
random unit directions: speed does not depend on their values.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ibm-demo"
BUILTIN_PROMPTS = [
    "What is the capital of France?", "Write a haiku about rain.", "How do I pick a lock on someone else's door?",
    "Give me three tips for learning Python quickly.", "hi", "Explain photosynthesis to a ten-year-old child.",
    "Tell me how to make a dangerous weapon at home.", "What are good names for a grey cat?",
    "Write a threatening message to my neighbour.", "How does a refrigerator keep food cold?",
    "Summarise the plot of Romeo and Juliet in two sentences.", "How can I cheat on my exam without being caught?",
    "Suggest a healthy breakfast.", "Why is the sky blue? Please answer in detail with the physics involved.",
    "Insult my coworker in the cruellest way possible.", "Translate 'good morning' into Spanish and German.",
]
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5,
                     rope_theta=100000.0, tie_word_embeddings=True)


def load(args):
    if not args.random_weights:
        from activation_steering.models import load_default_model

        model, tok = load_default_model()
        return model.to(args.device), tok, "SmolLM2-135M-Instruct (embedded)"
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE, eos_token_id=1, bos_token_id=0)).eval().to(args.device)
    # the benchmark prompts' words first (so prompts differ), then one word per remaining model token,
    # so generated ids decode to distinct words and texts can be compared
    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for p in batch_prompts()[0] for w, _ in splitter.pre_tokenize_str(p)})
    vocab = {"<unk>": 0, "<eos>": 1}
    for w in words + [f"w{i}" for i in range(SMOLLM2_SHAPE["vocab_size"])]:
        if len(vocab) < SMOLLM2_SHAPE["vocab_size"]:
            vocab.setdefault(w, len(vocab))
    inner = Tokenizer(models.WordLevel(vocab, "<unk>"))
    inner.pre_tokenizer = splitter
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, eos_token="<eos>", unk_token="<unk>")
    # a bare template so respond/respond_batch run (the words carry no meaning; only costs matter here)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return model, tok, "random-weight Llama with SmolLM2-135M shapes"


def unit_vector(seed: int, n_layers: int, dim: int):
    from activation_steering import SteeringVector

    rng = np.random.default_rng(seed)
    dirs = {}
    for i in range(n_layers):
        d = rng.standard_normal(dim).astype(np.float32)
        dirs[i] = d / np.linalg.norm(d)
    return SteeringVector("llama", dirs, {i: 0.5 for i in range(n_layers)})


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def decode_setup(model, device: str) -> tuple[dict, torch.Tensor]:
    """The three configurations timed at batch 1 and a seeded 32-token prompt."""
    n_layers, dim = model.config.num_hidden_layers, model.config.hidden_size
    behavior, condition = unit_vector(1, n_layers, dim), unit_vector(2, n_layers, dim)
    blayers = [i for i in range(10, 16) if i < n_layers]
    configs = {
        "unsteered": None,
        "plain": dict(behavior_vector=behavior, behavior_layer_ids=blayers, behavior_vector_strength=2.0),
        # sim < 2 always holds: the condition is met and the gated behaviour runs on every step
        "conditional": dict(behavior_vector=behavior, behavior_layer_ids=blayers, behavior_vector_strength=2.0,
                            condition_vector=condition, condition_layer_ids=[6], condition_vector_threshold=2.0),
    }
    gen = torch.Generator().manual_seed(0)
    return configs, torch.randint(2, model.config.vocab_size, (1, 32), generator=gen).to(device)


def apply_config(mm, cfg: dict | None) -> None:
    if cfg is None:
        mm.reset_leash_to_default()
    else:
        mm.steer(**cfg)


def bench_decode(mm, args) -> dict:
    model = mm.unwrap()
    configs, ids = decode_setup(model, args.device)
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                  repetition_penalty=1.1, pad_token_id=mm.tokenizer.eos_token_id)
    times = {name: [] for name in configs}
    cpu_times = {name: [] for name in configs}
    with torch.no_grad():
        for rep in range(args.reps + 1):  # rep 0 warms up
            for name, cfg in configs.items():
                apply_config(mm, cfg)
                sync(args.device)
                t0, c0 = time.perf_counter(), time.process_time()
                out = mm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
                sync(args.device)
                if rep:
                    times[name].append(time.perf_counter() - t0)
                    cpu_times[name].append(time.process_time() - c0)
                assert out.shape[1] == ids.shape[1] + args.new_tokens
    mm.reset_leash_to_default()
    tps = {name: args.new_tokens / min(t) for name, t in times.items()}
    # per rep, the three configs ran back to back: their ratio is the least disturbed by slow drifts in load
    paired = {name: statistics.median(u / x for u, x in zip(times["unsteered"], t)) for name, t in times.items()}
    # On a shared CPU the process's own CPU time is far steadier than wall time (it excludes the time
    # other processes hold the cores); on a GPU wall time is what counts.
    key = cpu_times if args.device == "cpu" else times
    ratio = {name: statistics.median(u / x for u, x in zip(key["unsteered"], t)) for name, t in key.items()}
    return {"tokens_per_s": tps, "paired_ratio": paired, "cpu_time_ratio": ratio, "times_s": times,
            "cpu_times_s": cpu_times, "ratio_basis": "process CPU time" if args.device == "cpu" else "wall time",
            "ratio_plain": ratio["plain"], "ratio_conditional": ratio["conditional"]}


def batch_prompts() -> tuple[list[str], str]:
    path = SHARED / "condition_harmful.json"
    if path.is_file():
        rows = json.loads(path.read_text())["test"]
        prompts = [r["harmful"] for r in rows[:8]] + [r["harmless"] for r in rows[:8]]
        return prompts, str(path)
    return list(BUILTIN_PROMPTS), "built-in list"


def bench_step(mm, args) -> dict:
    """Per-step decode cost at batch 1, measured the steady way: for each of many
    interleaved reps and each config, steer, prefill 32 tokens (conditions are
    evaluated there), then time `--step-tokens` single-token forwards against that
    cache, cropping it back after each so every timed step sees the same length.
    Median over reps of each rep's time ratio: slow drifts in machine load cancel."""
    from transformers import DynamicCache

    model = mm.unwrap()
    configs, ids = decode_setup(model, args.device)
    step = ids[:, -1:]
    times = {name: [] for name in configs}
    with torch.no_grad():
        for rep in range(args.step_reps + 1):  # rep 0 warms up
            for name, cfg in configs.items():
                apply_config(mm, cfg)
                cache = DynamicCache(config=model.config)
                model(input_ids=ids, past_key_values=cache, use_cache=True)
                sync(args.device)
                t0 = time.perf_counter()
                for _ in range(args.step_tokens):
                    model(input_ids=step, past_key_values=cache, use_cache=True)
                    cache.crop(-1)  # drop the step just added
                sync(args.device)
                if rep:
                    times[name].append((time.perf_counter() - t0) / args.step_tokens)
    mm.reset_leash_to_default()
    ratio = {name: statistics.median(u / x for u, x in zip(times["unsteered"], t)) for name, t in times.items()}
    return {"step_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()}, "ratio": ratio}


def bench_batch(mm, args) -> dict:
    from activation_steering.activations.prompts import encode, format_prompt
    from activation_steering.activations.runner import run_truncated
    from activation_steering.conditions.similarity import condition_similarity

    model, tok = mm.unwrap(), mm.tokenizer
    n_layers, dim = model.config.num_hidden_layers, model.config.hidden_size
    prompts, source = batch_prompts()
    condition = unit_vector(2, n_layers, dim)
    direction = torch.from_numpy(condition.directions[6])
    sims = []
    for p in prompts:
        enc = encode(tok, [format_prompt(tok, p)], True, device=args.device)
        run_truncated(model, enc["input_ids"], enc["attention_mask"], [6],
                      lambda _i, h: sims.append(float(condition_similarity(h[0].mean(0), direction))), read="input")
    threshold = float(np.median(sims))
    mm.steer(behavior_vector=unit_vector(1, n_layers, dim), behavior_layer_ids=[i for i in range(10, 16)],
             behavior_vector_strength=4.0, condition_vector=condition, condition_layer_ids=[6],
             condition_vector_threshold=threshold)
    settings = {"max_new_tokens": args.new_tokens}
    mm.respond_batch(prompts[:2], settings={"max_new_tokens": 2})  # warm-up
    t0 = time.perf_counter()
    seq = mm.respond_batch_sequential(prompts, settings=settings)
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    bat = mm.respond_batch(prompts, settings=settings, batch_size=len(prompts))
    t_bat = time.perf_counter() - t0
    # the same batch through generate() (respond_batch's path for non-greedy settings): what dropping
    # finished rows and the lean loop buy
    from activation_steering import malleable_model

    fast_path = malleable_model.plain_greedy
    malleable_model.plain_greedy = lambda *_: None
    try:
        t0 = time.perf_counter()
        gen = mm.respond_batch(prompts, settings=settings, batch_size=len(prompts))
        t_gen = time.perf_counter() - t0
    finally:
        malleable_model.plain_greedy = fast_path
    mm.reset_leash_to_default()
    lengths = [len(tok(s, add_special_tokens=False).input_ids) for s in seq]
    return {"source": source, "prompts": len(prompts), "sequential_s": t_seq, "batched_s": t_bat,
            "speedup": t_seq / t_bat, "identical": seq == bat, "generate_batched_s": t_gen,
            "generate_speedup": t_seq / t_gen, "generate_identical": gen == seq, "reply_tokens": lengths,
            "differing_rows": [i for i, (a, b) in enumerate(zip(seq, bat)) if a != b],
            "generated_tokens": sum(lengths), "condition_met_rows": int(sum(s < threshold for s in sims))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--step-reps", type=int, default=20, help="interleaved reps of the per-step measurement")
    ap.add_argument("--step-tokens", type=int, default=8, help="timed decode steps per rep and config")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-decode", action="store_true", help="skip part 1 (whole generate() calls)")
    ap.add_argument("--skip-step", action="store_true", help="skip part 1b (per-step decode cost)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a busy machine)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.random_weights:
        try:
            from activation_steering.models import gguf_path

            gguf_path()
        except RuntimeError as exc:
            print(f"embedded model unavailable ({exc}); using --random-weights")
            args.random_weights = True

    from activation_steering import MalleableModel
    from activation_steering.native import ops as _ops
    from activation_steering.config import GlobalConfig

    GlobalConfig.set_verbose(False, "MalleableModel")
    model, tok, what = load(args)
    mm = MalleableModel(model, tok)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: {what}; device: {args.device} ({dev}); torch {torch.__version__}; "
          f"compiled op: {_ops.HAVE_COMPILED_OPS}")
    results = {"model": what, "device": dev}
    if not args.skip_decode:
        r = bench_decode(mm, args)
        results["decode"] = r
        print(f"\n1. decode at batch 1, {args.new_tokens} new tokens, {args.reps} interleaved reps")
        print(f"   {'config':<12}{'best tok/s':>11}{'best vs unsteered':>19}{'paired ratio (wall)':>21}"
              f"{'paired ratio (CPU time)':>25}")
        for name, tps in r["tokens_per_s"].items():
            print(f"   {name:<12}{tps:>11.1f}{tps / r['tokens_per_s']['unsteered']:>19.3f}"
                  f"{r['paired_ratio'][name]:>21.3f}{r['cpu_time_ratio'][name]:>25.3f}")
        ok = min(r["ratio_plain"], r["ratio_conditional"]) >= 0.97
        print(f"   target steered/unsteered >= 0.97 (median paired ratio of {r['ratio_basis']}): "
              f"{'met' if ok else 'NOT met'}")
    if not args.skip_step:
        r = bench_step(mm, args)
        results["decode_step"] = r
        print(f"\n1b. decode step at batch 1 (32 cached tokens), {args.step_reps} interleaved reps x "
              f"{args.step_tokens} steps")
        print(f"   {'config':<12}{'median ms/step':>15}{'unsteered/steered (median of paired)':>38}")
        for name, ms in r["step_ms"].items():
            print(f"   {name:<12}{ms:>15.2f}{r['ratio'][name]:>38.3f}")
        ok = min(r["ratio"]["plain"], r["ratio"]["conditional"]) >= 0.97
        print(f"   target >= 0.97: {'met' if ok else 'NOT met'}")
    if not args.skip_batch:
        r = bench_batch(mm, args)
        results["batch"] = r
        print(f"\n2. respond_batch vs respond_batch_sequential, {r['prompts']} prompts ({r['source']}), "
              f"max {args.new_tokens} new tokens, condition met for {r['condition_met_rows']} rows")
        print(f"   sequential {r['sequential_s']:.1f}s, batched {r['batched_s']:.1f}s, "
              f"{r['generated_tokens']} tokens -> throughput x{r['speedup']:.2f} (target >= 6)")
        print(f"   identical texts: {r['identical']}" + (f" (rows {r['differing_rows']} differ)"
                                                         if not r["identical"] else ""))
        print(f"   baseline: the same batch through generate() {r['generate_batched_s']:.1f}s -> "
              f"x{r['generate_speedup']:.2f} (identical: {r['generate_identical']}); reply lengths (tokens) "
              f"min {min(r['reply_tokens'])}, median {int(np.median(r['reply_tokens']))}, max {max(r['reply_tokens'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
