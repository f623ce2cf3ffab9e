"""Pure-torch twins of the ATen ops in csrc/torch/ops.cpp.

These are the plain, obviously-correct definitions. The tests compare the
compiled ops against them, and `_ops` falls back to them (with a one-time
warning) when the compiled library cannot be loaded.
"""
from __future__ import annotations

import torch


def pool_spans(hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """hidden[B, T, D], start/end[B] int64 -> float32[B, D]: mean of hidden[b, start[b]:end[b]]."""
    rows = []
    for b in range(hidden.shape[0]):
        s, e = int(start[b]), int(end[b])
        if e <= s:
            rows.append(torch.zeros(hidden.shape[2], dtype=torch.float32, device=hidden.device))
        else:
            rows.append(hidden[b, s:e].to(torch.float32).mean(0))
    return torch.stack(rows)
