"""Per-layer residual-stream norm statistics at the decoder layer input, sinks excluded.

What this is for: a steering strength is an absolute length added to the residual
stream, and that stream's scale differs by two orders of magnitude between models
(median token norm: SmolLM2-135M about 70 at layer 2 to 700 at layer 29; Gemma 3 270M about
1,000 at layer 2 to 33,000 at layer 17). To express strengths relative to the stream, a SteeringVector
records, per layer, ONE robust number: the median L2 norm of the decoder layer input
over the training strings' real tokens, attention-sink positions excluded. This module
computes it from hidden states a forward pass already produced (the capture pass calls
`ResidualNormStats.add` from the hooks it already has: no extra forward).

The sink rule (measured on both embedded models; numbers in docs/strength_units.md):
  1. drop each string's FIRST real token (position 0 of the string, pads excluded).
     Both models turn the first token into an attention sink whose norm is 3-170x
     the median of the rest from layer 2 on (SmolLM2 with or without its chat
     template, Gemma 3 with its <bos>); a 10x-median rule alone misses it wherever
     it is under 10x (SmolLM2 layers 2-9, Gemma layers 2-4 and 11-17). Left in, a mean over tokens measures the
     strings' length, and even a median moves with it for short strings.
  2. then drop any remaining position whose norm exceeds `outlier_factor` (default 10)
     times the median of the kept positions of that layer: a safety net for sinks
     that are not at position 0. Measured: SmolLM2 on raw text sinks into the second
     token when the first is a weak word ("hey welcome ...": 23-35x at layers 12-25),
     Gemma into early commas at layer 1 (13x). Rule 2 removes those few tokens and
     moves the median by under 1%.
The statistic is the median of what is kept (float64). `mean` and quantiles are
reported too, for documentation and plots.

Positions: `add` takes each token's position WITHIN ITS STRING (0 = first real token).
By default it is derived from the attention mask (left or right padding both work);
a capture pass that runs a string in pieces (a shared prefix through a KV cache, then
the string's own tokens) passes the pieces' true positions instead.

What this is not: a per-token scale for steering (the "token_norm" unit uses each
position's own norm at run time), and not a normaliser of the hidden states.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_OUTLIER_FACTOR = 10.0


def token_norms(hidden: torch.Tensor) -> torch.Tensor:
    """L2 norm over the last dim, computed in float32 whatever the input dtype (fp16 squares
    of Gemma-sized activations overflow): [B, T, D] -> [B, T] float32."""
    return torch.linalg.vector_norm(hidden.detach().to(torch.float32), dim=-1)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each real token's index within its own string (0 = first real token); -1 for pads.
    Works for left, right or any padding: [B, T] (0/1 or bool) -> [B, T] int64."""
    real = attention_mask.to(torch.bool)
    pos = torch.cumsum(real.to(torch.int64), dim=-1) - 1
    return torch.where(real, pos, torch.full_like(pos, -1))


def apply_sink_rule(norms: np.ndarray, positions: np.ndarray, drop_first: bool = True,
                    outlier_factor: float | None = DEFAULT_OUTLIER_FACTOR) -> np.ndarray:
    """The kept norms of one layer (1-D float64) given every real token's norm and position.

    drop_first: drop position 0 (the attention sink). outlier_factor: then drop norms above
    outlier_factor * median(kept); None or inf disables it."""
    norms = np.asarray(norms, dtype=np.float64).ravel()
    positions = np.asarray(positions).ravel()
    if norms.shape != positions.shape:
        raise ValueError(f"norms {norms.shape} and positions {positions.shape} differ")
    keep = positions >= 0
    if drop_first:
        keep &= positions != 0
    kept = norms[keep]
    if outlier_factor is not None and np.isfinite(outlier_factor) and kept.size:
        if outlier_factor <= 1:
            raise ValueError(f"outlier_factor must be > 1 (or None to disable), got {outlier_factor}")
        kept = kept[kept <= outlier_factor * np.median(kept)]
    return kept


@dataclass(frozen=True)
class NormSummary:
    """One layer's statistic: `median` is THE recorded number; the rest documents it."""

    median: float
    mean: float
    q10: float
    q90: float
    n_kept: int
    n_dropped: int   # real tokens excluded by the sink rule

    def as_dict(self) -> dict:
        return dict(median=self.median, mean=self.mean, q10=self.q10, q90=self.q90,
                    n_kept=self.n_kept, n_dropped=self.n_dropped)


def summarize(kept: np.ndarray, n_real: int) -> NormSummary:
    kept = np.asarray(kept, dtype=np.float64)
    if kept.size == 0:
        raise ValueError("no tokens left after the sink rule: every string has a single token; "
                         "residual norms need strings of at least two tokens")
    return NormSummary(median=float(np.median(kept)), mean=float(kept.mean()),
                       q10=float(np.quantile(kept, 0.1)), q90=float(np.quantile(kept, 0.9)),
                       n_kept=int(kept.size), n_dropped=int(n_real - kept.size))


