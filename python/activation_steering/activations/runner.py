"""The one truncated-forward runner: read the residual stream at chosen decoder
layers and run the model no further than needed.

Everything that reads activations (pooled capture for `SteeringVector.train`,
the condition search, tests and benchmarks) goes through `TruncatedForward`, a
scoped context that hooks the chosen layers of the *base model* (model.model,
model.transformer, ...; never the LM head):

    with TruncatedForward(model, layer_ids=[3, 7], read="input") as fwd:
        fwd.run(input_ids, attention_mask, on_hidden)   # on_hidden(layer, hidden[B, T, D])

read="input"   a forward pre-hook on layer i hands over the decoder layer input
               (the residual stream entering layer i, h_in[i]) - what steering
               adds to and what conditions are read from;
read="output"  what layer i returns, i.e. Hugging Face's hidden_states[i+1]. For
               the LAST layer that is the base model's final output (after the
               final norm), so it is read there and not from the layer.
pre_read=True  (with read="output") ALSO a pre-hook on each requested layer: a
               run given `on_input` hands it the decoder layer input of the same
               forward (the residual-norm statistic is taken there, in the same
               pass as the pooled outputs; activations/norms.py).

The forward is aborted with `_StopForward` right after the deepest requested
layer has run: later layers and the LM head never run. Callbacks only read; their return
value is ignored. A KV cache can be passed to `run` (prefix sharing): the
keyword a model takes it under (`cache` or `past_key_values`), a fresh
DynamicCache and row selection are the helpers below.

Not here: what is pooled (tokens.py, pooled.py), steering hooks (steering/state.py,
leash_layer.py), decoding (steering/decode.py). See docs/architecture.md.
"""
from __future__ import annotations

import copy
import inspect
from typing import Callable

import torch

from .layers import find_layers_and_base, input_device, unwrap_model  # noqa: F401  (input_device: re-exported)

OnHidden = Callable[[int, torch.Tensor], None]

# The keywords under which a Hugging Face model's forward takes its KV cache
# (newer models renamed `past_key_values` to `cache`).
CACHE_ARGUMENTS = ("cache", "past_key_values")
READ_POINTS = ("input", "output")


class _StopForward(Exception):
    """Raised inside the forward once the deepest requested layer has run."""


def _stop(_module, _args, _output):
    raise _StopForward


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


# --------------------------------------------------------------------------- #
# KV-cache helpers
# --------------------------------------------------------------------------- #
def cache_keyword(parameters) -> str | None:
    """Which of CACHE_ARGUMENTS a forward with these parameter names takes, if any."""
    return next((name for name in CACHE_ARGUMENTS if name in parameters), None)


def cache_argument(base) -> str | None:
    """The keyword under which `base` takes a KV cache, if it also takes position_ids."""
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return None
    if "position_ids" not in params:
        return None
    return cache_keyword(params)


def new_cache(config):
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


def select_cache_rows(cache, rows: torch.Tensor):
    """A new cache holding `rows` of `cache` (the original is left untouched)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        if layer.get_seq_length() > 0:
            layer.batch_select_indices(rows.to(layer.keys.device))
    return out


# --------------------------------------------------------------------------- #
# The runner
# --------------------------------------------------------------------------- #
class TruncatedForward:
    """Hooks on the requested layers for the life of a `with` block; `run` feeds
    one batch through the base model and hands each reading to `on_hidden`."""

    def __init__(self, model, layer_ids, read: str = "output", pre_read: bool = False) -> None:
        if read not in READ_POINTS:
            raise ValueError(f"read must be one of {READ_POINTS}, got {read!r}")
        self.base, layers = find_layers_and_base(model)
        self.inner = unwrap_model(model)
        n_layers = len(layers)
        self.layer_ids = [int(i) for i in layer_ids]
        if not self.layer_ids:
            raise ValueError("no layers requested")
        bad = [i for i in self.layer_ids if not 0 <= i < n_layers]
        if bad:
            raise ValueError(f"layer ids {bad} are out of range for {n_layers} layers")
        self.read = read
        self.deepest = max(self.layer_ids)
        self.device = input_device(model)
        self.cache_kw = cache_argument(self.base)
        self._on_hidden: OnHidden | None = None
        self._on_input: OnHidden | None = None
        self._handles: list = []
        # hidden_states[L] is the base model's final output: read it there, the forward ends by itself
        self._read_final = read == "output" and self.deepest == n_layers - 1
        for lid in dict.fromkeys(self.layer_ids):
            if pre_read and read == "output":
                self._handles.append(layers[lid].register_forward_pre_hook(
                    lambda _m, args, kwargs, lid=lid: self._pre_read(lid, args, kwargs), with_kwargs=True))
            if read == "input":
                self._handles.append(layers[lid].register_forward_pre_hook(
                    lambda _m, args, kwargs, lid=lid: self._on_hidden(lid, hidden_from_args(args, kwargs)),
                    with_kwargs=True))
            elif not (self._read_final and lid == n_layers - 1):
                self._handles.append(layers[lid].register_forward_hook(
                    lambda _m, _a, out, lid=lid: self._on_hidden(lid, hidden_from_output(out))))
        if self._read_final:
            def final_hook(_m, _a, out, lid=n_layers - 1):
                hidden = getattr(out, "last_hidden_state", None)
                self._on_hidden(lid, hidden if hidden is not None else hidden_from_output(out))
            self._handles.append(self.base.register_forward_hook(final_hook))
        else:  # registered after the reading hooks, so it runs after them
            self._handles.append(layers[self.deepest].register_forward_hook(_stop))

    def _pre_read(self, lid: int, args: tuple, kwargs: dict) -> None:
        if self._on_input is not None:
            self._on_input(lid, hidden_from_args(args, kwargs))

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, on_hidden: OnHidden, cache=None,
            positions: torch.Tensor | None = None, on_input: OnHidden | None = None) -> None:
        """One forward of a batch; `cache` (with its `positions`) continues a KV cache.
        `on_input(layer, hidden_in)` (needs pre_read=True) also gets each requested layer's input."""
        if not self._handles:
            raise RuntimeError("TruncatedForward.run called outside its `with` block")
        self._on_hidden = on_hidden
        self._on_input = on_input
        kwargs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        if cache is not None:
            kwargs.update({self.cache_kw: cache, "use_cache": True, "position_ids": positions.to(self.device)})
        else:
            kwargs["use_cache"] = False
        try:
            with torch.no_grad():
                self.base(**kwargs)
        except _StopForward:
            return
        finally:
            self._on_hidden = None
            self._on_input = None
        if not self._read_final:  # pragma: no cover - a base model that skips its layers
            raise RuntimeError(f"{type(self.base).__name__} returned without running layer {self.deepest}")

    def new_cache(self):
        return new_cache(self.inner.config)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "TruncatedForward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_truncated(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer_ids, on_hidden: OnHidden,
                  read: str = "input") -> None:
    """One-call form: one batch through a `TruncatedForward` over `layer_ids`."""
    with TruncatedForward(model, layer_ids, read) as fwd:
        fwd.run(input_ids, attention_mask, on_hidden)
