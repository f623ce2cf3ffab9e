"""Strength transfer across models: at what steering strength do held-out continuations move?

What this is for: steering strengths are absolute lengths added to the residual stream,
whose scale differs ~10-100x between the two embedded models (SmolLM2-135M-Instruct and
the Gemma 3 270M base model). This script measures it on two behaviours:

  1. train one vector per behaviour (sentiment: positive/negative; formality:
     formal/informal) from the project-written pairs in data/strength_transfer.json,
     raw text (use_chat_template=False on both models, so both see the same strings;
     Gemma's GGUF has no chat template), pca_pairwise, mean over all tokens;
  2. steer the middle layers (fraction LAYER_SPAN of the stack) with strength +s (toward
     the first pole) and -s (toward the second) for s on a geometric grid, and greedily
     continue each HELD-OUT neutral sentence start (data/strength_transfer.json
     "neutral_prompts", none of them in the train pairs) for a few tokens;
  3. score every continuation with the lexicon judges (demo/pole_judges.py): a
     continuation "moved toward pole P" when the judge labels it P;
  4. report, per model, behaviour and pole, the share that moved at each strength with a
     bootstrap 95% interval over prompts, and s50: the strength at which half of the
     continuations moved (interpolated; bootstrap interval by resampling prompts;
     inf = not reached on the grid).

Only the absolute unit exists yet (--unit absolute); the relative units ("residual_norm",
"token_norm") plug in here once `steer` takes `strength_unit`. The layer statistics the
relative unit will use are printed for reference (activations/norms.py).

What this is not: a quality evaluation (fluency is not judged: at large strengths the
continuations degenerate into repeated pole words, which the judges count as moved).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/strength_transfer.py \\
        --models smollm2-135m-instruct,gemma3-270m --out strength_transfer.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

LAYER_SPAN = (0.2, 0.6)        # steer layers [0.2 L, 0.6 L): the middle of the stack
DEFAULT_GRID = {"smollm2-135m-instruct": [0, 4, 8, 16, 32, 64],
                "gemma3-270m": [0, 32, 64, 128, 256, 512]}


def load_data() -> dict:
    return json.loads(resources.files("activation_steering").joinpath("data/strength_transfer.json")
                      .read_text(encoding="utf-8"))


def middle_layers(n_layers: int) -> list[int]:
    lo, hi = int(round(LAYER_SPAN[0] * n_layers)), int(round(LAYER_SPAN[1] * n_layers))
    return list(range(lo, max(hi, lo + 1)))


def run_model(name: str, data: dict, behaviours: list[str], grid: list[float], n_prompts: int,
              max_new_tokens: int, batch_size: int, log=print) -> dict:
    from activation_steering import MalleableModel, SteeringDataset, SteeringVector
    from activation_steering.activations.norms import residual_norms
    from activation_steering.demo.pole_judges import JUDGES
    from activation_steering.models import load_default_model

    t0 = time.perf_counter()
    model, tok = load_default_model(name)
    n_layers = model.config.num_hidden_layers
    layers = middle_layers(n_layers)
    log(f"[{name}] loaded in {time.perf_counter() - t0:.1f}s; {n_layers} layers, steering {layers[0]}-{layers[-1]}")
    prompts = data["neutral_prompts"][:n_prompts]
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    out = {"model": name, "layers": layers, "grid": grid, "behaviours": {}}
    mm = MalleableModel(model, tok)
    mm.reset_leash_to_default()
    baseline = mm.respond_batch(prompts, settings=settings, use_chat_template=False, batch_size=batch_size)
    for behaviour in behaviours:
        judge = JUDGES[behaviour]
        pairs = [tuple(p) for p in data[behaviour]["train"]]
        ds = SteeringDataset(tok, pairs, disable_suffixes=True, use_chat_template=False)
        t1 = time.perf_counter()
        vec = SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="all", hidden_layer_ids=layers)
        texts = [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]
        norms = {i: s.median for i, s in residual_norms(model, tok, texts, layers, add_special_tokens=True).items()}
        log(f"[{name}/{behaviour}] trained in {time.perf_counter() - t1:.1f}s; median residual norms "
            + ", ".join(f"{i}:{v:.0f}" for i, v in norms.items()))
        rows = {}
        for pole, sign in zip(judge.poles, (1.0, -1.0)):
            moved = np.zeros((len(prompts), len(grid)))
            samples = {}
            for j, s in enumerate(grid):
                if s == 0:
                    texts_out = baseline
                else:
                    mm.steer(behavior_vector=vec, behavior_layer_ids=layers, behavior_vector_strength=sign * s)
                    texts_out = mm.respond_batch(prompts, settings=settings, use_chat_template=False,
                                                 batch_size=batch_size)
                    mm.reset_leash_to_default()
                moved[:, j] = [judge.toward(t, pole) for t in texts_out]
                samples[str(s)] = texts_out[:3]
                log(f"  {behaviour} toward {pole} s={s:g}: {moved[:, j].mean():.2f}  e.g. {texts_out[0]!r}")
            rows[pole] = {"moved": moved.tolist(), "examples": samples}
        out["behaviours"][behaviour] = {"poles": rows, "residual_norm_medians": norms,
                                        "explained_variance": {str(k): v for k, v in vec.explained_variances.items()}}
    return out


def summarize(results: list[dict], n_boot: int = 2000) -> list[dict]:
    from activation_steering.demo.pole_judges import bootstrap_ci, crossing_strength

    table = []
    for res in results:
        grid = np.asarray(res["grid"], dtype=float)
        for behaviour, b in res["behaviours"].items():
            for pole, r in b["poles"].items():
                moved = np.asarray(r["moved"])
                shares = moved.mean(axis=0)
                cis = [bootstrap_ci(moved[:, j], n_boot=n_boot, seed=j)[1:] for j in range(len(grid))]
                s50 = bootstrap_ci(moved, lambda m: crossing_strength(grid, m.mean(axis=0)), n_boot=n_boot, seed=99)
                table.append({"model": res["model"], "behaviour": behaviour, "pole": pole,
                              "shares": shares.tolist(), "share_ci": cis, "s50": s50, "grid": grid.tolist()})
    return table


def format_table(table: list[dict]) -> str:
    def f(x):
        return "not reached" if math.isinf(x) else f"{x:.3g}"

    lines = ["| model | behaviour | pole | s50 (absolute) | 95% CI | share moved per strength |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in table:
        shares = ", ".join(f"{s:g}:{v:.2f}" for s, v in zip(r["grid"], r["shares"]))
        lines.append(f"| {r['model']} | {r['behaviour']} | {r['pole']} | {f(r['s50'][0])} | "
                     f"[{f(r['s50'][1])}, {f(r['s50'][2])}] | {shares} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    p.add_argument("--behaviours", default="sentiment,formality")
    p.add_argument("--unit", default="absolute", choices=["absolute"])
    p.add_argument("--grid", help="comma-separated strengths (default: per model, see DEFAULT_GRID)")
    p.add_argument("--n-prompts", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", default="strength_transfer.json")
    args = p.parse_args(argv)
    data = load_data()
    results = []
    for name in args.models.split(","):
        grid = [float(x) for x in args.grid.split(",")] if args.grid else DEFAULT_GRID[name]
        res = run_model(name, data, args.behaviours.split(","), grid, args.n_prompts, args.max_new_tokens,
                        args.batch_size, log=lambda m: print(m, flush=True))
        results.append(res)
        Path(args.out).write_text(json.dumps({"unit": args.unit, "results": results}, indent=1))
    table = summarize(results, args.n_boot)
    Path(args.out).write_text(json.dumps({"unit": args.unit, "results": results, "table": table}, indent=1))
    print(format_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
