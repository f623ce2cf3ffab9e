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
# Fake kernels: the shapes/dtypes of the outputs, and the same argument checks as
# the real kernels (a mismatch raises while tracing, as it would at run time).
# --------------------------------------------------------------------------- #
def _check(cond: bool, op: str, msg: str) -> None:
    torch._check(cond, lambda: f"{op}: {msg}")


def _check_hidden_mask(op: str, hidden, token_mask) -> None:
    _check(hidden.dim() == 3, op, f"hidden must be [B, T, D], got {tuple(hidden.shape)}")
    if token_mask is not None:
        _check(token_mask.dim() == 2 and token_mask.shape[0] == hidden.shape[0]
               and token_mask.shape[1] == hidden.shape[1] and token_mask.device == hidden.device, op,
               f"token_mask must be [B, T] = {tuple(hidden.shape[:2])} on the hidden state's device, "
               f"got {tuple(token_mask.shape)}")


def _check_conditions(op: str, hidden, cond_dirs, cond_codes) -> None:
    d = hidden.shape[2]
    _check(cond_dirs.dim() == 2 and cond_dirs.shape[1] == d and cond_dirs.dtype == torch.float32
           and cond_dirs.device == hidden.device, op,
           f"cond_dirs must be float32 [K, {d}] on the hidden state's device, got {tuple(cond_dirs.shape)} "
           f"{cond_dirs.dtype}")
    _check(cond_codes.dim() == 2 and cond_codes.shape[0] == cond_dirs.shape[0] and cond_codes.shape[1] == 3
           and cond_codes.dtype == torch.int64 and cond_codes.device == hidden.device, op,
           f"cond_codes must be int64 [K, 3] (K = {cond_dirs.shape[0]}), got {tuple(cond_codes.shape)} "
           f"{cond_codes.dtype}")


if HAVE_COMPILED_OPS:

    @torch.library.register_fake("activation_steering::pool_spans")
    def _pool_spans_fake(hidden, start, end):
        _check(hidden.dim() == 3, "pool_spans", f"hidden must be [B, T, D], got {tuple(hidden.shape)}")
        _check(start.dim() == 1 and end.dim() == 1, "pool_spans", "start and end must be 1-D")
        _check(start.shape[0] == hidden.shape[0] and end.shape[0] == hidden.shape[0], "pool_spans",
               f"start/end length must equal the batch size {hidden.shape[0]}")
        _check(start.dtype == torch.int64 and end.dtype == torch.int64, "pool_spans", "start and end must be int64")
        return hidden.new_empty((hidden.shape[0], hidden.shape[2]), dtype=torch.float32)

    @torch.library.register_fake("activation_steering::condition_similarity")
    def _condition_similarity_fake(hidden, token_mask, cond_dirs, cond_codes):
        _check_hidden_mask("condition_similarity", hidden, token_mask)
        _check_conditions("condition_similarity", hidden, cond_dirs, cond_codes)
        return hidden.new_empty((hidden.shape[0], cond_dirs.shape[0]), dtype=torch.float32)

    @torch.library.register_fake("activation_steering::steer_layer")
    def _steer_layer_fake(hidden, state, token_mask, cond_dirs, cond_thresholds, cond_codes, beh_vecs, beh_tables, ooi):
        op = "steer_layer"
        _check_hidden_mask(op, hidden, token_mask)
        b, _, d = hidden.shape
        _check(state.dim() == 1 and state.shape[0] == b and state.dtype == torch.int64 and state.device == hidden.device,
               op, f"state must be int64 [B] on the hidden state's device, got {tuple(state.shape)} {state.dtype}")
        if cond_dirs is not None:
            _check(cond_thresholds is not None and cond_codes is not None, op,
                   "cond_dirs needs cond_thresholds and cond_codes")
            _check_conditions(op, hidden, cond_dirs, cond_codes)
            _check(cond_thresholds.dim() == 1 and cond_thresholds.shape[0] == cond_dirs.shape[0]
                   and cond_thresholds.dtype == torch.float32 and cond_thresholds.device == hidden.device, op,
                   f"cond_thresholds must be float32 [K], got {tuple(cond_thresholds.shape)} {cond_thresholds.dtype}")
        if beh_vecs is not None:
            _check(beh_vecs.dim() == 2 and beh_vecs.shape[1] == d and beh_vecs.dtype == hidden.dtype
                   and beh_vecs.device == hidden.device, op,
                   f"beh_vecs must be [M, D] with the hidden state's dtype and device, got {tuple(beh_vecs.shape)} "
                   f"{beh_vecs.dtype}")
            if beh_tables is not None:
                _check(beh_tables.dim() == 2 and beh_tables.shape[0] == beh_vecs.shape[0] and beh_tables.shape[1] >= 1
                       and beh_tables.device == hidden.device
                       and beh_tables.dtype in (torch.uint8, torch.bool, hidden.dtype), op,
                       "beh_tables must be [M, 2^C] of 0/1 (uint8, bool or the hidden state's dtype) on the hidden "
                       "state's device")
        return torch.empty_like(hidden, memory_format=torch.contiguous_format)


# --------------------------------------------------------------------------- #
# Public entry points used by the rest of the package.
# --------------------------------------------------------------------------- #
def pool_spans(hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean of hidden[b, start[b]:end[b]] per row, float32 [B, D]."""
    if HAVE_COMPILED_OPS:
        return torch.ops.activation_steering.pool_spans(hidden, start, end)
    _warn_fallback()
    return _reference.pool_spans(hidden, start, end)


def condition_similarity(hidden: torch.Tensor, token_mask: torch.Tensor | None, cond_dirs: torch.Tensor,
                         cond_codes: torch.Tensor) -> torch.Tensor:
    """sims[B, K] float32: THE condition similarity, the very kernel steer_layer evaluates.

    hidden[B, T, D] (a decoder layer's input), token_mask[B, T] (nonzero = real
    token; None = all real), cond_dirs[K, D] float32, cond_codes[K, 3] int64 (only
    column 2, pooling 0 = mean / 1 = last / 2 = user_text, is read; user_text pools the
    positions where token_mask == 2). See ops.cpp.
    """
    if HAVE_COMPILED_OPS and not (hidden.requires_grad and torch.is_grad_enabled()):
        return torch.ops.activation_steering.condition_similarity(hidden, token_mask, cond_dirs, cond_codes)
    if not HAVE_COMPILED_OPS:
        _warn_fallback()
    return _reference.condition_similarity(hidden, token_mask, cond_dirs, cond_codes)


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
