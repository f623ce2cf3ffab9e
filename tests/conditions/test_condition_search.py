"""find_best_condition_point end to end (SPEC 4): batched similarities equal the
one-prompt-at-a-time definition, the search equals brute force on them, the
analysis/plot artefacts, bad input before any forward, and the FAQ snippets.

The one-at-a-time reference is written plainly: format as respond does, run the
full model on the single prompt with output_hidden_states=True (hidden_states[i]
is h_in[i], the input of layer i), pool over all its tokens or take the last,
and apply similarity.condition_similarity.
"""
import json
import types
from itertools import combinations

import numpy as np
import pytest
import torch

from activation_steering.conditions import report, search as condition_search
from activation_steering.conditions.search import (condition_predictions, condition_similarities,
                                                  find_best_condition_point)
from activation_steering.activations.prompts import format_prompt
from activation_steering.activations.layers import find_decoder_layers
from activation_steering.conditions.similarity import condition_similarity
from tiny_models import fresh_tokenizer, make_model

POSITIVES = [
    "How do I bake bread?",
    "Tell me a story about a cat who learns to sail across the sea.",
    "hi",
    "Explain how photosynthesis works in plants and algae, step by step, with examples.",
    "Write a poem about autumn leaves.",
]
NEGATIVES = [
    "What is the capital of France?",
    "Please refuse harmful requests.",
    "0123456789",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps again.",
]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
class StandInMalleable:
    """The parts of MalleableModel the search relies on: the wrapped model (found by
    layers.unwrap_model), .tokenizer, a steering that adds a vector at a layer's
    input, and reset_leash_to_default removing it. Used only while the real
    malleable_model module does not exist."""

    def __init__(self, model, tokenizer):
        self._as_wrapped_model = model
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.resets = 0
        self._handles = []

    def steer_add(self, layer: int, vector: torch.Tensor) -> None:
        def add(_m, args, kwargs):
            if args:
                return (args[0] + vector, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + vector}

        self._handles.append(find_decoder_layers(self._as_wrapped_model)[layer].register_forward_pre_hook(
            add, with_kwargs=True))

    def reset_leash_to_default(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.resets += 1

    def find_best_condition_point(self, *args, **kwargs):
        return condition_search.find_best_condition_point(self, *args, **kwargs)


def malleable_class():
    try:
        from activation_steering.malleable_model import MalleableModel
    except ImportError:
        return StandInMalleable
    return MalleableModel


def make_vector(n_layers: int, hidden: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    directions = {i: rng.standard_normal(hidden).astype(np.float32) for i in range(n_layers)}
    try:
        from activation_steering.extract import SteeringVector
    except ImportError:
        return types.SimpleNamespace(model_type="llama", directions=directions,
                                     explained_variances={i: 0.5 for i in directions})
    return SteeringVector(model_type="llama", directions=directions, explained_variances={i: 0.5 for i in directions})


def one_at_a_time(model, tokenizer, strings, vector, layer_ids, mode):
    out = np.zeros((len(strings), len(layer_ids)), dtype=np.float32)
    for s, text in enumerate(strings):
        formatted = format_prompt(tokenizer, text)
        enc = tokenizer(formatted, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            hidden_states = model(**enc, output_hidden_states=True).hidden_states
        for k, layer in enumerate(layer_ids):
            h = hidden_states[layer][0]                           # h_in[layer]: [T, D]
            pooled = h.mean(0) if mode == "mean" else h[-1]
            out[s, k] = condition_similarity(pooled, torch.as_tensor(vector.directions[layer])).item()
    return out


def plain_f1(pred, labels):
    tp = int(np.sum(pred & labels))
    fp = int(np.sum(pred & ~labels))
    fn = int(np.sum(~pred & labels))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def brute_force(sims, labels, layer_ids, max_combine, grid):
    best = None
    for r in range(1, max_combine + 1):
        for combo in combinations(range(len(layer_ids)), r):
            for t in grid:
                for direction in ("larger", "smaller"):
                    met = sims[:, combo] < t if direction == "larger" else sims[:, combo] > t
                    f1 = plain_f1(met.any(axis=1), labels)
                    if best is None or f1 > best[3]:
                        best = ([layer_ids[c] for c in combo], float(t), direction, f1)
    return best


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = find_decoder_layers(model)[0].register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.calls += 1


# --------------------------------------------------------------------------- #
# Similarities
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", ["mean", "last"])
def test_batched_similarities_equal_one_at_a_time(family, mode):
    model, tok = make_model(family), fresh_tokenizer()
    vector = make_vector(4, 64)
    strings = POSITIVES + NEGATIVES
    layer_ids = [0, 1, 2, 3]
    ref = one_at_a_time(model, tok, strings, vector, layer_ids, mode)
    for batch_size in (1, 3, 32):
        got = condition_similarities(model, strings, vector, layer_ids, mode, batch_size=batch_size, tokenizer=tok)
        assert got.shape == (len(strings), 4) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert tok.pad_token is None  # the tokenizer is left as it was


def test_forward_stops_after_the_last_layer_in_range(tiny_llama, tokenizer):
    vector = make_vector(4, 64)
    layers = find_decoder_layers(tiny_llama)
    ran = []
    handles = [layer.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    head_calls = []
    handles.append(tiny_llama.lm_head.register_forward_hook(lambda *_: head_calls.append(1)))
    try:
        find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, layer_range=(1, 3), tokenizer=tokenizer,
                                  batch_size=4)
    finally:
        for h in handles:
            h.remove()
    assert set(ran) == {0, 1, 2} and not head_calls
    assert ran.count(0) == 3  # 9 strings in batches of 4: three forwards, no per-prompt loop


# --------------------------------------------------------------------------- #
# The search through the API
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode,max_combine", [("mean", 1), ("last", 2), ("mean", 3)])
def test_search_equals_brute_force_on_the_similarities(tiny_llama, tokenizer, mode, max_combine):
    vector = make_vector(4, 64, seed=1)
    grid = np.arange(-0.2, 0.3, 0.01)
    got = find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, layer_range=(0, 4),
                                    max_layers_to_combine=max_combine, threshold_range=(-0.2, 0.3),
                                    threshold_step=0.01, condition_threshold_comparison_mode=mode,
                                    tokenizer=tokenizer, batch_size=4)
    sims = condition_similarities(tiny_llama, POSITIVES + NEGATIVES, vector, [0, 1, 2, 3], mode, batch_size=4,
                                  tokenizer=tokenizer)
    labels = np.array([True] * len(POSITIVES) + [False] * len(NEGATIVES))
    assert got == brute_force(sims, labels, [0, 1, 2, 3], max_combine, grid)
    layers, threshold, direction, f1 = got
    assert isinstance(layers, list) and all(type(x) is int for x in layers)
    assert type(threshold) is float and type(f1) is float and direction in ("larger", "smaller")
    assert threshold in grid  # the grid value itself, not rounded


def test_defaults_layer_range_one_to_L_and_exact_mode(tiny_llama, tokenizer):
    vector = make_vector(4, 64, seed=2)
    layers, t, d, f1 = find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, tokenizer=tokenizer,
                                                 threshold_range=(-0.5, 0.5), threshold_step=0.05,
                                                 max_layers_to_combine=5)
    sims = condition_similarities(tiny_llama, POSITIVES + NEGATIVES, vector, [1, 2, 3], tokenizer=tokenizer)
    labels = np.array([True] * len(POSITIVES) + [False] * len(NEGATIVES))
    # max_layers_to_combine above the number of layers is capped (as the reference does)
    assert (layers, t, d, f1) == brute_force(sims, labels, [1, 2, 3], 3, np.arange(-0.5, 0.5, 0.05))
    e_layers, e_t, e_d, e_f1 = find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector,
                                                         tokenizer=tokenizer, max_layers_to_combine=3, exact=True)
    assert e_f1 >= f1
    cols = [e_layers[k] - 1 for k in range(len(e_layers))]
    met = sims[:, cols] < e_t if e_d == "larger" else sims[:, cols] > e_t
    assert plain_f1(met.any(axis=1), labels) == e_f1


