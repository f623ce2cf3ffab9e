"""Tokens of the strings an extraction reads: tokenize once, suffix spans, pooling
spans, length-sorted batches and right padding.

What `accumulate_last_x_tokens` means (docs/semantics.md): for each string a span
[start, end) of its REAL tokens is pooled — the last k tokens (clamped to the
string's length), every token ("all"), or the tokens of the string's own suffix
("suffix-only", found through the tokenizer's character offsets; a token that
straddles the boundary counts as suffix; no suffix -> the last token, with one
warning), or the tokens of the user's message ("user_text", located in the token
ids by activations/user_text.py). This module computes token ids, spans and batches; it never runs a
model and never decides what is done with the tokens (pooled.py, conditions/search.py).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

POOL_NAMES = ("all", "suffix-only", "user_text")
_ACCEPTED = "an int >= 1, 'all', 'suffix-only' or 'user_text'"


def check_accumulate(value) -> int | str:
    """Validate `accumulate_last_x_tokens`: an int >= 1, "all", "suffix-only" or "user_text"."""
    if isinstance(value, str):
        if value in POOL_NAMES:
            return value
        raise ValueError(f"accumulate_last_x_tokens must be {_ACCEPTED}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"accumulate_last_x_tokens must be {_ACCEPTED}, got {value!r}")
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
    user_span: np.ndarray | None = None  # [N, 2] int64: the user's message (set for "user_text" pooling)


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


def pooling_spans(tok: Tokenized, mode: int | str, tokenizer=None,
                  name_of=lambda i: f"string {i}") -> tuple[np.ndarray, np.ndarray, int]:
    """(start[N], end[N], n_fallback): the token span each string is pooled over.
    n_fallback counts "suffix-only" strings without a suffix (pooled at the last token).
    "user_text" needs `tokenizer` (its chat template's markers; activations/user_text.py)
    and raises ValueError naming the string (`name_of(index)`) whose message cannot be delimited."""
    lengths = tok.lengths
    end = lengths.copy()
    n_fallback = 0
    if mode == "user_text":
        from .user_text import user_text_locator

        loc = user_text_locator(tokenizer)
        spans = [loc.span(row, name_of(i)) for i, row in enumerate(tok.input_ids)]
        return (np.asarray([s for s, _ in spans], dtype=np.int64).reshape(-1),
                np.asarray([e for _, e in spans], dtype=np.int64).reshape(-1), 0)
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


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of strings of similar length (longest first, stable)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_token_id(tokenizer) -> int:
    """The id batches are right-padded with: pad, else eos, else 0. Right padding
    never reaches a real token (causal attention) nor a pooled span, so any id works."""
    return next((t for t in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None))
                 if isinstance(t, int)), 0)


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


def warn_suffix_fallback(n_fallback: int, n_total: int) -> None:
    if n_fallback:
        warnings.warn(
            f"accumulate_last_x_tokens='suffix-only': {n_fallback} of {n_total} strings have no suffix "
            "(empty suffix or a dataset without suffixes); they are pooled at their last token",
            UserWarning, stacklevel=4)  # warn_suffix_fallback <- pooled_activations <- train <- caller