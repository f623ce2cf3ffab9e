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


def test_summary_finds_the_half_moved_strength(bench):
    grid = [0, 4, 16]
    n = 20
    moved_up = np.zeros((n, 3))
    moved_up[:4, 0] = 1      # 0.2 at strength 0
    moved_up[:12, 1] = 1     # 0.6 at 4
    moved_up[:, 2] = 1       # 1.0 at 16
    never = np.zeros((n, 3))
    res = {"model": "m", "grid": grid, "behaviours": {"sentiment": {"poles": {
        "positive": {"moved": moved_up.tolist()}, "negative": {"moved": never.tolist()}}}}}
    table = bench.summarize([res], n_boot=200)
    pos, neg = table
    assert pos["pole"] == "positive" and pos["shares"] == pytest.approx([0.2, 0.6, 1.0])
    assert pos["s50"][0] == pytest.approx(4 * 0.3 / 0.4)  # interpolated between 0 and 4
    assert pos["s50"][1] <= pos["s50"][0] <= pos["s50"][2]
    assert all(math.isinf(x) for x in neg["s50"])
    text = bench.format_table(table)
    assert "| m | sentiment | positive | 3 |" in text and "not reached" in text
