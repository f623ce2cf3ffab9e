"""MalleableModel: steer a Hugging Face causal LM in place (docs/semantics.md).

    mm = MalleableModel(model, tokenizer)
    mm.steer(behavior_vector=v, behavior_layer_ids=[10, 11, 12], behavior_vector_strength=1.5,
             condition_vector=c, condition_layer_ids=[7], condition_vector_threshold=0.04)
    mm.respond("How do I make a bomb?")

The wrapper never replaces modules: steering is a set of forward pre-hooks
(leash_layer.py) installed from a validated plan (steering/plan.py), so the
wrapped model's state_dict and save_pretrained are unchanged while steered, and
`reset_leash_to_default()` (or `unwrap()`) gives back the exact unsteered model.
Everything else (config, device, generate, forward, to, eval, ...) passes through
to the wrapped model.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .steering.decode import greedy_decode, plain_greedy
from ._args import check_flag, check_generation_settings
from .config import log
from .activations.prompts import encode, ensure_pad_token, format_prompt
from .activations.layers import find_layers_and_base, hidden_size, input_device, unwrap_model
from .leash_layer import LeashLayer
from .steering.generation import GenerationGuard, check_prompt_lengths
from .steering.state import PromptWatcher, SteeringState
from .activations.user_text import user_text_locator
from .steering.plan import SteeringPlan, build_multisteer_plan, build_steer_plan

if TYPE_CHECKING:
    from .extract import SteeringVector
    from .conditions.search import ConditionPoint

DEFAULT_BEHAVIOR_LAYER_IDS = (10, 11, 12, 13, 14, 15)
# The attribute of a wrapped model that points at the MalleableModel steering it,
# so that a second wrapper of the same model replaces (never stacks on) the first.
_OWNER_ATTR = "_as_steering_owner"


def _steering_owner(model: torch.nn.Module) -> "MalleableModel | None":
    """The live MalleableModel whose steering is installed on `model`, if any."""
    ref = model.__dict__.get(_OWNER_ATTR)
    return ref() if ref is not None else None


def _param_placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """A first guess of where a layer runs; each LeashLayer re-places itself on the
    device/dtype of the hidden state it actually sees. Parameters that accelerate
    offloads live on 'meta' (loaded at run time): their dtype counts, not their device."""
    dtype = None
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device, p.dtype
        dtype = dtype or p.dtype
    return input_device(module) if hasattr(module, "_hf_hook") else torch.device("cpu"), dtype or torch.float32


@contextlib.contextmanager
def _quiet_generation_warnings():
    """generate() warns once when our repetition-penalty processor replaces its own."""
    logger = logging.getLogger("transformers.generation.utils")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


class MalleableModel:
    """A steerable view of a Hugging Face causal LM (steered in place by forward pre-hooks).

    Args:
        model: a Hugging Face causal LM (`torch.nn.Module` with a decoder stack), or a
            MalleableModel (its model is reused).
        tokenizer: the model's tokenizer; a pad token is set (to EOS) when it has none.

    Raises:
        TypeError: `model` is not a torch module, or `tokenizer` is not a tokenizer.
        ValueError: the model's decoder layers cannot be found (unknown layout).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        model = unwrap_model(model)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a Hugging Face causal LM (torch.nn.Module), got {type(model).__name__}")
        find_layers_and_base(model)  # raises a clear ValueError for unknown layouts
        if tokenizer is None or not callable(tokenizer):
            raise TypeError("tokenizer must be the model's Hugging Face tokenizer")
        self._as_wrapped_model = model
        self.tokenizer = tokenizer
        ensure_pad_token(tokenizer)
        self._ctx = SteeringState()
        self._handles: list = []
        self._guard: GenerationGuard | None = None
        self._plan: SteeringPlan | None = None
        # generate/respond/steer of one model are serialised: its steering state is per model
        self._lock = threading.RLock()
        owner = _steering_owner(model)
        if owner is not None and owner._plan is not None:
            # Steering lives on the model (hooks on its layers), not on the wrapper.
            warnings.warn("this model is already steered by another MalleableModel "
                          f"({owner._plan.describe()}); steering lives on the model, so this wrapper "
                          "generates steered text too until one of them calls reset_leash_to_default() "
                          "or steer() (docs/semantics.md)", UserWarning, stacklevel=2)

    # ------------------------------------------------------------------ #
    # passthrough
    # ------------------------------------------------------------------ #
    @property
    def model(self) -> torch.nn.Module:
        """The wrapped Hugging Face model (steered in place by hooks)."""
        return self._as_wrapped_model

    @property
    def config(self) -> Any:
        """The wrapped model's Hugging Face config."""
        return self._as_wrapped_model.config

    @property
    def device(self) -> torch.device:
        return self._as_wrapped_model.device

    def unwrap(self) -> torch.nn.Module:
        """The wrapped model, with every steering hook removed (it then behaves exactly as unwrapped)."""
        self.reset_leash_to_default()
        return self._as_wrapped_model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward (steered while steering is installed)."""
        return self._as_wrapped_model(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._as_wrapped_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's generate; conditions are re-evaluated for every new prompt.

        While steered, the wrapped model's own `generate` knows which positions are
        prompt positions however the prompt arrives (steering/generation.py)."""
        return self._as_wrapped_model.generate(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> "MalleableModel":
        """Move the wrapped model; steering vectors follow each layer lazily on the next forward."""
        self._as_wrapped_model.to(*args, **kwargs)
        return self

    def eval(self) -> "MalleableModel":
        """Put the wrapped model in eval mode; returns self."""
        self._as_wrapped_model.eval()
        return self

    def __getattr__(self, name: str):
        # only called for attributes not found normally: delegate to the wrapped model
        if name.startswith("_as_") or name in ("_ctx", "_handles", "_plan", "_guard", "_lock", "tokenizer"):
            raise AttributeError(name)
        return getattr(self._as_wrapped_model, name)

    def __repr__(self) -> str:
        plan = self.steering_plan
        steered = plan.describe() if plan is not None else "not steered"
        return f"MalleableModel({type(self._as_wrapped_model).__name__}, {steered})"

    # ------------------------------------------------------------------ #
    # steering
    # ------------------------------------------------------------------ #
    @property
    def n_layers(self) -> int:
        return len(find_layers_and_base(self._as_wrapped_model)[1])

    @property
    def steering_plan(self) -> SteeringPlan | None:
        """The compiled plan currently installed on the model (None when unsteered).

        Steering lives on the model: a plan installed through another MalleableModel of
        the same model is reported here too."""
        owner = _steering_owner(self._as_wrapped_model)
        return owner._plan if owner is not None and owner is not self else self._plan

    def steer(self, behavior_vector: SteeringVector | None = None,
              behavior_layer_ids: Sequence[int] = DEFAULT_BEHAVIOR_LAYER_IDS, behavior_vector_strength: float = 1.0,
              condition_vector: SteeringVector | None = None, condition_layer_ids: Sequence[int] | None = None,
              condition_vector_threshold: float | None = None, condition_comparator_threshold_is: str = "larger",
              condition_threshold_comparison_mode: str = "mean", use_explained_variance: bool = False,
              use_ooi_preventive_normalization: bool = False, apply_behavior_on_first_call: bool = True,
              behavior_operator: str = "add", strength_unit: str = "absolute",
              condition_layer_combination: str = "or", **kwargs: Any) -> None:
        """Steer with one behaviour vector (ActAdd or directional ablation), optionally only when one
        condition is met (CAST).

        At each behaviour layer's input h (the residual stream, float `[D]` per
        position), for every position of the rows whose condition is met:

        - `behavior_operator="add"` (ActAdd, the default): `h + s * v[layer]`;
        - `"ablate"`: `h - (h . d) d` with `d = v[layer] / |v[layer]|`, which removes
          the direction (Arditi et al. 2024, refusal-direction ablation); strength,
          strength unit and explained variance play no part (ablation is strength-free);
        - `"ablate_then_add"`: `h - (h . d) d + s * v[layer]` (the stream's component
          along d is replaced by exactly `s * v`).

        `s` is the strength in `strength_unit`: `"absolute"` (the default) adds
        `strength * v`; `"residual_norm"` adds `strength * vector.residual_norms[layer]
        * v` (strength 0.1 = 10% of the recorded median residual norm at that layer);
        `"token_norm"` adds `strength * |h| * v`, `|h|` the position's own norm before
        this layer's steering (scale-free). See docs/strength_units.md.

        The condition is decided once per prompt, on the prompt pass, from the
        pooled hidden state `h` at the condition layers: `sim = cos(h, tanh(proj_c h))`
        (the CAST paper's similarity); "larger" means met when `sim < threshold`,
        "smaller" when `sim > threshold`.

        Examples:
            Refuse harmful prompts only, and remove the refusal direction everywhere else
            is a `multisteer` rule pair (see there); with `steer` alone::

                model.steer(behavior_vector=refusal, behavior_layer_ids=[10, 11, 12],
                            behavior_operator="ablate")             # never refuse
                model.steer(behavior_vector=refusal, behavior_layer_ids=[10, 11, 12],
                            behavior_vector_strength=0.1, strength_unit="residual_norm")
                model.steer(behavior_vector=refusal, behavior_layer_ids=[10, 11, 12],
                            behavior_vector_strength=0.05, strength_unit="token_norm")

        Args:
            behavior_vector: the behaviour SteeringVector; None installs only the condition.
            behavior_layer_ids: decoder layer ids to steer (negative ids count from the end).
            behavior_vector_strength: the scale `s`, in `strength_unit` (unitless for
                "absolute"; a fraction of a residual-stream norm for the relative units).
            condition_vector: the condition SteeringVector, or None for unconditional steering.
            condition_layer_ids: layers whose pooled states are compared (required with a condition).
            condition_vector_threshold: the similarity threshold (required with a condition).
            condition_comparator_threshold_is: "larger" or "smaller" (see above).
            condition_threshold_comparison_mode: pooling over the prompt: "mean" (every real
                token), "last" (the last real one) or "user_text" (the tokens of the user's
                message only, located in the prompt's token ids by the chat template's
                markers; docs/semantics.md, "Which tokens a condition pools").
            use_explained_variance: scale each layer's vector by its PC1 explained-variance ratio.
            use_ooi_preventive_normalization: rescale steered rows whose norm grows (or goes
                non-finite) back to the unsteered norm.
            apply_behavior_on_first_call: also steer the prompt pass (True) or only generated tokens.
            behavior_operator: "add", "ablate" or "ablate_then_add" (above).
            strength_unit: "absolute", "residual_norm" or "token_norm" (above).
            condition_layer_combination: with several condition layers, "or" (default: met
                when ANY layer meets it) or "and" (met only when EVERY layer meets it, same
                threshold and comparator at each). "and" is the multisteer form with the
                condition vector listed once per layer and the rule "if C1 and C2 ... then B1"
                (at most 16 layers). A `find_best_condition_point` result installs with
                `steer(behavior_vector=..., **point.steer_kwargs())` (docs/semantics.md).

        Returns:
            None. The steering is installed on the wrapped model (hooks), replacing any
            previous steering.

        Raises:
            ValueError: a layer id out of range, a vector of the wrong hidden size or
                missing layers, an unknown comparator, mode, operator, strength unit or
                layer combination, NaN/Inf in a vector, an all-zero direction to ablate,
                `strength_unit="residual_norm"` with a vector that records no residual
                norm for a steered layer (retrain it, or use "absolute"), a layer listed
                twice in one list; "user_text" with a tokenizer whose chat template does
                not mark the user's message. While generating with "user_text": a prompt
                given as inputs_embeds only, or one with template markers but no closed,
                non-empty user message (raised before anything is generated).
            TypeError: an unexpected keyword argument or a wrongly typed one.

        Every argument is validated before any hook changes, so an exception leaves
        the model as it was.
        """
        self._reject_unknown(kwargs, "steer")
        plan = build_steer_plan(
            self.n_layers, hidden_size(self._as_wrapped_model), behavior_vector, behavior_layer_ids,
            behavior_vector_strength, condition_vector, condition_layer_ids, condition_vector_threshold,
            condition_comparator_threshold_is, condition_threshold_comparison_mode, use_explained_variance,
            use_ooi_preventive_normalization, apply_behavior_on_first_call,
            config=getattr(self._as_wrapped_model, "config", None), behavior_operator=behavior_operator,
            strength_unit=strength_unit, condition_layer_combination=condition_layer_combination)
        self._install(plan)
        if plan.apply_behavior_on_first_call:
            early = plan.early_behavior_layers()  # from the validated plan: nothing after the swap may raise
            if early:
                # the documented semantics (docs/semantics.md), but rarely what is wanted: the first reply token comes out unsteered
                log("MalleableModel", f"note: behaviour layers {early} run before the first condition layer on the "
                    "prompt pass, so there they see the condition as not met and the first generated token is "
                    "produced without them; put the condition at or before the first behaviour layer to steer "
                    "it too")

    def multisteer(self, behavior_vectors: Sequence[SteeringVector], behavior_layer_ids: Sequence[Sequence[int]],
                   behavior_vector_strengths: Sequence[float], condition_vectors: Sequence[SteeringVector],
                   condition_layer_ids: Sequence[Sequence[int]], condition_vector_thresholds: Sequence[float],
                   condition_comparator_threshold_is: Sequence[str], rules: Sequence[str],
                   condition_threshold_comparison_modes: Sequence[str] | None = None,
                   use_explained_variance: bool = False, use_ooi_preventive_normalization: bool = False,
                   apply_behavior_on_first_call: bool = True, behavior_operators: Sequence[str] | None = None,
                   strength_unit: str | Sequence[str] = "absolute", **kwargs: Any) -> None:
        """Several behaviours B1..Bm switched by rules over conditions C1..Cn.

        Each rule reads `if <expr> then B<k>` with C<j> combined by and / or / not and
        parentheses; behaviour k is applied (added, ablated, or both: its operator) for
        a row when any rule targeting it holds for that row. At one layer, the
        applied ablations run first, in behaviour order, then the applied additions
        (docs/semantics.md, "Operators"). Replaces any previous steering; validated
        before any change.

        Example (refuse harmful prompts; remove the refusal direction from the rest)::

            model.multisteer(behavior_vectors=[refusal, refusal],
                             behavior_layer_ids=[[10, 11, 12], [10, 11, 12]],
                             behavior_vector_strengths=[8.0, 1.0],
                             condition_vectors=[harmful], condition_layer_ids=[[5]],
                             condition_vector_thresholds=[0.04],
                             condition_comparator_threshold_is=["smaller"],
                             rules=["if C1 then B1", "if not C1 then B2"],
                             behavior_operators=["add", "ablate"])

        Args:
            behavior_vectors: B1..Bm.
            behavior_layer_ids: one list of layer ids per behaviour.
            behavior_vector_strengths: one scale per behaviour.
            condition_vectors: C1..Cn.
            condition_layer_ids: one list of layer ids per condition.
            condition_vector_thresholds: one threshold per condition.
            condition_comparator_threshold_is: "larger" or "smaller" per condition.
            rules: e.g. `["if C1 and not (C2 or C3) then B1"]`.
            condition_threshold_comparison_modes: "mean", "last" or "user_text" per condition
                (default all "mean"); see `steer`.
            use_explained_variance: as in `steer`.
            use_ooi_preventive_normalization: as in `steer`.
            apply_behavior_on_first_call: as in `steer`.
            behavior_operators: one of "add" / "ablate" / "ablate_then_add" per behaviour
                (as `steer`'s `behavior_operator`); None: all "add".
            strength_unit: "absolute" / "residual_norm" / "token_norm" for every
                behaviour, or a list of one per behaviour (as in `steer`).

        Returns:
            None. The steering is installed on the wrapped model.

        Raises:
            ValueError: mismatched list lengths, a malformed rule or one naming a missing
                C<j>/B<k>, an unknown operator or unit (naming `behavior_operators[k]` /
                `strength_unit[k]`), or any of `steer`'s errors.
            TypeError: an unexpected keyword argument, or a str for `behavior_operators`.
        """
        self._reject_unknown(kwargs, "multisteer")
        plan = build_multisteer_plan(
            self.n_layers, hidden_size(self._as_wrapped_model), behavior_vectors, behavior_layer_ids,
            behavior_vector_strengths, condition_vectors, condition_layer_ids, condition_vector_thresholds,
            condition_comparator_threshold_is, rules, condition_threshold_comparison_modes, use_explained_variance,
            use_ooi_preventive_normalization, apply_behavior_on_first_call,
            config=getattr(self._as_wrapped_model, "config", None), behavior_operators=behavior_operators,
            strength_unit=strength_unit)
        self._install(plan)

    def reset_leash_to_default(self) -> None:
        """Remove all steering: the model then behaves exactly as unwrapped.

        Steering lives on the model, so this also removes steering installed through
        another MalleableModel of the same model."""
        owner = _steering_owner(self._as_wrapped_model)
        if owner is not None and owner is not self:
            owner.reset_leash_to_default()
        with self._lock:
            self._remove_hooks()
            self._plan = None
        log("MalleableModel", "steering removed")

    def find_best_condition_point(self, positive_strings: Sequence[str], negative_strings: Sequence[str],
                                  condition_vector: SteeringVector, layer_range: tuple[int, int] | None = None,
                                  max_layers_to_combine: int = 1, threshold_range: tuple[float, float] = (0.0, 1.0),
                                  threshold_step: float = 0.01, save_analysis: bool = False,
                                  file_path: str | None = None, condition_threshold_comparison_mode: str = "mean",
                                  exact: bool = False, batch_size: int = 32, plot: bool | str = False,
                                  tokenizer: Any = None, use_chat_template: bool = True,
                                  show_progress: bool | None = None,
                                  layer_combination: str = "or") -> ConditionPoint:
        """Search condition layers, threshold and comparator for the best F1 (the CAST paper's grid search).

        Every prompt runs once through the model (truncated after the deepest layer);
        the similarities `[n_prompts, n_layers]` float32 then go to the C search over
        layer combinations x thresholds x the two comparators. Steering installed on
        this model is removed first.

        Args:
            positive_strings: prompts where the condition should be met.
            negative_strings: prompts where it should not.
            condition_vector: the condition SteeringVector.
            layer_range: `(lo, hi)`, hi exclusive (default every layer).
            max_layers_to_combine: combinations of up to this many layers (a prompt is predicted
                positive when ANY layer of the combination meets the condition).
            threshold_range: `(lo, hi)` of the threshold grid.
            threshold_step: grid step (> 0).
            save_analysis: write the search table and similarities as JSON to `file_path`.
            file_path: where the analysis JSON goes.
            condition_threshold_comparison_mode: pooling over the prompt: "mean", "last" or
                "user_text" (see `steer`); the spans are located as the steering runtime locates them.
            exact: search every distinct threshold, not just the grid.
            batch_size: prompts per forward batch (results do not depend on it).
            plot: True, or a path: histograms of the similarities with the threshold marked.
            tokenizer: override of the model's tokenizer.
            use_chat_template: format prompts with the chat template.
            show_progress: a bar over batches (default: when MalleableModel logs verbosely).
            layer_combination: "or" (default: a prompt is positive when ANY layer of the
                combination meets the condition), "and" (EVERY layer meets it; one threshold
                and comparator shared by the layers) or "both" (OR wins at equal F1).

        Returns:
            A `ConditionPoint`, the tuple `(layers, threshold, direction, f1)`: the layer ids,
            the threshold, "larger" or "smaller", and the F1 on the given prompts in [0, 1];
            it also carries `.layer_combination` ("or"/"and") and `.steer_kwargs()`, the
            condition arguments of `steer` that install it.

        Raises:
            ValueError: empty prompt lists, a bad range or step, too many combinations, an
                unknown mode or layer_combination; with "user_text", a string whose user
                message cannot be delimited (named by its index) or a template that does not
                mark it.
            TypeError: wrongly typed arguments.
        """
        from .conditions.search import find_best_condition_point

        return find_best_condition_point(
            self, positive_strings, negative_strings, condition_vector, layer_range=layer_range,
            max_layers_to_combine=max_layers_to_combine, threshold_range=threshold_range,
            threshold_step=threshold_step, save_analysis=save_analysis,
            file_path=file_path,
            condition_threshold_comparison_mode=condition_threshold_comparison_mode, exact=exact,
            batch_size=batch_size, plot=plot, tokenizer=tokenizer,
            use_chat_template=use_chat_template, show_progress=show_progress,
            layer_combination=layer_combination)

    @staticmethod
    def _reject_unknown(kwargs: dict, method: str) -> None:
        if kwargs:
            raise TypeError(f"{method}() got unexpected keyword argument(s) {sorted(kwargs)}; see the method's docstring for the "
                            "accepted arguments")

    def _install(self, plan: SteeringPlan) -> None:
        """Swap the installed hooks for `plan`'s. Everything that can fail runs first."""
        model = self._as_wrapped_model
        base, layers = find_layers_and_base(model)
        ctx = SteeringState(n_conditions=plan.n_conditions)
        if plan.user_text:  # the template's markers, derived (and checked) before anything changes
            ctx.user_text = user_text_locator(self.tokenizer)
        leashes = {}
        cond_layers = sorted(i for i, lp in plan.layers.items() if lp.cond_dirs is not None)
        for i, lp in plan.layers.items():
            device, dtype = _param_placement(layers[i])
            leashes[i] = LeashLayer(lp, ctx, plan.use_ooi_preventive_normalization,
                                    plan.apply_behavior_on_first_call, device, dtype)
            # prompt positions at layer i see the conditions decided at layers <= i (docs/semantics.md)
            seen = [j for j in cond_layers if j <= i]
            leashes[i].set_prompt_gate(seen[-1] if seen else None, not cond_layers or seen == cond_layers)
        watcher = PromptWatcher(ctx, base)
        guard = GenerationGuard(model, base, ctx, plan, self._lock)
        with self._lock:  # never swap the hooks under a generation running in another thread
            self._swap(plan, ctx, base, layers, leashes, watcher, guard)

    def _swap(self, plan, ctx, base, layers, leashes, watcher, guard) -> None:
        model = self._as_wrapped_model
        # -- from here on nothing raises --
        self._remove_hooks()
        owner_ref = model.__dict__.get(_OWNER_ATTR)
        owner = owner_ref() if owner_ref is not None else None
        if owner is not None and owner is not self:
            owner.reset_leash_to_default()  # another wrapper of the same model: replace, never stack
        self._ctx = ctx
        self._plan = plan
        if not plan.layers:
            return
        self._handles.append(base.register_forward_pre_hook(watcher, with_kwargs=True))
        self._handles.append(base.register_forward_hook(watcher.done, with_kwargs=True, always_call=True))
        for i, leash in leashes.items():
            self._handles.append(layers[i].register_forward_pre_hook(leash, with_kwargs=True))
        guard.install()
        self._guard = guard
        model.__dict__[_OWNER_ATTR] = weakref.ref(self)
        log("MalleableModel", f"steering installed: {plan.describe()}")

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._guard is not None:
            self._guard.remove()
            self._guard = None
        self._ctx.reset()
        model = self._as_wrapped_model
        owner_ref = model.__dict__.get(_OWNER_ATTR)
        if owner_ref is not None and owner_ref() is self:
            del model.__dict__[_OWNER_ATTR]

    # ------------------------------------------------------------------ #
    # generation
    # ------------------------------------------------------------------ #
    def _input_device(self) -> torch.device:
        return input_device(self._as_wrapped_model)  # accelerate-offloaded embeddings live on 'meta'

    def _generation_settings(self, settings: dict | None) -> dict:
        """respond's defaults (greedy, 50 new tokens, repetition penalty 1.1, pad = eos), updated by `settings`."""
        checked = check_generation_settings(settings)  # before any state changes
        out = {"do_sample": False, "max_new_tokens": 50, "repetition_penalty": 1.1,
               "pad_token_id": self.tokenizer.eos_token_id}
        out.update(checked)
        if out.get("stop_strings") is not None and out.get("tokenizer") is None:
            out["tokenizer"] = self.tokenizer  # generate needs it to match stop strings
        return out

    def _check_user_text(self, rows: Sequence[Any], name: str) -> None:
        """With a "user_text" condition installed: every prompt's user message is located
        up front, so a bad prompt (say the 21st) raises naming `name[i]` before any batch
        is generated (the hooks would only find it when its batch runs)."""
        plan = self.steering_plan
        if plan is None or not plan.user_text:
            return
        from .activations.user_text import user_text_locator

        loc = user_text_locator(self.tokenizer)
        for i, row in enumerate(rows):
            loc.span([int(t) for t in row], f"{name}[{i}]")

    def respond(self, prompt: str, settings: dict[str, Any] | None = None, use_chat_template: bool = True,
                reset_after_response: bool = True) -> str:
        """Generate a reply to `prompt`; returns the decoded continuation only.

        Args:
            prompt: the user message.
            settings: `generate` keyword arguments (default: greedy, `max_new_tokens`
                50, `repetition_penalty` 1.1).
            use_chat_template: format with the tokenizer's chat template.
            reset_after_response: drop the per-row condition state afterwards.

        Returns:
            The generated text (prompt excluded, special tokens skipped).

        The prompt is formatted with the chat template (add_generation_prompt=True)
        unless use_chat_template=False. Conditions are evaluated afresh for every
        prompt; reset_after_response=True also drops the per-row condition state
        afterwards (steering itself stays installed).
        """
        check_flag(reset_after_response, "reset_after_response")
        text = format_prompt(self.tokenizer, prompt, use_chat_template)
        kwargs = self._generation_settings(settings)
        enc = encode(self.tokenizer, [text], use_chat_template, device=self._input_device())
        check_prompt_lengths(self._as_wrapped_model, [enc["input_ids"].shape[1]])
        self._check_user_text([enc["input_ids"][0][enc["attention_mask"][0] != 0]], "prompt")
        with self._lock, torch.no_grad():
            out = self._as_wrapped_model.generate(**enc, **kwargs)
            if reset_after_response:
                self._ctx.reset()
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def respond_batch_sequential(self, prompts: Sequence[str], settings: dict[str, Any] | None = None,
                                 use_chat_template: bool = True) -> list[str]:
        """`respond` on each prompt in turn."""
        prompts = self._check_prompts(prompts)
        self._generation_settings(settings)  # checked once, before the first prompt runs
        tok = self.tokenizer
        self._check_user_text([encode(tok, [format_prompt(tok, p, use_chat_template)], use_chat_template)["input_ids"][0]
                               for p in prompts], "prompts")
        return [self.respond(p, settings=settings, use_chat_template=use_chat_template) for p in prompts]

    def respond_batch(self, prompts: Sequence[str], settings: dict[str, Any] | None = None, use_chat_template: bool = True,
                      batch_size: int = 16, show_progress: bool = False) -> list[str]:
        """Truly batched `respond`: same texts as `respond_batch_sequential` for greedy settings.

        Prompts are tokenized one by one (exactly as respond does), grouped by length
        (longest first, so rows of a batch need little padding), LEFT-padded and
        generated batch by batch; each row is steered and conditioned on its own
        prompt only. Plain greedy settings (the default) run the row-dropping decode
        loop of steering/decode.py: a row leaves the batch as soon as it finishes.
        Other settings go through `generate` on the padded batch, with padding
        excluded from the repetition penalty (for every beam) so a row's penalty
        sees the same tokens as when it is generated alone, and each prompt's
        FIRST sequence kept, as respond keeps it: for every deterministic setting
        (beams, num_return_sequences, penalties, length and stop settings) the
        texts equal respond_batch_sequential's. Length settings that count the
        prompt (min_length, max_length without max_new_tokens) batch only prompts
        of equal length. With sampling each row draws from the distribution
        respond uses for it (a seeded batch does not repeat sequential draws).
        `show_progress` shows a bar over prompts.
        """
        check_flag(show_progress, "show_progress")
        prompts = self._check_prompts(prompts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        tok = self.tokenizer
        kwargs = self._generation_settings(settings)
        model = self._as_wrapped_model
        greedy = plain_greedy(model, kwargs)
        ids = [encode(tok, [format_prompt(tok, p, use_chat_template)], use_chat_template)["input_ids"][0]
               for p in prompts]
        check_prompt_lengths(model, [len(x) for x in ids])
        self._check_user_text(ids, "prompts")
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        chunks = []
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            if greedy is None and _length_counts_prompt(model, kwargs):
                # min_length / max_length count the prompt: only prompts of one length share a batch
                for n in sorted({len(ids[i]) for i in chunk}, reverse=True):
                    chunks.append([i for i in chunk if len(ids[i]) == n])
            else:
                chunks.append(chunk)
        device = self._input_device()
        pad_id = tok.pad_token_id
        replies: list[str] = [""] * len(ids)
        bar = tqdm(total=len(ids), desc="respond_batch", unit="prompt", disable=not show_progress or not ids,
                   leave=False)
        self._lock.acquire()
        try:
            for chunk in chunks:
                width = max(len(ids[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, i in enumerate(chunk):
                    input_ids[r, width - len(ids[i]):] = ids[i]
                    mask[r, width - len(ids[i]):] = 1
                input_ids, mask = input_ids.to(device), mask.to(device)
                with torch.no_grad(), _quiet_generation_warnings():
                    if greedy is not None:
                        generated = greedy_decode(model, input_ids, mask, greedy, on_drop=self._ctx.select_rows)
                    else:
                        generated = self._generate_padded(input_ids, mask, width, chunk, ids, kwargs)
                for r, i in enumerate(chunk):
                    replies[i] = tok.decode(generated[r], skip_special_tokens=True)
                self._ctx.reset()
                bar.update(len(chunk))
        finally:
            bar.close()
            self._ctx.reset()
            self._lock.release()
        return replies

    def _generate_padded(self, input_ids, mask, width, chunk, ids, kwargs) -> list:
        """`generate` on one left-padded batch (any settings); each prompt's first sequence, as respond keeps.

        Padding is kept out of the repetition penalty (sized to the rows generate
        really runs: prompts x max(num_beams, num_return_sequences)), so every row
        is scored as when its prompt is generated alone."""
        gen = dict(kwargs)
        config = _merged_config(self._as_wrapped_model, gen)
        n_seq = int(config.num_return_sequences or 1)
        expand = max(int(config.num_beams or 1), n_seq)
        penalty = config.repetition_penalty
        if penalty is not None and float(penalty) != 1.0:
            from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

            pads = torch.tensor([width - len(ids[i]) for i in chunk], dtype=torch.long)
            custom = list(gen.pop("logits_processor", None) or [])
            custom.append(RepetitionPenaltyLogitsProcessor(float(penalty),
                                                           prompt_ignore_length=pads.repeat_interleave(expand)))
            gen["logits_processor"] = LogitsProcessorList(custom)
        out = self._as_wrapped_model.generate(input_ids=input_ids, attention_mask=mask, **gen)
        out = getattr(out, "sequences", out)
        return [out[r * n_seq, width:] for r in range(len(chunk))]

    @staticmethod
    def _check_prompts(prompts) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of str")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts[{i}] must be a str, got {type(p).__name__}")
        return list(prompts)


def _merged_config(model, gen: dict):
    """The generation config generate() would use for `gen` (respond's settings)."""
    config = copy.deepcopy(gen.get("generation_config") or model.generation_config)
    config.update(**{k: v for k, v in gen.items() if k != "generation_config"})
    return config


def _length_counts_prompt(model, gen: dict) -> bool:
    """Does a length setting count the prompt's tokens (so left padding would change a row's budget)?"""
    config = _merged_config(model, gen)
    return bool(config.min_length) or config.max_new_tokens is None
