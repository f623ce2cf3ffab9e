"""Strength transfer across models: at what steering strength do held-out continuations move?

What this is for: steering strengths are absolute lengths added to the residual stream,
whose scale differs ~10-100x between the two embedded models (SmolLM2-135M-Instruct and
the Gemma 3 270M base model). `steer(..., strength_unit=...)` offers two relative units
(docs/strength_units.md). This script measures, for each unit, the strength at which half
of the held-out continuations move toward a pole, on both models, and how far apart the
two models' strengths are:

  1. train one vector per behaviour (sentiment: positive/negative; formality:
     formal/informal) from the project-written pairs in data/strength_transfer.json,
     raw text (use_chat_template=False on both models, so both see the same strings;
     Gemma's GGUF has no chat template), pca_pairwise, mean over all tokens; `train`
     records `residual_norms` (the median residual norm at each steered layer's input)
     in the same pass;
  2. steer the middle layers (fraction LAYER_SPAN of the stack) with strength +s (toward
     the first pole) and -s (toward the second), for s on a log grid per unit
     (DEFAULT_GRIDS), in each unit: "absolute" (s x direction), "residual_norm"
     (s x the recorded norm x direction), "token_norm" (s x the position's own norm x
     direction); greedily continue each HELD-OUT neutral sentence start
     (data/strength_transfer.json "neutral_prompts", none of them in the train pairs) for
     a few tokens with respond_batch;
  3. score every continuation with the lexicon judges (demo/pole_judges.py): a
     continuation "moved toward pole P" when the judge labels it P;
  4. report, per model, behaviour, pole and unit, the share that moved at each strength
     with a bootstrap 95% interval over prompts, and s50: the strength at which half of
     the continuations moved (interpolated on the grid, which starts at 0 = unsteered;
     bootstrap interval by resampling prompts; inf = not reached on the grid); and per
     behaviour, pole and unit the ratio s50(Gemma) / s50(SmolLM2) with a PAIRED bootstrap
     interval (the same resampled prompts for both models). The goal: a relative unit
     whose ratio is within a factor 2 (0.5-2) where the absolute ratio is 10x or more.

Each model runs in its own invocation (a JSON of raw outcomes each), and `--summarize`
merges them into the tables and the plot, so a slow model can run in the background:

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/strength_transfer.py \\
        --models smollm2-135m-instruct --out smol.json
    ... --models gemma3-270m --out gemma.json
    ... --summarize smol.json gemma.json --plot docs/strength_transfer.png

What this is not: a quality evaluation (fluency is not judged: at large strengths the
continuations degenerate into repeated words, which the judges may count as moved).
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
UNITS = ("absolute", "residual_norm", "token_norm")
_REL = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
DEFAULT_GRIDS = {
    "absolute": {"smollm2-135m-instruct": [1, 2, 4, 8, 16, 32, 64],
                 "gemma3-270m": [8, 16, 32, 64, 128, 256, 512]},
    "residual_norm": {"smollm2-135m-instruct": _REL, "gemma3-270m": _REL},
    "token_norm": {"smollm2-135m-instruct": _REL, "gemma3-270m": _REL},
}
SHORT = {"smollm2-135m-instruct": "SmolLM2", "gemma3-270m": "Gemma 3"}


def load_data() -> dict:
    return json.loads(resources.files("activation_steering").joinpath("data/strength_transfer.json")
                      .read_text(encoding="utf-8"))


def middle_layers(n_layers: int) -> list[int]:
    lo, hi = int(round(LAYER_SPAN[0] * n_layers)), int(round(LAYER_SPAN[1] * n_layers))
    return list(range(lo, max(hi, lo + 1)))


def grid_for(unit: str, model: str, override: dict | None = None) -> list[float]:
    """The strengths swept for (unit, model), with 0 (the unsteered baseline) first."""
    grid = (override or {}).get(unit) or DEFAULT_GRIDS[unit].get(model) or _REL
    return [0.0] + sorted({float(s) for s in grid if s > 0})


def run_model(name: str, data: dict, behaviours: list[str], units: list[str], n_prompts: int,
              max_new_tokens: int, batch_size: int, grids: dict | None = None, log=print) -> dict:
    from activation_steering import MalleableModel, SteeringDataset, SteeringVector
    from activation_steering.demo.pole_judges import JUDGES
    from activation_steering.models import load_default_model

    t0 = time.perf_counter()
    model, tok = load_default_model(name)
    n_layers = model.config.num_hidden_layers
    layers = middle_layers(n_layers)
    log(f"[{name}] loaded in {time.perf_counter() - t0:.1f}s; {n_layers} layers, steering {layers[0]}-{layers[-1]}")
    prompts = data["neutral_prompts"][:n_prompts]
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": 1.1}
    out: dict = {"model": name, "layers": layers, "n_layers": n_layers, "prompts": prompts,
                 "settings": settings, "behaviours": {}}
    mm = MalleableModel(model, tok)
    mm.reset_leash_to_default()
    t1 = time.perf_counter()
    baseline = mm.respond_batch(prompts, settings=settings, use_chat_template=False, batch_size=batch_size)
    out["seconds_per_batch_call"] = time.perf_counter() - t1
    out["baseline"] = baseline
    log(f"[{name}] unsteered respond_batch of {len(prompts)} prompts: {out['seconds_per_batch_call']:.1f}s")
    for behaviour in behaviours:
        judge = JUDGES[behaviour]
        pairs = [tuple(p) for p in data[behaviour]["train"]]
        ds = SteeringDataset(tok, pairs, disable_suffixes=True, use_chat_template=False)
        t1 = time.perf_counter()
        vec = SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="all", hidden_layer_ids=layers)
        if vec.residual_norms is None:
            raise RuntimeError("train recorded no residual_norms")
        log(f"[{name}/{behaviour}] trained in {time.perf_counter() - t1:.1f}s; residual norms "
            + ", ".join(f"{i}:{v:.0f}" for i, v in vec.residual_norms.items()))
        b_out: dict = {"residual_norms": {str(k): v for k, v in vec.residual_norms.items()},
                       "explained_variance": {str(k): v for k, v in vec.explained_variances.items()},
                       "units": {}}
        for unit in units:
            grid = grid_for(unit, name, grids)
            rows = {}
            for pole, sign in zip(judge.poles, (1.0, -1.0)):
                moved = np.zeros((len(prompts), len(grid)))
                samples = {}
                for j, s in enumerate(grid):
                    if s == 0:
                        texts_out = baseline
                    else:
                        mm.steer(behavior_vector=vec, behavior_layer_ids=layers, behavior_vector_strength=sign * s,
                                 strength_unit=unit)
                        texts_out = mm.respond_batch(prompts, settings=settings, use_chat_template=False,
                                                     batch_size=batch_size)
                        mm.reset_leash_to_default()
                    moved[:, j] = [judge.toward(t, pole) for t in texts_out]
                    samples[f"{s:g}"] = texts_out[:3]
                    log(f"  {behaviour} {unit} toward {pole} s={s:g}: {moved[:, j].mean():.2f}  e.g. "
                        f"{texts_out[0]!r}")
                rows[pole] = {"moved": moved.astype(int).tolist(), "examples": samples}
            b_out["units"][unit] = {"grid": grid, "poles": rows}
        out["behaviours"][behaviour] = b_out
    out["seconds_total"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- #
# summary (no model; tested in tests/demo/test_strength_transfer_summary.py)
# --------------------------------------------------------------------------- #
def _s50(grid, moved: np.ndarray) -> float:
    from activation_steering.demo.pole_judges import crossing_strength

    return crossing_strength(grid, moved.mean(axis=0))


def summarize(results: list[dict], n_boot: int = 2000) -> list[dict]:
    """One row per model x behaviour x unit x pole: shares per strength (with bootstrap CIs)
    and s50 = (point, lower, upper)."""
    from activation_steering.demo.pole_judges import bootstrap_ci

    table = []
    for res in results:
        for behaviour, b in res["behaviours"].items():
            for unit, u in b["units"].items():
                grid = np.asarray(u["grid"], dtype=float)
                for pole, r in u["poles"].items():
                    moved = np.asarray(r["moved"], dtype=float)
                    shares = moved.mean(axis=0)
                    cis = [bootstrap_ci(moved[:, j], n_boot=n_boot, seed=j)[1:] for j in range(len(grid))]
                    s50 = bootstrap_ci(moved, lambda m: _s50(grid, m), n_boot=n_boot, seed=99)
                    table.append({"model": res["model"], "behaviour": behaviour, "unit": unit, "pole": pole,
                                  "grid": grid.tolist(), "shares": shares.tolist(), "share_ci": cis,
                                  "s50": s50})
    return table


def ratios(results: list[dict], reference: str, other: str, n_boot: int = 2000) -> list[dict]:
    """Per behaviour x unit x pole: s50(other) / s50(reference) with a paired bootstrap
    interval (prompts resampled jointly; both runs must hold the same prompts). `fold` =
    max(r, 1/r), the factor by which the two models' strengths differ (inf: a model never
    reaches half)."""
    from activation_steering.demo.pole_judges import bootstrap_ci

    by = {r["model"]: r for r in results}
    ref, oth = by[reference], by[other]
    if ref["prompts"] != oth["prompts"]:
        raise ValueError("the two runs used different prompts; a paired ratio needs the same ones")
    n = len(ref["prompts"])
    rows = []
    for behaviour in ref["behaviours"]:
        if behaviour not in oth["behaviours"]:
            continue
        for unit, u_ref in ref["behaviours"][behaviour]["units"].items():
            u_oth = oth["behaviours"][behaviour]["units"].get(unit)
            if u_oth is None:
                continue
            for pole in u_ref["poles"]:
                a = np.asarray(u_ref["poles"][pole]["moved"], dtype=float)
                b = np.asarray(u_oth["poles"][pole]["moved"], dtype=float)
                ga, gb = u_ref["grid"], u_oth["grid"]

                def ratio(idx, a=a, b=b, ga=ga, gb=gb):
                    sa, sb = _s50(ga, a[idx]), _s50(gb, b[idx])
                    if not (math.isfinite(sa) and math.isfinite(sb)) or sa <= 0 or sb <= 0:
                        return float("nan")
                    return sb / sa

                point, lo, hi = bootstrap_ci(np.arange(n), ratio, n_boot=n_boot, seed=7)
                fold = max(point, 1 / point) if math.isfinite(point) and point > 0 else float("inf")
                # one model reaches half, the other not on its grid: the factor is at least
                # (the other's largest strength) / (the reaching model's s50), or its inverse
                sa, sb = _s50(ga, a), _s50(gb, b)
                fold_at_least = None
                if math.isfinite(sa) != math.isfinite(sb) and min(sa, sb) > 0:
                    fold_at_least = max(gb) / sa if math.isfinite(sa) else max(ga) / sb
                    fold_at_least = max(fold_at_least, 1 / fold_at_least)
                rows.append({"behaviour": behaviour, "unit": unit, "pole": pole, "ratio": [point, lo, hi],
                             "fold": fold, "fold_at_least": fold_at_least, "within_2x": bool(fold <= 2.0)})
    return rows


def _f(x: float) -> str:
    return "not reached" if not math.isfinite(x) else f"{x:.3g}"


def format_table(table: list[dict]) -> str:
    lines = ["| model | behaviour | unit | pole | s50 | 95% CI | share moved per strength |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        shares = ", ".join(f"{s:g}: {v:.2f}" for s, v in zip(r["grid"], r["shares"]))
        lines.append(f"| {r['model']} | {r['behaviour']} | {r.get('unit', 'absolute')} | {r['pole']} | "
                     f"{_f(r['s50'][0])} | [{_f(r['s50'][1])}, {_f(r['s50'][2])}] | {shares} |")
    return "\n".join(lines)


def format_s50_table(table: list[dict], ratio_rows: list[dict], reference: str, other: str) -> str:
    """The headline: per behaviour x pole x unit, both models' s50 with CIs and their ratio."""
    s50 = {(r["model"], r["behaviour"], r["unit"], r["pole"]): r["s50"] for r in table}
    lines = [f"| behaviour | pole | unit | s50 {SHORT.get(reference, reference)} [95% CI] | "
             f"s50 {SHORT.get(other, other)} [95% CI] | ratio {SHORT.get(other, other)} / "
             f"{SHORT.get(reference, reference)} [95% CI] | factor apart | within 2x? |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in ratio_rows:
        a = s50[(reference, r["behaviour"], r["unit"], r["pole"])]
        b = s50[(other, r["behaviour"], r["unit"], r["pole"])]
        p, lo, hi = r["ratio"]
        if math.isfinite(r["fold"]):
            verdict = "yes" if r["within_2x"] else f"no, misses by {r['fold'] / 2:.2g}x"
        elif r.get("fold_at_least") and r["fold_at_least"] <= 2:
            verdict = "unknown (one model never reaches half on its grid)"
        elif r.get("fold_at_least"):
            verdict = f"no, misses by > {r['fold_at_least'] / 2:.2g}x (one model never reaches half)"
        else:
            verdict = "n/a (neither model reaches half)"
        fold = _f(r["fold"]) if math.isfinite(r["fold"]) or not r.get("fold_at_least") \
            else f"> {r['fold_at_least']:.3g}"
        lines.append(f"| {r['behaviour']} | {r['pole']} | {r['unit']} | {_f(a[0])} [{_f(a[1])}, {_f(a[2])}] | "
                     f"{_f(b[0])} [{_f(b[1])}, {_f(b[2])}] | {_f(p)} [{_f(lo)}, {_f(hi)}] | "
                     f"{fold} | {verdict} |")
    return "\n".join(lines)


def plot(table: list[dict], path: str | Path) -> str:
    """Share moved vs strength: one panel per behaviour (rows) x unit (columns); colour = model,
    line style = pole; the 0.5 line is s50's level. A small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    behaviours = list(dict.fromkeys(r["behaviour"] for r in table))
    units = [u for u in UNITS if any(r["unit"] == u for r in table)]
    models = list(dict.fromkeys(r["model"] for r in table))
    colours = dict(zip(models, ["#1f77b4", "#d62728", "#2ca02c"]))
    fig, axes = plt.subplots(len(behaviours), len(units), figsize=(3.3 * len(units), 2.5 * len(behaviours)),
                             squeeze=False)
    for i, behaviour in enumerate(behaviours):
        for j, unit in enumerate(units):
            ax = axes[i][j]
            rows = [r for r in table if r["behaviour"] == behaviour and r["unit"] == unit]
            poles = list(dict.fromkeys(r["pole"] for r in rows))
            for r in rows:
                grid = np.asarray(r["grid"])
                nz = grid > 0
                ax.plot(grid[nz], np.asarray(r["shares"])[nz], marker="o", ms=3, color=colours[r["model"]],
                        ls="-" if r["pole"] == poles[0] else "--",
                        label=f"{SHORT.get(r['model'], r['model'])} {r['pole']}")
            ax.axhline(0.5, color="grey", lw=0.6)
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(f"{behaviour}, {unit}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(behaviours) - 1:
                ax.set_xlabel("strength" + (" (fraction of the norm)" if unit != "absolute" else ""), fontsize=8)
            if j == 0:
                ax.set_ylabel("share moved", fontsize=8)
            if i == 0 and j == len(units) - 1 or len(behaviours) == 1:
                ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    p.add_argument("--behaviours", default="sentiment,formality")
    p.add_argument("--units", default=",".join(UNITS))
    p.add_argument("--grid", action="append", default=[],
                   help="UNIT=s1,s2,... strengths for that unit on every model (repeatable; default DEFAULT_GRIDS)")
    p.add_argument("--n-prompts", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=40)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--out", default="strength_transfer.json")
    p.add_argument("--summarize", nargs="+", metavar="RUN.json",
                   help="no model: merge these runs' JSON files into the tables (and --plot)")
    p.add_argument("--plot", help="write the share-vs-strength figure here (PNG)")
    args = p.parse_args(argv)
    if args.summarize:
        results = []
        for f in args.summarize:
            results.extend(json.loads(Path(f).read_text())["results"])
    else:
        data = load_data()
        units = args.units.split(",")
        bad = [u for u in units if u not in UNITS]
        if bad:
            p.error(f"--units: unknown {bad}; choose from {UNITS}")
        grids = {}
        for g in args.grid:
            unit, _, values = g.partition("=")
            if unit not in UNITS:
                p.error(f"--grid {g!r}: unknown unit {unit!r}")
            grids[unit] = [float(x) for x in values.split(",")]
        results = []
        for name in args.models.split(","):
            res = run_model(name, data, args.behaviours.split(","), units, args.n_prompts, args.max_new_tokens,
                            args.batch_size, grids, log=lambda m: print(m, flush=True))
            results.append(res)
            Path(args.out).write_text(json.dumps({"results": results}, indent=1))
    table = summarize(results, args.n_boot)
    print(format_table(table))
    models = [r["model"] for r in results]
    summary: dict = {"results": results, "table": table}
    if len(models) >= 2:
        ratio_rows = ratios(results, models[0], models[1], args.n_boot)
        summary["ratios"] = ratio_rows
        print()
        print(format_s50_table(table, ratio_rows, models[0], models[1]))
    if args.plot:
        print(f"\nplot: {plot(table, args.plot)}")
    if not args.summarize:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