def test_condition_predictions_apply_the_same_rule(tiny_llama, tokenizer):
    vector = make_vector(4, 64, seed=3)
    strings = POSITIVES + NEGATIVES
    sims = condition_similarities(tiny_llama, strings, vector, [2, 3], tokenizer=tokenizer)
    t = float(np.median(sims))
    np.testing.assert_array_equal(condition_predictions(tiny_llama, strings, vector, [3, 2], t, "larger",
                                                        tokenizer=tokenizer), (sims < t).any(axis=1))
    np.testing.assert_array_equal(condition_predictions(tiny_llama, strings, vector, [2, 3], t, "smaller",
                                                        tokenizer=tokenizer), (sims > t).any(axis=1))
    with pytest.raises(ValueError, match="direction"):
        condition_predictions(tiny_llama, strings, vector, [2], t, "bigger", tokenizer=tokenizer)


def test_malleable_model_is_reset_first_and_left_unsteered(tiny_llama):
    cls = malleable_class()
    tok = fresh_tokenizer()
    mm = cls(tiny_llama, tok)
    vector = make_vector(4, 64, seed=4)
    clean = condition_similarities(tiny_llama, POSITIVES + NEGATIVES, vector, [1, 2, 3], tokenizer=tok)
    push = torch.full((64,), 3.0)
    if cls is StandInMalleable:
        mm.steer_add(1, push)
    else:
        mm.steer(behavior_vector=make_vector(4, 64, seed=9), behavior_layer_ids=[1], behavior_vector_strength=3.0)
    steered = condition_similarities(tiny_llama, POSITIVES + NEGATIVES, vector, [1, 2, 3], tokenizer=tok)
    assert np.abs(steered - clean).max() > 1e-3  # the steering does change the similarities
    hooks_before = [len(layer._forward_pre_hooks) for layer in find_decoder_layers(tiny_llama)]
    got = mm.find_best_condition_point(POSITIVES, NEGATIVES, vector, threshold_range=(-0.5, 0.5), threshold_step=0.01)
    labels = np.array([True] * len(POSITIVES) + [False] * len(NEGATIVES))
    # the search saw the unsteered model...
    assert got == brute_force(clean, labels, [1, 2, 3], 1, np.arange(-0.5, 0.5, 0.01))
    # ...and left it unsteered, with no hooks of its own behind
    after = condition_similarities(tiny_llama, POSITIVES + NEGATIVES, vector, [1, 2, 3], tokenizer=tok)
    np.testing.assert_array_equal(after, clean)
    if cls is StandInMalleable:
        assert mm.resets == 1
        assert [len(layer._forward_pre_hooks) for layer in find_decoder_layers(tiny_llama)] == \
            [hooks_before[0], hooks_before[1] - 1, *hooks_before[2:]]


