"""Plain twin of activations/norms.py: residual-stream norm medians, one string at a time.

For each string alone (no padding, no batching), the model runs with
``output_hidden_states=True``; ``hidden_states[i]`` is the decoder layer input of layer i
(the embedding output for i = 0). Every token's L2 norm is taken in float64, the
string's first token is dropped (the attention sink), then norms above
``outlier_factor`` times the median of the rest are dropped, and the median of what
remains is the layer's number. Deliberately slow and obvious: no hooks, no masks, the
standard library's `statistics.median`. Tests hold the fast accumulator to this.
"""
from __future__ import annotations

import math
import statistics

import torch


def residual_norm_medians_reference(model, tokenizer, texts, layer_ids, add_special_tokens: bool = True,
                                    drop_first: bool = True, outlier_factor: float | None = 10.0) -> dict[int, float]:
    n_layers = model.config.num_hidden_layers
    layers = [int(i) % n_layers for i in layer_ids]
    collected: dict[int, list[float]] = {i: [] for i in layers}
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=add_special_tokens)
            out = model(input_ids=enc["input_ids"], output_hidden_states=True)
            for i in layers:
                h = out.hidden_states[i][0].to(torch.float64)
                for t in range(h.shape[0]):
                    if drop_first and t == 0:
                        continue
                    collected[i].append(math.sqrt(float((h[t] * h[t]).sum())))
    result = {}
    for i in layers:
        values = collected[i]
        if outlier_factor is not None:
            cut = outlier_factor * statistics.median(values)
            values = [v for v in values if v <= cut]
        result[i] = statistics.median(values)
    return result
