"""find_best_condition_point (SPEC 4): where, and at which threshold, a condition fires.

The job has two halves with very different costs, and each is done once:

1. Similarities. Every string is formatted exactly as `respond` formats a prompt
   (`activations.prompts.format_prompt`, tokenized as `prompts.encode` does), then the
   strings go through the model in batches (RIGHT padding, sorted by length so
   batches carry little padding) with a pre-hook on every layer in range that
   pools the layer's INPUT h_in[i] over the string's real tokens ("mean") or
   takes its last real token ("last") and computes
   `similarity.condition_similarity` against the condition direction of that
   layer. The forward stops after the last layer in range (no later layers, no LM
   head, no `generate`). Right padding keeps every real token at the position it
   has when the string runs alone, and the pooling span [start, end) covers real
   tokens only, so batching changes nothing beyond float rounding.
   Result: sims[n_strings, n_layers], float32.

2. Search, in the C core (`_core.condsearch_grid` / `_core.condsearch_exact`):
   every combination of 1..max_layers_to_combine layers (itertools.combinations
   order), every threshold of `numpy.arange(lo, hi, step)`, "larger" then
   "smaller"; a string is predicted positive if ANY layer of the combination meets
   the condition ("larger": sim < t, "smaller": sim > t); F1 with the positive
   strings as the positive class (0 when there is no true positive). The FIRST
   best candidate in that order wins and its grid value is returned unrounded.
   `exact=True` searches every real threshold instead (sort and sweep; the
   threshold returned is a midpoint between two observed values).

The model is never steered by the search: if it has `reset_leash_to_default`
(a MalleableModel), that is called first, like the reference does, so that any
steering installed before cannot leak into the similarities and none is left
installed afterwards.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .. import _core
from ..native import ops as _ops
from ..config import log
from ..activations.runner import TruncatedForward
from ..activations.prompts import encode, format_prompt
from ..activations.layers import find_decoder_layers, unwrap_model
from .report import DEFAULT_ANALYSIS_PATH, analysis_summary, plot_similarities
from .similarity import COMPARATORS, POOLING_MODES, condition_met, condition_similarity

MAX_GRID_THRESHOLDS = 10_000_000
MAX_SCORE_TABLE_BYTES = 2 << 30  # the save_analysis score table [combos, thresholds, 2] float64

__all__ = [
    "find_best_condition_point",
    "condition_similarities",
    "condition_predictions",
    "DEFAULT_ANALYSIS_PATH",
]


# --------------------------------------------------------------------------- #
# Argument checks (all run before the model is touched)
# --------------------------------------------------------------------------- #
def _resolve(model, tokenizer) -> tuple[torch.nn.Module, Any]:
    """(HF model, tokenizer) of a MalleableModel, or of a plain model plus `tokenizer`."""
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("tokenizer is required when model is a plain Hugging Face model (a MalleableModel carries its own)")
    return unwrap_model(model), tok


def _check_strings(strings, name: str) -> list[str]:
    if isinstance(strings, (str, bytes)) or not isinstance(strings, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(strings).__name__}")
    out = list(strings)
    if not out:
        raise ValueError(f"{name} is empty; pass at least one string")
    for k, s in enumerate(out):
        if not isinstance(s, str):
            raise TypeError(f"{name}[{k}] must be a str, got {type(s).__name__}")
    return out


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_layer_range(layer_range, n_layers: int) -> list[int]:
    if layer_range is None:
        layer_range = (1, n_layers)
    try:
        lo, hi = layer_range
    except (TypeError, ValueError):
        raise ValueError(f"layer_range must be a (start, stop) pair of ints, got {layer_range!r}") from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"layer_range must be a (start, stop) pair of ints, got {layer_range!r}")
    lo, hi = int(lo), int(hi)
    if not 0 <= lo < hi <= n_layers:
        raise ValueError(
            f"layer_range={layer_range!r} is out of bounds or empty: need 0 <= start < stop <= {n_layers} "
            f"(half-open, the model has {n_layers} layers; the default is (1, {n_layers}))"
        )
    return list(range(lo, hi))


def _threshold_grid(threshold_range, threshold_step) -> np.ndarray:
    """numpy.arange(lo, hi, step) as float64, after checking it is a sane, finite grid."""
    if isinstance(threshold_step, bool) or not isinstance(threshold_step, (int, float, np.integer, np.floating)):
        raise TypeError(f"threshold_step must be a number, got {threshold_step!r}")
    if not math.isfinite(threshold_step) or threshold_step <= 0:
        raise ValueError(f"threshold_step must be a finite number > 0, got {threshold_step!r}")
    try:
        lo, hi = (float(v) for v in threshold_range)
    except (TypeError, ValueError):
        raise ValueError(f"threshold_range must be a (low, high) pair of numbers, got {threshold_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"threshold_range must be finite with low < high, got {threshold_range!r}")
    if (hi - lo) / threshold_step > MAX_GRID_THRESHOLDS:
        raise ValueError(
            f"threshold_range={threshold_range!r} with threshold_step={threshold_step!r} gives more than "
            f"{MAX_GRID_THRESHOLDS} thresholds; raise threshold_step (or use exact=True, which needs no grid)"
        )
    grid = np.arange(lo, hi, threshold_step, dtype=np.float64)
    if grid.size == 0:  # pragma: no cover - hi > lo and step > 0 always give one value
        raise ValueError(f"threshold_range={threshold_range!r} with threshold_step={threshold_step!r} is empty")
    return grid


def _check_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"condition_threshold_comparison_mode must be one of {POOLING_MODES}, got {mode!r}")
    return mode


def _condition_directions(condition_vector, layer_ids: list[int], hidden_size: int | None) -> dict[int, torch.Tensor]:
    """{layer: float32 direction on the CPU}, checked: present, 1-D, right size, finite, non-zero."""
    directions = getattr(condition_vector, "directions", None)
    if not hasattr(directions, "get"):
        raise TypeError(f"condition_vector must have a .directions mapping (a SteeringVector), got {type(condition_vector).__name__}")
    missing = [i for i in layer_ids if directions.get(i) is None]
    if missing:
        raise ValueError(
            f"condition_vector has no direction for layer(s) {missing} of layer_range "
            f"[{layer_ids[0]}, {layer_ids[-1] + 1}); train it on those layers or narrow layer_range"
        )
    out = {}
    for i in layer_ids:
        d = directions[i]
        t = d.detach().to("cpu", torch.float32) if isinstance(d, torch.Tensor) else torch.as_tensor(np.asarray(d, dtype=np.float32))
        if t.ndim != 1 or (hidden_size is not None and t.shape[0] != hidden_size):
            raise ValueError(f"condition_vector.directions[{i}] has shape {tuple(t.shape)}, expected ({hidden_size},)")
        if not torch.isfinite(t).all():
            raise ValueError(f"condition_vector.directions[{i}] contains NaN or Inf")
        if not (t != 0).any():
            raise ValueError(f"condition_vector.directions[{i}] is all zeros; the condition similarity is undefined")
        out[i] = t
    return out


def _hidden_size(hf_model) -> int | None:
    size = getattr(getattr(hf_model, "config", None), "hidden_size", None)
    return int(size) if isinstance(size, int) else None


# --------------------------------------------------------------------------- #
# Similarities: one batched, truncated forward per batch
# --------------------------------------------------------------------------- #
def _encode_all(tokenizer, texts: list[str], use_chat_template: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids[N, T], lengths[N]) with RIGHT padding, exactly as prompts.encode tokenizes.

    A tokenizer without a pad token gets eos as pad for this call only (padding
    never reaches a pooled vector, so its id does not matter)."""
    added_pad = tokenizer.pad_token is None
    if added_pad:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad batches with; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    try:
        enc = encode(tokenizer, texts, use_chat_template=use_chat_template, padding_side="right")
    finally:
        if added_pad:
            tokenizer.pad_token = None
    lengths = enc["attention_mask"].sum(dim=1)
    return enc["input_ids"], lengths