class ResidualNormStats:
    """Accumulates token norms per layer over batches, then applies the sink rule.

        stats = ResidualNormStats(drop_first=True, outlier_factor=10.0)
        # inside a pre-hook on decoder layer i (args[0] is its input), per batch:
        stats.add(i, hidden, attention_mask=mask)          # or positions=...
        stats.medians()  # {layer id: float}

    Only one float32 norm and one position per real token and layer are kept (the
    median needs them all); no hidden state is retained.
    """

    def __init__(self, drop_first: bool = True, outlier_factor: float | None = DEFAULT_OUTLIER_FACTOR):
        if outlier_factor is not None and not (outlier_factor > 1):
            raise ValueError(f"outlier_factor must be > 1 (or None to disable), got {outlier_factor!r}")
        self.drop_first = bool(drop_first)
        self.outlier_factor = outlier_factor
        self._norms: dict[int, list[np.ndarray]] = {}
        self._pos: dict[int, list[np.ndarray]] = {}

    def add(self, layer: int, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
            positions: torch.Tensor | None = None, row_counts=None) -> None:
        """Record the real tokens of `hidden` [B, T, D] (the input of decoder layer `layer`).

        Give `positions` [B, T] (index within the string, -1 = not a real token) or an
        `attention_mask` [B, T] to derive them; with neither, every token is real and
        each row starts at position 0. `row_counts` [B] (default all 1): how many strings
        each row stands for; a prefix that a capture pass ran once for k strings counts k
        times, so the statistic equals the one-string-at-a-time one."""
        if hidden.dim() != 3:
            raise ValueError(f"hidden must be [batch, tokens, hidden], got shape {tuple(hidden.shape)}")
        if positions is None:
            if attention_mask is None:
                attention_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
            positions = positions_from_mask(attention_mask)
        if tuple(positions.shape) != tuple(hidden.shape[:2]):
            raise ValueError(f"positions/attention_mask shape {tuple(positions.shape)} does not match "
                             f"hidden {tuple(hidden.shape[:2])}")
        positions = positions.to(hidden.device)
        real = positions >= 0
        norms = token_norms(hidden)[real].cpu().numpy()
        pos = positions[real].cpu().numpy()
        if row_counts is not None:
            counts = np.asarray(row_counts.cpu() if isinstance(row_counts, torch.Tensor) else row_counts,
                                dtype=np.int64)
            if counts.shape != (hidden.shape[0],) or np.any(counts < 0):
                raise ValueError(f"row_counts must be {hidden.shape[0]} non-negative ints, got shape {counts.shape}")
            per_token = np.broadcast_to(counts[:, None], tuple(positions.shape))[real.cpu().numpy()]
            norms, pos = np.repeat(norms, per_token), np.repeat(pos, per_token)
        self._norms.setdefault(int(layer), []).append(norms)
        self._pos.setdefault(int(layer), []).append(pos)

    @property
    def layers(self) -> list[int]:
        return sorted(self._norms)

    def kept(self, layer: int) -> np.ndarray:
        norms = np.concatenate(self._norms[layer]) if self._norms.get(layer) else np.zeros(0)
        pos = np.concatenate(self._pos[layer]) if self._pos.get(layer) else np.zeros(0, dtype=np.int64)
        return apply_sink_rule(norms, pos, self.drop_first, self.outlier_factor)

    def summaries(self) -> dict[int, NormSummary]:
        out = {}
        for layer in self.layers:
            n_real = int(sum(a.size for a in self._norms[layer]))
            out[layer] = summarize(self.kept(layer), n_real)
        return out

    def medians(self) -> dict[int, float]:
        """{layer id: median kept norm} — the number a SteeringVector records."""
        return {layer: s.median for layer, s in self.summaries().items()}


def residual_norms(model, tokenizer, texts: list[str], layer_ids, add_special_tokens: bool = True,
                   batch_size: int = 16, drop_first: bool = True,
                   outlier_factor: float | None = DEFAULT_OUTLIER_FACTOR) -> dict[int, NormSummary]:
    """Stand-alone measurement (its OWN forward; for documentation and for vectors trained
    before the statistic existed): per layer in `layer_ids`, the summary of the decoder
    layer input's token norms over `texts` (already formatted). Pre-hooks on the
    requested layers; batches are right-padded."""
    from .layers import find_decoder_layers, unwrap_model

    inner = unwrap_model(model)
    layers = find_decoder_layers(inner)
    ids = sorted({int(i) % len(layers) for i in layer_ids})
    stats = ResidualNormStats(drop_first=drop_first, outlier_factor=outlier_factor)
    current: dict = {}

    def make_hook(i):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            stats.add(i, h, attention_mask=current["mask"])
        return hook

    handles = [layers[i].register_forward_pre_hook(make_hook(i), with_kwargs=True) for i in ids]
    # right-padded by hand (id 0 under a zero mask): no pad token needed, nothing mutated
    ids_list = [list(r) for r in tokenizer(list(texts), add_special_tokens=add_special_tokens,
                                           padding=False)["input_ids"]]
    try:
        device = next(inner.parameters()).device
        with torch.no_grad():
            for b in range(0, len(ids_list), batch_size):
                chunk = ids_list[b:b + batch_size]
                width = max(len(r) for r in chunk)
                input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
                mask = torch.zeros(len(chunk), width, dtype=torch.long)
                for r, row in enumerate(chunk):
                    input_ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
                    mask[r, :len(row)] = 1
                current["mask"] = mask.to(device)
                inner(input_ids=input_ids.to(device), attention_mask=current["mask"])
    finally:
        for h in handles:
            h.remove()
    return stats.summaries()


__all__ = ["DEFAULT_OUTLIER_FACTOR", "NormSummary", "ResidualNormStats", "apply_sink_rule",
           "positions_from_mask", "residual_norms", "summarize", "token_norms"]
