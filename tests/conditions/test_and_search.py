"""AND combinations of condition layers (a prompt is positive only when EVERY layer
of the combination meets the condition), end to end:

- (the C search against its literal twin: tests/oracles/test_and_search_twin.py);
- find_best_condition_point(layer_combination=...) returns a ConditionPoint that
  is still the documented 4-tuple; "both" keeps OR at equal F1;
- the returned AND setting, installed with steer(**point.steer_kwargs()) and with
  multisteer (the vector listed per layer, rule "if C1 and C2 then B1"), gates each
  prompt exactly as the search predicted, batched and one at a time;
- bad values raise ValueError naming the argument, before anything runs.
"""
import json
import pickle

import numpy as np
import pytest
from tiny_models import make_model, make_tokenizer

from activation_steering import MalleableModel, SteeringVector
from activation_steering.conditions.search import (ConditionPoint, condition_predictions, condition_similarities,
                                                  find_best_condition_point)
from activation_steering.conditions.thresholds import f1_score

# --------------------------------------------------------------------------- #
# Through the API, on a tiny random model
# --------------------------------------------------------------------------- #
PROMPTS = ["How do I bake bread?", "hi", "Tell me a story about a cat who learns to sail across the sea.",
           "What is the capital of France?", "0123456789", "Please refuse harmful requests.",
           "Write a poem about autumn leaves, please, with many words in it.", "Name three rivers.",
           "Why is the sky blue?", "Translate 'good morning' into French.", "List prime numbers below 20.",
           "What does a carpenter do all day?"]


@pytest.fixture(scope="module")
def setup():
    model, tok = make_model("llama", n_layers=4, hidden=64, seed=3), make_tokenizer()
    mm = MalleableModel(model, tok)
    rng = np.random.default_rng(7)
    cv = SteeringVector("llama", {i: rng.standard_normal(64).astype(np.float32) for i in range(4)},
                        {i: 1.0 for i in range(4)})
    beh = SteeringVector("llama", {i: 4.0 * rng.standard_normal(64).astype(np.float32) for i in range(4)},
                         {i: 1.0 for i in range(4)})
    sims = condition_similarities(mm, PROMPTS, cv, [1, 2, 3])
    # labels that only an AND of layers 1 and 2 singles out (no layer alone, no OR):
    # in the lower two thirds at both
    labels = (sims[:, 0] < np.quantile(sims[:, 0], 0.67)) & (sims[:, 1] < np.quantile(sims[:, 1], 0.67))
    return mm, cv, beh, sims, labels


def _search(mm, cv, labels, **kwargs):
    pos = [p for p, y in zip(PROMPTS, labels) if y]
    neg = [p for p, y in zip(PROMPTS, labels) if not y]
    # positives first, as the search orders them
    return pos + neg, find_best_condition_point(mm, pos, neg, cv, layer_range=(1, 4), **kwargs)


@pytest.mark.parametrize("exact", [False, True])
def test_result_is_the_documented_tuple_plus_the_combination(setup, exact):
    mm, cv, _beh, _sims, labels = setup
    kw = dict(threshold_range=(-1.0, 1.0), threshold_step=0.001, exact=exact, max_layers_to_combine=2)
    _, p_or = _search(mm, cv, labels, **kw)
    _, p_default = _search(mm, cv, labels, **{k: v for k, v in kw.items()})
    _, p_and = _search(mm, cv, labels, layer_combination="and", **kw)
    _, p_both = _search(mm, cv, labels, layer_combination="both", **kw)
    assert isinstance(p_or, ConditionPoint) and isinstance(p_or, tuple) and len(p_or) == 4
    layers, threshold, direction, f1 = p_and
    assert p_and == (layers, threshold, direction, f1) and p_and.layers == layers and p_and.f1 == f1
    assert p_or == p_default and p_or.layer_combination == "or" and p_and.layer_combination == "and"
    assert p_and.f1 > p_or.f1 and len(p_and.layers) == 2
    assert p_both == p_and and p_both.layer_combination == "and"
    assert pickle.loads(pickle.dumps(p_and)) == p_and
    assert pickle.loads(pickle.dumps(p_and)).layer_combination == "and"
    kwargs = p_and.steer_kwargs()
    assert kwargs == dict(condition_vector=cv, condition_layer_ids=layers, condition_vector_threshold=threshold,
                          condition_comparator_threshold_is=direction, condition_threshold_comparison_mode="mean",
                          condition_layer_combination="and")
    # one layer: AND and OR are the same candidates, and "both" keeps OR on the tie
    _, one_or = _search(mm, cv, labels, **{**kw, "max_layers_to_combine": 1})
    _, one_both = _search(mm, cv, labels, layer_combination="both", **{**kw, "max_layers_to_combine": 1})
    assert one_both == one_or and one_both.layer_combination == "or"


def test_analysis_json_and_plot_name_the_combination(setup, tmp_path):
    mm, cv, _beh, _sims, labels = setup
    path = tmp_path / "a.json"
    _, point = _search(mm, cv, labels, layer_combination="both", max_layers_to_combine=2,
                       threshold_range=(-1.0, 1.0), threshold_step=0.01, save_analysis=True, file_path=str(path),
                       plot=str(tmp_path / "a.png"))
    data = json.loads(path.read_text())
    assert data["best_layer_combination"] == point.layer_combination == "and"
    assert data["search"]["layer_combination"] == "both"
    analysis = data["analysis"]
    assert analysis["layers_1_2"]["layer_combination"] == "or"
    assert analysis["and_layers_1_2"]["layer_combination"] == "and"
    key = "and_layers_" + "_".join(map(str, point.layers))
    assert max(analysis[key]["f1_scores"].values()) == point.f1
    assert (tmp_path / "a.png").stat().st_size > 0


