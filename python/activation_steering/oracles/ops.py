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
    if not rows:  # an empty batch
        return torch.zeros((0, hidden.shape[2]), dtype=torch.float32, device=hidden.device)
    return torch.stack(rows)


def _pool(rows: torch.Tensor, last: bool, d: int, device) -> torch.Tensor:
    """rows[n_real, D] float32 -> the pooled vector (zeros when there is no real token)."""
    if rows.shape[0] == 0:
        return torch.zeros(d, dtype=torch.float32, device=device)
    return rows[-1] if last else rows.mean(0)


def _pooled(hidden_b: torch.Tensor, mask_b: torch.Tensor | None, pooling: int, d: int) -> torch.Tensor:
    """Row b's pooled vector by the pooling code: 0 mean over the real tokens (mask != 0), 1 the last
    real token, 2 the mean over the user's message (mask == 2; every position without a mask)."""
    if mask_b is None:
        keep = torch.ones(hidden_b.shape[0], dtype=torch.bool, device=hidden_b.device)
    else:
        keep = (mask_b == 2) if pooling == 2 else (mask_b != 0)
    return _pool(hidden_b[keep].to(torch.float32), pooling == 1, d, hidden_b.device)


def condition_similarity(hidden: torch.Tensor, token_mask: torch.Tensor | None, cond_dirs: torch.Tensor,
                         cond_codes: torch.Tensor) -> torch.Tensor:
    """Twin of ops.cpp condition_similarity, row by row: sims[B, K] float32."""
    from ..conditions.similarity import condition_similarity as sim_of

    B, T, D = hidden.shape
    out = torch.empty((B, cond_dirs.shape[0]), dtype=torch.float32, device=hidden.device)
    for b in range(B):
        mask_b = None if token_mask is None else token_mask[b]
        for k in range(cond_dirs.shape[0]):
            out[b, k] = sim_of(_pooled(hidden[b], mask_b, int(cond_codes[k, 2]), D), cond_dirs[k])
    return out


def steer_layer(hidden: torch.Tensor, state: torch.Tensor, token_mask: torch.Tensor | None,
                cond_dirs: torch.Tensor | None, cond_thresholds: torch.Tensor | None, cond_codes: torch.Tensor | None,
                beh_vecs: torch.Tensor | None, beh_tables: torch.Tensor | None, ooi: bool) -> torch.Tensor:
    """One steered decoder layer, row by row (twin of ops.cpp steer_layer; see its comment).

    hidden[B, T, D]; state[B] int64 condition bitmasks, updated IN PLACE;
    token_mask[B, T] (nonzero = real token) or None (all real);
    cond_dirs[K, D] float32, cond_thresholds[K] float32, cond_codes[K, 3] int64
    (bit value, comparator 1=smaller, pooling 1=last / 2=user_text: mask == 2); beh_vecs[M, D] in hidden's
    dtype; beh_tables[M, 2^C] uint8 truth tables or None (always on). Returns the
    steered hidden state as a new tensor.
    """
    from ..conditions.similarity import condition_met, condition_similarity

    B, T, D = hidden.shape
    real = (token_mask != 0) if token_mask is not None else torch.ones(B, T, dtype=torch.bool, device=hidden.device)
    if cond_dirs is not None:
        for b in range(B):
            mask_b = None if token_mask is None else token_mask[b]
            for k in range(cond_dirs.shape[0]):
                bit, smaller, pooling = (int(x) for x in cond_codes[k])
                sim = condition_similarity(_pooled(hidden[b], mask_b, pooling, D), cond_dirs[k])
                if bool(condition_met(sim, float(cond_thresholds[k]), "smaller" if smaller else "larger")):
                    state[b] |= bit
    out = hidden.clone(memory_format=torch.contiguous_format)
    if beh_vecs is None:
        return out
    # with OOI, half-precision rows are summed in float32 (an overflowing sum is still rescaled from finite values)
    wide = torch.float32 if ooi and hidden.dtype in (torch.float16, torch.bfloat16) else hidden.dtype
    for b in range(B):
        row = hidden[b].to(wide)
        for k in range(beh_vecs.shape[0]):
            if beh_tables is None or bool(beh_tables[k, int(state[b])]):
                row = row + beh_vecs[k].to(wide)
        if ooi and beh_vecs.shape[0] > 0:
            pre = hidden[b].to(torch.float32).norm(dim=-1)                      # [T]
            post = row.to(torch.float32).norm(dim=-1)
            narrow = row.to(hidden.dtype)
            bad = (post > pre) | ~torch.isfinite(narrow).all(-1)
            if bool((bad & real[b]).any()):
                narrow = (row.to(torch.float32) * (pre / post).unsqueeze(-1)).to(hidden.dtype)
            row = narrow
        out[b] = row
    return out
