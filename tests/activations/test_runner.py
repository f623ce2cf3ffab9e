"""activations/runner.py: the one truncated forward reads what Hugging Face's
output_hidden_states reports, runs no further than the deepest layer asked for,
and leaves no hook behind."""
import pytest
import torch
from tiny_models import make_model, make_tokenizer

from activation_steering.activations.layers import find_decoder_layers
from activation_steering.activations.runner import TruncatedForward, run_truncated


@pytest.fixture(scope="module")
def model_and_batch():
    model = make_model("llama", n_layers=4, hidden=64, seed=3)
    tok = make_tokenizer()
    tok.pad_token = tok.eos_token
    enc = tok(["a short one", "and a somewhat longer string of words"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    return model, enc, hs


@pytest.mark.parametrize("read,offset", [("input", 0), ("output", 1)])
@pytest.mark.parametrize("layer_ids", [[0], [1, 3], [3], [2, 0]])
def test_reads_equal_output_hidden_states(model_and_batch, read, offset, layer_ids):
    model, enc, hs = model_and_batch
    got = {}
    run_truncated(model, enc["input_ids"], enc["attention_mask"], layer_ids, lambda i, h: got.__setitem__(i, h),
                  read=read)
    assert sorted(got) == sorted(layer_ids)
    for i in layer_ids:  # the last layer's output is read after the final norm, as hidden_states[L] is
        torch.testing.assert_close(got[i], hs[i + offset], rtol=0, atol=1e-6)


@pytest.mark.parametrize("read", ["input", "output"])
def test_stops_after_the_deepest_layer_and_removes_its_hooks(model_and_batch, read):
    model, enc, _ = model_and_batch
    layers = find_decoder_layers(model)
    ran = []
    spies = [layer.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    head = model.lm_head.register_forward_hook(lambda *_: ran.append("head"))
    before = [(len(layer._forward_pre_hooks), len(layer._forward_hooks)) for layer in layers]
    try:
        with TruncatedForward(model, [0, 1], read=read) as fwd:
            fwd.run(enc["input_ids"], enc["attention_mask"], lambda *_: None)
            fwd.run(enc["input_ids"], enc["attention_mask"], lambda *_: None)
    finally:
        for h in [*spies, head]:
            h.remove()
    assert ran == [0, 1, 0, 1]
    assert [(len(layer._forward_pre_hooks), len(layer._forward_hooks)) for layer in layers] == \
        [(a, b - 1) for a, b in before]  # only the spies were left, and they are gone now
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        fwd.run(enc["input_ids"], enc["attention_mask"], lambda *_: None)


def test_bad_arguments(model_and_batch):
    model = model_and_batch[0]
    with pytest.raises(ValueError, match="read"):
        TruncatedForward(model, [0], read="middle")
    with pytest.raises(ValueError, match="out of range"):
        TruncatedForward(model, [4])
    with pytest.raises(ValueError, match="no layers"):
        TruncatedForward(model, [])
