"""Steering plans: `steer` / `multisteer` arguments -> validated per-layer tensors.

Building a plan never touches the model. The C core owns the steering semantics
and validates every fact once (`_core.plan_compile`, csrc/core/as_plan.h: layer
ids and their range, missing / duplicate layers, vector sizes, finiteness of
directions, strengths, thresholds and the scaled float32 rows, all-zero
condition directions, the number of conditions; `_core.rules_compile`: the
rules). This module only normalises Python types the core cannot see (user
vector objects, bools, numbers, lists), with messages naming the argument, and
slices the core's per-layer tables into `LayerPlan`s: it never regroups. The
result holds, for each decoder layer that has work, exactly the arguments of the
`steer_layer` op (csrc/torch/ops.cpp). Tensors are float32 on the CPU here;
`LeashLayer` moves them to each layer's own device and dtype, checking there
what only that dtype can reveal (`check_finite_in`).

Conditions are numbered C1..Cn (bit j-1 of a row's condition bitmask) and
behaviours B1..Bm. Each behaviour has an operator ("add", "ablate",
"ablate_then_add") and a strength unit ("absolute", "residual_norm",
"token_norm"); docs/semantics.md ("Operators") and docs/strength_units.md define
them. The core turns both into per-row modes for the op. `steer` is the special case of one behaviour and at most one
condition: without a condition the behaviour is unconditional (no table), with
one it is "if C1 then B1". `steer(condition_layer_combination="and")` is lowered
by `_lower_and_condition` to one condition per layer and the rule
"if C1 and ... and Ck then B1": the multisteer machinery, unchanged.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import _core
from .._args import check_flag
from ..conditions.similarity import COMPARATORS, POOLING_CODES, POOLING_MODES
from ..vectors.provenance import check_vector_matches

MAX_CONDITIONS: int = _core.MAX_CONDITIONS  # as_core.h AS_MAX_CONDITIONS: truth tables have 2**n entries

# Public names -> the core's codes (as_plan.h as_plan_op / as_plan_unit).
OPERATORS: dict[str, int] = {"add": _core.OP_ADD, "ablate": _core.OP_ABLATE,
                             "ablate_then_add": _core.OP_ABLATE_THEN_ADD}
STRENGTH_UNITS: dict[str, int] = {"absolute": _core.UNIT_ABSOLUTE, "residual_norm": _core.UNIT_RESIDUAL_NORM,
                                  "token_norm": _core.UNIT_TOKEN_NORM}


@dataclass(frozen=True)
class LayerPlan:
    """The op arguments of one decoder layer (see ops.cpp steer_layer)."""

    layer: int
    cond_ids: tuple[int, ...] = ()                 # 0-based condition indices evaluated here
    cond_dirs: torch.Tensor | None = None          # [K, D] float32
    cond_thresholds: torch.Tensor | None = None    # [K] float32
    cond_codes: torch.Tensor | None = None         # [K, 3] int64: (1 << j, smaller?, pooling code)
    beh_ids: tuple[int, ...] = ()                  # 0-based behaviour indices applied here
    beh_vecs: torch.Tensor | None = None           # [M, D] float32, already scaled
    beh_tables: torch.Tensor | None = None         # [M, 2**C] uint8, or None = always on
    beh_dirs: torch.Tensor | None = None           # [M, D] float32 unit directions (rows that ablate), or None
    beh_modes: tuple[int, ...] | None = None       # per row MODE_* bits (ops.cpp), or None = every row adds


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
    user_text: bool = False  # some condition pools the user's message (the hooks need its token mask)
    behavior_operators: tuple[str, ...] = ()  # per behaviour (None behaviours: "add")
    strength_units: tuple[str, ...] = ()      # per behaviour

    def early_behavior_layers(self) -> list[int]:
        """Behaviour layers that run before the first condition layer (on the prompt pass
        they see every condition as not met)."""
        cond = [i for i, lp in self.layers.items() if lp.cond_ids]
        if not cond:
            return []
        return sorted(i for i, lp in self.layers.items() if lp.beh_ids and i < min(cond))

    def describe(self) -> str:
        beh = sorted(i for i, lp in self.layers.items() if lp.beh_ids)
        cond = sorted(i for i, lp in self.layers.items() if lp.cond_ids)
        extra = ""
        if any(op != "add" for op in self.behavior_operators):
            extra += f", operators={list(self.behavior_operators)}"
        if any(u != "absolute" for u in self.strength_units):
            extra += f", strength_units={list(self.strength_units)}"
        return (f"{self.n_behaviors} behaviour(s) at layers {beh}, {self.n_conditions} condition(s) at layers {cond}, "
                f"ooi={self.use_ooi_preventive_normalization}, "
                f"apply_behavior_on_first_call={self.apply_behavior_on_first_call}{extra}")


@dataclass
class _Item:
    """One vector in one role, as _core.plan_compile takes it."""

    vector: object
    layers: list[int]      # as given (negative = from the end); the core checks them
    value: float           # strength (behaviours) or threshold (conditions)
    use_evr: bool
    name: str              # the vector argument, e.g. "condition_vectors[1]"
    layer_name: str        # the layer-id argument, e.g. "condition_layer_ids[1]"
    value_name: str        # the strength / threshold argument
    smaller: bool = False  # conditions: comparator "smaller"
    last: bool = False     # conditions: pooling "last"
    user_text: bool = False  # conditions: pooling "user_text" (the core sees "mean"; the code is set after it)
    operator: str = "add"            # behaviours: a key of OPERATORS
    operator_name: str = ""          # its argument, e.g. "behavior_operators[1]"
    unit: str = "absolute"           # behaviours: a key of STRENGTH_UNITS
    unit_name: str = "strength_unit"  # its argument

    def as_core_tuple(self) -> tuple:
        keys, dirs, evr, has_evr = [], [], [], []
        variances = self.vector.explained_variances
        for key, direction in self.vector.directions.items():
            keys.append(_layer_key(key, self.name))
            dirs.append(direction)
            ev = variances.get(key)
            has_evr.append(ev is not None)
            evr.append(_evr_value(ev, self.name, key) if ev is not None else 0.0)
        norms = has_norms = None
        # read only when used; None: a vector saved before they were recorded (the core then names the fix)
        recorded = getattr(self.vector, "residual_norms", None) if self.unit == "residual_norm" else None
        if recorded is not None:
            if not isinstance(recorded, Mapping):
                raise TypeError(f"{self.name}.residual_norms must be a dict layer -> float, got "
                                f"{type(recorded).__name__}")
            by_layer = {_layer_key(k, f"{self.name}.residual_norms"): v for k, v in recorded.items()}
            found = [by_layer.get(k) for k in keys]
            has_norms = np.asarray([n is not None for n in found], np.uint8)
            norms = np.asarray([_norm_value(n, self.name, k) if n is not None else 0.0 for n, k in zip(found, keys)],
                               np.float64)
        return (self.name, self.layer_name, self.value_name, np.asarray(keys, np.int64), dirs,
                np.asarray(evr, np.float64), np.asarray(has_evr, np.uint8), np.asarray(self.layers, np.int64),
                float(self.value), int(self.use_evr), int(self.smaller), int(self.last),
                OPERATORS[self.operator], self.operator_name or self.name, STRENGTH_UNITS[self.unit], self.unit_name,
                norms, has_norms)


# --------------------------------------------------------------------------- #
# Type normalisation (each names the argument and the fix). Values are the core's.
# --------------------------------------------------------------------------- #
def _check_vector(vector, name: str) -> None:
    directions = getattr(vector, "directions", None)
    evr = getattr(vector, "explained_variances", None)
    if not isinstance(directions, Mapping) or not isinstance(evr, Mapping):
        raise TypeError(f"{name} must be a SteeringVector (with .directions and .explained_variances dicts), "
                        f"got {type(vector).__name__}")


_check_bool = check_flag


def _check_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_threshold(value, name: str) -> float:
    if value is None:
        raise ValueError(f"{name} is required when a condition vector is given (e.g. the threshold "
                         "find_best_condition_point returns)")
    return _check_number(value, name)


def _check_choice(value, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _check_layers(layer_ids, name: str) -> list[int]:
    """An int or a list of ints -> list of Python ints (range, repeats: the core's)."""
    if layer_ids is None:
        raise ValueError(f"{name} is required: the decoder layers to act at")
    if isinstance(layer_ids, (numbers.Integral, np.integer)) and not isinstance(layer_ids, (bool, np.bool_)):
        layer_ids = [layer_ids]
    if isinstance(layer_ids, (str, bytes, Mapping)) or not isinstance(layer_ids, Iterable):
        raise TypeError(f"{name} must be an int or a list of ints, got {type(layer_ids).__name__}")
    out = []
    for i in layer_ids:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must contain ints, got {i!r}")
        i = int(i)
        if not _INT64[0] <= i <= _INT64[1]:
            raise ValueError(f"{name}: layer id {i} is out of range")
        out.append(i)
    return out


def _check_list(value, name: str) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return list(value)


def _check_lengths(n: int, what: str, **lists) -> None:
    for name, lst in lists.items():
        if len(lst) != n:
            raise ValueError(f"{name} has {len(lst)} entries but there are {n} {what}; give one entry per {what[:-1]}")


def _layer_key(key, name: str) -> int:
    """A direction key (int, numpy int or a decimal str like "3", as .svec files have) -> int."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (numbers.Integral, np.integer, str)):
        raise ValueError(f"{name}: direction keys must be layer ids (int), got {key!r}")
    if isinstance(key, str):
        text = key.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
            raise ValueError(f"{name}: direction keys must be layer ids (int), got {key!r}")
    k = int(key)
    if not _INT64[0] <= k <= _INT64[1]:
        raise ValueError(f"{name}: direction key {key!r} is not a layer id")
    return k


def _norm_value(value, name: str, key) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}.residual_norms[{key!r}] must be a number, got {value!r}") from None


def _per_behavior(value, n: int, choices, name: str, default: str) -> list[tuple[str, str]]:
    """One str for every behaviour, or a list of one per behaviour -> [(value, its argument name)] * n."""
    if value is None:
        return [(default, name)] * n
    if isinstance(value, str):
        return [(_check_choice(value, tuple(choices), name), name)] * n
    if isinstance(value, np.ndarray):  # accepted like the layer lists and strengths
        value = value.tolist()
    values = _check_list(value, name)
    _check_lengths(n, "behaviors", **{name: values})
    return [(_check_choice(v, tuple(choices), f"{name}[{k}]"), f"{name}[{k}]") for k, v in enumerate(values)]


def _evr_value(value, name: str, key) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: the explained variance for layer {key!r} must be a number, got {value!r}") from None


# --------------------------------------------------------------------------- #
# Compilation: one core call, then slicing its per-layer tables
# --------------------------------------------------------------------------- #
def _compile(n_layers: int, hidden_size: int, behaviors: list[_Item | None], conditions: list[_Item],
             tables: np.ndarray | None, ooi: bool, apply_first: bool, config=None) -> SteeringPlan:
    t = _core.plan_compile(n_layers, hidden_size, [None if b is None else b.as_core_tuple() for b in behaviors],
                           [c.as_core_tuple() for c in conditions], tables)
    for item in [b for b in behaviors if b is not None] + conditions:  # trained-on model vs this one (warnings)
        check_vector_matches(item.vector, item.name, n_layers, hidden_size, config)
    co, bo = t["cond_offsets"], t["beh_offsets"]
    cond_rows, beh_rows = torch.from_numpy(t["cond_rows"]), torch.from_numpy(t["beh_rows"])
    layers: dict[int, LayerPlan] = {}
    for layer in range(n_layers):
        c, b = slice(int(co[layer]), int(co[layer + 1])), slice(int(bo[layer]), int(bo[layer + 1]))
        if c.start == c.stop and b.start == b.stop:
            continue
        lp = dict(layer=layer)
        if c.start != c.stop:
            cond_ids = tuple(int(j) for j in t["cond_index"][c])
            codes = torch.from_numpy(t["cond_codes"][c].copy())
            for k, j in enumerate(cond_ids):  # the op's pooling code of "user_text" (conditions/similarity.py)
                if conditions[j].user_text:
                    codes[k, 2] = POOLING_CODES["user_text"]
            lp.update(cond_ids=cond_ids, cond_dirs=cond_rows[c],
                      cond_thresholds=torch.from_numpy(t["cond_thresholds"][c]), cond_codes=codes)
        if b.start != b.stop:
            modes = tuple(int(x) for x in t["beh_modes"][b])
            plain = all(x == _core.MODE_ADD for x in modes)  # plain ActAdd: the op's original call
            ablates = any(x & _core.MODE_ABLATE for x in modes)
            lp.update(beh_ids=tuple(int(k) for k in t["beh_index"][b]), beh_vecs=beh_rows[b],
                      beh_tables=torch.from_numpy(t["beh_tables"][b]) if t["layer_gated"][layer] else None,
                      beh_modes=None if plain else modes,
                      beh_dirs=torch.from_numpy(t["beh_dirs"][b]) if ablates else None)
        layers[layer] = LayerPlan(**lp)
    return SteeringPlan(n_layers=n_layers, hidden_size=hidden_size, layers=layers, n_conditions=len(conditions),
                        n_behaviors=len(behaviors), use_ooi_preventive_normalization=ooi,
                        apply_behavior_on_first_call=apply_first, user_text=any(c.user_text for c in conditions),
                        behavior_operators=tuple("add" if b is None else b.operator for b in behaviors),
                        strength_units=tuple("absolute" if b is None else b.unit for b in behaviors))


LAYER_COMBINATIONS = ("or", "and")


def _lower_and_condition(condition: _Item, n_layers: int) -> tuple[list[_Item], np.ndarray]:
    """steer's AND condition -> (one condition per layer, the truth table of
    "if C1 and ... and Ck then B1"): the same vector, threshold, comparator and
    pooling at each layer, so each row is gated exactly as multisteer gates it.

    Layer ids are resolved here only to refuse the same layer twice (also as a
    negative id) with steer's message; their range is the core's."""
    resolved = [i + n_layers if i < 0 else i for i in condition.layers]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{condition.layer_name} lists a layer twice ({condition.layers}); "
                         "give each condition layer once")
    if len(condition.layers) > MAX_CONDITIONS:
        raise ValueError(f"{condition.layer_name} has {len(condition.layers)} layers but "
                         f"condition_layer_combination='and' supports at most {MAX_CONDITIONS} "
                         "(one condition per layer); use fewer layers")
    # a copy of the whole condition per layer (every field: comparator, pooling, ...), only the layer differs
    conditions = [replace(condition, layers=[layer]) for layer in condition.layers]
    rule = "if " + " and ".join(f"C{j + 1}" for j in range(len(conditions))) + " then B1"
    return conditions, _core.rules_compile([rule], len(conditions), 1)


def build_steer_plan(n_layers: int, hidden_size: int, behavior_vector=None, behavior_layer_ids=None,
                     behavior_vector_strength=1.0, condition_vector=None, condition_layer_ids=None,
                     condition_vector_threshold=None, condition_comparator_threshold_is="larger",
                     condition_threshold_comparison_mode="mean", use_explained_variance=False,
                     use_ooi_preventive_normalization=False, apply_behavior_on_first_call=True,
                     config=None, behavior_operator="add", strength_unit="absolute",
                     condition_layer_combination="or") -> SteeringPlan:
    """The plan of `MalleableModel.steer`; raises on any bad argument, before anything changes."""
    operator = _check_choice(behavior_operator, tuple(OPERATORS), "behavior_operator")
    unit = _check_choice(strength_unit, tuple(STRENGTH_UNITS), "strength_unit")
    ev = _check_bool(use_explained_variance, "use_explained_variance")
    ooi = _check_bool(use_ooi_preventive_normalization, "use_ooi_preventive_normalization")
    first = _check_bool(apply_behavior_on_first_call, "apply_behavior_on_first_call")
    if (condition_vector is None) != (condition_layer_ids is None):
        raise ValueError("condition_vector and condition_layer_ids must be given together (or neither)")
    behaviors: list[_Item | None] = [None]
    if behavior_vector is not None:
        _check_vector(behavior_vector, "behavior_vector")
        behaviors = [_Item(behavior_vector, _check_layers(behavior_layer_ids, "behavior_layer_ids"),
                           _check_number(behavior_vector_strength, "behavior_vector_strength"), ev,
                           "behavior_vector", "behavior_layer_ids", "behavior_vector_strength",
                           operator=operator, operator_name="behavior_operator", unit=unit,
                           unit_name="strength_unit")]
    conditions = []
    if condition_vector is not None:
        _check_vector(condition_vector, "condition_vector")
        cmp_ = _check_choice(condition_comparator_threshold_is, COMPARATORS, "condition_comparator_threshold_is")
        mode = _check_choice(condition_threshold_comparison_mode, POOLING_MODES, "condition_threshold_comparison_mode")
        conditions = [_Item(condition_vector, _check_layers(condition_layer_ids, "condition_layer_ids"),
                            _check_threshold(condition_vector_threshold, "condition_vector_threshold"), False,
                            "condition_vector", "condition_layer_ids", "condition_vector_threshold",
                            smaller=cmp_ == "smaller", last=mode == "last", user_text=mode == "user_text")]
    tables = np.array([[0, 1]], dtype=np.uint8) if conditions else None  # "if C1 then B1"
    combination = _check_choice(condition_layer_combination, LAYER_COMBINATIONS, "condition_layer_combination")
    if combination == "and" and not conditions:
        raise ValueError('condition_layer_combination="and" needs a condition (condition_vector and '
                         "condition_layer_ids); without one, leave it at the default \"or\"")
    if combination == "and" and len(conditions[0].layers) > 1:
        conditions, tables = _lower_and_condition(conditions[0], n_layers)
    return _compile(n_layers, hidden_size, behaviors, conditions, tables, ooi, first, config)


def build_multisteer_plan(n_layers: int, hidden_size: int, behavior_vectors, behavior_layer_ids,
                          behavior_vector_strengths, condition_vectors, condition_layer_ids,
                          condition_vector_thresholds, condition_comparator_threshold_is, rules,
                          condition_threshold_comparison_modes=None, use_explained_variance=False,
                          use_ooi_preventive_normalization=False, apply_behavior_on_first_call=True,
                          config=None, behavior_operators=None, strength_unit="absolute") -> SteeringPlan:
    """The plan of `MalleableModel.multisteer`; raises on any bad argument, before anything changes."""
    ev = _check_bool(use_explained_variance, "use_explained_variance")
    ooi = _check_bool(use_ooi_preventive_normalization, "use_ooi_preventive_normalization")
    first = _check_bool(apply_behavior_on_first_call, "apply_behavior_on_first_call")
    bvecs = _check_list(behavior_vectors, "behavior_vectors")
    if not bvecs:
        raise ValueError("behavior_vectors is empty: give at least one behaviour (B1)")
    blayers = _check_list(behavior_layer_ids, "behavior_layer_ids")
    bstr = _check_list(behavior_vector_strengths, "behavior_vector_strengths")
    _check_lengths(len(bvecs), "behaviors", behavior_layer_ids=blayers, behavior_vector_strengths=bstr)
    if isinstance(behavior_operators, str):
        raise TypeError(f"behavior_operators must be a list with one operator per behaviour (e.g. "
                        f"[{behavior_operators!r}] * {len(bvecs)}), got the str {behavior_operators!r}")
    ops_ = _per_behavior(behavior_operators, len(bvecs), OPERATORS, "behavior_operators", "add")
    if strength_unit is None:
        raise TypeError("strength_unit must be one of 'absolute', 'residual_norm', 'token_norm' or a list of one per "
                        "behaviour, got None")
    units = _per_behavior(strength_unit, len(bvecs), STRENGTH_UNITS, "strength_unit", "absolute")
    cvecs = _check_list(condition_vectors, "condition_vectors")
    clayers = _check_list(condition_layer_ids, "condition_layer_ids")
    cthr = _check_list(condition_vector_thresholds, "condition_vector_thresholds")
    ccmp = _check_list(condition_comparator_threshold_is, "condition_comparator_threshold_is")
    cmodes = (["mean"] * len(cvecs) if condition_threshold_comparison_modes is None
              else _check_list(condition_threshold_comparison_modes, "condition_threshold_comparison_modes"))
    _check_lengths(len(cvecs), "conditions", condition_layer_ids=clayers, condition_vector_thresholds=cthr,
                   condition_comparator_threshold_is=ccmp, condition_threshold_comparison_modes=cmodes)
    rule_list = _check_list(rules, "rules")

    behaviors: list[_Item | None] = []
    for k, vec in enumerate(bvecs):
        if vec is None:
            behaviors.append(None)
            continue
        _check_vector(vec, f"behavior_vectors[{k}]")
        behaviors.append(_Item(vec, _check_layers(blayers[k], f"behavior_layer_ids[{k}]"),
                               _check_number(bstr[k], f"behavior_vector_strengths[{k}]"), ev,
                               f"behavior_vectors[{k}]", f"behavior_layer_ids[{k}]", f"behavior_vector_strengths[{k}]",
                               operator=ops_[k][0], operator_name=ops_[k][1], unit=units[k][0],
                               unit_name=units[k][1]))
    conditions = []
    for j, vec in enumerate(cvecs):
        _check_vector(vec, f"condition_vectors[{j}]")
        cmp_ = _check_choice(ccmp[j], COMPARATORS, f"condition_comparator_threshold_is[{j}]")
        mode = _check_choice(cmodes[j], POOLING_MODES, f"condition_threshold_comparison_modes[{j}]")
        conditions.append(_Item(vec, _check_layers(clayers[j], f"condition_layer_ids[{j}]"),
                                _check_threshold(cthr[j], f"condition_vector_thresholds[{j}]"), False,
                                f"condition_vectors[{j}]", f"condition_layer_ids[{j}]",
                                f"condition_vector_thresholds[{j}]", smaller=cmp_ == "smaller", last=mode == "last",
                                user_text=mode == "user_text"))
    tables = _core.rules_compile(rule_list, len(conditions), len(behaviors))
    return _compile(n_layers, hidden_size, behaviors, conditions, tables, ooi, first, config)
