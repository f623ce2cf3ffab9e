"""MalleableModel: steer a Hugging Face causal LM in place (SPEC 4).

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
import logging
import weakref
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .steering.decode import greedy_decode, plain_greedy
from .config import log
from .activations.prompts import encode, ensure_pad_token, format_prompt
from .activations.layers import find_layers_and_base, unwrap_model
from .leash_layer import LeashLayer
from .steering.state import PromptWatcher, SteeringState
from .steering.plan import SteeringPlan, build_multisteer_plan, build_steer_plan

DEFAULT_BEHAVIOR_LAYER_IDS = (10, 11, 12, 13, 14, 15)
# The attribute of a wrapped model that points at the MalleableModel steering it,
# so that a second wrapper of the same model replaces (never stacks on) the first.
_OWNER_ATTR = "_as_steering_owner"


def _hidden_size(model) -> int:
    config = getattr(model, "config", None)
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return int(model.get_input_embeddings().weight.shape[1])


def _param_placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


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
    """A steerable view of a causal LM. See the module docstring and SPEC 4."""

    def __init__(self, model, tokenizer) -> None:
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
        self._plan: SteeringPlan | None = None

    # ------------------------------------------------------------------ #
    # passthrough
    # ------------------------------------------------------------------ #
    @property
    def model(self):
        """The wrapped Hugging Face model (steered in place by hooks)."""
        return self._as_wrapped_model

    @property
    def config(self):
        return self._as_wrapped_model.config

    @property
    def device(self) -> torch.device:
        return self._as_wrapped_model.device

    def unwrap(self):
        """The wrapped model, with every steering hook removed (it then behaves exactly as unwrapped)."""
        self.reset_leash_to_default()
        return self._as_wrapped_model

    def forward(self, *args, **kwargs):
        return self._as_wrapped_model(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._as_wrapped_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        """The wrapped model's generate; conditions are re-evaluated for every new prompt."""
        return self._as_wrapped_model.generate(*args, **kwargs)

    def to(self, *args, **kwargs) -> "MalleableModel":
        """Move the wrapped model; steering vectors follow each layer lazily on the next forward."""
        self._as_wrapped_model.to(*args, **kwargs)
        return self

    def eval(self) -> "MalleableModel":
        self._as_wrapped_model.eval()
        return self

    def __getattr__(self, name: str):
        # only called for attributes not found normally: delegate to the wrapped model
        if name.startswith("_as_") or name in ("_ctx", "_handles", "_plan", "tokenizer"):
            raise AttributeError(name)
        return getattr(self._as_wrapped_model, name)

    def __repr__(self) -> str:
        steered = self._plan.describe() if self._plan is not None else "not steered"
        return f"MalleableModel({type(self._as_wrapped_model).__name__}, {steered})"

    # ------------------------------------------------------------------ #
    # steering
    # ------------------------------------------------------------------ #
    @property
    def n_layers(self) -> int:
        return len(find_layers_and_base(self._as_wrapped_model)[1])

    @property
    def steering_plan(self) -> SteeringPlan | None:
        """The compiled plan currently installed (None when unsteered)."""
        return self._plan

    def steer(self, behavior_vector=None, behavior_layer_ids=DEFAULT_BEHAVIOR_LAYER_IDS, behavior_vector_strength=1.0,
              condition_vector=None, condition_layer_ids=None, condition_vector_threshold=None,
              condition_comparator_threshold_is="larger", condition_threshold_comparison_mode="mean",
              use_explained_variance=False, use_ooi_preventive_normalization=False,
              apply_behavior_on_first_call=True, **kwargs) -> None:
        """Steer with one behaviour vector, optionally only when one condition is met (SPEC 4).

        Replaces any previous steering. Every argument is validated before any hook
        changes, so a ValueError/TypeError leaves the model as it was.
        """
        self._reject_unknown(kwargs, "steer")
        plan = build_steer_plan(
            self.n_layers, _hidden_size(self._as_wrapped_model), behavior_vector, behavior_layer_ids,
            behavior_vector_strength, condition_vector, condition_layer_ids, condition_vector_threshold,
            condition_comparator_threshold_is, condition_threshold_comparison_mode, use_explained_variance,
            use_ooi_preventive_normalization, apply_behavior_on_first_call)
        self._install(plan)
        if behavior_vector is not None and condition_vector is not None and apply_behavior_on_first_call:
            early = sorted(i % self.n_layers for i in behavior_layer_ids
                           if i % self.n_layers < min(j % self.n_layers for j in condition_layer_ids))
            if early:
                # SPEC 4 semantics, but rarely what is wanted: the first reply token comes out unsteered
                log("MalleableModel", f"note: behaviour layers {early} run before the first condition layer on the "
                    "prompt pass, so there they see the condition as not met and the first generated token is "
                    "produced without them; put the condition at or before the first behaviour layer to steer "
                    "it too")

    def multisteer(self, behavior_vectors, behavior_layer_ids, behavior_vector_strengths, condition_vectors,
                   condition_layer_ids, condition_vector_thresholds, condition_comparator_threshold_is, rules,
                   condition_threshold_comparison_modes=None, use_explained_variance=False,
                   use_ooi_preventive_normalization=False, apply_behavior_on_first_call=True, **kwargs) -> None:
        """Several behaviours B1..Bm switched by rules over conditions C1..Cn (SPEC 4).

        Each rule reads `if <expr> then B<k>` with C<j> combined by and / or / not and
        parentheses; behaviour k is added for a row when any rule targeting it holds
        for that row. Replaces any previous steering; validated before any change.
        """
        self._reject_unknown(kwargs, "multisteer")
        plan = build_multisteer_plan(
            self.n_layers, _hidden_size(self._as_wrapped_model), behavior_vectors, behavior_layer_ids,
            behavior_vector_strengths, condition_vectors, condition_layer_ids, condition_vector_thresholds,
            condition_comparator_threshold_is, rules, condition_threshold_comparison_modes, use_explained_variance,
            use_ooi_preventive_normalization, apply_behavior_on_first_call)
        self._install(plan)

    def reset_leash_to_default(self) -> None:
        """Remove all steering: the model then behaves exactly as unwrapped."""
        self._remove_hooks()
        self._plan = None
        log("MalleableModel", "steering removed")

    def find_best_condition_point(self, *args, **kwargs):
        """Search condition layers/threshold/comparator by F1 (SPEC 4); see conditions/search.py."""
        from .conditions.search import find_best_condition_point

        return find_best_condition_point(self, *args, **kwargs)

    @staticmethod
    def _reject_unknown(kwargs: dict, method: str) -> None:
        if kwargs:
            raise TypeError(f"{method}() got unexpected keyword argument(s) {sorted(kwargs)}; see SPEC 4 for the "
                            "accepted arguments")

    def _install(self, plan: SteeringPlan) -> None:
        """Swap the installed hooks for `plan`'s. Everything that can fail runs first."""
        model = self._as_wrapped_model
        base, layers = find_layers_and_base(model)
        ctx = SteeringState()
        leashes = {}
        for i, lp in plan.layers.items():
            device, dtype = _param_placement(layers[i])
            leashes[i] = LeashLayer(lp, ctx, plan.use_ooi_preventive_normalization,
                                    plan.apply_behavior_on_first_call, device, dtype)
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
        self._handles.append(base.register_forward_pre_hook(PromptWatcher(ctx, base), with_kwargs=True))
        for i, leash in leashes.items():
            self._handles.append(layers[i].register_forward_pre_hook(leash, with_kwargs=True))
        model.__dict__[_OWNER_ATTR] = weakref.ref(self)
        log("MalleableModel", f"steering installed: {plan.describe()}")

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._ctx.reset()
        model = self._as_wrapped_model
        owner_ref = model.__dict__.get(_OWNER_ATTR)
        if owner_ref is not None and owner_ref() is self:
            del model.__dict__[_OWNER_ATTR]

    # ------------------------------------------------------------------ #
    # generation
    # ------------------------------------------------------------------ #
    def _input_device(self) -> torch.device:
        return self._as_wrapped_model.get_input_embeddings().weight.device

    def _generation_settings(self, settings: dict | None) -> dict:
        """SPEC 4 defaults (greedy, 50 new tokens, repetition penalty 1.1, pad = eos), updated by `settings`."""
        if settings is not None and not isinstance(settings, dict):
            raise TypeError(f"settings must be a dict of generate() arguments, got {type(settings).__name__}")
        out = {"do_sample": False, "max_new_tokens": 50, "repetition_penalty": 1.1,
               "pad_token_id": self.tokenizer.eos_token_id}
        out.update(settings or {})
        return out

    def respond(self, prompt: str, settings: dict | None = None, use_chat_template: bool = True,
                reset_after_response: bool = True) -> str:
        """Generate a reply to `prompt`; returns the decoded continuation only.

        The prompt is formatted with the chat template (add_generation_prompt=True)
        unless use_chat_template=False. Conditions are evaluated afresh for every
        prompt; reset_after_response=True also drops the per-row condition state
        afterwards (steering itself stays installed).
        """
        text = format_prompt(self.tokenizer, prompt, use_chat_template)
        kwargs = self._generation_settings(settings)
        enc = encode(self.tokenizer, [text], use_chat_template, device=self._input_device())
        with torch.no_grad():
            out = self._as_wrapped_model.generate(**enc, **kwargs)
        if reset_after_response:
            self._ctx.reset()
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def respond_batch_sequential(self, prompts: Sequence[str], settings: dict | None = None,
                                 use_chat_template: bool = True) -> list[str]:
        """`respond` on each prompt in turn."""
        prompts = self._check_prompts(prompts)
        return [self.respond(p, settings=settings, use_chat_template=use_chat_template) for p in prompts]

    def respond_batch(self, prompts: Sequence[str], settings: dict | None = None, use_chat_template: bool = True,
                      batch_size: int = 16, show_progress: bool = False) -> list[str]:
        """Truly batched `respond`: same texts as `respond_batch_sequential` for greedy settings.

        Prompts are tokenized one by one (exactly as respond does), grouped by length
        (longest first, so rows of a batch need little padding), LEFT-padded and
        generated batch by batch; each row is steered and conditioned on its own
        prompt only. Plain greedy settings (the default) run the row-dropping decode
        loop of steering/decode.py: a row leaves the batch as soon as it finishes.
        Other settings go through `generate` on the padded batch, with padding
        excluded from the repetition penalty so a row's penalty sees the same tokens
        as when it is generated alone. `show_progress` shows a bar over prompts.
        """
        prompts = self._check_prompts(prompts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        tok = self.tokenizer
        kwargs = self._generation_settings(settings)
        model = self._as_wrapped_model
        greedy = plain_greedy(model, kwargs)
        ids = [encode(tok, [format_prompt(tok, p, use_chat_template)], use_chat_template)["input_ids"][0]
               for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        device = self._input_device()
        pad_id = tok.pad_token_id
        replies: list[str] = [""] * len(ids)
        bar = tqdm(total=len(ids), desc="respond_batch", unit="prompt", disable=not show_progress or not ids,
                   leave=False)
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
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
        return replies

    def _generate_padded(self, input_ids, mask, width, chunk, ids, kwargs) -> list:
        """`generate` on one left-padded batch (any settings); padding kept out of the repetition penalty."""
        gen = dict(kwargs)
        penalty = gen.get("repetition_penalty", getattr(self._as_wrapped_model.generation_config,
                                                        "repetition_penalty", None))
        if penalty is not None and float(penalty) != 1.0:
            from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

            pads = torch.tensor([width - len(ids[i]) for i in chunk], dtype=torch.long)
            custom = list(gen.pop("logits_processor", None) or [])
            custom.append(RepetitionPenaltyLogitsProcessor(float(penalty), prompt_ignore_length=pads))
            gen["logits_processor"] = LogitsProcessorList(custom)
        out = self._as_wrapped_model.generate(input_ids=input_ids, attention_mask=mask, **gen)
        return [row[width:] for row in out]

    @staticmethod
    def _check_prompts(prompts) -> list[str]:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError("prompts must be a list of str")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"prompts[{i}] must be a str, got {type(p).__name__}")
        return list(prompts)
