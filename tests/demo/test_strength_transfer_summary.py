"""benchmarks/strength_transfer.py's bookkeeping (no model): layer choice, the summary table
and its half-moved strengths on synthetic per-prompt outcomes."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "strength_transfer.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("strength_transfer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_middle_layers_and_data(bench):
    assert bench.middle_layers(30) == list(range(6, 18))
    assert bench.middle_layers(18) == list(range(4, 11))
    data = bench.load_data()
    assert len(data["neutral_prompts"]) == 40
    train = {s for b in ("sentiment", "formality") for p in data[b]["train"] for s in p}
    assert not train & set(data["neutral_prompts"])  # held out


def run(model, grids_moved, prompts=None):
    """A synthetic run in run_model's shape: {unit: (grid, {pole: moved[n, G]})} for sentiment."""
    units = {unit: {"grid": grid, "poles": {pole: {"moved": m.tolist()} for pole, m in poles.items()}}
             for unit, (grid, poles) in grids_moved.items()}
    n = next(iter(next(iter(grids_moved.values()))[1].values())).shape[0]
    return {"model": model, "prompts": prompts or [f"p{i}" for i in range(n)],
            "behaviours": {"sentiment": {"units": units}}}


def test_summary_finds_the_half_moved_strength(bench):
    grid = [0, 4, 16]
    n = 20
    moved_up = np.zeros((n, 3))
    moved_up[:4, 0] = 1      # 0.2 at strength 0
    moved_up[:12, 1] = 1     # 0.6 at 4
    moved_up[:, 2] = 1       # 1.0 at 16
    never = np.zeros((n, 3))
    res = run("m", {"absolute": (grid, {"positive": moved_up, "negative": never})})
    table = bench.summarize([res], n_boot=200)
    pos, neg = table
    assert pos["pole"] == "positive" and pos["unit"] == "absolute" and pos["shares"] == pytest.approx([0.2, 0.6, 1.0])
    assert pos["s50"][0] == pytest.approx(4 * 0.3 / 0.4)  # interpolated between 0 and 4
    assert pos["s50"][1] <= pos["s50"][0] <= pos["s50"][2]
    assert all(math.isinf(x) for x in neg["s50"])
    text = bench.format_table(table)
    assert "| m | sentiment | absolute | positive | 3 |" in text and "not reached" in text


def test_between_model_ratio_is_paired_and_says_by_how_much_it_misses(bench):
    n = 40
    rng = np.random.default_rng(0)
    # per prompt, the strength index at which it moves: model b needs 16x model a (absolute) and the
    # same relative strength (residual_norm)
    first = rng.integers(1, 4, n)
    a = (np.arange(5)[None, :] >= first[:, None]).astype(float)        # grid index 1..3
    rel = [0, 0.01, 0.02, 0.04, 0.08]
    runs = [run("small", {"absolute": ([0, 1, 2, 4, 8], {"positive": a}), "residual_norm": (rel, {"positive": a})}),
            run("big", {"absolute": ([0, 16, 32, 64, 128], {"positive": a}),
                        "residual_norm": (rel, {"positive": a})})]
    rows = {r["unit"]: r for r in bench.ratios(runs, "small", "big", n_boot=300)}
    assert rows["absolute"]["ratio"][0] == pytest.approx(16.0)
    assert rows["absolute"]["ratio"][1] == pytest.approx(16.0) == rows["absolute"]["ratio"][2]  # paired: exact
    assert rows["absolute"]["fold"] == pytest.approx(16.0) and not rows["absolute"]["within_2x"]
    assert rows["residual_norm"]["ratio"] == pytest.approx([1.0, 1.0, 1.0]) and rows["residual_norm"]["within_2x"]
    table = bench.summarize(runs, n_boot=100)
    text = bench.format_s50_table(table, list(rows.values()), "small", "big")
    assert "no, misses by 8x" in text and "| yes |" in text
    never = run("big", {"absolute": ([0, 16, 32, 64, 128], {"positive": np.zeros((n, 5))})})
    (row,) = bench.ratios([runs[0], never], "small", "big", n_boot=50)
    assert math.isinf(row["fold"]) and not row["within_2x"]
    s50_small = bench._s50([0, 1, 2, 4, 8], a)
    assert row["fold_at_least"] == pytest.approx(128 / s50_small)  # big's largest strength / small's s50
    text = bench.format_s50_table(bench.summarize([runs[0], never], n_boot=20), [row], "small", "big")
    assert f"no, misses by > {128 / s50_small / 2:.2g}x" in text
    with pytest.raises(ValueError, match="different prompts"):
        bench.ratios([runs[0], run("big", {"absolute": ([0, 1], {"positive": np.zeros((n, 2))})},
                                  prompts=[f"q{i}" for i in range(n)])], "small", "big")


def test_grids_start_at_zero_and_plot_writes_a_small_png(bench, tmp_path):
    assert bench.grid_for("absolute", "gemma3-270m")[0] == 0.0
    assert bench.grid_for("token_norm", "other-model") == [0.0] + bench._REL
    assert bench.grid_for("absolute", "x", {"absolute": [3, 1]}) == [0.0, 1.0, 3.0]
    n = 10
    m = np.zeros((n, 3))
    m[:6, 2] = 1
    runs = [run(name, {u: ([0, 0.1, 0.2], {"positive": m, "negative": m}) for u in bench.UNITS})
            for name in ("smollm2-135m-instruct", "gemma3-270m")]
    out = bench.plot(bench.summarize(runs, n_boot=20), tmp_path / "p.png")
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
