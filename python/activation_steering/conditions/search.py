"""find_best_condition_point: where, and at which threshold, a condition fires (CAST).

The job has two halves with very different costs, and each is done once:

1. Similarities. Every string is formatted exactly as `respond` formats a prompt
   (`activations.prompts.format_prompt`) and tokenized once; batches of similar
   length are RIGHT-padded (`activations.tokens.pad_right`) and go through ONE
   `activations.runner.TruncatedForward` that reads the decoder layer input of
   every layer in range and stops after the last one (no later layers, no LM
   head, no `generate`). Each string's real tokens are pooled ("mean") or its last
   real token taken ("last") and compared with the condition direction by the
   `condition_similarity` op: the same compiled kernel steer_layer evaluates
   conditions with at run time, so the threshold found here is applied by the
   same arithmetic. Right padding keeps every real token where it is when the
   string runs alone, so batching changes nothing beyond float rounding.
   Result: sims[n_strings, n_layers], float32.

2. Search, in the C core (`_core.condsearch_grid` / `_core.condsearch_exact`), in
   the documented candidate order (docs/semantics.md, "Condition search"), for
   the OR rule (any layer of a combination meets the condition), the AND rule
   (every layer meets it), or both (two core calls; OR wins ties). The result is
   a `ConditionPoint`: the documented 4-tuple plus the layer combination and the
   steer keyword arguments that install it.

The model is never steered by the search: a MalleableModel's steering is removed
first (`reset_leash_to_default`), so none can leak into the similarities and none
is left installed afterwards. Every argument is checked before the model runs.

Not here: the analysis JSON and plot (report.py), F1 and FPR-capped thresholds
(thresholds.py), the comparator definitions (similarity.py).
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
from ..activations.layers import find_decoder_layers, hidden_size, resolve_layer_ids, unwrap_model
from ..activations.prompts import format_prompt
from ..activations.runner import TruncatedForward
from ..activations.tokens import Tokenized, length_sorted_batches, pad_right, pad_token_id, tokenize
from ..activations.user_text import USER_TEXT_TOKEN, user_text_locator
from .._args import check_writable
from .report import DEFAULT_ANALYSIS_PATH, analysis_summary, plot_similarities
from .similarity import COMPARATORS, POOLING_CODES, POOLING_MODES, condition_met

MAX_GRID_THRESHOLDS = 10_000_000
MAX_SCORE_TABLE_BYTES = 2 << 30  # the save_analysis score table [combos, thresholds, 2] float64

LAYER_COMBINATIONS = ("or", "and")            # what steer / the core accept
SEARCH_LAYER_COMBINATIONS = ("or", "and", "both")

__all__ = [
    "ConditionPoint",
    "LAYER_COMBINATIONS",
    "find_best_condition_point",
    "condition_similarities",
    "condition_predictions",
    "DEFAULT_ANALYSIS_PATH",
]


# --------------------------------------------------------------------------- #
# The result
# --------------------------------------------------------------------------- #
class ConditionPoint(tuple):
    """The best condition point: a 4-tuple `(layers, threshold, direction, f1)` that also
    says how its layers combine and how to install it.

    It unpacks, indexes and compares (`==`) exactly like the plain tuple the search
    has always returned; the extra attributes are not part of the tuple.

    Attributes:
        layers (list[int]): the condition layer ids, ascending.
        threshold (float): the similarity threshold shared by every layer.
        direction (str): the comparator shared by every layer, "larger" (met iff
            sim < threshold) or "smaller" (met iff sim > threshold).
        f1 (float): F1 on the search strings, in [0, 1].
        layer_combination (str): "or" (met when ANY layer meets it) or "and" (met
            only when EVERY layer meets it). Equal for one layer.
        condition_threshold_comparison_mode (str): the pooling searched with.
        condition_vector: the condition SteeringVector searched with (or None).
    """

    layer_combination: str
    condition_threshold_comparison_mode: str
    condition_vector: Any

    def __new__(cls, layers, threshold: float, direction: str, f1: float, layer_combination: str = "or",
                condition_threshold_comparison_mode: str = "mean", condition_vector=None) -> ConditionPoint:
        self = super().__new__(cls, (list(layers), float(threshold), direction, float(f1)))
        self.layer_combination = layer_combination
        self.condition_threshold_comparison_mode = condition_threshold_comparison_mode
        self.condition_vector = condition_vector
        return self

    layers = property(lambda self: self[0], doc="the condition layer ids")
    threshold = property(lambda self: self[1], doc="the threshold")
    direction = property(lambda self: self[2], doc="the comparator, 'larger' or 'smaller'")
    f1 = property(lambda self: self[3], doc="F1 on the search strings")

    def __reduce__(self):
        return (type(self), (self[0], self[1], self[2], self[3], self.layer_combination,
                             self.condition_threshold_comparison_mode, self.condition_vector))

    def __repr__(self) -> str:
        return (f"ConditionPoint(layers={self[0]!r}, threshold={self[1]!r}, direction={self[2]!r}, f1={self[3]!r}, "
                f"layer_combination={self.layer_combination!r})")

    def steer_kwargs(self) -> dict[str, Any]:
        """The condition keyword arguments of `MalleableModel.steer` that install this point:

            mm.steer(behavior_vector=b, behavior_layer_ids=[...], behavior_vector_strength=s,
                     **point.steer_kwargs())

        Returns:
            dict with condition_vector (when the search had one), condition_layer_ids,
            condition_vector_threshold, condition_comparator_threshold_is,
            condition_threshold_comparison_mode and condition_layer_combination.
        """
        out: dict[str, Any] = {}
        if self.condition_vector is not None:
            out["condition_vector"] = self.condition_vector
        out.update(condition_layer_ids=list(self[0]), condition_vector_threshold=self[1],
                   condition_comparator_threshold_is=self[2],
                   condition_threshold_comparison_mode=self.condition_threshold_comparison_mode,
                   condition_layer_combination=self.layer_combination)
        return out


def _better(a: dict, b: dict, n_pos: int) -> bool:
    """Core result a has a strictly higher F1 than b, compared exactly
    (F1 = 2tp / (tp + fp + n_pos), by integer cross-multiplication, as the core does)."""
    def frac(r):
        tp, fp = int(r["tp"]), int(r["fp"])
        return (tp, tp + fp + n_pos) if tp > 0 else (0, 1)
    (an, ad), (bn, bd) = frac(a), frac(b)
    return an * bd > bn * ad


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


def _check_layer_combination(value, name: str = "layer_combination",
                             choices: tuple[str, ...] = SEARCH_LAYER_COMBINATIONS) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)} ('or': a prompt is positive "
                         f"when ANY layer of the combination meets the condition; 'and': when EVERY layer does), "
                         f"got {value!r}")
    return value


def _check_mode(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"condition_threshold_comparison_mode must be one of {POOLING_MODES}, got {mode!r}")
    return mode


def _condition_directions(condition_vector, layer_ids: list[int], width: int) -> dict[int, torch.Tensor]:
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
        if t.ndim != 1 or t.shape[0] != width:
            raise ValueError(f"condition_vector.directions[{i}] has shape {tuple(t.shape)}, expected ({width},)")
        if not torch.isfinite(t).all():
            raise ValueError(f"condition_vector.directions[{i}] contains NaN or Inf")
        if not (t != 0).any():
            raise ValueError(f"condition_vector.directions[{i}] is all zeros; the condition similarity is undefined")
        out[i] = t
    return out


# --------------------------------------------------------------------------- #
# Similarities: one truncated forward per batch, one runner for all batches
# --------------------------------------------------------------------------- #
def _similarity_matrix(hf_model, tok: Tokenized, pad_id: int, directions: dict[int, torch.Tensor],
                       layer_ids: list[int], mode: str, batch_size: int, show_progress: bool) -> torch.Tensor:
    """sims[N, len(layer_ids)] float32: condition similarity of each string's decoder
    layer input at each layer, pooled over its real tokens ("mean"), its last one ("last")
    or its user's message ("user_text": the spans `tok.user_span`, set by _prepare)."""
    from tqdm.auto import tqdm

    column = {layer: k for k, layer in enumerate(layer_ids)}
    sims = torch.empty((len(tok.input_ids), len(layer_ids)), dtype=torch.float32)
    on_device: dict[tuple[int, torch.device], torch.Tensor] = {}

    def direction(layer: int, dev: torch.device) -> torch.Tensor:
        key = (layer, dev)
        if key not in on_device:
            on_device[key] = directions[layer].to(dev).reshape(1, -1)            # [1, D] float32
        return on_device[key]

    codes = torch.tensor([[1, 0, POOLING_CODES[mode]]], dtype=torch.long)    # the op's (bit, comparator, pooling)

    batches = length_sorted_batches(tok.lengths, batch_size)  # little padding per batch
    with TruncatedForward(hf_model, layer_ids, read="input") as fwd:
        for rows in tqdm(batches, desc="condition similarities", unit="batch", disable=not show_progress):
            ids, mask = pad_right(tok.input_ids, rows, pad_id)
            op_mask = mask
            if mode == "user_text":  # the op pools the positions marked USER_TEXT_TOKEN
                op_mask = mask.clone()
                for b, r in enumerate(rows):
                    op_mask[b, int(tok.user_span[r, 0]):int(tok.user_span[r, 1])] = USER_TEXT_TOKEN
            masks: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
            out = torch.empty((len(rows), len(layer_ids)), dtype=torch.float32)

            def read(layer: int, hidden: torch.Tensor, masks=masks, op_mask=op_mask, out=out) -> None:
                dev = hidden.device
                if dev not in masks:
                    masks[dev] = (op_mask.to(dev), codes.to(dev))
                # the runtime's own kernel (steer_layer evaluates conditions with it)
                sims = _ops.condition_similarity(hidden, masks[dev][0], direction(layer, dev), masks[dev][1])
                out[:, column[layer]] = sims[:, 0].cpu()

            fwd.run(ids, mask, read)
            sims[torch.from_numpy(rows)] = out
    return sims