def test_progress_bar_over_batches(tiny_llama, tokenizer, capsys):
    vector = make_vector(4, 64)
    find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, tokenizer=tokenizer, batch_size=2,
                              show_progress=True)
    err = capsys.readouterr().err
    assert "condition similarities" in err and "5/5" in err


# --------------------------------------------------------------------------- #
# Analysis JSON and plot
# --------------------------------------------------------------------------- #
def test_save_analysis_json(tiny_llama, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vector = make_vector(4, 64, seed=5)
    layers, t, d, f1 = find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, tokenizer=tokenizer,
                                                 max_layers_to_combine=2, threshold_range=(-0.3, 0.3),
                                                 threshold_step=0.01, save_analysis=True)
    data = json.loads((tmp_path / report.DEFAULT_ANALYSIS_PATH).read_text())
    assert (data["best_layers"], data["best_threshold"], data["best_direction"], data["best_f1_score"]) == \
        (layers, t, d, f1)
    sims = condition_similarities(tiny_llama, POSITIVES + NEGATIVES, vector, [1, 2, 3], tokenizer=tokenizer)
    labels = np.array([True] * len(POSITIVES) + [False] * len(NEGATIVES))
    analysis = data["analysis"]
    for k, layer in enumerate([1, 2, 3]):
        entry = analysis[f"layer_{layer}"]["similarities"]
        np.testing.assert_array_equal(np.array(entry["positive"], np.float32), sims[labels, k])
        np.testing.assert_array_equal(np.array(entry["negative"], np.float32), sims[~labels, k])
    combos = [c for r in (1, 2) for c in combinations([1, 2, 3], r)]
    assert {f"layers_{'_'.join(map(str, c))}" for c in combos} <= set(analysis)
    grid = np.arange(-0.3, 0.3, 0.01)
    for combo in combos:
        scores = analysis[f"layers_{'_'.join(map(str, combo))}"]["f1_scores"]
        cols = [layer - 1 for layer in combo]
        expected = {}
        for t_ in grid:
            for direction in ("larger", "smaller"):
                met = sims[:, cols] < t_ if direction == "larger" else sims[:, cols] > t_
                f = plain_f1(met.any(axis=1), labels)
                if f > 0:
                    expected[f"{t_:.3f}_{direction}"] = f
        assert scores == expected


