"""Per-model steering state and the base-model pre-hook that tells prompt positions from generated ones.

`SteeringState` holds, per batch row, which conditions have been met, and what
the pass in flight holds: how many of its positions (at the front) are PROMPT
positions, whether it decides the conditions, and the real-token mask of its
prompt positions. The `PromptWatcher` (a forward pre-hook of the base model)
fills that in before the decoder layers run:

- inside a generation (`generate` wrapped by steering/generation.py, which
  records the prompt in a `PromptSession`): by counting the positions each pass
  consumes. A pass without a cache starts again at position 0 (use_cache=False);
  a pass with one continues where the last one ended (the caller's cached prefix
  at first). Positions below the prompt's width are prompt positions. The
  conditions are decided in the pass that holds the whole prompt, or were seeded
  by a pre-pass when no pass does (chunked prefill, a caller's cache);
- outside generation (a plain forward: training, evaluation, a hand-written
  decoding loop): a pass with no cache, an empty one, or a new batch size is one
  whole prompt; otherwise its positions are decode steps of the last prompt.

The per-layer hook that acts on it is `leash_layer.LeashLayer`. No cache length
is read inside a generation (state-space caches have none), and nothing is read
back from the device. See docs/semantics.md, "Prompt positions and generated positions".

Not here: the op (native/ops.py), the plan (plan.py), decoding (decode.py).
"""
from __future__ import annotations

import inspect
import threading

import torch

from ..activations.runner import CACHE_ARGUMENTS as _CACHE_ARGS
from ..activations.user_text import UserText
from ..config import GlobalConfig, log


THREAD_ERROR = ("this steered model is already running a forward pass in another thread; its steering state is "
                "per model, so concurrent calls would mix rows. Call generate/respond/respond_batch (they are "
                "serialised per model), or give each thread its own model")


class StopPrepass(Exception):
    """Raised by the deepest condition layer's hook to end a pre-pass (steering/generation.py)."""


class PromptSession:
    """The prompt of one generate call: positions [0, length) of every row are prompt positions.

    `real` [B0, length] marks each row's real prompt tokens (its padding is not
    pooled by conditions); `consumed` counts the positions already processed (the
    caller's cached prefix at the start). Rows are expanded on the first pass that
    has more of them (beams, num_return_sequences: transformers repeats every
    prompt `k` times in place).
    """

    def __init__(self, real: torch.Tensor | None, length: int, cached: int, needs_prepass: bool) -> None:
        self.real = real
        self.pool: torch.Tensor | None = None  # [B0, length] int64 user-text token mask, when a condition needs it
        self.length = length
        self.consumed = cached
        self.needs_prepass = needs_prepass
        self.thread = threading.get_ident()


