"""The fast path behind `MalleableModel.respond_batch`: greedy decoding of a
left-padded batch that DROPS rows as soon as they finish.

Why not `model.generate` on the whole batch: generate keeps every row stepping
until the LAST row is done, so one long answer makes fifteen finished rows pay
for its tokens, and it runs its general machinery (processor lists, stopping
criteria, input preparation) on every step. Here a row that emits eos (or hits
max_new_tokens) leaves the batch at once: its KV-cache rows, mask, position,
repetition-penalty bookkeeping and per-row steering state are dropped together.

Exactness: the loop does per row exactly what `generate` does for that row alone
(the reference, `respond`):

    logits  = model(ids, mask, position_ids = cumsum(mask) - 1, cache)[:, -1] in float32
    scores  = where(seen, where(logits < 0, logits * p, logits / p), logits)   # repetition penalty p
    next    = argmax(scores)

where `seen` marks the row's own prompt tokens (never its padding) and its own
generated tokens. Tests check respond_batch == respond_batch_sequential text for
text; the only difference to the reference is float rounding of batched matmuls.

Only plain greedy settings take this path (see `plain_greedy`); anything else
(sampling, beams, extra processors, stopping criteria, ...) goes through
`generate` on the padded batch, which is exact for greedy and honours every option.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch

# generate() options this loop implements; any other non-default option means "use generate"
_HANDLED = {"max_new_tokens", "repetition_penalty", "pad_token_id", "eos_token_id", "bos_token_id", "do_sample",
            "use_cache", "max_length", "output_attentions", "output_hidden_states", "transformers_version",
            "_from_model_config",
            # sampling-only knobs: ignored by generate when do_sample=False
            "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"}


@dataclass
class GreedyPlan:
    max_new_tokens: int
    penalty: float | None          # None: no repetition penalty
    eos_ids: tuple[int, ...]       # a row stops after emitting any of these


def plain_greedy(model, gen: dict) -> GreedyPlan | None:
    """The plan for `gen` (respond's settings) if they ask for plain greedy decoding, else None."""
    config = copy.deepcopy(model.generation_config)
    unused = config.update(**gen)
    if unused:  # logits_processor, stopping_criteria, streamer, ...: generate's business
        return None
    if config.do_sample or config.max_new_tokens is None or int(config.max_new_tokens) < 1:  # generate judges it
        return None
    if (config.num_beams or 1) != 1 or (config.num_return_sequences or 1) != 1:
        return None
    if config.use_cache is False:
        return None
    if any(key not in _HANDLED for key in config.to_diff_dict()):
        return None
    penalty = config.repetition_penalty
    penalty = None if penalty is None or float(penalty) == 1.0 else float(penalty)
    eos = config.eos_token_id
    eos_ids = () if eos is None else tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return GreedyPlan(int(config.max_new_tokens), penalty, eos_ids)


def greedy_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: GreedyPlan,
                  on_drop=None) -> list[list[int]]:
    """Generated token ids per row of a LEFT-padded batch (eos included when emitted).

    `on_drop(keep)` is called with the indices (into the current batch) of the rows
    that stay whenever finished rows leave, before the next forward: the caller's
    per-row state (the steering state) must follow the same selection.
    """
    from transformers import DynamicCache

    n_rows = input_ids.shape[0]
    device = input_ids.device  # the embedding's device; logits may live elsewhere (device_map splits)
    results: list[list[int]] = [[] for _ in range(n_rows)]
    if n_rows == 0:
        return results
    rows = torch.arange(n_rows)                                   # current batch row -> original row (host)
    mask = attention_mask
    position = (mask.cumsum(-1) - 1).clamp_min(0)                # as generate() computes it for left padding
    cache = DynamicCache(config=model.config)
    vocab = None
    seen = None
    params = inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # as generate() asks when supported
    cache_arg = "cache" if "cache" in params else "past_key_values"  # newer models renamed it
    step_ids, step_pos = input_ids, position
    for step in range(plan.max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                    **{cache_arg: cache}, **extra)
        scores = out.logits[:, -1, :].to(dtype=torch.float32)
        if step == 0:  # per-row bookkeeping lives with the logits
            eos = torch.tensor(plan.eos_ids, dtype=torch.long, device=scores.device) if plan.eos_ids else None
            if plan.penalty is not None:
                vocab = scores.shape[-1]
                # the row's own prompt tokens only: padding maps to the dummy column `vocab`
                real = input_ids.masked_fill(attention_mask == 0, vocab).to(scores.device)
                seen = torch.zeros((n_rows, vocab + 1), dtype=torch.bool, device=scores.device)
                seen.scatter_(1, real, True)
        if seen is not None:
            hit = seen[:, :vocab]
            penalised = torch.where(scores < 0, scores * plan.penalty, scores / plan.penalty)
            scores = torch.where(hit, penalised, scores)
        next_ids = torch.argmax(scores, dim=-1)                     # [B]
        if seen is not None:
            seen.scatter_(1, next_ids[:, None], True)
        done = torch.isin(next_ids, eos) if eos is not None else torch.zeros_like(next_ids, dtype=torch.bool)
        host_ids, host_done = next_ids.tolist(), done.tolist()     # the loop's one device sync per step
        for r, tok in enumerate(host_ids):
            results[int(rows[r])].append(tok)
        if step + 1 == plan.max_new_tokens:
            break
        if any(host_done):
            keep_list = [r for r, d in enumerate(host_done) if not d]
            if not keep_list:
                break
            keep = torch.tensor(keep_list, dtype=torch.long)  # a host index works on every device's tensors
            cache.batch_select_indices(keep)
            rows = rows[keep_list]
            mask, position = mask[keep.to(device)], position[keep.to(device)]
            next_ids = next_ids[keep.to(next_ids.device)]
            if seen is not None:
                seen = seen[keep.to(seen.device)]
            if on_drop is not None:
                on_drop(keep)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        position = torch.cat([position, position[:, -1:] + 1], dim=1)
        step_ids, step_pos = next_ids[:, None].to(device), position[:, -1:]
    return results
