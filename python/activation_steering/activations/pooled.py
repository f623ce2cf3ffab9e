"""Pooled activation capture for SteeringVector.train (SPEC 3, DESIGN data flow 1).

For N strings and the requested layers this fills ONE float32 buffer
``pooled[n_layers, N, D]`` (layer-major: each layer's PCA input is contiguous)
with, for string s and layer i, the mean of ``hidden_states[i+1]`` over a token
span [start_s, end_s) of s's REAL tokens:

    int k          the last k real tokens (clamped to the string's length)
    "all"          every real token
    "suffix-only"  the tokens of s's own suffix, found through the tokenizer's
                   character offsets (a token straddling the boundary counts as
                   suffix); no suffix -> the last token, with one warning

How (and why it is exact and cheap):
  - each string is tokenized once, unpadded; batches are formed from strings
    sorted by length (less padding) and RIGHT-padded, so a real token never sees
    a pad (causal attention) and its position ids are those of the string alone;
  - forward hooks on only the requested decoder layers pool each row's span on
    the fly with the `pool_spans` op and write it straight into the buffer;
    no full hidden states are kept, `output_hidden_states` is never used;
  - the forward stops right after the deepest requested layer, so later layers
    and the LM head never run. Hugging Face's ``hidden_states[L]`` (last layer)
    is the base model's *final* output (after the final norm), not what the last
    decoder layer returns; when the last layer is requested we read exactly that
    output, so x(s, i) == hidden_states[i+1] for every i.
  - shared prefixes are computed once (`plan_prefix_sharing`): strings of a
    SteeringDataset repeat a lot of text (every string starts with the chat
    template's system turn; every example is repeated once per suffix). The
    tokens all strings share (the *root*) and the tokens a group of strings
    shares (e.g. one rendered example, before its suffixes) run once, filling a
    KV cache; each string then runs only its own remaining tokens against a
    row-selected copy of that cache, with its true position ids and an attention
    mask over [root | its group's prefix | its own tokens]. Pooling sums the span's
    parts from the three levels (float64) and divides once. Mathematically this
    is the same causal computation, so the result equals the plain batched one up
    to float rounding; tests hold both to the one-string-at-a-time reference.
    It is used only where it is known to be safe: the base model takes
    `position_ids` and a cache argument, its cache is a plain DynamicCache (no
    sliding-window or other special layers), attention is "sdpa" or "eager",
    no forward pre-hook is installed on the base model or a decoder layer (a
    steering hook must see whole prompts), it saves >= 15% of the tokens, and a
    probe on four of the strings (first use per model) agrees with the plain path.
Results do not depend on batch_size or on the sort beyond float rounding.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _ops
from .forward_capture import hidden_from_output
from .layers import find_layers_and_base, unwrap_model

POOL_NAMES = ("all", "suffix-only")


class _StopForward(Exception):
    """Raised after the deepest requested layer: later layers never run."""


def check_accumulate(value) -> int | str:
    """Validate `accumulate_last_x_tokens`: an int >= 1, "all" or "suffix-only"."""
    if isinstance(value, str):
        if value in POOL_NAMES:
            return value
        raise ValueError(f"accumulate_last_x_tokens must be an int >= 1, 'all' or 'suffix-only', got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"accumulate_last_x_tokens must be an int >= 1, 'all' or 'suffix-only', got {value!r}")
    if value < 1:
        raise ValueError(f"accumulate_last_x_tokens must be >= 1, got {value}")
    return int(value)


@dataclass
class Tokenized:
    """Unpadded token ids of N strings plus each string's suffix token span.

    suffix_span[s] = (first, end) token indices of s's suffix, or (-1, -1) when s
    has no (non-empty) suffix."""

    input_ids: list[list[int]]
    lengths: np.ndarray      # [N] int64
    suffix_span: np.ndarray  # [N, 2] int64


def _suffix_span_from_offsets(offsets, char_start: int) -> tuple[int, int]:
    """Token span of the characters [char_start, end of string) from offset_mapping.

    A token belongs to the suffix when its (non-empty) character span ends after
    char_start; tokens with an empty span (special tokens the tokenizer added, not
    present in the text) never do."""
    first = last = -1
    for t, (s, e) in enumerate(offsets):
        if e > s and e > char_start:
            if first < 0:
                first = t
            last = t
    return (first, last + 1) if first >= 0 else (-1, -1)


def tokenize(tokenizer, texts: list[str], add_special_tokens: bool,
             suffix_char_starts: list[int | None] | None = None) -> Tokenized:
    """Tokenize `texts` once (no padding, no truncation); map suffix character
    starts to token spans when given (fast tokenizers: offsets; slow ones: the
    first token where the prefix's tokenization and the full one differ)."""
    want_spans = suffix_char_starts is not None and any(c is not None for c in suffix_char_starts)
    use_offsets = want_spans and bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(list(texts), add_special_tokens=add_special_tokens, padding=False, truncation=False,
                    return_offsets_mapping=use_offsets, return_attention_mask=False)
    ids = [list(map(int, row)) for row in enc["input_ids"]]
    n = len(ids)
    lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=n)
    spans = np.full((n, 2), -1, dtype=np.int64)
    if want_spans:
        special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
        for s, c in enumerate(suffix_char_starts):
            if c is None or c >= len(texts[s]):
                continue
            if use_offsets:
                spans[s] = _suffix_span_from_offsets(enc["offset_mapping"][s], c)
            else:
                prefix = tokenizer(texts[s][:c], add_special_tokens=add_special_tokens)["input_ids"]
                first = 0
                while first < min(len(prefix), len(ids[s])) and prefix[first] == ids[s][first]:
                    first += 1
                end = len(ids[s])
                while end > first and ids[s][end - 1] in special_ids:
                    end -= 1
                if end > first:
                    spans[s] = (first, end)
    return Tokenized(ids, lengths, spans)