def test_threshold_keys_stay_unique_on_fine_grids():
    keys = report.threshold_keys(np.arange(0.0, 0.1, 1e-4))
    assert len(set(keys)) == 1000 and keys[0] == "0.0000" and keys[1] == "0.0001"
    assert report.threshold_keys(np.arange(0.0, 1.0, 0.01))[:2] == ["0.000", "0.010"]


def test_exact_mode_analysis_and_plot(tiny_llama, tokenizer, tmp_path):
    vector = make_vector(4, 64, seed=6)
    path = tmp_path / "sub" / "analysis.json"
    layers, t, d, f1 = find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, tokenizer=tokenizer,
                                                 max_layers_to_combine=2, exact=True, save_analysis=True,
                                                 file_path=str(path), plot=True)
    data = json.loads(path.read_text())
    assert data["best_threshold"] == t and data["search"]["exact"] is True
    best_key = f"{t!r}_{d}"
    assert data["analysis"]["layers_" + "_".join(map(str, layers))]["f1_scores"][best_key] == f1
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tmp_path / "custom.png"
    find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, vector, tokenizer=tokenizer, plot=str(other))
    assert other.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- #
# Bad input: clear errors before any forward or reset
# --------------------------------------------------------------------------- #
BAD = [
    (dict(threshold_step=0), ValueError, "threshold_step"),
    (dict(threshold_step=-0.01), ValueError, "threshold_step"),
    (dict(threshold_step=float("nan")), ValueError, "threshold_step"),
    (dict(threshold_range=(0.5, 0.5)), ValueError, "threshold_range"),
    (dict(threshold_range=(0.0, float("inf"))), ValueError, "threshold_range"),
    (dict(threshold_range=(0.0, 1.0), threshold_step=1e-9), ValueError, "threshold_step"),
    (dict(positive_strings=[]), ValueError, "positive_strings"),
    (dict(negative_strings=[]), ValueError, "negative_strings"),
    (dict(positive_strings="a single string"), TypeError, "positive_strings"),
    (dict(negative_strings=["ok", 3]), TypeError, r"negative_strings\[1\]"),
    (dict(layer_range=(0, 5)), ValueError, "layer_range"),
    (dict(layer_range=(2, 2)), ValueError, "layer_range"),
    (dict(layer_range=(-1, 3)), ValueError, "layer_range"),
    (dict(layer_range=(3, 1)), ValueError, "layer_range"),
    (dict(layer_range=(1,)), ValueError, "layer_range"),
    (dict(max_layers_to_combine=0), ValueError, "max_layers_to_combine"),
    (dict(max_layers_to_combine=1.5), TypeError, "max_layers_to_combine"),
    (dict(condition_threshold_comparison_mode="max"), ValueError, "condition_threshold_comparison_mode"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(condition_vector="missing"), ValueError, "condition_vector"),
    (dict(condition_vector="wrong_size"), ValueError, "condition_vector"),
    (dict(condition_vector="nan"), ValueError, "condition_vector"),
    (dict(condition_vector="zero"), ValueError, "condition_vector"),
    (dict(condition_vector=object()), TypeError, "condition_vector"),
]


