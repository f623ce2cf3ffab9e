"""Prefix sharing for pooled capture: which tokens run once.

Strings of a SteeringDataset repeat a lot of text (every string starts with the
chat template's system turn; every example is repeated once per suffix). The
tokens all strings share (the *root*) and the tokens a group of strings shares
(e.g. one rendered example, before its suffixes) run once, filling a KV cache;
each string then runs only its own remaining tokens against a row-selected copy
of that cache. This module plans the sharing and says when a model cannot use
it; the capture that executes the plan lives in pooled.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layers import find_layers_and_base, unwrap_model
from .runner import cache_argument, new_cache


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


def sharing_blockers(model) -> list[str]:
    """Why prefix sharing cannot be used with `model` (empty: it can)."""
    base, layers = find_layers_and_base(model)
    inner = unwrap_model(model)
    why = []
    if cache_argument(base) is None:
        why.append(f"{type(base).__name__}.forward takes no position_ids/cache")
    impl = getattr(getattr(inner, "config", None), "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        why.append(f"attention implementation {impl!r}")
    if new_cache(getattr(inner, "config", None)) is None:
        why.append("its KV cache is not a plain DynamicCache")
    if base._forward_pre_hooks or base._forward_hooks or any(layer._forward_pre_hooks for layer in layers):
        why.append("forward hooks are installed (e.g. steering)")
    from torch.nn.modules import module as _module

    if _module._global_forward_pre_hooks or _module._global_forward_hooks:
        why.append("global module hooks are installed")
    return why

