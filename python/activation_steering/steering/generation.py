"""Which positions of a generation are prompt positions: the steered model's `generate`.

While steering is installed, the wrapped model's `generate` (and
`generate_batch`) are instance attributes set here and removed by
`reset_leash_to_default`. Before transformers runs, the wrapper records the
prompt of each row (its real tokens, the cached part included) in a
`PromptSession`; the base-model pre-hook (steering/state.py) then counts the
positions each pass consumes and tells every steered layer how many positions
at the front of the pass are PROMPT positions and how many are GENERATED ones.
That makes the result independent of how the prompt arrives (see
docs/semantics.md, "Prompt positions and generated positions"):

- one pass with an empty cache (the reference, and the hot path): the conditions
  are evaluated in that pass, exactly as before;
- `use_cache=False`: every step recomputes the whole sequence; the prompt part
  gets the prompt rule, the rest the decode rule, conditions are not re-decided;
- chunked prefill (`prefill_chunk_size`) or a cache passed in by the caller: the
  conditions need hidden states of prompt positions that no single pass holds, so
  a truncated pre-pass over the whole prompt (up to the deepest condition layer,
  with the prompt rule) computes them exactly first, and seeds every row.

Where no exact result exists the wrapper raises a ValueError naming the option,
before anything is generated:

- a caller's cache holds prompt positions computed without steering, but
  `apply_behavior_on_first_call=True` adds behaviours there;
- OOI rescales a row when ANY of its prompt positions grows, so with behaviours
  on prompt positions it needs the whole prompt in one pass (no chunks).

Continuous batching (`generate_batch`, `cache_implementation="paged"`) packs
requests into shared rows; it is refused with NotImplementedError while steered.

What this is not: a decoding loop. transformers decodes; this only watches.
"""
from __future__ import annotations

import copy
import threading

import torch

from .state import PromptSession, SteeringState, StopPrepass, user_text_mask

CONTINUOUS_BATCHING_ERROR = (
    "continuous batching (generate_batch / cache_implementation='paged') packs several requests into shared "
    "rows, so steering cannot tell each request's prompt positions from its generated ones; call generate() "
    "or MalleableModel.respond_batch() instead, or reset_leash_to_default() first")


def context_length(model) -> int | None:
    """The longest sequence the model's position embeddings cover (None when unbounded/unknown)."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_lengths(model, lengths, what: str = "prompt") -> None:
    """A clear ValueError for an empty prompt or one longer than the model's context, before generating."""
    limit = context_length(model)
    for i, n in enumerate(lengths):
        if n == 0:
            raise ValueError(f"{what} {i} is empty (no tokens to condition on or continue); pass a non-empty prompt")
        if limit is not None and n > limit:
            raise ValueError(f"{what} {i} has {n} tokens, more than the model's context "
                             f"(max_position_embeddings={limit}); shorten it")


def cached_length(cache) -> int | None:
    """Positions already in a caller's cache: 0 for none, None when the cache cannot say (state-space caches)."""
    if cache is None:
        return 0
    if isinstance(cache, (tuple, list)):
        if cache and isinstance(cache[0], (tuple, list)) and cache[0]:
            return int(cache[0][0].shape[-2])
        return 0
    linear = getattr(cache, "is_linear", None)
    try:
        if linear is not None and len(linear) and all(linear):
            return None
        return int(cache.get_seq_length())
    except Exception:  # noqa: BLE001 - any cache that cannot report a length
        return None


