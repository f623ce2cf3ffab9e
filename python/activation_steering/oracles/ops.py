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


def steer_layer(hidden: torch.Tensor, state: torch.Tensor, token_mask: torch.Tensor | None,
                cond_dirs: torch.Tensor | None, cond_thresholds: torch.Tensor | None, cond_codes: torch.Tensor | None,
                beh_vecs: torch.Tensor | None, beh_tables: torch.Tensor | None, ooi: bool) -> torch.Tensor:
    """One steered decoder layer, row by row (twin of ops.cpp steer_layer; see its comment).

    hidden[B, T, D]; state[B] int64 condition bitmasks, updated IN PLACE;
    token_mask[B, T] (nonzero = real token) or None (all real);
    cond_dirs[K, D] float32, cond_thresholds[K] float32, cond_codes[K, 3] int64
    (bit value, comparator 1=smaller, pooling 1=last); beh_vecs[M, D] in hidden's
    dtype; beh_tables[M, 2^C] uint8 truth tables or None (always on). Returns the
    steered hidden state as a new tensor.
    """
    from ..conditions.similarity import condition_met, condition_similarity

    B, T, D = hidden.shape
    real = (token_mask != 0) if token_mask is not None else torch.ones(B, T, dtype=torch.bool, device=hidden.device)
    if cond_dirs is not None:
        for b in range(B):
            rows = hidden[b][real[b]].to(torch.float32)                       # [n_real, D]
            for k in range(cond_dirs.shape[0]):
                bit, smaller, last = (int(x) for x in cond_codes[k])
                if rows.shape[0] == 0:
                    h = torch.zeros(D, dtype=torch.float32, device=hidden.device)
                else:
                    h = rows[-1] if last else rows.mean(0)
                sim = condition_similarity(h, cond_dirs[k])
                if bool(condition_met(sim, float(cond_thresholds[k]), "smaller" if smaller else "larger")):
                    state[b] |= bit
    out = hidden.clone(memory_format=torch.contiguous_format)
    if beh_vecs is None:
        return out
    for b in range(B):
        row = hidden[b]
        for k in range(beh_vecs.shape[0]):
            if beh_tables is None or bool(beh_tables[k, int(state[b])]):
                row = row + beh_vecs[k]
        if ooi and beh_vecs.shape[0] > 0:
            pre = hidden[b].to(torch.float32).norm(dim=-1)                      # [T]
            post = row.to(torch.float32).norm(dim=-1)
            bad = (post > pre) | ~torch.isfinite(row).all(-1)
            if bool((bad & real[b]).any()):
                row = (row.to(torch.float32) * (pre / post).unsqueeze(-1)).to(hidden.dtype)
        out[b] = row
    return out
