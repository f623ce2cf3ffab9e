"""Run a model forward only as far as needed, with hooks on chosen decoder layers.

Extraction and the condition search read activations at a few layers and need
nothing after the deepest of them: not later layers, not the LM head. This
module runs the *base model* (model.model / transformer / ...) with hooks:

    with truncated_forward(model, stop_after=7, pre_hooks={3: f}, post_hooks={7: g}):
        ...   # inside, call run(...)

`run_truncated(model, input_ids, attention_mask, stop_after, pre_hooks, post_hooks)`
is the one-call form. A pre-hook sees the hidden state ENTERING layer i
(h_in[i]); a post-hook sees what layer i returns (h_out[i]). Both are called as
fn(layer_index, hidden[B, T, D]) and their return value is ignored (they read,
never write). After layer `stop_after` returns, the forward is aborted with a
private exception, so later layers never run.
"""
from __future__ import annotations

from typing import Callable

import torch

from .layers import find_layers_and_base

Hook = Callable[[int, torch.Tensor], None]


class _StopForward(Exception):
    """Raised inside the forward after the deepest needed layer."""


def hidden_from_args(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a decoder layer was called with (positional or keyword)."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise RuntimeError("decoder layer was called without a hidden state argument")


def hidden_from_output(output) -> torch.Tensor:
    """The hidden state a decoder layer returned (a tensor or the first item of a tuple)."""
    return output if isinstance(output, torch.Tensor) else output[0]


@torch.no_grad()
def run_truncated(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, stop_after: int,
                  pre_hooks: dict[int, Hook] | None = None, post_hooks: dict[int, Hook] | None = None) -> None:
    """Forward `input_ids` through the base model's layers 0..stop_after with hooks, then stop."""
    base, layers = find_layers_and_base(model)
    if not 0 <= stop_after < len(layers):
        raise ValueError(f"stop_after={stop_after} is out of range for {len(layers)} layers")
    handles = []
    try:
        for i, fn in (pre_hooks or {}).items():
            handles.append(layers[i].register_forward_pre_hook(
                lambda _m, args, kwargs, i=i, fn=fn: fn(i, hidden_from_args(args, kwargs)), with_kwargs=True))
        for i, fn in (post_hooks or {}).items():
            handles.append(layers[i].register_forward_hook(
                lambda _m, _args, output, i=i, fn=fn: fn(i, hidden_from_output(output))))

        def stop(_m, _args, _output):
            raise _StopForward

        handles.append(layers[stop_after].register_forward_hook(stop))
        try:
            base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        else:  # pragma: no cover - a base model that skips its layers
            raise RuntimeError(f"{type(base).__name__} returned without running layer {stop_after}")
    finally:
        for h in handles:
            h.remove()