class SteeringState:
    """Per-model, per-row condition state shared by one model's hooks, and what the current pass holds."""

    def __init__(self, n_conditions: int = 0, base_params: tuple = ()) -> None:
        self.n_conditions = n_conditions
        self.base_params = base_params
        self.state: torch.Tensor | None = None       # [B] int64 condition bitmasks (bit j = C<j+1> met)
        self.token_mask: torch.Tensor | None = None  # [B, n_prompt] real tokens of this pass's prompt positions
        self.is_prompt: bool = False                 # every position of this pass is a prompt position
        self.n_prompt: int = 0                       # prompt positions at the front of this pass
        self.evaluate: bool = False                  # this pass evaluates the conditions (the whole prompt)
        self.known: bool = False                     # the rows' conditions are already decided
        self.snapshots: dict[int, torch.Tensor] = {}  # condition layer -> the state right after it (prompt gating)
        self.record: bool = False                    # keep snapshots in this pass
        self.stop_at: int | None = None              # a pre-pass ends after this layer's hook
        self.prepass: bool = False
        self.session: PromptSession | None = None
        self.active: int | None = None               # thread id of the forward in flight (plain forwards)
        self.verbose: bool = False
        self.user_text: UserText | None = None      # the locator, when a condition pools "user_text"

    # -- generation sessions (steering/generation.py) ------------------------ #
    def begin(self, session: PromptSession) -> None:
        self.session = session
        self.state = None
        self.known = self.n_conditions == 0
        self.snapshots = {}

    def end(self) -> None:
        self.session = None
        self.prepass = False
        self.stop_at = None

    def start_prepass(self, stop_at: int) -> None:
        self.prepass = True
        self.stop_at = stop_at

    def finish_prepass(self) -> None:
        self.prepass = False
        self.stop_at = None

    def prompt_gate(self, layer: int | None) -> torch.Tensor:
        """The state a prompt position sees at a layer whose last condition layer so far is `layer`."""
        if layer is None:
            return torch.zeros_like(self.state)
        return self.snapshots[layer]

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep only rows `keep` of the batch (finished rows left a batched decode)."""
        if self.state is not None:
            self.state = self.state[keep.to(self.state.device)]
        self.snapshots = {}
        self.token_mask = None  # set afresh by the next pass

    def reset(self) -> None:
        self.state = None
        self.token_mask = None
        self.is_prompt = False
        self.n_prompt = 0
        self.evaluate = False
        self.known = False
        self.snapshots = {}
        self.session = None
        self.prepass = False
        self.stop_at = None


def _cache_length(cache) -> int:
    """Tokens already in a KV cache (0 for None / empty), for plain forwards only. Shape-based: no device sync.

    A cache of state-space layers only (Mamba, Mamba2, FalconMamba) has no sequence
    length (its get_seq_length raises): there the result is 1 once a pass has left
    a state in it (`has_previous_state()`), else 0 - "empty or not", not a length.
    Generation never asks this (steering/generation.py counts positions itself)."""
    if cache is None:
        return 0
    get = getattr(cache, "get_seq_length", None)
    if get is not None:
        try:
            return int(get())
        except Exception:  # noqa: BLE001 - no length: ask whether it holds a state at all
            has_state = getattr(cache, "has_previous_state", None)
            return int(bool(has_state())) if callable(has_state) else 1
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        return int(cache[0][0].shape[-2])  # legacy tuple-of-tuples cache
    return 0


def user_text_mask(ctx: SteeringState, ids: torch.Tensor | None, real: torch.Tensor, width: int) -> torch.Tensor:
    """The op's token mask [B, width] int64 of prompts whose conditions pool "user_text": 0 padding,
    1 other real tokens, 2 the user's message (activations/user_text.py). The message is located in the
    prompt's token ids, so a prompt given only as inputs_embeds, or without its cached prefix, raises."""
    if ids is None:
        raise ValueError("condition_threshold_comparison_mode='user_text' locates the user's message in the prompt's "
                         "token ids; pass input_ids (not inputs_embeds), or use 'mean' or 'last'")
    if ids.dim() != 2 or ids.shape[1] != width:
        raise ValueError("condition_threshold_comparison_mode='user_text' needs the FULL input_ids of the prompt (the "
                         f"cached prefix included): got {tuple(ids.shape)} ids for a prompt of {width} positions")
    return ctx.user_text.mask(ids, real)