def _similarity_matrix(hf_model, input_ids: torch.Tensor, lengths: torch.Tensor, directions: dict[int, torch.Tensor],
                       layer_ids: list[int], mode: str, batch_size: int, show_progress: bool) -> torch.Tensor:
    """sims[N, len(layer_ids)] float32: condition similarity of h_in[layer] pooled over real tokens."""
    from tqdm.auto import tqdm

    n = input_ids.shape[0]
    column = {layer: k for k, layer in enumerate(layer_ids)}
    sims = torch.empty((n, len(layer_ids)), dtype=torch.float32)
    order = torch.argsort(lengths, descending=True, stable=True)  # little padding per batch
    on_device: dict[tuple[int, torch.device], torch.Tensor] = {}

    def direction(layer: int, dev: torch.device) -> torch.Tensor:
        key = (layer, dev)
        if key not in on_device:
            on_device[key] = directions[layer].to(dev)
        return on_device[key]

    n_batches = (n + batch_size - 1) // batch_size
    with TruncatedForward(hf_model, layer_ids, read="input") as fwd:
        for b in tqdm(range(n_batches), desc="condition similarities", unit="batch", disable=not show_progress):
            rows = order[b * batch_size:(b + 1) * batch_size]
            lens = lengths[rows]
            width = int(lens.max())
            ids = input_ids[rows, :width]
            mask = (torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)).to(torch.long)
            end = lens.to(torch.long)
            start = end - 1 if mode == "last" else torch.zeros_like(end)
            spans: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
            out = torch.empty((len(rows), len(layer_ids)), dtype=torch.float32)

            def capture(layer: int, hidden: torch.Tensor, spans=spans, start=start, end=end, out=out) -> None:
                dev = hidden.device
                if dev not in spans:
                    spans[dev] = (start.to(dev), end.to(dev))
                pooled = _ops.pool_spans(hidden, *spans[dev])                      # [B, D] float32
                out[:, column[layer]] = condition_similarity(pooled, direction(layer, dev)).cpu()

            fwd.run(ids, mask, capture)
            sims[rows] = out
    return sims


