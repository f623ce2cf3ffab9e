"""Command line: `python -m activation_steering <command>` (also `activation-steering`).

Commands
  demo    the main job (README): see `demo --help`.
"""
from __future__ import annotations

import argparse
import sys
import time


def _cmd_demo(args: argparse.Namespace) -> int:
    # Until the CAST demo lands this runs the smaller real job the foundation
    # promises: load the embedded model (GGUF -> cached float32), answer a few
    # prompts greedily, print timings.
    from .models import load_default_model

    t0 = time.perf_counter()
    model, tokenizer = load_default_model()
    t_load = time.perf_counter() - t0
    print(f"[demo] embedded model SmolLM2-135M-Instruct loaded from {model._as_load_source} in {t_load:.1f}s")
    import torch

    prompts = ["What is the capital of France?", "Name three primary colours.", "What is 12 times 12?"]
    for p in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        t1 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        dt = time.perf_counter() - t1
        n = out.shape[1] - enc.input_ids.shape[1]
        reply = tokenizer.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip()
        print(f"[demo] Q: {p}\n       A: {reply}\n       ({n} tokens in {dt:.2f}s, {n / dt:.1f} tok/s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="activation_steering", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the main job on the embedded model")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
