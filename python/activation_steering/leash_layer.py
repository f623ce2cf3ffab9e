"""The hooks that steer a model in place: one `PromptWatcher` on the base model and
one `LeashLayer` per steered decoder layer (forward pre-hooks; no module is ever
replaced, so state_dict keys/values and save_pretrained are untouched).

Per forward pass:

1. `PromptWatcher` (pre-hook of the base model, which receives input_ids /
   attention_mask / the KV cache) decides whether this pass is a NEW PROMPT: no
   cache, an empty cache, or a batch size different from the state it holds.
   On a new prompt it resets the per-row condition state to zeros [B] (int64, on
   the input's device). It records the 2-D attention mask of the positions in
   this pass (`attention_mask[:, -T:]`, the real tokens) for condition pooling
   and OOI. Nothing is read back from the device.
2. Each `LeashLayer` (pre-hook of decoder layer i) makes ONE call of the
   `steer_layer` op on the layer's input: on a prompt pass it evaluates the
   conditions that live at layer i into the state, and adds its behaviours only
   if `apply_behavior_on_first_call`; on later (decode) passes it adds its
   behaviours gated by the state. A layer with nothing to do in a pass is not
   called at all.

Conditions are evaluated in layer order during the prompt pass, so a behaviour
layer that runs before a condition layer sees that condition as not met (SPEC 4).

All state lives in one `SteeringState` per MalleableModel: two steered models in
one process never share anything. Logging (GlobalConfig "LeashLayer", off by
default) reads the state back to the host, so it is only done when enabled.
"""
from __future__ import annotations

import torch

from .native import ops as _ops
from .config import GlobalConfig, log
from .steering.plan import LayerPlan
from .steering.state import SteeringState


class LeashLayer:
    """Forward pre-hook of one steered decoder layer (the SPEC's LeashLayer).

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
        self._place(device, dtype)

    def _place(self, device: torch.device, dtype: torch.dtype) -> None:
        """(Re)materialise the plan tensors on `device`; behaviour vectors in `dtype`."""
        p = self.plan
        self.device, self.dtype = device, dtype
        to = (lambda t, dt=None: None if t is None else t.to(device=device, dtype=dt or t.dtype).contiguous())
        self.cond = (to(p.cond_dirs), to(p.cond_thresholds), to(p.cond_codes)) if self.has_conditions else None
        self.beh_vecs = to(p.beh_vecs, dtype)
        self.beh_tables = to(p.beh_tables, dtype)  # 0/1 in the hidden dtype: the op gates without a cast

    def __call__(self, module, args, kwargs):
        ctx = self.ctx
        state = ctx.state
        if state is None:  # the layer runs outside a base-model forward: nothing to steer against
            return None
        prompt = ctx.is_prompt
        cond = self.cond if prompt else None
        behave = self.has_behaviors and (not prompt or self.apply_first)
        if cond is None and not behave:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.device != self.device or (behave and hidden.dtype != self.dtype):
            self._place(hidden.device, hidden.dtype)  # model moved or runs in another dtype
            cond = self.cond if prompt else None
        if state.device != hidden.device:  # layers split across devices: the state follows
            state = ctx.state = state.to(hidden.device)
        mask = ctx.token_mask
        if mask is not None and mask.device != hidden.device:
            mask = ctx.token_mask = mask.to(hidden.device)
        c_dirs, c_thr, c_codes = cond if cond is not None else (None, None, None)
        out = _ops.steer_layer(hidden, state, mask, c_dirs, c_thr, c_codes,
                               self.beh_vecs if behave else None, self.beh_tables if behave else None,
                               self.ooi and behave)
        if ctx.verbose:  # only when LeashLayer logging is on: the sims are recomputed for the log
            self._log(prompt, cond is not None, behave, state, hidden, mask, cond)
        if not behave:
            return None
        if args:
            return (out, *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = out
        return args, kwargs

    def _log(self, prompt: bool, evaluated: bool, behave: bool, state: torch.Tensor,
             hidden: torch.Tensor | None = None, mask: torch.Tensor | None = None, cond=None) -> None:
        """One summary line, plus per row and condition: similarity, threshold, comparator, decision.

        The op decides on the device without returning the similarities, so they are
        recomputed here from the same pooled hidden states (only while logging is on)."""
        msg = f"layer {self.layer_id} ({'prompt' if prompt else 'decode'})"
        if evaluated:
            msg += f": conditions {[j + 1 for j in self.plan.cond_ids]} evaluated, row bitmasks {state.tolist()}"
        if behave:
            msg += f"; behaviours {[k + 1 for k in self.plan.beh_ids]} gated by the row bitmasks"
        if evaluated and hidden is not None and cond is not None:
            from .conditions.similarity import condition_met, condition_similarity

            dirs, thresholds, codes = cond
            h = hidden.detach().to(torch.float32)
            real = (mask != 0) if mask is not None else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
            counts = real.sum(1)                                                          # [B]
            mean = (h * real.unsqueeze(-1)).sum(1) / counts.clamp(min=1).unsqueeze(-1)    # [B, D]
            last_pos = torch.where(real, torch.arange(h.shape[1], device=h.device), -1).amax(1).clamp(min=0)
            last = h[torch.arange(h.shape[0], device=h.device), last_pos]                 # [B, D]
            for k, cid in enumerate(self.plan.cond_ids):
                bit, smaller, use_last = (int(x) for x in codes[k])
                pooled = torch.where(counts.unsqueeze(-1) > 0, last if use_last else mean, torch.zeros_like(mean))
                sims = condition_similarity(pooled, dirs[k])                              # [B]
                thr = float(thresholds[k])
                comparator = "smaller" if smaller else "larger"
                met = condition_met(sims, thr, comparator)
                for row in range(h.shape[0]):
                    msg += (f"\n  row {row}: C{cid + 1} similarity {float(sims[row]):.4f} threshold {thr:.4f} "
                            f"({comparator}: met iff similarity {'>' if smaller else '<'} threshold, "
                            f"{'last token' if use_last else 'mean'}) -> {'met' if bool(met[row]) else 'not met'}")
        log("LeashLayer", msg)