def _prepare(model, strings: list[str], condition_vector, layer_ids_or_range, mode: str, batch_size: int,
             tokenizer, use_chat_template: bool, from_range: bool):
    hf_model, tok = _resolve(model, tokenizer)
    n_layers = len(find_decoder_layers(hf_model))
    if from_range:
        layer_ids = _check_layer_range(layer_ids_or_range, n_layers)
    else:
        from ..activations.layers import resolve_layer_ids

        layer_ids = sorted(resolve_layer_ids(layer_ids_or_range, n_layers, "layer_ids"))
        if not layer_ids:
            raise ValueError("layer_ids is empty")
    _check_mode(mode)
    batch_size = _check_int(batch_size, "batch_size", 1)
    directions = _condition_directions(condition_vector, layer_ids, _hidden_size(hf_model))
    texts = [format_prompt(tok, s, use_chat_template) for s in strings]
    input_ids, lengths = _encode_all(tok, texts, use_chat_template)
    empty = torch.nonzero(lengths == 0).flatten().tolist()
    if empty:
        raise ValueError(f"string(s) at index {empty} tokenize to no tokens; remove them or use the chat template")
    return hf_model, tok, layer_ids, directions, input_ids, lengths, batch_size


def condition_similarities(model, strings: Sequence[str], condition_vector, layer_ids: Sequence[int],
                           condition_threshold_comparison_mode: str = "mean", batch_size: int = 32, tokenizer=None,
                           use_chat_template: bool = True, show_progress: bool = False) -> np.ndarray:
    """sims[len(strings), len(layer_ids)] float32 (columns in ascending layer order).

    The condition similarity the steering runtime computes for each string as a
    prompt, at each of `layer_ids`, without steering or generating anything.
    Unlike find_best_condition_point this does not reset a MalleableModel's
    steering: call it on an unsteered model."""
    strings = _check_strings(strings, "strings")
    hf_model, _tok, ids, directions, input_ids, lengths, batch_size = _prepare(
        model, strings, condition_vector, layer_ids, condition_threshold_comparison_mode, batch_size, tokenizer,
        use_chat_template, from_range=False)
    return _similarity_matrix(hf_model, input_ids, lengths, directions, ids, condition_threshold_comparison_mode,
                              batch_size, show_progress).numpy()


def condition_predictions(model, strings: Sequence[str], condition_vector, layer_ids: Sequence[int], threshold: float,
                          direction: str, mode: str = "mean", batch_size: int = 32, tokenizer=None,
                          use_chat_template: bool = True) -> np.ndarray:
    """bool[len(strings)]: would the condition (layers, threshold, direction) fire on each string.

    The same rule find_best_condition_point scores, so a point found on training
    strings can be evaluated on held-out ones."""
    if direction not in COMPARATORS:
        raise ValueError(f"direction must be one of {COMPARATORS}, got {direction!r}")
    sims = condition_similarities(model, strings, condition_vector, layer_ids, mode, batch_size, tokenizer,
                                  use_chat_template)
    return condition_met(sims, threshold, direction).any(axis=1)