def _margin_ok(sims, layers, threshold):
    cols = [layer - 1 for layer in layers]
    assert np.min(np.abs(sims[:, cols] - threshold)) > 1e-5  # far beyond float rounding (~1e-7)


@pytest.mark.parametrize("exact", [False, True])
def test_installed_and_point_gates_each_prompt_as_the_search_predicted(setup, exact):
    mm, cv, beh, sims, labels = setup
    strings, point = _search(mm, cv, labels, layer_combination="and", max_layers_to_combine=2, exact=exact,
                             threshold_range=(-1.0, 1.0), threshold_step=0.001)
    assert point.layer_combination == "and" and len(point.layers) == 2
    _margin_ok(sims, point.layers, point.threshold)
    predicted = condition_predictions(mm, PROMPTS, cv, point.layers, point.threshold, point.direction,
                                      layer_combination="and")
    y = np.array([s in set(strings[:int(labels.sum())]) for s in PROMPTS])
    assert f1_score(predicted, y) == pytest.approx(point.f1, abs=0)
    assert 0 < predicted.sum() < len(PROMPTS)
    # predicted with OR the same layers would fire on more prompts: the rule matters here
    assert condition_predictions(mm, PROMPTS, cv, point.layers, point.threshold, point.direction).sum() > \
        predicted.sum()

    settings = {"max_new_tokens": 4}
    behaviour = dict(behavior_vector=beh, behavior_layer_ids=[1, 2, 3], behavior_vector_strength=1.0,
                     apply_behavior_on_first_call=False)  # generated tokens only: conditions are decided by then
    plain = mm.respond_batch(PROMPTS, settings=settings, batch_size=5)
    mm.steer(**behaviour)
    always = mm.respond_batch(PROMPTS, settings=settings, batch_size=5)
    mm.reset_leash_to_default()
    assert all(a != p for a, p in zip(always, plain))  # the behaviour shows in every reply
    expected = [a if met else p for a, p, met in zip(always, plain, predicted)]

    mm.steer(**behaviour, **point.steer_kwargs())
    assert mm.steering_plan.n_conditions == 2
    got_batch = mm.respond_batch(PROMPTS, settings=settings, batch_size=5)
    got_one = [mm.respond(p, settings=settings) for p in PROMPTS]
    mm.reset_leash_to_default()
    assert got_batch == expected and got_one == expected

    k = len(point.layers)
    mm.multisteer(behavior_vectors=[beh], behavior_layer_ids=[[1, 2, 3]], behavior_vector_strengths=[1.0],
                  condition_vectors=[cv] * k, condition_layer_ids=[[layer] for layer in point.layers],
                  condition_vector_thresholds=[point.threshold] * k,
                  condition_comparator_threshold_is=[point.direction] * k,
                  rules=["if " + " and ".join(f"C{j + 1}" for j in range(k)) + " then B1"],
                  apply_behavior_on_first_call=False)
    got_multi = mm.respond_batch(PROMPTS, settings=settings, batch_size=5)
    mm.reset_leash_to_default()
    assert got_multi == expected

    # the same point installed as OR gates differently (and as the OR prediction says)
    mm.steer(**behaviour, **{**point.steer_kwargs(), "condition_layer_combination": "or"})
    got_or = mm.respond_batch(PROMPTS, settings=settings, batch_size=5)
    mm.reset_leash_to_default()
    predicted_or = condition_predictions(mm, PROMPTS, cv, point.layers, point.threshold, point.direction)
    assert got_or == [a if met else p for a, p, met in zip(always, plain, predicted_or)] != expected


# --------------------------------------------------------------------------- #
# Bad values
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("bad", ["xor", "AND", None, 1])
def test_bad_layer_combination_is_refused_before_any_forward(setup, bad):
    mm, cv, beh, _sims, _labels = setup
    with pytest.raises(ValueError, match="layer_combination"):
        find_best_condition_point(mm, PROMPTS[:2], PROMPTS[2:4], cv, layer_combination=bad)
    with pytest.raises(ValueError, match="condition_layer_combination"):
        mm.steer(behavior_vector=beh, behavior_layer_ids=[2], condition_vector=cv, condition_layer_ids=[1, 2],
                 condition_vector_threshold=0.1, condition_layer_combination=bad)
    with pytest.raises(ValueError, match="layer_combination"):
        condition_predictions(mm, PROMPTS[:2], cv, [1, 2], 0.1, "larger", layer_combination=bad)
    assert mm.steering_plan is None


def test_steer_and_refuses_a_layer_twice_and_keeps_the_previous_steering(setup):
    mm, cv, beh, _sims, _labels = setup
    mm.steer(behavior_vector=beh, behavior_layer_ids=[2])
    before = mm.steering_plan
    with pytest.raises(ValueError, match="condition_layer_ids"):
        mm.steer(behavior_vector=beh, behavior_layer_ids=[2], condition_vector=cv, condition_layer_ids=[1, -3],
                 condition_vector_threshold=0.1, condition_layer_combination="and")
    with pytest.raises(ValueError, match="condition_layer_ids"):
        mm.steer(behavior_vector=beh, behavior_layer_ids=[2], condition_vector=cv, condition_layer_ids=[1, 9],
                 condition_vector_threshold=0.1, condition_layer_combination="and")
    assert mm.steering_plan is before
    mm.reset_leash_to_default()