def pooling_spans(tok: Tokenized, mode: int | str) -> tuple[np.ndarray, np.ndarray, int]:
    """(start[N], end[N], n_fallback): the token span each string is pooled over.
    n_fallback counts "suffix-only" strings without a suffix (pooled at the last token)."""
    lengths = tok.lengths
    end = lengths.copy()
    n_fallback = 0
    if mode == "all":
        start = np.zeros_like(lengths)
    elif mode == "suffix-only":
        has = tok.suffix_span[:, 0] >= 0
        start = np.where(has, tok.suffix_span[:, 0], lengths - 1)
        end = np.where(has, tok.suffix_span[:, 1], lengths)
        n_fallback = int((~has).sum())
    else:
        start = np.maximum(lengths - int(mode), 0)
    return start.astype(np.int64), end.astype(np.int64), n_fallback


def input_device(model) -> torch.device:
    """Where input ids must live: the input embedding's device."""
    inner = unwrap_model(model)
    emb = inner.get_input_embeddings() if hasattr(inner, "get_input_embeddings") else None
    if emb is not None and hasattr(emb, "weight"):
        return emb.weight.device
    return next(inner.parameters()).device


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of strings of similar length (longest first, stable)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(input_ids: list[list[int]], rows: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids[B, T], attention_mask[B, T]) of the given rows."""
    T = max(len(input_ids[r]) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for b, r in enumerate(rows):
        n = len(input_ids[r])
        ids[b, :n] = input_ids[r]
        mask[b, :n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


# --------------------------------------------------------------------------- #
# Prefix sharing: which tokens run once
# --------------------------------------------------------------------------- #
@dataclass
class SharePlan:
    """Root length, groups and token counts of a prefix-shared capture.

    Every string s continues from a prefix of k_s tokens it shares with others:
    k_s = group_len[g] for a string of group g, else root_len."""

    root_len: int
    groups: list[np.ndarray] = field(default_factory=list)   # member rows per group
    group_len: list[int] = field(default_factory=list)       # shared prefix length per group (> root_len)
    ungrouped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tokens_plain: int = 0
    tokens_shared: int = 0


def _lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# A group must save at least this many tokens (see plan_prefix_sharing).
MIN_GROUP_SAVING = 64


def plan_prefix_sharing(input_ids: list[list[int]], lengths: np.ndarray, min_gain: int = 4,
                        min_saving: int | None = None) -> SharePlan:
    """Choose the root (the prefix every string shares) and disjoint groups of
    strings sharing a longer prefix so that the tokens to run are fewest.

    Strings are sorted lexicographically; the LCP intervals of that order form a
    tree (an interval of strings sharing v tokens contains the intervals sharing
    more). Each interval is worth (size - 1) * (v - root) saved tokens; a bottom-up
    pass keeps, per subtree, the better of the interval itself and its
    children's best. Every string keeps at least one token of its own. A group
    must share >= `min_gain` tokens beyond the root and save >= `min_saving`
    (default MIN_GROUP_SAVING) tokens in all: small groups cost more in padding
    and extra forward calls (their strings are batched apart from the rest) than
    they save."""
    if min_saving is None:
        min_saving = MIN_GROUP_SAVING
    n = len(input_ids)
    plan = SharePlan(root_len=0, ungrouped=np.arange(n, dtype=np.int64),
                     tokens_plain=int(lengths.sum()), tokens_shared=int(lengths.sum()))
    if n < 2:
        return plan
    order = sorted(range(n), key=input_ids.__getitem__)
    lcp = [_lcp(input_ids[order[i - 1]], input_ids[order[i]]) for i in range(1, n)]
    sorted_len = lengths[order]
    root = max(0, min(min(lcp), int(lengths.min()) - 1))

    # LCP-interval tree, bottom-up with a stack (sentinel value -1 at both ends).
    class Node:
        __slots__ = ("v", "lb", "rb", "children", "best", "own")

        def __init__(self, v, lb):
            self.v, self.lb, self.rb, self.children, self.best, self.own = v, lb, lb, [], 0, None

    def finish(node: Node) -> None:
        size = node.rb - node.lb + 1
        v = min(node.v, int(sorted_len[node.lb:node.rb + 1].min()) - 1)
        kids = sum(c.best for c in node.children)
        own = (size - 1) * (v - root) if v - root >= min_gain else 0
        own = own if own >= min_saving else 0
        if own > 0 and own >= kids:
            node.best, node.own = own, v
        else:
            node.best = kids

    stack = [Node(-1, 0)]
    stack.append(Node(0, 0))
    for i in range(1, n + 1):
        cur = lcp[i - 1] if i < n else -1
        lb = i - 1
        last = None
        while cur < stack[-1].v:
            node = stack.pop()
            node.rb = i - 1
            finish(node)
            lb = node.lb
            if cur <= stack[-1].v:
                stack[-1].children.append(node)
            else:
                last = node
        if cur > stack[-1].v:
            new = Node(cur, lb)
            if last is not None:
                new.children.append(last)
            stack.append(new)

    grouped = np.zeros(n, dtype=bool)
    todo = list(stack[0].children)
    while todo:
        node = todo.pop()
        if node.own is not None:
            rows = np.asarray(sorted(order[node.lb:node.rb + 1]), dtype=np.int64)
            plan.groups.append(rows)
            plan.group_len.append(node.own)
            grouped[rows] = True
        else:
            todo.extend(node.children)
    plan.root_len = root
    plan.ungrouped = np.flatnonzero(~grouped).astype(np.int64)
    saved = sum((len(r) - 1) * (k - root) for r, k in zip(plan.groups, plan.group_len))
    plan.tokens_shared = plan.tokens_plain - saved - (n - 1) * root
    return plan


def _cache_argument(base) -> str | None:
    """The keyword under which `base` takes a KV cache, if it also takes position_ids."""
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return None
    if "position_ids" not in params:
        return None
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _new_cache(config):
    """A fresh DynamicCache made only of plain DynamicLayers, else None."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=config)
    except Exception:  # an unknown config or transformers layout: share nothing
        return None
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return cache