def _prepare(model, strings: list[str], condition_vector, layer_ids_or_range, mode: str, batch_size: int,
             tokenizer, use_chat_template: bool, from_range: bool, name_of=lambda i: f"strings[{i}]"):
    """`name_of(i)`: how an error names string i, as the caller's argument and index."""
    hf_model, tokenizer = _resolve(model, tokenizer)
    n_layers = len(find_decoder_layers(hf_model))
    if from_range:
        layer_ids = _check_layer_range(layer_ids_or_range, n_layers)
    else:
        layer_ids = sorted(resolve_layer_ids(layer_ids_or_range, n_layers, "layer_ids"))
        if not layer_ids:
            raise ValueError("layer_ids is empty")
    _check_mode(mode)
    batch_size = _check_int(batch_size, "batch_size", 1)
    directions = _condition_directions(condition_vector, layer_ids, hidden_size(hf_model))
    # formatted exactly as respond formats a prompt, tokenized as respond tokenizes it
    texts = [format_prompt(tokenizer, s, use_chat_template) for s in strings]
    tok = tokenize(tokenizer, texts, add_special_tokens=not use_chat_template)
    empty = np.flatnonzero(tok.lengths == 0).tolist()
    if empty:
        raise ValueError(f"{', '.join(name_of(i) for i in empty)} tokenize(s) to no tokens; remove them or use the "
                         "chat template")
    if mode == "user_text":  # the user's message in each string's ids, located as the steering runtime locates it
        loc = user_text_locator(tokenizer)
        spans = [loc.span(row, name_of(i)) for i, row in enumerate(tok.input_ids)]
        starts, ends = [a for a, _ in spans], [e for _, e in spans]
        tok.user_span = np.stack([np.asarray(starts, np.int64), np.asarray(ends, np.int64)], axis=1)
    return hf_model, layer_ids, directions, tok, pad_token_id(tokenizer), batch_size