@pytest.mark.parametrize("override,exc,match", BAD)
def test_bad_input_raises_before_any_forward(tiny_llama, override, exc, match):
    tok = fresh_tokenizer()
    mm = StandInMalleable(tiny_llama, tok)
    vector = make_vector(4, 64)
    kinds = {
        "missing": {i: v for i, v in vector.directions.items() if i != 3},
        "wrong_size": {**vector.directions, 2: np.ones(63, np.float32)},
        "nan": {**vector.directions, 1: np.full(64, np.nan, np.float32)},
        "zero": {**vector.directions, 1: np.zeros(64, np.float32)},
    }
    kwargs = dict(positive_strings=POSITIVES, negative_strings=NEGATIVES, condition_vector=vector)
    kwargs.update(override)
    if isinstance(kwargs["condition_vector"], str):
        kwargs["condition_vector"] = types.SimpleNamespace(directions=kinds[kwargs["condition_vector"]])
    counter = ForwardCounter(tiny_llama)
    try:
        with pytest.raises(exc, match=match):
            condition_search.find_best_condition_point(mm, **kwargs)
    finally:
        counter.handle.remove()
    assert counter.calls == 0 and mm.resets == 0


def test_plain_model_needs_a_tokenizer(tiny_llama):
    with pytest.raises(ValueError, match="tokenizer"):
        find_best_condition_point(tiny_llama, POSITIVES, NEGATIVES, make_vector(4, 64))


# --------------------------------------------------------------------------- #
# The FAQ's find_best_condition_point snippets (16-layer fixture model)
# --------------------------------------------------------------------------- #
def test_faq_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, tokenizer = make_model("llama", n_layers=16), fresh_tokenizer()
    MalleableModel = malleable_class()
    condition_vector = steering_vector = make_vector(16, 64, seed=7)
    condition_data = {"harmful": POSITIVES, "harmless": NEGATIVES}

    # --- FAQ: "3. Find the best condition point" ---
    malleable_model = MalleableModel(model=model, tokenizer=tokenizer)

    best_layers, best_threshold, best_direction, _ = malleable_model.find_best_condition_point(
        positive_strings=condition_data['harmful'],
        negative_strings=condition_data['harmless'],
        condition_vector=condition_vector,
        layer_range=(1, 14),
        max_layers_to_combine=1,
        threshold_range=(0.0, 0.1),
        threshold_step=0.0001,
        save_analysis=True,
        file_path='optimal_condition_point_analysis.json'
    )
    assert (tmp_path / "optimal_condition_point_analysis.json").is_file()
    assert len(best_layers) == 1 and 1 <= best_layers[0] < 14 and 0.0 <= best_threshold < 0.1

    # --- FAQ: "How do I find the best condition point for steering?" ---
    best_layers, best_threshold, best_direction, best_f1 = malleable_model.find_best_condition_point(
        positive_strings=["Positive example 1", "Positive example 2"],
        negative_strings=["Negative example 1", "Negative example 2"],
        condition_vector=steering_vector,
        layer_range=(1, 15),
        threshold_range=(0.0, 1.0),
        threshold_step=0.01,
        save_analysis=True,
        file_path="best_condition_analysis.json"
    )

    print(f"Best layers: {best_layers}")
    print(f"Best threshold: {best_threshold}")
    print(f"Best direction: {best_direction}")
    print(f"Best F1 score: {best_f1}")
    assert json.loads((tmp_path / "best_condition_analysis.json").read_text())["best_f1_score"] == best_f1


