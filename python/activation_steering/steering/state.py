"""Per-model steering state and the base-model pre-hook that recognises new prompts.

`SteeringState` holds, per batch row, which conditions have been met; the
`PromptWatcher` (a forward pre-hook of the base model) decides whether a forward
pass is a new prompt or a decode step and records the attention mask of the
positions in the pass. The per-layer hook that adds behaviours is
`leash_layer.LeashLayer`. See docs/semantics.md for prompt vs generated positions.
"""
from __future__ import annotations

import inspect

import torch

from ..activations.runner import CACHE_ARGUMENTS as _CACHE_ARGS
from ..config import GlobalConfig, log


class SteeringState:
    """Per-model, per-row condition state shared by one model's hooks."""

    def __init__(self) -> None:
        self.state: torch.Tensor | None = None       # [B] int64 condition bitmasks (bit j = C<j+1> met)
        self.token_mask: torch.Tensor | None = None  # [B, T] real tokens of the current pass, or None
        self.is_prompt: bool = False
        self.verbose: bool = False

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep only rows `keep` of the batch (finished rows left a batched decode)."""
        if self.state is not None:
            self.state = self.state[keep.to(self.state.device)]
        self.token_mask = None  # set afresh by the next pass

    def reset(self) -> None:
        self.state = None
        self.token_mask = None
        self.is_prompt = False


def _cache_length(cache) -> int:
    """Tokens already in a KV cache (0 for None / empty). Shape-based: no device sync."""
    if cache is None:
        return 0
    get = getattr(cache, "get_seq_length", None)
    if get is not None:
        return int(get())
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        return int(cache[0][0].shape[-2])  # legacy tuple-of-tuples cache
    return 0


class PromptWatcher:
    """Forward pre-hook of the base model: recognises new prompts, records the mask."""

    def __init__(self, ctx: SteeringState, base: torch.nn.Module) -> None:
        self.ctx = ctx
        try:
            params = list(inspect.signature(base.forward).parameters)
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            params = []
        # positions of the arguments we read, for callers that pass them positionally
        self.pos = {name: params.index(name) for name in ("input_ids", "attention_mask", "inputs_embeds", *_CACHE_ARGS)
                    if name in params}

    def _arg(self, args: tuple, kwargs: dict, name: str):
        if name in kwargs:
            return kwargs[name]
        i = self.pos.get(name)
        return args[i] if i is not None and i < len(args) else None

    def __call__(self, module, args, kwargs):
        ctx = self.ctx
        x = self._arg(args, kwargs, "input_ids")
        if x is None:
            x = self._arg(args, kwargs, "inputs_embeds")
        if x is None or x.dim() < 2:
            return None
        batch, width = x.shape[0], x.shape[1]
        cache = None
        for name in _CACHE_ARGS:
            cache = self._arg(args, kwargs, name)
            if cache is not None:
                break
        ctx.is_prompt = _cache_length(cache) == 0 or ctx.state is None or ctx.state.shape[0] != batch
        mask = self._arg(args, kwargs, "attention_mask")
        ctx.token_mask = mask[:, -width:] if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if ctx.is_prompt:
            ctx.state = torch.zeros(batch, dtype=torch.long, device=x.device)
        # plain dict lookups (not Logger.isEnabledFor): torch.compile traces this hook without a graph break
        ctx.verbose = GlobalConfig.is_verbose("LeashLayer") or GlobalConfig.should_log_to_file("LeashLayer")
        if ctx.verbose:
            log("LeashLayer", f"{'prompt' if ctx.is_prompt else 'decode'} pass: batch {batch}, {width} position(s)")
        return None