class PromptWatcher:
    """Forward pre-hook of the base model: which positions of this pass are prompt positions."""

    def __init__(self, ctx: SteeringState, base: torch.nn.Module) -> None:
        self.ctx = ctx
        try:
            params = list(inspect.signature(base.forward).parameters)
        except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
            params = []
        ctx.base_params = tuple(params)
        # positions of the arguments we read, for callers that pass them positionally
        self.pos = {name: params.index(name) for name in ("input_ids", "attention_mask", "inputs_embeds", *_CACHE_ARGS)
                    if name in params}

    def _arg(self, args: tuple, kwargs: dict, name: str):
        if name in kwargs:
            return kwargs[name]
        i = self.pos.get(name)
        return args[i] if i is not None and i < len(args) else None

    def done(self, module, args, kwargs, output) -> None:
        """Forward hook (always called, also after an exception): this thread's pass is over."""
        if not torch.compiler.is_compiling() and self.ctx.active == threading.get_ident():
            self.ctx.active = None

    def __call__(self, module, args, kwargs):
        ctx = self.ctx
        x = self._arg(args, kwargs, "input_ids")
        if x is None:
            x = self._arg(args, kwargs, "inputs_embeds")
        if x is None or x.dim() < 2:
            return None
        batch, width = x.shape[0], x.shape[1]
        session = ctx.session
        if not torch.compiler.is_compiling():
            me = threading.get_ident()
            if (session is not None and session.thread != me) or (ctx.active is not None and ctx.active != me):
                raise RuntimeError(THREAD_ERROR)
            ctx.active = me
        cache = None
        for name in _CACHE_ARGS:
            cache = self._arg(args, kwargs, name)
            if cache is not None:
                break
        if session is None or session.real is None:
            self._plain_pass(args, kwargs, x, batch, width, cache)
        elif ctx.prepass:
            self._prepass(x, batch, width, session)
        else:
            self._session_pass(x, batch, width, cache, session)
        # plain dict lookups (not Logger.isEnabledFor): torch.compile traces this hook without a graph break
        ctx.verbose = GlobalConfig.is_verbose("LeashLayer") or GlobalConfig.should_log_to_file("LeashLayer")
        if ctx.verbose:
            kind = "prompt" if ctx.n_prompt == width else "decode" if ctx.n_prompt == 0 else "mixed"
            log("LeashLayer", f"{kind} pass: batch {batch}, {width} position(s), {ctx.n_prompt} prompt position(s)"
                f"{', conditions evaluated' if ctx.evaluate else ''}")
        return None

    def _plain_pass(self, args, kwargs, x, batch, width, cache) -> None:
        """A forward outside generate: one whole prompt, unless it continues the last one through a cache."""
        ctx = self.ctx
        prompt = _cache_length(cache) == 0 or ctx.state is None or ctx.state.shape[0] != batch
        mask = self._arg(args, kwargs, "attention_mask")
        ctx.is_prompt = ctx.evaluate = prompt
        ctx.n_prompt = width if prompt else 0
        ctx.record = False
        ctx.token_mask = mask[:, -width:] if prompt and isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if prompt and ctx.user_text is not None:
            ids = self._arg(args, kwargs, "input_ids")
            real = ctx.token_mask if ctx.token_mask is not None else torch.ones(batch, width, dtype=torch.long)
            ctx.token_mask = user_text_mask(ctx, ids, real, width).to(x.device)
        if prompt:
            ctx.state = torch.zeros(batch, dtype=torch.long, device=x.device)

    def _prepass(self, x, batch, width, session: PromptSession) -> None:
        ctx = self.ctx
        ctx.is_prompt = ctx.evaluate = ctx.record = True
        ctx.n_prompt = width
        ctx.token_mask = (session.real if session.pool is None else session.pool).to(x.device)
        ctx.state = torch.zeros(batch, dtype=torch.long, device=x.device)
        ctx.snapshots = {}
        ctx.known = True

    def _session_pass(self, x, batch, width, cache, session: PromptSession) -> None:
        ctx = self.ctx
        # a pass without a cache recomputes the sequence from its start (use_cache=False);
        # a pass with one continues after what it consumed (the caller's prefix at first)
        start = 0 if cache is None else session.consumed
        session.consumed = start + width
        if ctx.state is None:
            ctx.state = torch.zeros(session.real.shape[0], dtype=torch.long, device=x.device)
        if batch != ctx.state.shape[0]:
            self._expand(batch, session)
        n_prompt = min(max(session.length - start, 0), width)
        ctx.n_prompt = n_prompt
        ctx.is_prompt = n_prompt == width
        ctx.evaluate = not ctx.known and start == 0 and n_prompt == session.length
        if ctx.evaluate:
            ctx.known = True
            ctx.record = True
            ctx.snapshots = {}
            ctx.state.zero_()
        else:
            ctx.record = False
            if not ctx.known and n_prompt:  # pragma: no cover - generation.py seeds every split prompt
                raise RuntimeError("steering: a prompt arrived in parts without its conditions being computed")
        real = session.real if session.pool is None else session.pool
        if real.device != x.device:
            real = real.to(x.device)
            if session.pool is None:
                session.real = real
            else:
                session.pool = real
        ctx.token_mask = real[:, start:start + n_prompt] if n_prompt else None

    def _expand(self, batch: int, session: PromptSession) -> None:
        """Beams / num_return_sequences: transformers repeats each prompt k times in place."""
        ctx = self.ctx
        rows = ctx.state.shape[0]
        if rows == 0 or batch % rows:
            raise RuntimeError(f"steering: a generation pass has {batch} rows for {rows} prompts")
        k = batch // rows
        ctx.state = ctx.state.repeat_interleave(k, 0)
        ctx.snapshots = {i: s.repeat_interleave(k, 0) for i, s in ctx.snapshots.items()}
        session.real = session.real.repeat_interleave(k, 0)
        if session.pool is not None:
            session.pool = session.pool.repeat_interleave(k, 0)
