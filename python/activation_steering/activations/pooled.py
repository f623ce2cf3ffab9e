"""Pooled capture for SteeringVector.train: N strings -> pooled[n_layers, N, D].

ONE float32 buffer, layer-major (each layer's PCA input is contiguous): for string
s and layer i, the mean of the layer output of i (hidden_states[i+1]) over s's
pooling span [start_s, end_s) of real tokens (tokens.pooling_spans;
docs/semantics.md says what the spans are).

How it stays exact and cheap:
  - strings are tokenized once, unpadded, and batched by length with RIGHT
    padding, so a real token never sees a pad (causal attention) and keeps the
    position ids it has alone;
  - `runner.TruncatedForward` reads only the requested layers and stops after the
    deepest one; each row's span is pooled on the fly (`pool_spans` op) and
    written straight into the buffer - no full hidden states are kept;
  - shared prefixes run once (prefix_sharing.py): the tokens all strings share
    (the root) and the tokens a group shares (one rendered example before its
    suffixes) fill a KV cache; each string then runs only its own tokens against
    a row-selected copy, with its true position ids and an attention mask over
    [root | group prefix | own tokens]. The span's parts from the three levels are
    summed in float64 and divided once. It is the same causal computation, so it
    equals the plain batched path up to float rounding; a probe on four strings
    (first use per model) confirms it, else the plain path runs.
Results do not depend on batch_size or the sort beyond float rounding.

Not here: which tokens are pooled (tokens.py), when sharing is safe
(prefix_sharing.py), PCA (the C core, called by extract.py).
"""
from __future__ import annotations

import numpy as np
import torch

from ..native import ops as _ops
from .layers import unwrap_model
from .prefix_sharing import SharePlan, plan_prefix_sharing, sharing_blockers
from .runner import TruncatedForward, select_cache_rows
from .tokens import (Tokenized, length_sorted_batches, pad_right, pad_token_id, pooling_spans, tokenize,
                     warn_suffix_fallback)


