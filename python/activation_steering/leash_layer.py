"""The hooks that steer a model in place: one `PromptWatcher` on the base model and
one `LeashLayer` per steered decoder layer (forward pre-hooks; no module is ever
replaced, so state_dict keys/values and save_pretrained are untouched).

Per forward pass:

1. `PromptWatcher` (steering/state.py, pre-hook of the base model) says how many
   positions at the front of the pass are PROMPT positions (the rest are
   GENERATED positions), whether this pass decides the conditions, and the real
   tokens of its prompt positions. Nothing is read back from the device.
2. Each `LeashLayer` (pre-hook of decoder layer i) acts on the layer's input:
   - a pass of prompt positions only (the one-pass prompt pass, a prefill chunk,
     a pre-pass) makes ONE call of the `steer_layer` op: it evaluates the
     conditions that live at layer i into the state (when the pass decides
     them), and adds its behaviours only if `apply_behavior_on_first_call`,
     gated by the conditions decided at layers <= i;
   - a pass of generated positions only (decode steps, prompt-lookup candidates)
     makes ONE call: behaviours gated by the row's conditions;
   - a pass holding both (use_cache=False recomputes the whole sequence each
     step) applies the two rules to its two parts and concatenates them.
   A layer with nothing to do in a pass is not called at all.

Conditions are evaluated in layer order during the prompt pass, so a behaviour
layer that runs before a condition layer sees that condition as not met. When a
pre-pass decided them (the prompt came in parts), a prompt position at layer i
sees the state the pre-pass had right after the deepest condition layer <= i:
the same thing. See docs/semantics.md, "Prompt positions and generated positions".

All state lives in one `SteeringState` per MalleableModel: two steered models in
one process never share anything. Logging (GlobalConfig "LeashLayer", off by
default) reads the state back to the host, so it is only done when enabled.
"""
from __future__ import annotations

import torch

from .conditions.similarity import condition_met
from .native import ops as _ops
from .config import GlobalConfig, log
from .steering.plan import LayerPlan
from .steering.state import SteeringState, StopPrepass