def condition_similarities(model, strings: Sequence[str], condition_vector, layer_ids: Sequence[int],
                           condition_threshold_comparison_mode: str = "mean", batch_size: int = 32, tokenizer=None,
                           use_chat_template: bool = True, show_progress: bool = False) -> np.ndarray:
    """sims[len(strings), len(layer_ids)] float32 (columns in ascending layer order).

    The condition similarity the steering runtime computes for each string as a
    prompt, at each of `layer_ids`, without steering or generating anything.
    Unlike find_best_condition_point this does not reset a MalleableModel's
    steering: call it on an unsteered model."""
    strings = _check_strings(strings, "strings")
    hf_model, ids, directions, tok, pad_id, batch_size = _prepare(
        model, strings, condition_vector, layer_ids, condition_threshold_comparison_mode, batch_size, tokenizer,
        use_chat_template, from_range=False)
    return _similarity_matrix(hf_model, tok, pad_id, directions, ids, condition_threshold_comparison_mode,
                              batch_size, show_progress).numpy()


def condition_predictions(model, strings: Sequence[str], condition_vector, layer_ids: Sequence[int], threshold: float,
                          comparator: str, mode: str = "mean", batch_size: int = 32, tokenizer=None,
                          use_chat_template: bool = True, layer_combination: str = "or") -> np.ndarray:
    """bool[len(strings)]: would the condition (layers, threshold, comparator) fire on each string.

    The same rule find_best_condition_point scores, so a point found on training
    strings can be evaluated on held-out ones. layer_combination: "or" (any of
    `layer_ids` meets the condition) or "and" (every one does)."""
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator must be one of {COMPARATORS}, got {comparator!r}")
    _check_layer_combination(layer_combination, choices=LAYER_COMBINATIONS)
    sims = condition_similarities(model, strings, condition_vector, layer_ids, mode, batch_size, tokenizer,
                                  use_chat_template)
    met = condition_met(sims, threshold, comparator)
    return met.all(axis=1) if layer_combination == "and" else met.any(axis=1)


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
                              layer_combination: str = "or") -> ConditionPoint:
    """Best (layers, threshold, direction, f1) for a condition vector (docs/semantics.md).

    model: a MalleableModel (its tokenizer is used; its steering is reset first)
        or a plain HF causal LM together with `tokenizer=`.
    layer_range: half-open (start, stop), default (1, L). max_layers_to_combine is
        capped at the number of layers in range (as the reference does).
    exact: search every real threshold (threshold_range / threshold_step are then
        checked but not used; the threshold returned is a midpoint between two
        observed similarities, or one unit beyond the extremes).
    save_analysis: write a JSON with the best point, the non-zero F1 of every
        combination keyed "<threshold>_<direction>" (exact mode: each
        combination's best threshold per comparator) and the per-layer similarities
        of positives and negatives, to `file_path` (default DEFAULT_ANALYSIS_PATH).
    plot: True (next to file_path, .png) or a path: histograms of positive vs
        negative similarities per layer with the best threshold marked.
    show_progress: progress bar over forward batches; default: when the
        MalleableModel class logs verbosely (GlobalConfig).
    layer_combination: how the layers of a combination decide a string: "or"
        (default, the seed's rule: positive when ANY layer meets the condition),
        "and" (positive only when EVERY layer meets it) or "both" (search both;
        at equal F1 the OR point wins, so "both" returns the AND point only when
        its F1 is strictly higher). In both rules one threshold and one
        comparator are shared by all layers of a combination. Combinations of
        one layer are the same under both rules.

    Returns a ConditionPoint: unpacks as (layers, threshold, direction, f1) and
    equals that tuple; `.layer_combination` says "or" or "and", and
    `.steer_kwargs()` gives the condition_* arguments of `steer` that install it
    (docs/semantics.md shows the multisteer form of an AND point too).

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
    combination = _check_layer_combination(layer_combination)
    searched = LAYER_COMBINATIONS if combination == "both" else (combination,)
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool, got {exact!r}")
    if file_path is not None and not isinstance(file_path, (str, Path)):
        raise TypeError(f"file_path must be a str or Path, got {type(file_path).__name__}")
    if not isinstance(plot, (bool, str, Path)):
        raise TypeError(f"plot must be a bool or a path, got {type(plot).__name__}")
    if save_analysis:  # fail before the forwards and the search, not after them
        check_writable(file_path if file_path is not None else DEFAULT_ANALYSIS_PATH, "file_path")
    if plot:
        check_writable(plot if not isinstance(plot, bool) else
                       Path(file_path if file_path is not None else DEFAULT_ANALYSIS_PATH).with_suffix(".png"), "plot")
    if save_analysis and not exact and len(searched) * n_combos * grid.size * 16 > MAX_SCORE_TABLE_BYTES:
        raise ValueError(
            f"save_analysis would record {n_combos} combinations x {grid.size} thresholds x 2 comparators; "
            "raise threshold_step, lower max_layers_to_combine or narrow layer_range"
        )
    strings = positives + negatives
    n_pos = len(positives)
    hf_model, layer_ids, directions, tok, pad_id, batch_size = _prepare(
        model, strings, condition_vector, (layer_ids[0], layer_ids[-1] + 1), mode, batch_size, tokenizer,
        use_chat_template, from_range=True,
        name_of=lambda i: f"positive_strings[{i}]" if i < n_pos else f"negative_strings[{i - n_pos}]")
    if show_progress is None:
        show_progress = GlobalConfig.is_verbose("MalleableModel")

    # -- state changes start here ------------------------------------------ #
    reset = getattr(model, "reset_leash_to_default", None)
    if callable(reset):
        reset()
    log("MalleableModel", f"Finding the best condition point: {len(positives)} positive + {len(negatives)} negative "
        f"strings, layers {layer_ids[0]}..{layer_ids[-1]}, up to {max_combine} combined ({n_combos} combinations, "
        f"{' and '.join(c.upper() for c in searched)}), "
        + ("exact thresholds" if exact else f"{grid.size} thresholds"))
    sims = _similarity_matrix(hf_model, tok, pad_id, directions, layer_ids, mode, batch_size, show_progress)
    sims64 = sims.numpy().astype(np.float64)
    labels = np.zeros(len(strings), dtype=bool)
    labels[:len(positives)] = True

    results: dict[str, dict] = {}
    for comb in searched:  # OR first: at equal F1 it wins
        if exact:
            results[comb] = _core.condsearch_exact(sims64, labels, max_combine, return_per_combo=bool(save_analysis),
                                                   layer_combination=comb)
        else:
            results[comb] = _core.condsearch_grid(sims64, labels, max_combine, grid, return_scores=bool(save_analysis),
                                                  layer_combination=comb)
    best_combination = searched[0]
    for comb in searched[1:]:
        if _better(results[comb], results[best_combination], len(positives)):
            best_combination = comb
    res = results[best_combination]
    best_layers = [layer_ids[c] for c in res["columns"]]
    best_threshold = float(res["threshold"])
    best_comparator = res["direction"]
    best_f1 = float(res["f1"])
    if best_f1 == 0.0:
        warnings.warn(
            "find_best_condition_point: no candidate reached an F1 above 0 (every threshold of the grid predicts no "
            "positive string correctly); widen threshold_range or use exact=True",
            RuntimeWarning, stacklevel=2)
    log("MalleableModel", f"Best condition point: layers {best_layers} ({best_combination.upper()}), threshold "
        f"{best_threshold:.4f}, comparator '{best_comparator}', F1 {best_f1:.4f}")

    if save_analysis:
        path = Path(file_path) if file_path is not None else Path(DEFAULT_ANALYSIS_PATH)
        summary = analysis_summary(sims, labels, layer_ids, max_combine, grid, results, exact, best_layers,
                                   best_threshold, best_comparator, best_f1, mode, best_combination, combination)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1))
        log("MalleableModel", f"Condition point analysis saved to {path}")
    if plot:
        png = Path(plot) if isinstance(plot, (str, Path)) and not isinstance(plot, bool) else \
            Path(file_path if file_path is not None else DEFAULT_ANALYSIS_PATH).with_suffix(".png")
        plot_similarities(sims.numpy(), labels, layer_ids, best_layers, best_threshold, best_comparator, png,
                          layer_combination=best_combination)
        log("MalleableModel", f"Similarity plot saved to {png}")
    return ConditionPoint(best_layers, best_threshold, best_comparator, best_f1, best_combination, mode,
                          condition_vector)
