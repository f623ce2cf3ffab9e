"""Plain twins of pooled activation reading: one string at a time, full forward.

The fast paths (activations/pooled.py for extraction, conditions/search.py for
condition similarities) batch, right-pad, share prefixes through a KV cache and
stop the forward early. These twins run each string alone through the whole
model with output_hidden_states=True and pool the plainest way. Hugging Face's
hidden_states[i] is the decoder layer input of layer i (the residual stream
entering it) and hidden_states[i+1] is what extraction reads for layer i
(docs/semantics.md).
"""
from __future__ import annotations

import numpy as np
import torch

from ..activations.prompts import format_prompt
from ..conditions.similarity import condition_similarity


def _hidden_states(model, enc) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(**enc, output_hidden_states=True).hidden_states


def suffix_token_start(tokenizer, ids: list[int], text: str, char_start: int) -> int:
    """First token whose character end lies after `char_start`, found by decoding
    growing prefixes of `ids` (independent of the tokenizer's offset mapping)."""
    assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text
    ends = [len(tokenizer.decode(ids[:t + 1], clean_up_tokenization_spaces=False)) for t in range(len(ids))]
    return next(t for t in range(len(ids)) if ends[t] > char_start)


def pooled_one_at_a_time(model, tokenizer, dataset, layer_ids, mode) -> np.ndarray:
    """[L, N, D] float64: hidden_states[i+1] of each string of `dataset` alone,
    averaged over its last `mode` tokens, "all" tokens, or its "suffix-only" tokens."""
    add_special = not dataset.use_chat_template
    strings = [(getattr(p, side), getattr(p, side + "_suffix_start"))
               for p in dataset.formatted_dataset for side in ("positive", "negative")]
    out = None
    for s, (text, cstart) in enumerate(strings):
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=add_special)
        hs = _hidden_states(model, enc)
        ids = enc["input_ids"][0].tolist()
        n = len(ids)
        if mode == "all":
            a, b = 0, n
        elif mode == "suffix-only":
            a, b = n - 1, n
            if cstart is not None and cstart < len(text):
                a = suffix_token_start(tokenizer, ids, text, cstart)
        else:
            a, b = max(0, n - mode), n
        if out is None:
            out = np.zeros((len(layer_ids), len(strings), hs[0].shape[-1]))
        for j, layer in enumerate(layer_ids):
            out[j, s] = hs[layer + 1][0, a:b].double().mean(0).numpy()
    return out


def similarities_one_at_a_time(model, tokenizer, strings, vector, layer_ids, mode) -> np.ndarray:
    """sims[N, len(layer_ids)] float32: each string formatted as a prompt, run alone,
    its decoder layer input pooled ("mean" or "last") and compared to the condition."""
    out = np.zeros((len(strings), len(layer_ids)), dtype=np.float32)
    for s, text in enumerate(strings):
        enc = tokenizer(format_prompt(tokenizer, text), return_tensors="pt", add_special_tokens=False)
        hidden_states = _hidden_states(model, enc)
        for k, layer in enumerate(layer_ids):
            h = hidden_states[layer][0]                           # decoder layer input of `layer`: [T, D]
            pooled = h.mean(0) if mode == "mean" else h[-1]
            out[s, k] = condition_similarity(pooled, torch.as_tensor(vector.directions[layer])).item()
    return out