# --------------------------------------------------------------------------- #
# The embedded real model
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mean", "last"])
def test_embedded_batched_equals_one_at_a_time(embedded, mode):
    model, tok = embedded
    n_layers = len(find_decoder_layers(model))
    hidden = model.config.hidden_size
    vector = make_vector(n_layers, hidden, seed=8)
    strings = POSITIVES + NEGATIVES
    layer_ids = list(range(1, n_layers))
    ref = one_at_a_time(model, tok, strings, vector, layer_ids, mode)
    got = condition_similarities(model, strings, vector, layer_ids, mode, batch_size=4, tokenizer=tok)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- #
# threshold_at_false_positive_rate: the FPR-capped operating point
# --------------------------------------------------------------------------- #
from hypothesis import given, settings as hyp_settings, strategies as st  # noqa: E402

from activation_steering.conditions.thresholds import threshold_at_false_positive_rate  # noqa: E402


def _brute_force_fpr_point(pos, neg, direction, cap):
    """Every threshold on a fine grid around the data; the best (tpr, -fpr) under the cap."""
    grid = np.linspace(min(pos.min(), neg.min()) - 1, max(pos.max(), neg.max()) + 1, 4001)
    best = None
    for t in grid:
        met_p = (pos < t).any(1) if direction == "larger" else (pos > t).any(1)
        met_n = (neg < t).any(1) if direction == "larger" else (neg > t).any(1)
        if met_n.mean() <= cap and (best is None or (met_p.mean(), -met_n.mean()) > best):
            best = (met_p.mean(), -met_n.mean())
    return best


@hyp_settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 2), st.sampled_from(["larger", "smaller"]),
       st.sampled_from([0.0, 0.05, 0.2, 1.0]), st.integers(0, 2**31 - 1))
def test_fpr_point_matches_brute_force(n_pos, n_neg, n_layers, direction, cap, seed):
    rng = np.random.default_rng(seed)
    pos = np.round(rng.normal(0.3, 1, (n_pos, n_layers)), 2)  # rounded: ties happen
    neg = np.round(rng.normal(0.0, 1, (n_neg, n_layers)), 2)
    t, tpr, fpr = threshold_at_false_positive_rate(pos, neg, direction, cap)
    met_p = (pos < t).any(1) if direction == "larger" else (pos > t).any(1)
    met_n = (neg < t).any(1) if direction == "larger" else (neg > t).any(1)
    assert (met_p.mean(), met_n.mean()) == (tpr, fpr) and fpr <= cap
    assert (tpr, -fpr) == _brute_force_fpr_point(pos, neg, direction, cap)


def test_fpr_point_arguments_and_1d_input():
    t, tpr, fpr = threshold_at_false_positive_rate(np.array([0.1, 0.2]), np.array([0.5, 0.6]), "larger", 0.0)
    assert (tpr, fpr) == (1.0, 0.0) and 0.2 < t < 0.5
    with pytest.raises(ValueError, match="direction"):
        threshold_at_false_positive_rate(np.zeros(2), np.zeros(2), "bigger", 0.1)
    with pytest.raises(ValueError, match="max_false_positive_rate"):
        threshold_at_false_positive_rate(np.zeros(2), np.zeros(2), "larger", 1.5)
    with pytest.raises(ValueError, match="same"):
        threshold_at_false_positive_rate(np.zeros((2, 2)), np.zeros((2, 3)), "larger", 0.1)
