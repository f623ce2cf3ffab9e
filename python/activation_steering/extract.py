"""SteeringVector: extraction of per-layer steering directions (SPEC 3).

    from activation_steering import SteeringDataset, SteeringVector
    vec = SteeringVector.train(model, tokenizer, SteeringDataset(tokenizer, pairs))
    vec.directions[12]          # float32 [D], unit norm
    vec.save("refusal")         # -> refusal.svec (JSON)

`train` is one straight line: validate every argument -> tokenize each string
once -> forwards over length-sorted, right-padded batches, stopped after the
deepest requested layer, with hooks that pool each string's real tokens into
one [layers, N, D] float32 buffer; text that many strings share (the chat
template's system turn, an example repeated once per suffix) runs once through
a KV cache (activations/pooled.py) -> exact PCA of all layers in one C call with the GIL
released (csrc/core/pca.c) -> SteeringVector.

Extraction runs the model as it is: if a MalleableModel currently has steering
installed, the activations read are the steered ones (reset it first to extract
from the plain model).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import GlobalConfig, log
from .activations.layers import find_decoder_layers, resolve_layer_ids, unwrap_model

if TYPE_CHECKING:
    from .steering_dataset import SteeringDataset

METHODS = ("pca_pairwise", "pca_center", "pca_diff")


def _check_pairs(steering_dataset) -> list:
    pairs = getattr(steering_dataset, "formatted_dataset", None)
    if pairs is None:
        raise TypeError(f"steering_dataset must be a SteeringDataset (with .formatted_dataset), "
                        f"got {type(steering_dataset).__name__}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("steering_dataset is empty: it has no formatted pairs to train on")
    for i, p in enumerate(pairs):
        if not isinstance(getattr(p, "positive", None), str) or not isinstance(getattr(p, "negative", None), str):
            raise TypeError(f"steering_dataset.formatted_dataset[{i}] must have str .positive and .negative")
    return pairs


@dataclasses.dataclass(eq=False)
class SteeringVector:
    """Per-layer unit directions (float32 [D]) and PC1 explained-variance ratios.

    Attributes:
        model_type: the HF `config.model_type` of the model it was trained on.
        directions: {layer id: np.ndarray float32 [D]}.
        explained_variances: {layer id: float}.
    """

    model_type: str
    directions: dict[int, np.ndarray]
    explained_variances: dict[int, float]

    @classmethod
    def train(cls, model: Any, tokenizer: Any, steering_dataset: SteeringDataset, method: str = "pca_pairwise",
              accumulate_last_x_tokens: int | str = 1, hidden_layer_ids: Sequence[int] | None = None,
              batch_size: int = 32, save_analysis: bool = False,
              output_dir: str | os.PathLike = "activation_steering_figures",
              ) -> "SteeringVector":
        """Extract a steering vector from `steering_dataset` (RepE-style PCA per layer).

        Reads the residual stream at each decoder layer's input, pools every string over
        the chosen tokens (float32 `[n_strings, D]` per layer), and keeps the first
        principal component of the method's rows, signed so that positives project
        higher than negatives.

        Args:
            model: a Hugging Face causal LM or a MalleableModel wrapping one.
            tokenizer: its tokenizer (fast tokenizers map suffixes through offsets).
            steering_dataset: a SteeringDataset; rows are pos, neg, pos, neg, ...
            method: "pca_pairwise" (default), "pca_center" or "pca_diff".
            accumulate_last_x_tokens: int k (mean of the last k real tokens), "all",
                or "suffix-only" (each string's own suffix tokens).
            hidden_layer_ids: layers to extract (default all; negatives count from the end).
            batch_size: strings per forward (results do not depend on it).
            save_analysis: write PCA scatter plots and a variance-by-layer plot.
            output_dir: where the figures go.

        Returns:
            A SteeringVector: `directions[layer]` float32 `[D]` unit vectors and
            `explained_variances[layer]` the PC1 explained-variance ratio in [0, 1].

        Raises:
            ValueError: unknown `method`, bad `accumulate_last_x_tokens` or `batch_size`,
                empty dataset, layer ids out of range (checked before the model runs).
            TypeError: `tokenizer` not callable, `steering_dataset` not a SteeringDataset.
        """
        from . import _core
        from .activations.pooled import capture_pooled
        from .activations.tokens import (check_accumulate, pooling_spans, tokenize,
                              warn_suffix_fallback)

        # ---- every argument is checked before the model runs ----
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        mode = check_accumulate(accumulate_last_x_tokens)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(save_analysis, (bool, np.bool_)):
            raise TypeError(f"save_analysis must be a bool, got {type(save_analysis).__name__}")
        if save_analysis and not isinstance(output_dir, (str, os.PathLike)):
            raise TypeError(f"output_dir must be a path, got {type(output_dir).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        pairs = _check_pairs(steering_dataset)
        if method == "pca_diff" and len(pairs) < 2:
            raise ValueError("method='pca_diff' needs at least 2 pairs (PCA of a single difference vector is "
                             "undefined); add pairs or use 'pca_pairwise'")
        inner = unwrap_model(model)
        n_layers = len(find_decoder_layers(inner))
        if hidden_layer_ids is None:
            layer_ids = list(range(n_layers))
        else:
            layer_ids = resolve_layer_ids(hidden_layer_ids, n_layers, "hidden_layer_ids")
            if not layer_ids:
                raise ValueError("hidden_layer_ids is empty: pass None for all layers or at least one layer id")

        # ---- tokenize once; pooling spans per string ----
        texts = [s for p in pairs for s in (p.positive, p.negative)]
        char_starts = [c for p in pairs for c in (getattr(p, "positive_suffix_start", None),
                                                  getattr(p, "negative_suffix_start", None))]
        add_special = not getattr(steering_dataset, "use_chat_template", True)
        tok = tokenize(tokenizer, texts, add_special, char_starts if mode == "suffix-only" else None)
        empty = np.flatnonzero(tok.lengths == 0)
        if empty.size:
            i = int(empty[0])
            raise ValueError(f"formatted_dataset[{i // 2}].{'positive' if i % 2 == 0 else 'negative'} tokenizes "
                             "to no tokens; every string needs at least one token")
        start, end, n_fallback = pooling_spans(tok, mode)
        if mode == "suffix-only":
            warn_suffix_fallback(n_fallback, len(texts))

        log("SteeringVector", f"Training: {len(pairs)} pairs, {len(layer_ids)} layers, method={method}, "
                              f"accumulate_last_x_tokens={mode!r}")
        pad_id = next((t for t in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None))
                       if isinstance(t, int)), 0)
        pooled = capture_pooled(model, tok, start, end, layer_ids, int(batch_size), pad_id=pad_id,
                                progress=GlobalConfig.is_verbose("SteeringVector"))

        # ---- exact PCA of every layer in one C call (GIL released) ----
        k = 2 if save_analysis else 1
        try:
            comps, explained, proj = _core.pca_fit(pooled, method, k, bool(save_analysis))
        except ValueError as exc:
            if len(exc.args) == 2 and isinstance(exc.args[1], int) and 0 <= exc.args[1] < len(layer_ids):
                detail = str(exc.args[0]).split(": ", 2)[-1]
                raise ValueError(f"SteeringVector.train: layer {layer_ids[exc.args[1]]}: {detail}") from None
            raise
        directions = {lid: comps[j, 0].copy() for j, lid in enumerate(layer_ids)}
        variances = {lid: float(explained[j, 0]) for j, lid in enumerate(layer_ids)}
        if save_analysis:
            from .vectors.plots import save_analysis_figures

            paths = save_analysis_figures(proj, explained, layer_ids, output_dir, method)
            log("SteeringVector", f"Saved {len(paths)} analysis figures to {output_dir}")
        model_type = str(getattr(getattr(inner, "config", None), "model_type", "") or type(inner).__name__)
        return cls(model_type=model_type, directions=directions, explained_variances=variances)

    def save(self, file_path: str | os.PathLike) -> str:
        """Write `file_path` (+ ".svec" when missing) as SPEC JSON; returns the path written."""
        from .vectors.svec import save_svec

        path = save_svec(file_path, self.model_type, self.directions, self.explained_variances)
        log("SteeringVector", f"Saved SteeringVector to {path}")
        return path

    @classmethod
    def load(cls, file_path: str | os.PathLike) -> "SteeringVector":
        """Read a .svec file (".svec" appended when missing); never executes code."""
        from .vectors.svec import load_svec

        model_type, directions, variances = load_svec(file_path)
        log("SteeringVector", f"Loaded directions for layers {list(directions)}")
        return cls(model_type=model_type, directions=directions, explained_variances=variances)

    def __eq__(self, other) -> bool:
        """Exact equality: same model_type, layers, direction bits and variances."""
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return (self.model_type == other.model_type
                and list(self.directions) == list(other.directions)
                and all(np.array_equal(np.asarray(self.directions[k]), np.asarray(other.directions[k]))
                        for k in self.directions)
                and dict(self.explained_variances) == dict(other.explained_variances))

    def __repr__(self) -> str:
        """Compact: model type, layer ids as ranges, hidden size, e.g.
        ``SteeringVector(model_type='llama', layers=0-29 (30), hidden_size=576)``."""
        layers = sorted(self.directions)
        dim = int(np.asarray(self.directions[layers[0]]).shape[-1]) if layers else 0
        return f"SteeringVector(model_type={self.model_type!r}, layers={_layer_ranges(layers)}, hidden_size={dim})"

    def _repr_html_(self) -> str:
        """Jupyter view: model type, layers, hidden size, and PC1 explained variance per layer
        as a small table with a bar per layer."""
        import html

        layers = sorted(self.directions)
        dim = int(np.asarray(self.directions[layers[0]]).shape[-1]) if layers else 0
        rows = []
        for layer in layers:
            ev = self.explained_variances.get(layer)
            value = "" if ev is None else f"{float(ev):.3f}"
            width = 0 if ev is None else max(0.0, min(1.0, float(ev))) * 100
            bar = (f'<div style="background:#4a7ebb;height:0.8em;width:{width:.1f}%;min-width:1px"></div>'
                   if ev is not None else "")
            rows.append(f"<tr><td style=\"text-align:right\">{layer}</td><td style=\"text-align:right\">{value}</td>"
                        f"<td style=\"width:8em\">{bar}</td></tr>")
        return (f"<div><b>SteeringVector</b> &middot; model type <code>{html.escape(self.model_type)}</code> "
                f"&middot; {len(layers)} layers ({_layer_ranges(layers)}) &middot; hidden size {dim}"
                "<table><thead><tr><th>layer</th><th>explained variance (PC1)</th><th></th></tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table></div>")


def _layer_ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8 (6)'; [] -> '[]'."""
    if not layers:
        return "[]"
    parts, start, prev = [], layers[0], layers[0]
    for layer in [*layers[1:], None]:
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if layer is not None:
            start = prev = layer
    return f"{','.join(parts)} ({len(layers)})"


__all__ = ["SteeringVector", "METHODS"]