class GenerationGuard:
    """The instance-level `generate` / `generate_batch` of a steered model (installed by MalleableModel)."""

    def __init__(self, model, base, ctx: SteeringState, plan, lock: threading.RLock) -> None:
        self.model = model
        self.base = base
        self.ctx = ctx
        self.lock = lock
        self.has_conditions = plan.n_conditions > 0
        self.has_behaviors = any(lp.beh_vecs is not None for lp in plan.layers.values())
        self.apply_first = bool(plan.apply_behavior_on_first_call)
        self.ooi = bool(plan.use_ooi_preventive_normalization)
        self.deepest_condition = max((i for i, lp in plan.layers.items() if lp.cond_dirs is not None), default=None)
        self._saved: dict = {}

    # ------------------------------------------------------------------ install
    def install(self) -> None:
        d = self.model.__dict__
        for name, fn in (("generate", self.generate), ("generate_batch", self.generate_batch)):
            self._saved[name] = d.get(name)  # a caller's own instance attribute, restored on remove
            d[name] = fn

    def remove(self) -> None:
        d = self.model.__dict__
        for name, fn in (("generate", self.generate), ("generate_batch", self.generate_batch)):
            if d.get(name) == fn:
                if self._saved.get(name) is not None:
                    d[name] = self._saved[name]
                else:
                    del d[name]
        self._saved = {}

    def _inner(self, name: str):
        saved = self._saved.get(name)
        return saved if saved is not None else getattr(type(self.model), name).__get__(self.model)

    # ------------------------------------------------------------------ calls
    def generate_batch(self, *args, **kwargs):
        raise NotImplementedError(CONTINUOUS_BATCHING_ERROR)

    def generate(self, *args, **kwargs):
        with self.lock:
            prompt = self._describe(args, kwargs)
            session = self._plan_session(prompt)
            ctx = self.ctx
            ctx.begin(session)
            try:
                if session.needs_prepass:
                    self._prepass(prompt, session)
                return self._inner("generate")(*args, **kwargs)
            finally:
                ctx.end()

    # ------------------------------------------------------------------ prompt
    def _describe(self, args: tuple, kwargs: dict) -> dict:
        model = self.model
        config = kwargs.get("generation_config") or model.generation_config
        config = copy.deepcopy(config)
        for key, value in kwargs.items():
            if hasattr(config, key) and not key.startswith("_"):
                setattr(config, key, value)
        if getattr(config, "cache_implementation", None) == "paged":
            raise NotImplementedError(CONTINUOUS_BATCHING_ERROR)
        ids = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input_ids", kwargs.get("inputs"))
        embeds = kwargs.get("inputs_embeds")
        mask = kwargs.get("attention_mask")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        source = embeds if embeds is not None else ids
        if source is None or source.dim() < 2:
            return {"skip": True}
        width = mask.shape[1] if isinstance(mask, torch.Tensor) and mask.dim() == 2 else source.shape[1]
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            real = mask != 0
        else:
            real = torch.ones(source.shape[:2], dtype=torch.bool, device=source.device)
            pad, eos = config.pad_token_id, config.eos_token_id
            eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
            if embeds is None and pad is not None and pad not in eos:  # as generate() infers a mask
                real = ids != pad
        return {"skip": False, "ids": ids, "embeds": embeds, "real": real, "width": width, "cache": cache,
                "cached": cached_length(cache), "config": config}

    def _plan_session(self, prompt: dict) -> PromptSession:
        if prompt["skip"]:  # nothing we can read: transformers will complain about it itself
            return PromptSession(None, 0, 0, needs_prepass=False)
        real, width, cached, config = prompt["real"], prompt["width"], prompt["cached"], prompt["config"]
        check_prompt_lengths(self.model, real.sum(1).tolist(), "prompt row")
        behaviors_on_prompt = self.has_behaviors and self.apply_first
        full_ids = prompt["embeds"] is not None or (prompt["ids"] is not None and prompt["ids"].shape[1] == width)
        needs_prepass = False
        if cached is None or cached > 0:
            what = "the cache passed to generate (past_key_values / cache)"
            if behaviors_on_prompt:
                raise ValueError(
                    f"{what} holds prompt positions that were computed without this steering, but "
                    "apply_behavior_on_first_call=True adds the behaviour at every prompt position; pass "
                    "apply_behavior_on_first_call=False to steer(), or generate without a prefix cache")
            if self.has_conditions:
                if cached is None:
                    raise ValueError(f"{what} cannot report how many prompt positions it holds (a state-space cache), "
                                     "so the condition cannot be pooled over the whole prompt; generate without it")
                if not full_ids:
                    raise ValueError(f"with {what}, pass the FULL input_ids (the cached prefix included) so the "
                                     "condition can be pooled over the whole prompt")
                needs_prepass = True
        chunk = getattr(config, "prefill_chunk_size", None)
        if chunk is not None and config.use_cache is not False and int(chunk) < width - (cached or 0):
            if self.ooi and behaviors_on_prompt:
                raise ValueError(
                    f"prefill_chunk_size={chunk} splits the prompt across passes, but "
                    "use_ooi_preventive_normalization=True rescales a row when ANY of its prompt positions grows, "
                    "which needs the whole prompt in one pass; pass prefill_chunk_size=None, or "
                    "apply_behavior_on_first_call=False")
            needs_prepass = needs_prepass or self.has_conditions
        session = PromptSession(real, width, cached or 0, needs_prepass=needs_prepass)
        if self.ctx.user_text is not None:  # a condition pools the user's message: locate it now, before generating
            session.pool = user_text_mask(self.ctx, prompt["ids"] if prompt["embeds"] is None else None, real, width)
        return session

    def _prepass(self, prompt: dict, session: PromptSession) -> None:
        """The one-pass prompt pass over the whole prompt, up to the deepest condition layer: seeds the state."""
        real = prompt["real"]
        mask = real.to(torch.long)
        position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        if prompt["embeds"] is not None:
            inputs = {"inputs_embeds": prompt["embeds"]}
        else:
            inputs = {"input_ids": prompt["ids"]}
        device = self.model.get_input_embeddings().weight.device
        inputs.update(attention_mask=mask, position_ids=position_ids, use_cache=False)
        inputs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        params = self.ctx.base_params
        if params:
            inputs = {k: v for k, v in inputs.items() if k in params}
        self.ctx.start_prepass(self.deepest_condition)
        try:
            with torch.no_grad():
                self.base(**inputs)
        except StopPrepass:
            pass
        finally:
            self.ctx.finish_prepass()
