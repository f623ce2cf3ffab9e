"""Loads the ATen ops (torch.ops.activation_steering.*) and registers their fake kernels.

Import this module, never `_torch_ops` directly. If the compiled library cannot
be loaded (e.g. torch was upgraded after the build), every op falls back to its
pure-torch twin in `oracles/ops.py` with a one-time warning naming the rebuild command.
"""
from __future__ import annotations

import warnings

import torch

from ..oracles import ops as _reference

from . import build as _build

# The prebuilt development module, else the library compiled at first use for this
# torch (native/build.py); the reason when neither is possible.
HAVE_COMPILED_OPS, _LOAD_ERROR = _build.load_ops()

_warned = False


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            _build.fallback_message(_LOAD_ERROR),
            RuntimeWarning,
            stacklevel=3,
        )


# --------------------------------------------------------------------------- #
# Fake (meta) kernels: shapes/dtypes only, so torch.compile can trace the ops.
# --------------------------------------------------------------------------- #
if HAVE_COMPILED_OPS:

    @torch.library.register_fake("activation_steering::pool_spans")
    def _pool_spans_fake(hidden, start, end):
        return hidden.new_empty((hidden.shape[0], hidden.shape[2]), dtype=torch.float32)

    @torch.library.register_fake("activation_steering::steer_layer")
    def _steer_layer_fake(hidden, state, token_mask, cond_dirs, cond_thresholds, cond_codes, beh_vecs, beh_tables, ooi):
        return hidden.new_empty(hidden.shape)


# --------------------------------------------------------------------------- #
# Public entry points used by the rest of the package.
# --------------------------------------------------------------------------- #
def pool_spans(hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean of hidden[b, start[b]:end[b]] per row, float32 [B, D]."""
    if HAVE_COMPILED_OPS:
        return torch.ops.activation_steering.pool_spans(hidden, start, end)
    _warn_fallback()
    return _reference.pool_spans(hidden, start, end)


def steer_layer(hidden: torch.Tensor, state: torch.Tensor, token_mask: torch.Tensor | None,
                cond_dirs: torch.Tensor | None, cond_thresholds: torch.Tensor | None, cond_codes: torch.Tensor | None,
                beh_vecs: torch.Tensor | None, beh_tables: torch.Tensor | None, ooi: bool) -> torch.Tensor:
    """One steered decoder layer: conditions into `state` (in place), gated behaviours, OOI.

    See ops.cpp `steer_layer` for the contract. The compiled op has no autograd
    formula, so when gradients are being recorded through `hidden` the pure-torch
    twin runs instead (autograd then flows through plain torch ops).
    """
    if HAVE_COMPILED_OPS and not (hidden.requires_grad and torch.is_grad_enabled()):
        return torch.ops.activation_steering.steer_layer(hidden, state, token_mask, cond_dirs, cond_thresholds,
                                                         cond_codes, beh_vecs, beh_tables, ooi)
    if not HAVE_COMPILED_OPS:
        _warn_fallback()
    return _reference.steer_layer(hidden, state, token_mask, cond_dirs, cond_thresholds, cond_codes, beh_vecs,
                                  beh_tables, ooi)
