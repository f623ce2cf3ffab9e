"""One condition kernel: the similarity the condition search records for a prompt
and the one the steering runtime computes for the same prompt come from the same
compiled op (`condition_similarity`, which `steer_layer` evaluates conditions
with), agree to float tolerance, and give the same decision at the threshold the
search returns. The search right-pads its batches, respond_batch left-pads: the
padding layout differs, the numbers must not (beyond float rounding)."""
import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringVector
from activation_steering.activations.layers import find_decoder_layers
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.conditions.search import condition_similarities
from activation_steering.conditions.similarity import POOLING_CODES
from activation_steering.native import ops as _ops
from tiny_models import make_model, make_tokenizer

STRINGS = ["How do I bake bread?", "hi", "Tell me a story about a cat who learns to sail across the sea.",
           "What is the capital of France?", "0123456789", "Please refuse harmful requests.",
           "Write a poem about autumn leaves, please, with many words in it."]


def _runtime_similarities(mm, tok, layer, direction, threshold, comparator, mode):
    """Steer with the condition, run respond_batch (left padding), and read back, on the
    prompt pass at `layer`: the similarity per prompt (the op the hook calls, on the
    hook's own input and mask) and the condition bit the hook wrote into the state."""
    cv = SteeringVector("llama", {layer: direction}, {layer: 1.0})
    mm.steer(condition_vector=cv, condition_layer_ids=[layer], condition_vector_threshold=threshold,
             condition_comparator_threshold_is=comparator, condition_threshold_comparison_mode=mode)
    model = mm._as_wrapped_model  # (unwrap() would remove the steering)
    seen = {}
    ids_of_pass = {}

    def watch_ids(_m, args, kwargs):
        ids_of_pass["ids"] = kwargs.get("input_ids", args[0] if args else None)

    def after_leash(_m, args, kwargs):
        ctx = mm._ctx
        if not ctx.is_prompt:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        codes = torch.tensor([[1, int(comparator == "smaller"), POOLING_CODES[mode]]])
        sims = _ops.condition_similarity(hidden, ctx.token_mask, torch.as_tensor(direction).reshape(1, -1), codes)
        for row, ids in enumerate(ids_of_pass["ids"]):
            real = ids[ctx.token_mask[row].bool()] if ctx.token_mask is not None else ids
            seen[tuple(real.tolist())] = (float(sims[row, 0]), bool(ctx.state[row] & 1))

    handles = [model.register_forward_pre_hook(watch_ids, with_kwargs=True),
               find_decoder_layers(model)[layer].register_forward_pre_hook(after_leash, with_kwargs=True)]
    try:
        mm.respond_batch(STRINGS, settings={"max_new_tokens": 1}, batch_size=4)
    finally:
        for h in handles:
            h.remove()
        mm.reset_leash_to_default()
    out = []
    for s in STRINGS:
        ids = encode(tok, [format_prompt(tok, s, True)], use_chat_template=True)["input_ids"][0]
        assert tuple(ids.tolist()) in seen, (ids.tolist(), list(seen))
        out.append(seen[tuple(ids.tolist())])
    return np.array([o[0] for o in out]), np.array([o[1] for o in out])


@pytest.mark.parametrize("mode", ["mean", "last", "user_text"])
def test_search_and_runtime_compute_the_same_similarity_and_decision(mode):
    model, tok = make_model("llama", n_layers=4, hidden=64, seed=1), make_tokenizer()
    mm = MalleableModel(model, tok)
    rng = np.random.default_rng(0)
    cv = SteeringVector("llama", {i: rng.standard_normal(64).astype(np.float32) for i in range(4)},
                        {i: 1.0 for i in range(4)})
    layers, threshold, comparator, _f1 = mm.find_best_condition_point(
        STRINGS[:4], STRINGS[4:], cv, layer_range=(1, 4), threshold_range=(-1.0, 1.0), threshold_step=0.001,
        condition_threshold_comparison_mode=mode)
    layer = layers[0]
    searched = condition_similarities(mm, STRINGS, cv, [layer], mode, batch_size=3)[:, 0]
    # a threshold inside the observed range too (a midpoint, away from every value by more
    # than float rounding), so that the decisions split the prompts
    ordered = np.sort(searched)
    mid = float(ordered[3] + ordered[4]) / 2
    assert min(abs(ordered - mid)) > 1e-5  # float rounding is ~1e-7 here
    for thr, cmp_ in [(threshold, comparator), (mid, "larger"), (mid, "smaller")]:
        runtime, decided = _runtime_similarities(mm, tok, layer, cv.directions[layer], thr, cmp_, mode)
        np.testing.assert_allclose(runtime, searched, rtol=0, atol=2e-6)
        expected = searched < thr if cmp_ == "larger" else searched > thr
        assert decided.tolist() == expected.tolist()
        assert decided.tolist() == (runtime < thr if cmp_ == "larger" else runtime > thr).tolist()
    assert 0 < expected.sum() < len(STRINGS)  # the median threshold splits them: the comparison has teeth
