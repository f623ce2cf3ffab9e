"""SteeringVector: extraction of per-layer steering directions (docs/extraction_methods.md).

    from activation_steering import SteeringDataset, SteeringVector
    vec = SteeringVector.train(model, tokenizer, SteeringDataset(tokenizer, pairs))
    vec.directions[12]          # float32 [D], unit norm
    vec.save("refusal")         # -> refusal.svec (JSON)

`train` is one straight line: validate every argument -> tokenize each string
once -> forwards over length-sorted, right-padded batches, stopped after the
deepest requested layer, with hooks that pool each string's real tokens into
one [layers, N, D] float32 buffer; text that many strings share (the chat
template's system turn, an example repeated once per suffix) runs once through
a KV cache (activations/pooled.py) -> the direction of every layer in one C call with the
GIL released: exact PCA (csrc/core/pca.c), or the mean difference / the logistic
probe (csrc/core/extract_methods.c) -> SteeringVector.

Methods (docs/extraction_methods.md; exact definitions: csrc/core/as_pca.h, csrc/core/as_methods.h):
  pca_pairwise, pca_center, pca_diff  first principal component of a training
      matrix built from the pairs; explained_variances = its explained-variance ratio.
  mean_diff  CAA / DiffMean: the mean over pairs of (positive - negative).
  probe      an L2-regularised logistic regression, positives (1) vs negatives (0),
      intercept unpenalised, minimising sum(log-loss) + probe_l2/2 |w|^2, i.e.
      scikit-learn's LogisticRegression(C=1/probe_l2); exact Newton in the C core.
      With probe_standardize=True the fit sees standardised features and the
      weights are mapped back (w_j / std_j) to the activation space.
  For mean_diff and probe, explained_variances[i] is the fraction of the pair
  differences' second moment along the direction, sum_p (d_p . u)^2 / sum_p |d_p|^2
  (d_p = positive_p - negative_p, u the unit direction): 1 iff every pair differs
  exactly along u.
Every direction is unit norm, signed by the pair rule, except mean_diff with
normalize=False: CAA's raw mean difference, so behavior_vector_strength=1 adds
exactly the average positive-minus-negative activation difference (and strength
s adds s times it) instead of a unit step.

The same capture pass records `residual_norms`: per trained layer, the median L2
norm of the residual stream at that layer's INPUT (where steering adds) over the
training strings' real tokens, attention sinks excluded (activations/norms.py;
docs/strength_units.md). Relative strength units scale by it.

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


PCA_METHODS = ("pca_pairwise", "pca_center", "pca_diff")
METHODS = PCA_METHODS + ("mean_diff", "probe")


def _analysis_projections(core, pooled: np.ndarray, dirs: np.ndarray, ev: np.ndarray):
    """save_analysis for mean_diff/probe: the x axis is the method's direction,
    the y axis the first principal component of what it leaves (rows centred,
    the direction projected out). -> (projections [L, 2P, 2], explained [L, 2])
    with explained[:, 1] that component's share of the remaining variance."""
    rows = pooled.astype(np.float64)
    rows -= rows.mean(axis=1, keepdims=True)
    unit = dirs.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    x = np.einsum("lnd,ld->ln", rows, unit)
    rest = (rows - x[:, :, None] * unit[:, None, :]).astype(np.float32)
    y = np.zeros_like(x)
    rest_ev = np.zeros_like(ev)
    for j in range(rest.shape[0]):
        try:
            comp, rev, _ = core.pca_fit(rest[j], "pca_center", 1, False)
        except ValueError:  # nothing left beside the direction (e.g. a single pair): y = 0
            continue
        y[j] = rows[j] @ comp[0].astype(np.float64)
        rest_ev[j] = rev[0]
    return np.stack([x, y], axis=2), np.stack([ev, rest_ev], axis=1)


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
        provenance: {str: str | int}: the model it was trained on, method, pooling, read/add
            sites (docs/formats.md); empty for vectors built in code.
        residual_norms: {layer id: float} or None: per layer, the median L2 norm of the
            residual stream at the decoder layer input over the training strings' real
            tokens, attention-sink positions excluded (activations/norms.py; units: the
            model's hidden-state units). `train` records it for every trained layer;
            vectors built in code and files written before it existed have None.
            What algebra does with it: docs/formats.md.

    Files: `save`/`load` (.svec JSON, .gguf llama.cpp control vector, .safetensors).
    Algebra: a + b, a - b, -a, k * a, a * k, a / k, a.layers([...]), a[2:8], a.normalized(),
    a.to(dtype); the rules are in docs/formats.md and vectors/algebra.py.
    """

    model_type: str
    directions: dict[int, np.ndarray]
    explained_variances: dict[int, float]
    provenance: dict = dataclasses.field(default_factory=dict)
    residual_norms: dict[int, float] | None = None

    def __post_init__(self) -> None:
        # Checked where a bad value enters (the constructor, so every algebra result too),
        # not first at a distant save or steer: finite and > 0 for exactly the layers of
        # `directions`, or None (docs/formats.md).
        if self.residual_norms is not None:
            from .vectors.svec import check_residual_norms

            self.residual_norms = check_residual_norms(self.residual_norms, self.directions)

    @classmethod
    def train(cls, model: Any, tokenizer: Any, steering_dataset: SteeringDataset, method: str = "pca_pairwise",
              accumulate_last_x_tokens: int | str = 1, hidden_layer_ids: Sequence[int] | None = None,
              batch_size: int = 32, save_analysis: bool = False,
              output_dir: str | os.PathLike = "activation_steering_figures",
              normalize: bool = True, probe_l2: float = 1.0, probe_standardize: bool = False,
              ) -> "SteeringVector":
        """Extract a steering vector from `steering_dataset` (docs/extraction_methods.md).

        Reads the residual stream each decoder layer returns (its output, i.e.
        Hugging Face's hidden_states[i+1]; the final-norm output for the last layer),
        pools every string over the chosen tokens (float32 `[n_strings, D]` per
        layer), and fits one direction per layer with `method` (PCA recipes after
        RepE, CAA's mean difference, or a logistic probe), signed so that positives
        project higher than negatives.

        Args:
            model: a Hugging Face causal LM or a MalleableModel wrapping one.
            tokenizer: its tokenizer (fast tokenizers map suffixes through offsets).
            steering_dataset: a SteeringDataset; rows are pos, neg, pos, neg, ...
            method: "pca_pairwise" (default), "pca_center", "pca_diff", "mean_diff"
                (CAA: mean of positive - negative) or "probe" (logistic regression);
                see the module docstring.
            accumulate_last_x_tokens: int k (mean of the last k real tokens), "all",
                "suffix-only" (each string's own suffix tokens) or "user_text" (the tokens
                of the user's message only, located as the "user_text" condition pooling
                locates them; docs/semantics.md).
            hidden_layer_ids: layers to extract (default all; negatives count from the end).
            batch_size: strings per forward (results do not depend on it).
            save_analysis: write PCA scatter plots and a variance-by-layer plot.
            output_dir: where the figures go.
            normalize: unit-norm directions (default). False keeps mean_diff's raw
                mean difference (CAA's magnitude); only method="mean_diff" allows it.
            probe_l2: the probe's L2 penalty on its weights, > 0 (scikit-learn's
                C = 1 / probe_l2; default 1.0 = C 1.0). Used by method="probe" only.
            probe_standardize: fit the probe on standardised features (the direction
                is still returned in activation space). Used by method="probe" only.

        Returns:
            A SteeringVector: `directions[layer]` float32 `[D]` (unit vectors unless
            normalize=False), `explained_variances[layer]` in [0, 1] (PC1's ratio for
            the PCA methods; docs/extraction_methods.md for the others) and
            `provenance` (the model, method and pooling it was trained with) and
            `residual_norms[layer]` (float, the median residual-stream norm at the
            layer's input over the training strings, sinks excluded; measured in the
            same forwards, None only if every string is a single token).

        Raises:
            ValueError: unknown `method`, normalize=False with a method other than mean_diff, bad `accumulate_last_x_tokens` or `batch_size`,
                empty dataset, layer ids out of range (checked before the model runs);
                "user_text" with a chat template that does not mark the user's message, or
                a formatted string whose user message cannot be delimited (named).
            TypeError: `tokenizer` not callable, `steering_dataset` not a SteeringDataset.
        """
        from . import _core
        from .activations.norms import ResidualNormStats
        from .activations.pooled import pooled_activations
        from .activations.tokens import check_accumulate

        # ---- every argument is checked before the model runs ----
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(normalize, (bool, np.bool_)):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        if not normalize and method != "mean_diff":
            raise ValueError(f"normalize=False keeps the raw mean difference and exists for method='mean_diff' only; "
                             f"{method!r} directions have no meaningful magnitude (use normalize=True)")
        if (isinstance(probe_l2, (bool, np.bool_)) or not isinstance(probe_l2, (int, float, np.integer, np.floating))
                or not np.isfinite(probe_l2) or probe_l2 <= 0):
            raise ValueError(f"probe_l2 must be a finite number > 0 (scikit-learn's C = 1 / probe_l2), got {probe_l2!r}")
        if not isinstance(probe_standardize, (bool, np.bool_)):
            raise TypeError(f"probe_standardize must be a bool, got {type(probe_standardize).__name__}")
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

        # ---- pooled activations of every string at every layer, one capture ----
        texts = [s for p in pairs for s in (p.positive, p.negative)]
        char_starts = [c for p in pairs for c in (getattr(p, "positive_suffix_start", None),
                                                  getattr(p, "negative_suffix_start", None))]
        log("SteeringVector", f"Training: {len(pairs)} pairs, {len(layer_ids)} layers, method={method}, "
                              f"accumulate_last_x_tokens={mode!r}")
        norm_stats = ResidualNormStats()  # filled by the same forwards (a pre-read at each layer's input)
        pooled = pooled_activations(
            model, tokenizer, texts, layer_ids, mode, int(batch_size),
            add_special_tokens=not getattr(steering_dataset, "use_chat_template", True),
            suffix_char_starts=char_starts, progress=GlobalConfig.is_verbose("SteeringVector"),
            name_of=lambda i: f"formatted_dataset[{i // 2}].{'positive' if i % 2 == 0 else 'negative'}",
            norms=norm_stats)
        try:
            medians = norm_stats.medians()
            residual_norms: dict[int, float] | None = {lid: float(medians[lid]) for lid in layer_ids}
        except ValueError as exc:  # every string is one token: nothing left once the sink is dropped
            log("SteeringVector", f"residual_norms not recorded: {exc}")
            residual_norms = None

        # ---- the direction of every layer in one C call (GIL released) ----
        k = 2 if save_analysis else 1
        try:
            if method in PCA_METHODS:
                comps, explained, proj = _core.pca_fit(pooled, method, k, bool(save_analysis))
            else:
                dirs, ev, _ = _core.methods_fit(pooled, method, normalize=bool(normalize), probe_l2=float(probe_l2),
                                                probe_standardize=bool(probe_standardize))
                comps, explained = dirs[:, None, :], ev[:, None]
                if save_analysis:
                    proj, explained = _analysis_projections(_core, pooled, dirs, ev)
        except (ValueError, RuntimeError) as exc:  # the core's error record: index = the failing layer's position
            index: int = getattr(exc, "index", -1)
            if 0 <= index < len(layer_ids):
                raise type(exc)(f"SteeringVector.train: layer {layer_ids[index]}: {getattr(exc, 'reason', exc)}") from None
            raise
        directions = {lid: comps[j, 0].copy() for j, lid in enumerate(layer_ids)}
        variances = {lid: float(explained[j, 0]) for j, lid in enumerate(layer_ids)}
        if save_analysis:
            from .vectors.plots import save_analysis_figures

            paths = save_analysis_figures(proj, explained, layer_ids, output_dir, method)
            log("SteeringVector", f"Saved {len(paths)} analysis figures to {output_dir}")
        model_type = str(getattr(getattr(inner, "config", None), "model_type", "") or type(inner).__name__)
        from .vectors.provenance import from_model

        provenance = from_model(inner, n_layers, method=method, pooling=mode, n_pairs=len(pairs))
        return cls(model_type=model_type, directions=directions, explained_variances=variances,
                   provenance=provenance, residual_norms=residual_norms)

    def save(self, file_path: str | os.PathLike) -> str:
        """Write the vector; the suffix picks the format; returns the path written.

        `.gguf`: a llama.cpp control vector (our layer i -> direction.(i-1); layers 0 and 1
        cannot be expressed and are left out with a warning); `.safetensors`: one tensor per
        layer plus metadata; `.svec` (JSON): the default, appended when the name has no known
        suffix. Parent folders are created; a crash never leaves a half-written file.
        """
        from .vectors.files import save_target

        path, fmt = save_target(file_path)
        if fmt == "gguf":
            written = self.export_gguf(path)
        else:
            dirs, ev, prov, norms = self._checked()
            if fmt == "safetensors":
                from .vectors.safetensors import write_safetensors

                written = write_safetensors(path, self.model_type, dirs, ev, prov, norms)
            else:
                from .vectors.svec import write_svec

                written = write_svec(path, self.model_type, dirs, ev, prov, norms)
        log("SteeringVector", f"Saved SteeringVector to {written}")
        return written

    def _checked(self) -> tuple[dict, dict, dict, dict | None]:
        from .vectors.provenance import clean
        from .vectors.svec import check_residual_norms, check_vector

        dirs, ev = check_vector(self.model_type, self.directions, self.explained_variances)
        return dirs, ev, clean(self.provenance), check_residual_norms(self.residual_norms, dirs)

    @classmethod
    def load(cls, file_path: str | os.PathLike) -> "SteeringVector":
        """Read a .svec, .gguf or .safetensors file, detected from its content; never executes code.

        ".svec" is appended when the name does not exist. A malformed file raises
        VectorFileError (a ValueError) naming the file and the problem.
        """
        from .vectors.files import load_target

        path, fmt = load_target(file_path)
        if fmt == "gguf":
            return cls.import_gguf(path)
        if fmt == "safetensors":
            from .vectors.safetensors import read_safetensors

            model_type, directions, variances, prov, norms = read_safetensors(path)
        else:
            from .vectors.svec import read_svec

            model_type, directions, variances, prov, norms = read_svec(path)
        log("SteeringVector", f"Loaded directions for layers {list(directions)} from {path}")
        return cls(model_type=model_type, directions=directions, explained_variances=variances, provenance=prov,
                   residual_norms=norms)

    def export_gguf(self, file_path: str | os.PathLike) -> str:
        """Write a llama.cpp control vector (repeng's name); returns the path written.

        Use it with `llama-cli --control-vector-scaled FILE:STRENGTH`: llama.cpp adds
        STRENGTH x direction, as steering here adds `behavior_vector_strength` x direction.
        """
        from .vectors.gguf import write_gguf

        dirs, ev, prov, norms = self._checked()
        return write_gguf(file_path, self.model_type, dirs, ev, prov, norms)

    @classmethod
    def import_gguf(cls, file_path: str | os.PathLike, n_layers: int | None = None) -> "SteeringVector":
        """Read a llama.cpp / repeng / cvector-generator control vector (repeng's name).

        direction.K becomes our layer K+1. `n_layers` (the model's decoder layers) lets the
        reader drop, with a warning, a direction for the last block's output; without it the
        file's own provenance or layer_count decides (docs/formats.md).
        """
        from .vectors.files import load_target
        from .vectors.gguf import read_gguf

        if n_layers is not None and (isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1):
            raise ValueError(f"n_layers must be a positive int or None, got {n_layers!r}")
        path, _ = load_target(file_path)
        model_type, directions, variances, prov, norms = read_gguf(path, n_layers)
        log("SteeringVector", f"Loaded directions for layers {list(directions)} from {path}")
        return cls(model_type=model_type, directions=directions, explained_variances=variances, provenance=prov,
                   residual_norms=norms)

    # ---- algebra (rules: docs/formats.md, vectors/algebra.py) ----
    def __add__(self, other):
        from .vectors import algebra

        if not isinstance(other, SteeringVector):
            return NotImplemented
        return algebra.combine(self, other, +1)

    def __radd__(self, other):
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self * 1.0  # sum([a, b, ...]) starts from 0
        return NotImplemented

    def __sub__(self, other):
        from .vectors import algebra

        if not isinstance(other, SteeringVector):
            return NotImplemented
        return algebra.combine(self, other, -1)

    def __neg__(self):
        from .vectors import algebra

        return algebra.negate(self)

    def __mul__(self, k):
        from .vectors import algebra

        if isinstance(k, SteeringVector):
            return NotImplemented
        k = algebra.check_scalar(k, "SteeringVector * k")
        return algebra.scale(self, k, f"{k!r} * ({algebra._label(self)})")

    __rmul__ = __mul__

    def __truediv__(self, k):
        from .vectors import algebra

        if isinstance(k, SteeringVector):
            return NotImplemented
        return algebra.divide(self, algebra.check_scalar(k, "SteeringVector / k"))

    def layers(self, layer_ids: Sequence[int]) -> "SteeringVector":
        """The vector restricted to `layer_ids`, in that order (KeyError naming a missing layer)."""
        from .vectors import algebra

        return algebra.select(self, layer_ids)

    def __getitem__(self, key):
        """v[i] -> the direction of layer i; v[a:b:s] -> the vector at layer ids in range(a, b, s)."""
        from .vectors import algebra

        if isinstance(key, slice):
            return algebra.slice_layers(self, key)
        if key not in self.directions:
            raise KeyError(f"the vector has no direction for layer {key!r}; it has {list(self.directions)}")
        return self.directions[key]

    def normalized(self) -> "SteeringVector":
        """Every direction scaled to unit L2 norm (an all-zero direction raises)."""
        from .vectors import algebra

        return algebra.normalized(self)

    def to(self, dtype: Any) -> "SteeringVector":
        """Directions cast to a float dtype (numpy or torch, e.g. np.float16, torch.float64)."""
        from .vectors import algebra

        return algebra.cast(self, dtype)

    def __eq__(self, other) -> bool:
        """Exact equality: same model_type, layers, direction bits, variances and residual norms
        (not provenance)."""
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return (self.model_type == other.model_type
                and list(self.directions) == list(other.directions)
                and all(np.array_equal(np.asarray(self.directions[k]), np.asarray(other.directions[k]))
                        for k in self.directions)
                and dict(self.explained_variances) == dict(other.explained_variances)
                and self.residual_norms == other.residual_norms)

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
