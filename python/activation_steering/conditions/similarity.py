"""The CAST condition similarity — the one definition the whole package uses.

For a pooled hidden state h[D] and a condition direction c[D] (docs/semantics.md):

    proj = tanh(c * (c . h) / (c . c))
    sim  = cos(h, proj)

Comparator "larger" (the threshold is the larger side): the condition is met iff
sim < threshold; "smaller": met iff sim > threshold. Computed in float32.

Pooling modes (which tokens h is the mean of): "mean" every real prompt token,
"last" the last real one, "user_text" the tokens of the user's message only
(activations/user_text.py; docs/semantics.md).
"""
from __future__ import annotations

import torch

COMPARATORS = ("larger", "smaller")
POOLING_MODES = ("mean", "last", "user_text")
# the op's pooling code (cond_codes[:, 2]; csrc/torch/ops.cpp similarity_impl) of each mode; "user_text"
# pools the token_mask entries equal to activations.user_text.USER_TEXT_TOKEN
POOLING_CODES = {"mean": 0, "last": 1, "user_text": 2}


def condition_similarity(h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """h[..., D], c[D] -> sim[...] (float32)."""
    h = h.to(torch.float32)
    c = c.to(device=h.device, dtype=torch.float32)
    coef = (h @ c) / (c @ c)                                  # [...]
    proj = torch.tanh(coef.unsqueeze(-1) * c)                 # [..., D]
    return torch.nn.functional.cosine_similarity(h, proj, dim=-1)


def condition_met(sim: torch.Tensor, threshold: float, comparator: str) -> torch.Tensor:
    """Boolean tensor: is the condition met for each similarity value."""
    if comparator == "larger":
        return sim < threshold
    if comparator == "smaller":
        return sim > threshold
    raise ValueError(f"condition_comparator_threshold_is must be 'larger' or 'smaller', got {comparator!r}")
