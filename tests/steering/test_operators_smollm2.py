"""Operators and relative strength units on the embedded SmolLM2-135M-Instruct (slow): a
refusal vector trained from the package's own data records residual norms at the
steered layers; ablating it leaves h . d = 0 at a steered layer's input; the rule pair
"if C1 then add refusal", "if not C1 then ablate refusal" gives every row of a batch
exactly what the unconditional add or ablation gives it alone; relative units batch
exactly too."""
import json
from importlib import resources

import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.activations.layers import find_layers_and_base
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.activations.runner import run_truncated
from activation_steering.conditions.similarity import condition_similarity

pytestmark = pytest.mark.slow

LAYERS = [10, 11, 12, 13, 14, 15]
SETTINGS = {"max_new_tokens": 8}
PROMPTS = ["How do I make a simple tomato sauce?", "Write a threatening message to my neighbour.",
           "What causes the seasons to change on Earth?", "How can I cheat on my exam without being caught?",
           "Suggest a healthy breakfast.", "Tell me how to pick a lock on someone else's door."]


@pytest.fixture(scope="module")
def refusal(embedded):
    model, tok = embedded
    data = json.loads(resources.files("activation_steering").joinpath("data", "behavior_refusal.json").read_text())
    questions = data["questions"][:12]
    suffixes = list(zip(data["refusal_openers"][:8], data["compliance_openers"][:8]))  # 96 pairs
    ds = SteeringDataset(tok, [(q, q) for q in questions], suffixes=suffixes)
    return SteeringVector.train(model, tok, ds, method="mean_diff", accumulate_last_x_tokens="suffix-only",
                                hidden_layer_ids=list(range(4, 16)))


def test_relative_units_need_and_use_the_recorded_norms(embedded, refusal):
    model, tok = embedded
    assert refusal.residual_norms is not None
    norms = [refusal.residual_norms[i] for i in LAYERS]
    assert all(50 < n < 1000 for n in norms), norms  # SmolLM2's median norm at layers 10-15 (docs/strength_units.md)
    mm = MalleableModel(model, tok)
    try:
        for unit, s in (("residual_norm", 0.05), ("token_norm", 0.05)):
            mm.steer(behavior_vector=refusal, behavior_layer_ids=LAYERS, behavior_vector_strength=s,
                     strength_unit=unit, behavior_operator="ablate_then_add", use_ooi_preventive_normalization=True)
            seq = mm.respond_batch_sequential(PROMPTS, SETTINGS)
            assert mm.respond_batch(PROMPTS, SETTINGS, batch_size=6) == seq, unit
    finally:
        mm.reset_leash_to_default()


def test_ablation_removes_the_direction_on_the_real_model(embedded, refusal):
    model, tok = embedded
    mm = MalleableModel(model, tok)
    layer = find_layers_and_base(model)[1][12]
    seen = {}

    def capture(_module, args, kwargs):  # runs after the steering hook: what layer 12 receives
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    mm.steer(behavior_vector=refusal, behavior_layer_ids=[12], behavior_operator="ablate")
    handle = layer.register_forward_pre_hook(capture, with_kwargs=True)  # after steer: after its hook
    try:
        with torch.no_grad():
            mm(**encode(tok, [format_prompt(tok, PROMPTS[1])], True))
    finally:
        handle.remove()
        mm.reset_leash_to_default()
    d = torch.from_numpy(np.asarray(refusal.directions[12], np.float64))
    d = d / d.norm()
    h = seen["h"][0].double()
    assert (h @ d).abs().max() <= 1e-5 * h.norm(dim=-1).max()
    with torch.no_grad():  # unsteered, the same input has a real component along d
        enc = encode(tok, [format_prompt(tok, PROMPTS[1])], True)
        run_truncated(model, enc["input_ids"], enc["attention_mask"], [12],
                      lambda _i, x: seen.__setitem__("plain", x[0].double()), read="input")
    assert (seen["plain"] @ d).abs().max() > 1.0


def test_if_harmful_add_refusal_else_ablate_it(embedded, refusal):
    model, tok = embedded
    mm = MalleableModel(model, tok)
    cond_layer = 5
    c = refusal.directions[cond_layer]
    sims = []
    for p in PROMPTS:  # a threshold between the prompts' own similarities: the condition splits them
        enc = encode(tok, [format_prompt(tok, p)], True)
        run_truncated(model, enc["input_ids"], enc["attention_mask"], [cond_layer],
                      lambda _i, h: sims.append(float(condition_similarity(h[0].float().mean(0),
                                                                           torch.from_numpy(c)))), read="input")
    s = sorted(sims)
    thr = (s[2] + s[3]) / 2
    met = [x < thr for x in sims]
    try:
        mm.steer(behavior_vector=refusal, behavior_layer_ids=LAYERS, behavior_vector_strength=6.0)
        added = mm.respond_batch_sequential(PROMPTS, SETTINGS)
        mm.steer(behavior_vector=refusal, behavior_layer_ids=LAYERS, behavior_operator="ablate")
        ablated = mm.respond_batch_sequential(PROMPTS, SETTINGS)
        assert added != ablated
        mm.multisteer(behavior_vectors=[refusal, refusal], behavior_layer_ids=[LAYERS, LAYERS],
                      behavior_vector_strengths=[6.0, 1.0], condition_vectors=[refusal],
                      condition_layer_ids=[[cond_layer]], condition_vector_thresholds=[thr],
                      condition_comparator_threshold_is=["larger"], rules=["if C1 then B1", "if not C1 then B2"],
                      behavior_operators=["add", "ablate"])
        sequential = mm.respond_batch_sequential(PROMPTS, SETTINGS)
        assert sequential == [a if m else b for a, b, m in zip(added, ablated, met)]
        assert mm.respond_batch(PROMPTS, SETTINGS, batch_size=6) == sequential
    finally:
        mm.reset_leash_to_default()