# --------------------------------------------------------------------------- #
# The search
# --------------------------------------------------------------------------- #
def find_best_condition_point(model, positive_strings: Sequence[str], negative_strings: Sequence[str],
                              condition_vector, layer_range: tuple[int, int] | None = None,
                              max_layers_to_combine: int = 1, threshold_range: tuple[float, float] = (0.0, 1.0),
                              threshold_step: float = 0.01, save_analysis: bool = False, file_path: str | None = None,
                              condition_threshold_comparison_mode: str = "mean", exact: bool = False,
                              batch_size: int = 32, plot: bool | str = False, tokenizer=None,
                              use_chat_template: bool = True, show_progress: bool | None = None,
                              ) -> tuple[list[int], float, str, float]:
    """Best (layers, threshold, direction, f1) for a condition vector (SPEC 4).

    model: a MalleableModel (its tokenizer is used; its steering is reset first)
        or a plain HF causal LM together with `tokenizer=`.
    layer_range: half-open (start, stop), default (1, L). max_layers_to_combine is
        capped at the number of layers in range (as the reference does).
    exact: search every real threshold (threshold_range / threshold_step are then
        checked but not used; the threshold returned is a midpoint between two
        observed similarities, or one unit beyond the extremes).
    save_analysis: write a JSON with the best point, the non-zero F1 of every
        combination keyed "<threshold>_<direction>" (exact mode: each
        combination's best threshold per direction) and the per-layer similarities
        of positives and negatives, to `file_path` (default DEFAULT_ANALYSIS_PATH).
    plot: True (next to file_path, .png) or a path: histograms of positive vs
        negative similarities per layer with the best threshold marked.
    show_progress: progress bar over forward batches; default: when the
        MalleableModel class logs verbosely (GlobalConfig).

    Every argument is checked before the model is touched (ValueError/TypeError
    naming the argument)."""
    from ..config import GlobalConfig

    positives = _check_strings(positive_strings, "positive_strings")
    negatives = _check_strings(negative_strings, "negative_strings")
    hf_model = unwrap_model(model)
    n_model_layers = len(find_decoder_layers(hf_model))
    layer_ids = _check_layer_range(layer_range, n_model_layers)
    max_combine = min(_check_int(max_layers_to_combine, "max_layers_to_combine", 1), len(layer_ids))
    n_combos = _core.condsearch_count(len(layer_ids), max_combine)  # ValueError when too many
    grid = _threshold_grid(threshold_range, threshold_step)
    mode = _check_mode(condition_threshold_comparison_mode)
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool, got {exact!r}")
    if file_path is not None and not isinstance(file_path, (str, Path)):
        raise TypeError(f"file_path must be a str or Path, got {type(file_path).__name__}")
    if not isinstance(plot, (bool, str, Path)):
        raise TypeError(f"plot must be a bool or a path, got {type(plot).__name__}")
    if save_analysis and not exact and n_combos * grid.size * 16 > MAX_SCORE_TABLE_BYTES:
        raise ValueError(
            f"save_analysis would record {n_combos} combinations x {grid.size} thresholds x 2 directions; "
            "raise threshold_step, lower max_layers_to_combine or narrow layer_range"
        )
    strings = positives + negatives
    hf_model, _tok, layer_ids, directions, input_ids, lengths, batch_size = _prepare(
        model, strings, condition_vector, (layer_ids[0], layer_ids[-1] + 1), mode, batch_size, tokenizer,
        use_chat_template, from_range=True)
    if show_progress is None:
        show_progress = GlobalConfig.is_verbose("MalleableModel")

    # -- state changes start here ------------------------------------------ #
    reset = getattr(model, "reset_leash_to_default", None)
    if callable(reset):
        reset()
    log("MalleableModel", f"Finding the best condition point: {len(positives)} positive + {len(negatives)} negative "
        f"strings, layers {layer_ids[0]}..{layer_ids[-1]}, up to {max_combine} combined ({n_combos} combinations), "
        + ("exact thresholds" if exact else f"{grid.size} thresholds"))
    sims = _similarity_matrix(hf_model, input_ids, lengths, directions, layer_ids, mode, batch_size, show_progress)
    sims64 = sims.numpy().astype(np.float64)
    labels = np.zeros(len(strings), dtype=bool)
    labels[:len(positives)] = True

    if exact:
        res = _core.condsearch_exact(sims64, labels, max_combine, return_per_combo=bool(save_analysis))
    else:
        res = _core.condsearch_grid(sims64, labels, max_combine, grid, return_scores=bool(save_analysis))
    best_layers = [layer_ids[c] for c in res["columns"]]
    best_threshold = float(res["threshold"])
    best_direction = res["direction"]
    best_f1 = float(res["f1"])
    if best_f1 == 0.0:
        warnings.warn(
            "find_best_condition_point: no candidate reached an F1 above 0 (every threshold of the grid predicts no "
            "positive string correctly); widen threshold_range or use exact=True",
            RuntimeWarning, stacklevel=2)
    log("MalleableModel", f"Best condition point: layers {best_layers}, threshold {best_threshold:.4f}, "
        f"direction '{best_direction}', F1 {best_f1:.4f}")

    if save_analysis:
        path = Path(file_path) if file_path is not None else Path(DEFAULT_ANALYSIS_PATH)
        summary = analysis_summary(sims, labels, layer_ids, max_combine, grid, res, exact, best_layers, best_threshold,
                            best_direction, best_f1, mode)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1))
        log("MalleableModel", f"Condition point analysis saved to {path}")
    if plot:
        png = Path(plot) if isinstance(plot, (str, Path)) and not isinstance(plot, bool) else \
            Path(file_path if file_path is not None else DEFAULT_ANALYSIS_PATH).with_suffix(".png")
        plot_similarities(sims.numpy(), labels, layer_ids, best_layers, best_threshold, best_direction, png)
        log("MalleableModel", f"Similarity plot saved to {png}")
    return best_layers, best_threshold, best_direction, best_f1
