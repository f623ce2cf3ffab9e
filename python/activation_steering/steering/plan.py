"""Steering plans: `steer` / `multisteer` arguments -> validated per-layer tensors.

Building a plan never touches the model: every check of SPEC 6 happens here (and
in the C core, `_core.plan_compile` / `_core.rules_compile`), so a bad argument
raises before any hook changes. The result is a `SteeringPlan`: for each decoder
layer that has work, the condition directions/thresholds/codes and the scaled
behaviour vectors plus their truth tables, exactly the arguments of the
`steer_layer` op (csrc/torch/ops.cpp). Tensors are float32 on the CPU here;
`LeashLayer` moves them to each layer's own device and dtype.

Conditions are numbered C1..Cn (bit j-1 of a row's condition bitmask) and
behaviours B1..Bm. `steer` is the special case of one behaviour and at most one
condition: without a condition the behaviour is unconditional (no table), with
one it is "if C1 then B1".
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import _core
from ..activations.layers import resolve_layer_ids
from ..conditions.similarity import COMPARATORS, POOLING_MODES

MAX_CONDITIONS = 16  # as_rules.h AS_RULES_MAX_CONDITIONS: truth tables have 2**n entries


@dataclass(frozen=True)
class LayerPlan:
    """The op arguments of one decoder layer (see ops.cpp steer_layer)."""

    layer: int
    cond_ids: tuple[int, ...] = ()                 # 0-based condition indices evaluated here
    cond_dirs: torch.Tensor | None = None          # [K, D] float32
    cond_thresholds: torch.Tensor | None = None    # [K] float32
    cond_codes: torch.Tensor | None = None         # [K, 3] int64: (1 << j, smaller?, last?)
    beh_ids: tuple[int, ...] = ()                  # 0-based behaviour indices applied here
    beh_vecs: torch.Tensor | None = None           # [M, D] float32, already scaled
    beh_tables: torch.Tensor | None = None         # [M, 2**C] uint8, or None = always on


@dataclass(frozen=True)
class SteeringPlan:
    """A compiled steering configuration for one model."""

    n_layers: int
    hidden_size: int
    layers: dict[int, LayerPlan] = field(default_factory=dict)
    n_conditions: int = 0
    n_behaviors: int = 0
    use_ooi_preventive_normalization: bool = False
    apply_behavior_on_first_call: bool = True

    def describe(self) -> str:
        beh = sorted(i for i, lp in self.layers.items() if lp.beh_ids)
        cond = sorted(i for i, lp in self.layers.items() if lp.cond_ids)
        return (f"{self.n_behaviors} behaviour(s) at layers {beh}, {self.n_conditions} condition(s) at layers {cond}, "
                f"ooi={self.use_ooi_preventive_normalization}, "
                f"apply_behavior_on_first_call={self.apply_behavior_on_first_call}")


@dataclass
class _Item:
    """One vector in one role, for _core.plan_compile."""

    vector: object
    layers: list[int]
    scale: float
    use_evr: bool
    name: str        # the vector argument, e.g. "condition_vectors[1]"
    layer_name: str  # the layer-id argument, e.g. "condition_layer_ids[1]"


# --------------------------------------------------------------------------- #
# Argument checks (each names the argument and the fix)
# --------------------------------------------------------------------------- #
def _check_vector(vector, name: str) -> None:
    directions = getattr(vector, "directions", None)
    evr = getattr(vector, "explained_variances", None)
    if not isinstance(directions, Mapping) or not isinstance(evr, Mapping):
        raise TypeError(f"{name} must be a SteeringVector (with .directions and .explained_variances dicts), "
                        f"got {type(vector).__name__}")
    if len(directions) == 0:
        raise ValueError(f"{name} has no directions; train it with SteeringVector.train first")


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_threshold(value, name: str) -> float:
    if value is None:
        raise ValueError(f"{name} is required when a condition vector is given (e.g. the threshold "
                         "find_best_condition_point returns)")
    t = _check_number(value, name)
    if not math.isfinite(t):
        raise ValueError(f"{name} must be finite, got {t}")
    return t


def _check_choice(value, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _check_layers(layer_ids, n_layers: int, name: str) -> list[int]:
    if layer_ids is None:
        raise ValueError(f"{name} is required: the decoder layers to act at (0..{n_layers - 1})")
    ids = resolve_layer_ids(layer_ids, n_layers, name)
    if not ids:
        raise ValueError(f"{name} is empty: name at least one decoder layer (0..{n_layers - 1})")
    return ids


def _check_list(value, name: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return list(value)


def _check_lengths(n: int, what: str, **lists) -> None:
    for name, lst in lists.items():
        if len(lst) != n:
            raise ValueError(f"{name} has {len(lst)} entries but there are {n} {what}; give one entry per {what[:-1]}")


# --------------------------------------------------------------------------- #
# Compilation
# --------------------------------------------------------------------------- #
def _layer_key(key, n_layers: int, name: str) -> int:
    if isinstance(key, bool) or not isinstance(key, (numbers.Integral, str)):
        raise ValueError(f"{name}: direction keys must be layer ids (int), got {key!r}")
    try:
        k = int(key)
    except ValueError:
        raise ValueError(f"{name}: direction keys must be layer ids (int), got {key!r}") from None
    return k + n_layers if k < 0 else k


def _compile(n_layers: int, hidden_size: int, behaviors: list[_Item | None], conditions: list[tuple[_Item, float, int, int]],
             tables: np.ndarray | None, ooi: bool, apply_first: bool) -> SteeringPlan:
    """behaviors[k] (None = no vector), conditions[j] = (item, threshold, smaller?, last?)."""
    items = [b for b in behaviors if b is not None] + [c[0] for c in conditions]
    n_avail, avail_layers, avail_sizes, chunks, avail_evr = [], [], [], [], []
    n_use, use_layers, scale, use_evr = [], [], [], []
    for it in items:
        wanted = set(it.layers)
        keys = list(it.vector.directions.keys())
        n_avail.append(len(keys))
        for key in keys:
            layer = _layer_key(key, n_layers, it.name)
            avail_layers.append(layer)
            if layer in wanted:  # only requested directions are converted (and must be sound)
                try:
                    d = np.asarray(it.vector.directions[key], dtype=np.float32)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{it.name}: the direction for layer {layer} is not a float array ({exc})") from None
                if d.ndim != 1:
                    raise ValueError(f"{it.name}: the direction for layer {layer} must be 1-D [hidden_size], "
                                     f"got shape {d.shape}")
                evr = it.vector.explained_variances.get(key, it.vector.explained_variances.get(layer))
                if it.use_evr and evr is None:
                    raise ValueError(f"{it.name} has no explained variance for layer {layer}; "
                                     "pass use_explained_variance=False")
                chunks.append(d)
                avail_sizes.append(d.shape[0])
                avail_evr.append(float(evr) if it.use_evr else 1.0)
            else:
                avail_sizes.append(0)
                avail_evr.append(1.0)
        n_use.append(len(it.layers))
        use_layers.extend(it.layers)
        scale.append(it.scale)
        use_evr.append(1 if it.use_evr else 0)
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    rows, offsets, layer_rows = _core.plan_compile(
        n_layers, hidden_size, [it.name for it in items], [it.layer_name for it in items],
        np.asarray(n_avail, np.int64), np.asarray(avail_layers, np.int64), np.asarray(avail_sizes, np.int64),
        data, np.asarray(avail_evr, np.float64), np.asarray(n_use, np.int64), np.asarray(use_layers, np.int64),
        np.asarray(scale, np.float64), np.asarray(use_evr, np.uint8))

    # row index -> (role, index): rows are item-major, items are behaviours then conditions
    owner: list[tuple[str, int]] = []
    for k, b in enumerate(behaviors):
        if b is not None:
            owner.extend(("B", k) for _ in b.layers)
    for j, (c, *_rest) in enumerate(conditions):
        owner.extend(("C", j) for _ in c.layers)

    rows_t = torch.from_numpy(rows)
    layers: dict[int, LayerPlan] = {}
    for layer in range(n_layers):
        here = layer_rows[offsets[layer]:offsets[layer + 1]]
        if len(here) == 0:
            continue
        b_rows = [(owner[r][1], r) for r in here if owner[r][0] == "B"]
        c_rows = [(owner[r][1], r) for r in here if owner[r][0] == "C"]
        if tables is not None:  # drop behaviours no rule can switch on
            b_rows = [(k, r) for k, r in b_rows if tables[k].any()]
        lp = dict(layer=layer)
        if c_rows:
            lp.update(
                cond_ids=tuple(j for j, _ in c_rows),
                cond_dirs=rows_t[[r for _, r in c_rows]].contiguous(),
                cond_thresholds=torch.tensor([conditions[j][1] for j, _ in c_rows], dtype=torch.float32),
                cond_codes=torch.tensor([[1 << j, conditions[j][2], conditions[j][3]] for j, _ in c_rows],
                                        dtype=torch.int64),
            )
        if b_rows:
            beh_tables = None
            if tables is not None and not all(tables[k].all() for k, _ in b_rows):
                beh_tables = torch.from_numpy(np.stack([tables[k] for k, _ in b_rows])).contiguous()
            lp.update(beh_ids=tuple(k for k, _ in b_rows), beh_vecs=rows_t[[r for _, r in b_rows]].contiguous(),
                      beh_tables=beh_tables)
        if c_rows or b_rows:
            layers[layer] = LayerPlan(**lp)
    return SteeringPlan(n_layers=n_layers, hidden_size=hidden_size, layers=layers, n_conditions=len(conditions),
                        n_behaviors=len(behaviors), use_ooi_preventive_normalization=ooi,
                        apply_behavior_on_first_call=apply_first)


def build_steer_plan(n_layers: int, hidden_size: int, behavior_vector=None, behavior_layer_ids=None,
                     behavior_vector_strength=1.0, condition_vector=None, condition_layer_ids=None,
                     condition_vector_threshold=None, condition_comparator_threshold_is="larger",
                     condition_threshold_comparison_mode="mean", use_explained_variance=False,
                     use_ooi_preventive_normalization=False, apply_behavior_on_first_call=True) -> SteeringPlan:
    """The plan of `MalleableModel.steer` (SPEC 4); raises on any bad argument."""
    ev = _check_bool(use_explained_variance, "use_explained_variance")
    ooi = _check_bool(use_ooi_preventive_normalization, "use_ooi_preventive_normalization")
    first = _check_bool(apply_behavior_on_first_call, "apply_behavior_on_first_call")
    if (condition_vector is None) != (condition_layer_ids is None):
        raise ValueError("condition_vector and condition_layer_ids must be given together (or neither)")
    behaviors: list[_Item | None] = [None]
    if behavior_vector is not None:
        _check_vector(behavior_vector, "behavior_vector")
        behaviors = [_Item(behavior_vector, _check_layers(behavior_layer_ids, n_layers, "behavior_layer_ids"),
                           _check_number(behavior_vector_strength, "behavior_vector_strength"), ev,
                           "behavior_vector", "behavior_layer_ids")]
    conditions = []
    if condition_vector is not None:
        _check_vector(condition_vector, "condition_vector")
        item = _Item(condition_vector, _check_layers(condition_layer_ids, n_layers, "condition_layer_ids"), 1.0,
                     False, "condition_vector", "condition_layer_ids")
        thr = _check_threshold(condition_vector_threshold, "condition_vector_threshold")
        cmp_ = _check_choice(condition_comparator_threshold_is, COMPARATORS, "condition_comparator_threshold_is")
        mode = _check_choice(condition_threshold_comparison_mode, POOLING_MODES, "condition_threshold_comparison_mode")
        conditions = [(item, thr, int(cmp_ == "smaller"), int(mode == "last"))]
    tables = np.array([[0, 1]], dtype=np.uint8) if conditions else None  # "if C1 then B1"
    return _compile(n_layers, hidden_size, behaviors, conditions, tables, ooi, first)


def build_multisteer_plan(n_layers: int, hidden_size: int, behavior_vectors, behavior_layer_ids,
                          behavior_vector_strengths, condition_vectors, condition_layer_ids,
                          condition_vector_thresholds, condition_comparator_threshold_is, rules,
                          condition_threshold_comparison_modes=None, use_explained_variance=False,
                          use_ooi_preventive_normalization=False, apply_behavior_on_first_call=True) -> SteeringPlan:
    """The plan of `MalleableModel.multisteer` (SPEC 4); raises on any bad argument."""
    ev = _check_bool(use_explained_variance, "use_explained_variance")
    ooi = _check_bool(use_ooi_preventive_normalization, "use_ooi_preventive_normalization")
    first = _check_bool(apply_behavior_on_first_call, "apply_behavior_on_first_call")
    bvecs = _check_list(behavior_vectors, "behavior_vectors")
    if not bvecs:
        raise ValueError("behavior_vectors is empty: give at least one behaviour (B1)")
    blayers = _check_list(behavior_layer_ids, "behavior_layer_ids")
    bstr = _check_list(behavior_vector_strengths, "behavior_vector_strengths")
    _check_lengths(len(bvecs), "behaviors", behavior_layer_ids=blayers, behavior_vector_strengths=bstr)
    cvecs = _check_list(condition_vectors, "condition_vectors")
    clayers = _check_list(condition_layer_ids, "condition_layer_ids")
    cthr = _check_list(condition_vector_thresholds, "condition_vector_thresholds")
    ccmp = _check_list(condition_comparator_threshold_is, "condition_comparator_threshold_is")
    cmodes = (["mean"] * len(cvecs) if condition_threshold_comparison_modes is None
              else _check_list(condition_threshold_comparison_modes, "condition_threshold_comparison_modes"))
    _check_lengths(len(cvecs), "conditions", condition_layer_ids=clayers, condition_vector_thresholds=cthr,
                   condition_comparator_threshold_is=ccmp, condition_threshold_comparison_modes=cmodes)
    if len(cvecs) > MAX_CONDITIONS:
        raise ValueError(f"condition_vectors has {len(cvecs)} conditions; multisteer supports at most {MAX_CONDITIONS}")
    rule_list = _check_list(rules, "rules")

    behaviors: list[_Item | None] = []
    for k, vec in enumerate(bvecs):
        if vec is None:
            behaviors.append(None)
            continue
        _check_vector(vec, f"behavior_vectors[{k}]")
        behaviors.append(_Item(vec, _check_layers(blayers[k], n_layers, f"behavior_layer_ids[{k}]"),
                               _check_number(bstr[k], f"behavior_vector_strengths[{k}]"), ev,
                               f"behavior_vectors[{k}]", f"behavior_layer_ids[{k}]"))
    conditions = []
    for j, vec in enumerate(cvecs):
        _check_vector(vec, f"condition_vectors[{j}]")
        item = _Item(vec, _check_layers(clayers[j], n_layers, f"condition_layer_ids[{j}]"), 1.0, False,
                     f"condition_vectors[{j}]", f"condition_layer_ids[{j}]")
        thr = _check_threshold(cthr[j], f"condition_vector_thresholds[{j}]")
        cmp_ = _check_choice(ccmp[j], COMPARATORS, f"condition_comparator_threshold_is[{j}]")
        mode = _check_choice(cmodes[j], POOLING_MODES, f"condition_threshold_comparison_modes[{j}]")
        conditions.append((item, thr, int(cmp_ == "smaller"), int(mode == "last")))
    tables = _core.rules_compile(rule_list, len(conditions), len(behaviors))
    return _compile(n_layers, hidden_size, behaviors, conditions, tables, ooi, first)
