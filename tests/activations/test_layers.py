"""Layer discovery on every fixture family, and a clear error on unknown architectures."""
import pytest
import torch

from activation_steering.activations.layers import find_layers_and_base, resolve_layer_ids
from tiny_models import make_model, make_tokenizer

EXPECTED = {"llama": "model.layers", "qwen2": "model.layers", "gpt2": "transformer.h",
            "gpt_neox": "gpt_neox.layers", "opt": "model.decoder.layers"}


def test_layers_found(family):
    model = make_model(family)
    base, layers = find_layers_and_base(model)
    assert len(layers) == 4
    named = {id(m): n for n, m in model.named_modules()}
    assert named[id(layers)] == EXPECTED[family]
    # the base model is the module that owns the layers and takes input_ids
    enc = make_tokenizer()(["hello world"], return_tensors="pt")
    out = base(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
    assert out.last_hidden_state.shape == (1, enc.input_ids.shape[1], 64)


def test_tiny_models_run_forward_and_generate(family):
    tok = make_tokenizer()
    model = make_model(family)
    enc = tok(["The quick brown fox"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == enc.input_ids.shape[1] + 3


def test_unknown_architecture_names_the_class():
    class Mystery(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ValueError, match="Mystery"):
        find_layers_and_base(Mystery())


def test_resolve_layer_ids():
    assert resolve_layer_ids([0, -1, 2], 4, "ids") == [0, 3, 2]
    with pytest.raises(ValueError, match=r"hidden_layer_ids lists layer 3 twice \(as 3 and -1\)"):
        resolve_layer_ids([3, 0, -1], 4, "hidden_layer_ids")
    with pytest.raises(ValueError, match=r"ids lists layer 1 twice \(as 1 and 1\)"):
        resolve_layer_ids([1, 1], 4, "ids")
    with pytest.raises(ValueError, match=r"behavior_layer_ids.*layer id 4.*4 layers"):
        resolve_layer_ids([4], 4, "behavior_layer_ids")
    with pytest.raises(ValueError, match="-5"):
        resolve_layer_ids([-5], 4, "ids")
    with pytest.raises(TypeError):
        resolve_layer_ids(["a"], 4, "ids")


def test_tokenizer_fixture_has_chat_template_and_no_pad():
    tok = make_tokenizer()
    assert tok.pad_token is None and tok.eos_token == "<|im_end|>"
    s = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert s == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