class LeashLayer:
    """Forward pre-hook of one steered decoder layer (the name the reference API logs under).

    Holds the layer's plan materialised on the layer's device and dtype: condition
    directions/thresholds/codes (float32), behaviour vectors and truth tables
    (0/1) in the layer's dtype.
    """

    def __init__(self, plan: LayerPlan, ctx: SteeringState, ooi: bool, apply_behavior_on_first_call: bool,
                 device: torch.device, dtype: torch.dtype) -> None:
        self.layer_id = plan.layer
        self.plan = plan
        self.ctx = ctx
        self.ooi = bool(ooi)
        self.apply_first = bool(apply_behavior_on_first_call)
        self.has_conditions = plan.cond_dirs is not None
        self.has_behaviors = plan.beh_vecs is not None
        self.gate_layer: int | None = None  # the deepest condition layer <= this one
        self.gate_is_final = True           # ... is the deepest of all: prompt positions see the final state
        self._place(device, dtype)

    def set_prompt_gate(self, gate_layer: int | None, final: bool) -> None:
        """Which conditions a prompt position sees here: those decided at layers <= this one."""
        self.gate_layer, self.gate_is_final = gate_layer, bool(final)

    def _place(self, device: torch.device, dtype: torch.dtype) -> None:
        """(Re)materialise the plan tensors on `device`; behaviour vectors in `dtype`."""
        p = self.plan
        self.device, self.dtype = device, dtype
        to = (lambda t, dt=None: None if t is None else t.to(device=device, dtype=dt or t.dtype).contiguous())
        self.cond = (to(p.cond_dirs), to(p.cond_thresholds), to(p.cond_codes)) if self.has_conditions else None
        beh_vecs = to(p.beh_vecs, dtype)
        if beh_vecs is not None and not bool(torch.isfinite(beh_vecs).all()):
            # only the layer's dtype can reveal this (fp16 overflows at 65504); the core checked float32
            raise ValueError(f"the behaviour vector at layer {self.layer_id} times its strength is not finite in "
                             f"{dtype} (the layer's dtype; largest value {p.beh_vecs.abs().max().item():.4g}); use "
                             f"a smaller strength or run the model in float32")
        self.beh_vecs = beh_vecs
        self.beh_tables = to(p.beh_tables, dtype)  # 0/1 in the hidden dtype: the op gates without a cast

    def __call__(self, module, args, kwargs):
        ctx = self.ctx
        state = ctx.state
        if state is None:  # the layer runs outside a base-model forward: nothing to steer against
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        n_prompt, width = ctx.n_prompt, hidden.shape[1]
        if n_prompt == width:
            out = self._prompt(hidden, state)
        elif n_prompt == 0:
            out = self._generated(hidden, state)
        else:  # use_cache=False recomputes prompt and generated positions in one pass
            a = self._prompt(hidden[:, :n_prompt], state)
            b = self._generated(hidden[:, n_prompt:], state)
            if a is None and b is None:
                return None
            out = torch.cat([hidden[:, :n_prompt] if a is None else a, hidden[:, n_prompt:] if b is None else b], 1)
        if out is None:
            return None
        if args:
            return (out, *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = out
        return args, kwargs

    def _ready(self, hidden: torch.Tensor, state: torch.Tensor, behave: bool) -> torch.Tensor:
        if hidden.device != self.device or (behave and hidden.dtype != self.dtype):
            self._place(hidden.device, hidden.dtype)  # model moved or runs in another dtype
        if state.device != hidden.device:  # layers split across devices: the state follows
            state = self.ctx.state = state.to(hidden.device)
            self.ctx.snapshots = {i: s.to(hidden.device) for i, s in self.ctx.snapshots.items()}
        return state

    def _prompt(self, hidden: torch.Tensor, state: torch.Tensor) -> torch.Tensor | None:
        """Prompt positions: conditions (when this pass evaluates them), behaviours if apply_first."""
        ctx = self.ctx
        evaluate = ctx.evaluate and self.has_conditions
        behave = self.has_behaviors and self.apply_first
        if not evaluate and not behave:
            return None
        state = self._ready(hidden, state, behave)
        if evaluate or self.gate_is_final:
            gate = state  # during evaluation the op itself brings it up to this layer
        else:  # a prompt seeded by a pre-pass: the state as it stood at this layer in the one-pass prompt pass
            gate = ctx.prompt_gate(self.gate_layer)
        mask = ctx.token_mask
        if mask is not None and mask.device != hidden.device:
            mask = ctx.token_mask = mask.to(hidden.device)
        c_dirs, c_thr, c_codes = self.cond if evaluate else (None, None, None)
        out = _ops.steer_layer(hidden, gate, mask, c_dirs, c_thr, c_codes,
                               self.beh_vecs if behave else None, self.beh_tables if behave else None,
                               self.ooi and behave)
        if evaluate and ctx.record:
            ctx.snapshots[self.layer_id] = state.clone()
        if ctx.verbose:  # only when LeashLayer logging is on: the sims are recomputed for the log
            self._log(True, evaluate, behave, state, hidden, mask)
        if ctx.stop_at == self.layer_id:
            raise StopPrepass
        return out if behave else None

    def _generated(self, hidden: torch.Tensor, state: torch.Tensor) -> torch.Tensor | None:
        """Generated positions: behaviours gated by the row's conditions (decided on its prompt)."""
        if not self.has_behaviors:
            return None
        state = self._ready(hidden, state, True)
        B, T, D = hidden.shape
        if self.ooi and T > 1:
            # OOI decides per decode step, and each generated position was (or stands for) its own step
            out = _ops.steer_layer(hidden.reshape(B * T, 1, D), state.repeat_interleave(T), None, None, None, None,
                                   self.beh_vecs, self.beh_tables, True)
            out = out.reshape(B, T, D)
        else:
            out = _ops.steer_layer(hidden, state, None, None, None, None, self.beh_vecs, self.beh_tables, self.ooi)
        if self.ctx.verbose:
            self._log(False, False, True, state)
        return out

    def _log(self, prompt: bool, evaluated: bool, behave: bool, state: torch.Tensor,
             hidden: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> None:
        """One summary line, plus per row and condition: similarity, threshold, comparator, decision.

        The op decides on the device without returning the similarities; while logging
        is on they are recomputed by the same kernel (the condition_similarity op)."""
        msg = f"layer {self.layer_id} ({'prompt' if prompt else 'decode'})"
        if evaluated:
            msg += f": conditions {[j + 1 for j in self.plan.cond_ids]} evaluated, row bitmasks {state.tolist()}"
        if behave:
            msg += f"; behaviours {[k + 1 for k in self.plan.beh_ids]} gated by the row bitmasks"
        if evaluated and hidden is not None and self.cond is not None:
            dirs, thresholds, codes = self.cond
            sims = _ops.condition_similarity(hidden.detach(), mask, dirs, codes)          # [B, K] float32
            for k, cid in enumerate(self.plan.cond_ids):
                _bit, smaller, pooling = (int(x) for x in codes[k])
                thr = float(thresholds[k])
                comparator = "smaller" if smaller else "larger"
                met = condition_met(sims[:, k], thr, comparator)
                for row in range(sims.shape[0]):
                    msg += (f"\n  row {row}: C{cid + 1} similarity {float(sims[row, k]):.4f} threshold {thr:.4f} "
                            f"({comparator}: met iff similarity {'>' if smaller else '<'} threshold, "
                            f"{('mean', 'last token', 'user text')[pooling]}) -> {'met' if bool(met[row]) else 'not met'}")
        log("LeashLayer", msg)