def _f64(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _span_sum(hidden: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[B, D] sums of hidden[b, lo[b]:hi[b]] (zero where empty), in float64."""
    count = (hi - lo).clamp_min(0)
    mean = _ops.pool_spans(hidden, lo, torch.maximum(hi, lo))
    return mean.to(_f64(hidden.device)) * count.to(mean.device).unsqueeze(1)


def _prefix_sums(hidden: torch.Tensor) -> torch.Tensor:
    """[B, T+1, D] float64 running sums over positions (a leading zero row)."""
    h = hidden.to(_f64(hidden.device))
    return torch.cat([torch.zeros_like(h[:, :1]), h.cumsum(1)], dim=1)


@torch.no_grad()
def capture_pooled(model, tok: Tokenized, start: np.ndarray, end: np.ndarray, layer_ids: list[int],
                   batch_size: int, pad_id: int = 0, progress: bool = True,
                   desc: str = "Collecting activations", share_prefixes: bool | None = None) -> np.ndarray:
    """pooled[len(layer_ids), N, D] float32: mean of hidden_states[i+1][s, start[s]:end[s]].

    Spans must be non-empty and inside each string (callers build them with
    `pooling_spans`). Runs the model as it is. `share_prefixes`: None decides
    (see module doc), False never shares, True shares when it is safe at all."""
    from tqdm.auto import tqdm

    n = len(tok.input_ids)
    if not layer_ids:
        raise ValueError("no layers requested")
    if np.any(end <= start) or np.any(start < 0) or np.any(end > tok.lengths):
        raise ValueError("every pooling span must be non-empty and inside its string")
    plan = None
    if share_prefixes is not False and not sharing_blockers(model):
        plan = plan_prefix_sharing(tok.input_ids, tok.lengths)
        worth = plan.tokens_shared <= 0.85 * plan.tokens_plain
        if not (worth or (share_prefixes and plan.tokens_shared < plan.tokens_plain)):
            plan = None
    write, result = _buffer_writer(layer_ids, n)
    with TruncatedForward(model, layer_ids, read="output") as cap:
        if plan is not None and not _sharing_verified(model, cap, tok, plan, pad_id):
            plan = None
        with tqdm(total=n, desc=desc, unit="str", disable=not progress, leave=False) as bar:
            if plan is None:
                _capture_plain(cap, tok, start, end, batch_size, pad_id, write, bar)
            else:
                _capture_shared(cap, plan, tok, start, end, batch_size, pad_id, write, bar)
    return result().numpy()


def pooled_activations(model, tokenizer, texts: list[str], layer_ids: list[int], accumulate: int | str,
                       batch_size: int, add_special_tokens: bool, suffix_char_starts: list[int | None] | None = None,
                       progress: bool = False, name_of=lambda i: f"string {i}") -> np.ndarray:
    """pooled[len(layer_ids), N, D] float32 for `texts`: tokenize once, pool each
    string over its `accumulate` span (checked with tokens.check_accumulate), capture.

    `suffix_char_starts` (character index where each string's suffix begins, or
    None) is needed for "suffix-only". A string with no tokens raises ValueError
    naming it through `name_of(index)`, before the model runs."""
    tok = tokenize(tokenizer, texts, add_special_tokens, suffix_char_starts if accumulate == "suffix-only" else None)
    empty = np.flatnonzero(tok.lengths == 0)
    if empty.size:
        raise ValueError(f"{name_of(int(empty[0]))} tokenizes to no tokens; every string needs at least one token")
    start, end, n_fallback = pooling_spans(tok, accumulate, tokenizer, name_of)
    if accumulate == "suffix-only":
        warn_suffix_fallback(n_fallback, len(texts))
    return capture_pooled(model, tok, start, end, layer_ids, batch_size, pad_id=pad_token_id(tokenizer),
                          progress=progress)


def _buffer_writer(layer_ids: list[int], n: int):
    """(write(layer, rows, pooled[B, D]), result()) over one [len(layer_ids), n, D]
    float32 buffer allocated at the first write (D is read from the hidden states)."""
    box: dict = {}
    slot_of = {lid: j for j, lid in enumerate(layer_ids)}

    def write(layer: int, rows: torch.Tensor, pooled: torch.Tensor) -> None:
        buf = box.get("buf")
        if buf is None:
            buf = box["buf"] = torch.empty((len(layer_ids), n, pooled.shape[1]), dtype=torch.float32)
        if pooled.shape[1] != buf.shape[2]:
            raise RuntimeError(f"layer {layer} has hidden size {pooled.shape[1]}, others {buf.shape[2]}")
        buf[slot_of[layer]].index_copy_(0, rows, pooled.to("cpu", torch.float32))

    return write, lambda: box.get("buf")


class _NoBar:
    def update(self, _n: int) -> None:
        pass


def _sharing_verified(model, cap: TruncatedForward, tok: Tokenized, plan: SharePlan, pad_id: int) -> bool:
    """Once per model: does the shared path agree with the plain one on four of
    these strings (two pairs from groups of different prefix lengths, so group
    rows are padded; all-token pooling)?"""
    inner = unwrap_model(model)
    known = getattr(inner, "_as_prefix_sharing_ok", None)
    if known is not None:
        return bool(known)
    if len(plan.groups) >= 2:  # two groups of different prefix lengths: padding in the group level
        lens = np.asarray(plan.group_len)
        other = int(np.argmax(np.abs(lens - lens[0])))
        rows = np.concatenate([plan.groups[0][:2], plan.groups[other or 1][:2]])
    elif plan.groups:
        rows = np.concatenate([plan.groups[0][:2], plan.ungrouped[:2]])
    else:
        rows = plan.ungrouped[:4]
    sub = Tokenized([tok.input_ids[r] for r in rows], tok.lengths[rows], tok.suffix_span[rows])
    start, end = np.zeros(len(rows), np.int64), sub.lengths.copy()
    sub_plan = plan_prefix_sharing(sub.input_ids, sub.lengths, min_gain=1, min_saving=1)
    write_a, plain = _buffer_writer(cap.layer_ids, len(rows))
    write_b, shared = _buffer_writer(cap.layer_ids, len(rows))
    try:
        _capture_plain(cap, sub, start, end, len(rows), pad_id, write_a, _NoBar())
        _capture_shared(cap, sub_plan, sub, start, end, len(rows), pad_id, write_b, _NoBar())
        a, b = plain(), shared()
        ok = bool((a - b).abs().max() <= 1e-4 * max(1.0, float(a.abs().max())))
    except Exception:  # any failure of the cache path means: do not share with this model
        ok = False
    try:
        inner._as_prefix_sharing_ok = ok
    except Exception:  # pragma: no cover - a model that refuses attributes: probe every time
        pass
    return ok


def _capture_plain(cap: TruncatedForward, tok: Tokenized, start, end, batch_size, pad_id, write, bar) -> None:
    for rows in length_sorted_batches(tok.lengths, batch_size):
        ids, mask = pad_right(tok.input_ids, rows, pad_id)
        rows_t = torch.from_numpy(rows.astype(np.int64))
        spans: dict = {}

        def on_hidden(j, hidden, rows=rows, rows_t=rows_t, spans=spans):
            if hidden.device not in spans:
                spans[hidden.device] = (torch.from_numpy(start[rows]).to(hidden.device),
                                        torch.from_numpy(end[rows]).to(hidden.device))
            write(j, rows_t, _ops.pool_spans(hidden, *spans[hidden.device]))

        cap.run(ids, mask, on_hidden)
        bar.update(len(rows))


def _capture_shared(cap: TruncatedForward, plan: SharePlan, tok: Tokenized, start, end, batch_size, pad_id, write,
                    bar) -> None:
    ids_all, g = tok.input_ids, plan.root_len
    root_cache, root_sums = None, {}
    if g > 0:
        # Level 1: the root, once. root_sums[j]: [g + 1, D] running sums.
        root_cache = cap.new_cache()
        ids = torch.tensor([ids_all[0][:g]], dtype=torch.long)
        cap.run(ids, torch.ones_like(ids), lambda j, h: root_sums.__setitem__(j, _prefix_sums(h)[0]),
                cache=root_cache, positions=torch.arange(g).unsqueeze(0))

    def leaves(rows: np.ndarray, k: np.ndarray, grow: np.ndarray, gcache, gmask: torch.Tensor | None,
               acc: dict) -> None:
        """Level 3: strings `rows`, each continuing from row grow[i] of `gcache`
        (shared prefix of k[i] tokens, attention mask gmask[grow[i]]); acc[j][i]
        holds string i's pooled-span sum over its group's tokens (empty: none)."""
        own_len = tok.lengths[rows] - k
        for sel in length_sorted_batches(own_len, batch_size):
            r, kk, gr = rows[sel], k[sel], grow[sel]
            ids, mask = pad_right([ids_all[s][kk_i:] for s, kk_i in zip(r, kk)], np.arange(len(r)), pad_id)
            a, e = start[r], end[r]
            cache = positions = None
            if gcache is not None:
                cache = select_cache_rows(gcache, torch.from_numpy(gr))
                mask = torch.cat([gmask[torch.from_numpy(gr)], mask], dim=1)
                positions = torch.from_numpy(kk).unsqueeze(1) + torch.arange(ids.shape[1]).unsqueeze(0)
            rows_t = torch.from_numpy(r.astype(np.int64))
            lo = torch.from_numpy(np.maximum(a - kk, 0))
            hi = torch.from_numpy(np.maximum(e - kk, 0))
            ra, re_ = torch.from_numpy(np.minimum(a, g)), torch.from_numpy(np.minimum(e, g))
            count = torch.from_numpy(e - a).unsqueeze(1)
            idx = torch.from_numpy(sel) if acc else None

            def on_hidden(j, hidden, lo=lo, hi=hi, ra=ra, re_=re_, count=count, idx=idx, rows_t=rows_t):
                dev = hidden.device
                total = _span_sum(hidden, lo.to(dev), hi.to(dev))
                if j in root_sums:
                    rs = root_sums[j].to(dev)
                    total += rs[re_.to(dev)] - rs[ra.to(dev)]
                if idx is not None:
                    total += acc[j][idx.to(acc[j].device)].to(dev)
                write(j, rows_t, total / count.to(dev, total.dtype))

            cap.run(ids, mask, on_hidden, cache=cache, positions=positions)
            bar.update(len(r))

    # Level 2 + 3: groups in batches (bounded rows per forward and strings in flight).
    order = np.argsort(np.asarray(plan.group_len), kind="stable")
    budget = max(4 * batch_size, 64)
    i = 0
    while i < len(order):
        chunk = [order[i]]
        n_str = len(plan.groups[order[i]])
        i += 1
        while i < len(order) and len(chunk) < batch_size and n_str + len(plan.groups[order[i]]) <= budget:
            n_str += len(plan.groups[order[i]])
            chunk.append(order[i])
            i += 1
        keys = [ids_all[plan.groups[c][0]][g:plan.group_len[c]] for c in chunk]
        ids, mask = pad_right(keys, np.arange(len(keys)), pad_id)
        if root_cache is not None:
            cache = select_cache_rows(root_cache, torch.zeros(len(chunk), dtype=torch.long))
            gmask = torch.cat([torch.ones(len(chunk), g, dtype=mask.dtype), mask], dim=1)
        else:
            cache = cap.new_cache()
            gmask = mask
        rows = np.concatenate([plan.groups[c] for c in chunk])
        grow = np.concatenate([np.full(len(plan.groups[c]), b, dtype=np.int64) for b, c in enumerate(chunk)])
        k = np.concatenate([np.full(len(plan.groups[c]), plan.group_len[c], dtype=np.int64) for c in chunk])
        # each string's span clipped to its group's tokens [g, k), in the group row's coordinates
        glo = torch.from_numpy(np.clip(start[rows], g, k) - g)
        ghi = torch.from_numpy(np.clip(end[rows], g, k) - g)
        grow_t = torch.from_numpy(grow)
        acc: dict = {}

        def on_group(j, hidden, glo=glo, ghi=ghi, grow_t=grow_t, acc=acc):
            dev = hidden.device
            sums = _prefix_sums(hidden)                                      # [groups, T + 1, D]
            gi = grow_t.to(dev)
            acc[j] = sums[gi, ghi.to(dev)] - sums[gi, glo.to(dev)]           # [strings, D]

        positions = g + torch.arange(ids.shape[1]).unsqueeze(0).expand(len(chunk), -1)
        cap.run(ids, gmask, on_group, cache=cache, positions=positions)
        leaves(rows, k, grow, cache, gmask, acc)

    if len(plan.ungrouped):
        rows = plan.ungrouped
        k = np.full(len(rows), g, dtype=np.int64)
        gmask = torch.ones(1, g, dtype=torch.long) if root_cache is not None else None
        leaves(rows, k, np.zeros(len(rows), dtype=np.int64), root_cache, gmask, {})