def _select_rows(cache, rows: torch.Tensor):
    """A new cache holding `rows` of `cache` (the original is left untouched)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        if layer.get_seq_length() > 0:
            layer.batch_select_indices(rows.to(layer.keys.device))
    return out


def sharing_blockers(model) -> list[str]:
    """Why prefix sharing cannot be used with `model` (empty: it can)."""
    base, layers = find_layers_and_base(model)
    inner = unwrap_model(model)
    why = []
    if _cache_argument(base) is None:
        why.append(f"{type(base).__name__}.forward takes no position_ids/cache")
    impl = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        why.append(f"attention implementation {impl!r}")
    if _new_cache(getattr(inner, "config", None)) is None:
        why.append("its KV cache is not a plain DynamicCache")
    if base._forward_pre_hooks or base._forward_hooks or any(layer._forward_pre_hooks for layer in layers):
        why.append("forward hooks are installed (e.g. steering)")
    from torch.nn.modules import module as _module

    if _module._global_forward_pre_hooks or _module._global_forward_hooks:
        why.append("global module hooks are installed")
    return why


# --------------------------------------------------------------------------- #
# The capture
# --------------------------------------------------------------------------- #
class _Capture:
    """Hooks on the requested layers that hand each level's hidden states to a
    per-call callback, and the forward runner (stops after the deepest layer)."""

    def __init__(self, model, layer_ids: list[int]):
        self.base, layers = find_layers_and_base(model)
        self.inner = unwrap_model(model)
        n_layers = len(layers)
        self.deepest = max(layer_ids)
        self.device = input_device(model)
        self.cache_kw = _cache_argument(self.base)
        self.n_slots = len(layer_ids)
        self.on_hidden = None   # fn(slot, hidden[B, T, D])
        self.handles = []
        read_final = self.deepest == n_layers - 1   # hidden_states[L] is the base model's final output
        for j, lid in enumerate(layer_ids):
            if read_final and lid == n_layers - 1:
                continue
            self.handles.append(layers[lid].register_forward_hook(
                lambda _m, _a, out, j=j: self.on_hidden(j, hidden_from_output(out))))
        if read_final:
            def final_hook(_m, _a, out, j=layer_ids.index(n_layers - 1)):
                hidden = getattr(out, "last_hidden_state", None)
                self.on_hidden(j, hidden if hidden is not None else hidden_from_output(out))
            self.handles.append(self.base.register_forward_hook(final_hook))
        else:
            def stop(_m, _a, _out):
                raise _StopForward
            self.handles.append(layers[self.deepest].register_forward_hook(stop))

    def run(self, ids: torch.Tensor, mask: torch.Tensor, on_hidden, cache=None, positions=None) -> None:
        self.on_hidden = on_hidden
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if cache is not None:
            kwargs.update({self.cache_kw: cache, "use_cache": True, "position_ids": positions.to(self.device)})
        else:
            kwargs["use_cache"] = False
        try:
            self.base(**kwargs)
        except _StopForward:
            pass

    def new_cache(self):
        return _new_cache(self.inner.config)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


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
    cap = _Capture(model, layer_ids)
    write, result = _buffer_writer(len(layer_ids), n)
    try:
        if plan is not None and not _sharing_verified(model, cap, tok, plan, pad_id):
            plan = None
        with tqdm(total=n, desc=desc, unit="str", disable=not progress, leave=False) as bar:
            if plan is None:
                _capture_plain(cap, tok, start, end, batch_size, pad_id, write, bar)
            else:
                _capture_shared(cap, plan, tok, start, end, batch_size, pad_id, write, bar)
    finally:
        cap.close()
    return result().numpy()


def _buffer_writer(n_slots: int, n: int):
    """(write(slot, rows, pooled[B, D]), result()) over one [n_slots, n, D] float32
    buffer allocated at the first write (D is read from the hidden states)."""
    box: dict = {}

    def write(j: int, rows: torch.Tensor, pooled: torch.Tensor) -> None:
        buf = box.get("buf")
        if buf is None:
            buf = box["buf"] = torch.empty((n_slots, n, pooled.shape[1]), dtype=torch.float32)
        if pooled.shape[1] != buf.shape[2]:
            raise RuntimeError(f"layer slot {j} has hidden size {pooled.shape[1]}, others {buf.shape[2]}")
        buf[j].index_copy_(0, rows, pooled.to("cpu", torch.float32))

    return write, lambda: box.get("buf")


class _NoBar:
    def update(self, _n: int) -> None:
        pass


def _sharing_verified(model, cap: "_Capture", tok: Tokenized, plan: SharePlan, pad_id: int) -> bool:
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
    write_a, plain = _buffer_writer(cap.n_slots, len(rows))
    write_b, shared = _buffer_writer(cap.n_slots, len(rows))
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


def _capture_plain(cap: _Capture, tok: Tokenized, start, end, batch_size, pad_id, write, bar) -> None:
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


def _capture_shared(cap: _Capture, plan: SharePlan, tok: Tokenized, start, end, batch_size, pad_id, write,
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
                cache = _select_rows(gcache, torch.from_numpy(gr))
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
            cache = _select_rows(root_cache, torch.zeros(len(chunk), dtype=torch.long))
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


def warn_suffix_fallback(n_fallback: int, n_total: int) -> None:
    if n_fallback:
        warnings.warn(
            f"accumulate_last_x_tokens='suffix-only': {n_fallback} of {n_total} strings have no suffix "
            "(empty suffix or a dataset without suffixes); they are pooled at their last token",
            UserWarning, stacklevel=3)
