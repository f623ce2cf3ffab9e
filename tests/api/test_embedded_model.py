"""The embedded default model loads offline, from cache, and knows its capitals."""
import time

import pytest
import torch

pytestmark = pytest.mark.slow


def test_embedded_model_answers_paris(embedded):
    model, tok = embedded
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_token_id)
    reply = tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply


def test_second_load_comes_from_cache_and_is_fast(embedded):
    from activation_steering.models import load_default_model

    t0 = time.perf_counter()
    model, tok = load_default_model()
    assert model._as_load_source == "cache"
    assert time.perf_counter() - t0 < 30
    assert tok.chat_template and tok.pad_token == tok.eos_token
