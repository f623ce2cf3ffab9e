"""MalleableModel steering (docs/semantics.md) against an independent, deliberately simple
batch-1 implementation of the semantics (docs/semantics.md) written here: plain Python pre-hooks on every
decoder layer, a manual greedy loop (one prompt pass, then one token per step
through the KV cache), conditions evaluated with `similarity` directly, rules
evaluated with Python's own `and`/`or`/`not`. Our runtime (C plan, truth tables,
the compiled op, per-row device state, HF generate) must produce the same greedy
text in every configuration, and the tests check that steering and conditions
visibly matter so they cannot pass vacuously.
"""
import re

import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringVector
from activation_steering.activations.prompts import format_prompt
from activation_steering.activations.layers import find_layers_and_base
from activation_steering.conditions.similarity import condition_met, condition_similarity
from tiny_models import fresh_tokenizer, make_model, unit_vectors

MAX_NEW = 14
SETTINGS = {"max_new_tokens": MAX_NEW}
PROMPTS = [
    "Tell me a story about a cat.",
    "hi",
    "What is the capital of France?",
    "Explain how photosynthesis works in plants and algae, please.",
    "Write a poem",
]
D = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models, one thread


# --------------------------------------------------------------------------- #
# The simple implementation of docs/semantics.md (batch 1)
# --------------------------------------------------------------------------- #
def simple_respond(model, tok, prompt, behaviors=(), conditions=(), rules=None, ooi=False, apply_first=True,
                   use_chat_template=True, max_new=MAX_NEW, penalty=1.1):
    """Greedy reply to one prompt, steered as docs/semantics.md says.

    behaviors:  [(strength, vector, layers, use_evr)]
    conditions: [dict(vector, layers, threshold, comparator, mode)]
    rules:      None for `steer` (behaviour on iff no condition or C1 met), else
                ["if <expr> then B<k>", ...]
    Returns (text, met flags, similarities seen per condition).
    """
    _, layers = find_layers_and_base(model)
    text = format_prompt(tok, prompt, use_chat_template)
    ids = tok(text, add_special_tokens=not use_chat_template).input_ids
    met = [False] * len(conditions)
    sims = [[] for _ in conditions]
    prompt_pass = [True]

    def active() -> list[bool]:
        if rules is None:
            return [not conditions or met[0]] * len(behaviors)
        on = [False] * len(behaviors)
        for rule in rules:
            m = re.fullmatch(r"\s*if\s+(.*)\s+then\s+B(\d+)\s*", rule, flags=re.I)
            expr = re.sub(r"\bC(\d+)\b", lambda g: f"met[{int(g.group(1)) - 1}]", m.group(1), flags=re.I)
            if eval(expr.lower(), {}, {"met": met}):
                on[int(m.group(2)) - 1] = True
        return on

    def hook(i):
        def fn(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if prompt_pass[0]:
                for j, c in enumerate(conditions):
                    if i in c["layers"]:
                        x = h[0].float().mean(0) if c["mode"] == "mean" else h[0, -1].float()
                        sim = condition_similarity(x, torch.from_numpy(c["vector"].directions[i]))
                        sims[j].append(float(sim))
                        if bool(condition_met(sim, c["threshold"], c["comparator"])):
                            met[j] = True
            if prompt_pass[0] and not apply_first:
                return None
            on = active()
            new, touched = h, False
            for k, (strength, vec, lays, use_evr) in enumerate(behaviors):
                if i in lays:
                    touched = True
                    if on[k]:
                        scale = strength * (vec.explained_variances[i] if use_evr else 1.0)
                        v = torch.from_numpy((vec.directions[i].astype(np.float64) * scale).astype(np.float32))
                        new = new + v.to(h.device, h.dtype)
            if not touched:
                return None
            if ooi:
                pre, post = h.float().norm(dim=-1), new.float().norm(dim=-1)
                if bool((post > pre).any()) or not bool(torch.isfinite(new).all()):
                    new = (new.float() * (pre / post).unsqueeze(-1)).to(h.dtype)
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}
        return fn

    handles = [layers[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in range(len(layers))]
    try:
        seq = list(ids)
        with torch.no_grad():
            dev = model.get_input_embeddings().weight.device
            out = model(input_ids=torch.tensor([ids], device=dev),
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=dev),
                        use_cache=True, logits_to_keep=1)
            prompt_pass[0] = False
            generated = []
            for _ in range(max_new):
                logits = out.logits[0, -1].float().clone()  # generate scores in float32
                for t in set(seq):
                    s = logits[t]
                    logits[t] = s * penalty if s < 0 else s / penalty
                nxt = int(logits.argmax())
                if nxt == tok.eos_token_id:
                    break
                generated.append(nxt)
                seq.append(nxt)
                out = model(input_ids=torch.tensor([[nxt]], device=dev),
                            attention_mask=torch.ones(1, len(seq), dtype=torch.long, device=dev),
                            use_cache=True, logits_to_keep=1, **cache_kwargs(out))
    finally:
        for h in handles:
            h.remove()
    return tok.decode(generated, skip_special_tokens=True), met, sims


def cache_kwargs(out) -> dict:
    """The KV cache of a model output, as the keyword the next call takes (transformers 5.x renamed it)."""
    if "cache" in out:
        return {"cache": out["cache"]}
    return {"past_key_values": out["past_key_values"]}


def split_threshold(values: list[float]) -> float:
    """A threshold strictly between the middle two of `values` (ties are far from it)."""
    v = sorted(values)
    mid = len(v) // 2
    assert v[mid] - v[mid - 1] > 1e-5, f"similarities too close to split: {v}"
    return (v[mid - 1] + v[mid]) / 2


def probe_threshold(model, tok, cond: dict, use_chat_template=True) -> float:
    """Split PROMPTS by the condition's similarity (max over its layers) on the unsteered model."""
    probe = dict(cond, threshold=float("inf"), comparator="smaller")
    per_prompt = []
    for p in PROMPTS:
        _, _, sims = simple_respond(model, tok, p, conditions=[probe], use_chat_template=use_chat_template, max_new=0)
        per_prompt.append(max(sims[0]) if cond["comparator"] == "smaller" else min(sims[0]))
    return split_threshold(per_prompt)


@pytest.fixture(scope="module")
def env():
    model = make_model("llama")
    tok = fresh_tokenizer()
    mm = MalleableModel(model, tok)
    unsteered = [mm.respond(p, settings=SETTINGS) for p in PROMPTS]
    return model, tok, mm, unsteered


def _steer_kwargs(beh, cond, strength, ooi, first, ev):
    kw = dict(behavior_vector=beh[1], behavior_layer_ids=beh[2], behavior_vector_strength=strength,
              use_ooi_preventive_normalization=ooi, apply_behavior_on_first_call=first, use_explained_variance=ev)
    if cond is not None:
        kw.update(condition_vector=cond["vector"], condition_layer_ids=cond["layers"],
                  condition_vector_threshold=cond["threshold"], condition_comparator_threshold_is=cond["comparator"],
                  condition_threshold_comparison_mode=cond["mode"])
    return kw


STEER_CASES = {
    # name: (behaviour layers, condition (layers, comparator, mode) or None, strength, ooi, apply_first, evr, chat)
    "plain": ([1, 2], None, 3.0, False, True, False, True),
    "plain_ooi": ([1, 2], None, 3.0, True, True, False, True),
    "plain_evr": ([0, 2, 3], None, 6.0, False, True, True, True),
    "cond_larger_mean": ([1, 2], ([1], "larger", "mean"), 3.0, False, True, False, True),
    "cond_smaller_mean_ooi": ([1, 2, 3], ([1], "smaller", "mean"), 3.0, True, True, False, True),
    "cond_smaller_last_raw": ([2, 3], ([2], "smaller", "last"), 3.0, False, True, False, False),
    "cond_larger_last_raw_ooi": ([2, 3], ([2], "larger", "last"), 3.0, True, True, False, False),
    "cond_not_first_call": ([1, 2], ([1], "larger", "mean"), 3.0, False, False, False, True),
    "cond_after_behaviour": ([0, 1, 2], ([2], "smaller", "mean"), 3.0, False, True, False, True),
    "cond_several_layers": ([1, 3], ([0, 2], "smaller", "mean"), 3.0, False, True, False, True),
}


@pytest.mark.parametrize("case", list(STEER_CASES))
def test_steer_matches_simple_implementation(env, case):
    model, tok, mm, _ = env
    blayers, cspec, strength, ooi, first, ev, chat = STEER_CASES[case]
    unsteered = [mm.respond(p, settings=SETTINGS, use_chat_template=chat) for p in PROMPTS] if not chat else env[3]
    beh = (strength, unit_vectors(1), blayers, ev)
    cond = None
    if cspec is not None:
        cond = dict(vector=unit_vectors(2), layers=cspec[0], comparator=cspec[1], mode=cspec[2])
        cond["threshold"] = probe_threshold(model, tok, cond, use_chat_template=chat)
    mm.steer(**_steer_kwargs(beh, cond, strength, ooi, first, ev))
    try:
        ours = [mm.respond(p, settings=SETTINGS, use_chat_template=chat) for p in PROMPTS]
    finally:
        mm.reset_leash_to_default()
    ref = [simple_respond(model, tok, p, behaviors=[beh], conditions=[cond] if cond else [], ooi=ooi,
                          apply_first=first, use_chat_template=chat) for p in PROMPTS]
    assert ours == [r[0] for r in ref]
    assert any(o != u for o, u in zip(ours, unsteered)), "steering did not change any reply: the test is vacuous"
    if cond is not None:
        flags = [r[1][0] for r in ref]
        assert any(flags) and not all(flags), f"condition met for {flags}: not a split"
        for o, u, f in zip(ours, unsteered, flags):
            if not f:
                assert o == u, "a prompt whose condition is not met must get the unsteered reply"


def test_ooi_changes_text(env):
    """OOI normalisation is not a no-op in the configurations above."""
    _, _, mm, _ = env
    replies = {}
    for ooi in (False, True):
        mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0,
                 use_ooi_preventive_normalization=ooi)
        replies[ooi] = [mm.respond(p, settings=SETTINGS) for p in PROMPTS]
    mm.reset_leash_to_default()
    assert replies[False] != replies[True]


MULTI_RULES = [
    ["if C1 then B1", "if C2 then B2"],
    ["if C1 and C2 then B1", "if C1 or C2 then B2"],
    ["if not C1 then B1", "if C2 and not C1 then B2"],
    ["if (C1 or not C2) and not (C1 and C2) then B2", "IF c2 THEN b1"],
]


@pytest.mark.parametrize("rules", MULTI_RULES, ids=[" | ".join(r) for r in MULTI_RULES])
def test_multisteer_matches_simple_implementation(env, rules):
    model, tok, mm, unsteered = env
    behs = [(3.0, unit_vectors(1), [1, 2], False), (2.5, unit_vectors(3), [2, 3], False)]
    conds = [dict(vector=unit_vectors(2), layers=[1], comparator="larger", mode="mean"),
             dict(vector=unit_vectors(4), layers=[0, 1], comparator="smaller", mode="mean")]
    for c in conds:
        c["threshold"] = probe_threshold(model, tok, c)
    mm.multisteer(behavior_vectors=[b[1] for b in behs], behavior_layer_ids=[b[2] for b in behs],
                  behavior_vector_strengths=[b[0] for b in behs], condition_vectors=[c["vector"] for c in conds],
                  condition_layer_ids=[c["layers"] for c in conds],
                  condition_vector_thresholds=[c["threshold"] for c in conds],
                  condition_comparator_threshold_is=[c["comparator"] for c in conds],
                  condition_threshold_comparison_modes=[c["mode"] for c in conds], rules=rules)
    try:
        ours = [mm.respond(p, settings=SETTINGS) for p in PROMPTS]
    finally:
        mm.reset_leash_to_default()
    ref = [simple_respond(model, tok, p, behaviors=behs, conditions=conds, rules=rules) for p in PROMPTS]
    assert ours == [r[0] for r in ref]
    assert any(o != u for o, u in zip(ours, unsteered))
    flags = {tuple(r[1]) for r in ref}
    assert len(flags) >= 2, f"every prompt had the same condition pattern {flags}: not a useful test"


def test_multisteer_with_ooi_last_mode_and_not_first_call(env):
    model, tok, mm, unsteered = env
    behs = [(3.0, unit_vectors(1), [1, 3], False), (2.0, unit_vectors(3), [3], True)]
    conds = [dict(vector=unit_vectors(2), layers=[1, 2], comparator="larger", mode="mean"),
             dict(vector=unit_vectors(5), layers=[2], comparator="smaller", mode="last")]
    for c in conds:
        c["threshold"] = probe_threshold(model, tok, c)
    rules = ["if C1 or C2 then B1", "if not C2 then B2"]
    mm.multisteer([b[1] for b in behs], [b[2] for b in behs], [b[0] for b in behs], [c["vector"] for c in conds],
                  [c["layers"] for c in conds], [c["threshold"] for c in conds], [c["comparator"] for c in conds],
                  rules, condition_threshold_comparison_modes=[c["mode"] for c in conds], use_explained_variance=True,
                  use_ooi_preventive_normalization=True, apply_behavior_on_first_call=False)
    try:
        ours = [mm.respond(p, settings=SETTINGS) for p in PROMPTS]
    finally:
        mm.reset_leash_to_default()
    # use_explained_variance applies to every behaviour in multisteer
    behs_ev = [(s, v, lays, True) for s, v, lays, _ in behs]
    ref = [simple_respond(model, tok, p, behaviors=behs_ev, conditions=conds, rules=rules, ooi=True,
                          apply_first=False) for p in PROMPTS]
    assert ours == [r[0] for r in ref]
    assert any(o != u for o, u in zip(ours, unsteered))


# --------------------------------------------------------------------------- #
# The wrapper: passthrough, state_dict, reset, isolation
# --------------------------------------------------------------------------- #
def test_passthrough_and_pad_token():
    model, tok = make_model("llama"), fresh_tokenizer()
    assert tok.pad_token is None
    mm = MalleableModel(model, tok)
    assert tok.pad_token == tok.eos_token
    assert mm.config is model.config and mm.device == model.device and mm.unwrap() is model
    assert mm.model is model and mm.get_input_embeddings() is model.get_input_embeddings()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(mm(input_ids=ids).logits, model(input_ids=ids).logits)
        assert torch.equal(mm.forward(input_ids=ids).logits, model(input_ids=ids).logits)
        assert torch.equal(mm.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0),
                           model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0))
    with pytest.raises(ValueError, match="decoder layers"):
        MalleableModel(torch.nn.Linear(2, 2), tok)


def test_state_dict_and_save_pretrained_unchanged_while_steered(tmp_path):
    model, tok = make_model("llama"), fresh_tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.save_pretrained(tmp_path / "a")
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0,
             condition_vector=unit_vectors(2), condition_layer_ids=[1], condition_vector_threshold=0.1)
    mm.respond("hi", settings=SETTINGS)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    model.save_pretrained(tmp_path / "b")
    for f in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert [type(m) for m in model.modules()] == [type(m) for m in make_model("llama").modules()]


def test_reset_gives_bit_exact_logits():
    model, tok = make_model("llama"), fresh_tokenizer()
    tok.pad_token = tok.eos_token
    ids = tok(["Tell me a story", "hi there you"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**ids).logits
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[0, 1, 2, 3], behavior_vector_strength=3.0,
             condition_vector=unit_vectors(2), condition_layer_ids=[1], condition_vector_threshold=0.5,
             use_ooi_preventive_normalization=True)
    with torch.no_grad():
        steered = model(**ids).logits
    assert not torch.equal(steered, ref)
    mm.reset_leash_to_default()
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, ref)
    assert all(not m._forward_pre_hooks for m in model.modules())
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[2], behavior_vector_strength=3.0)
    assert mm.unwrap() is model
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, ref)


def test_steer_replaces_previous_steering():
    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1], behavior_vector_strength=3.0)
    a = mm.respond(PROMPTS[0], settings=SETTINGS)
    mm.steer(behavior_vector=unit_vectors(3), behavior_layer_ids=[2], behavior_vector_strength=3.0)
    b = mm.respond(PROMPTS[0], settings=SETTINGS)
    fresh = MalleableModel(make_model("llama"), fresh_tokenizer())
    fresh.steer(behavior_vector=unit_vectors(3), behavior_layer_ids=[2], behavior_vector_strength=3.0)
    assert b == fresh.respond(PROMPTS[0], settings=SETTINGS) and a != b
    # a second wrapper of the same model replaces the first wrapper's hooks
    with pytest.warns(UserWarning, match="already steered by another MalleableModel"):
        other = MalleableModel(model, tok)
    other.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1], behavior_vector_strength=3.0)
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == 2  # base watcher + one layer
    assert other.respond(PROMPTS[0], settings=SETTINGS) == a
    assert mm._plan is None and mm.steering_plan is other.steering_plan  # steering lives on the model


def test_second_wrapper_sees_and_resets_the_models_steering():
    """Steering lives on the model: a second, unsteered wrapper warns that the model is
    steered, reports the installed plan, generates steered text, and its reset removes
    the steering for both wrappers."""
    model, tok = make_model("llama"), fresh_tokenizer()
    plain = MalleableModel(make_model("llama"), fresh_tokenizer()).respond(PROMPTS[0], settings=SETTINGS)
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0)
    steered = mm.respond(PROMPTS[0], settings=SETTINGS)
    assert steered != plain
    with pytest.warns(UserWarning, match="already steered"):
        other = MalleableModel(model, tok)
    assert other.steering_plan is mm.steering_plan and "not steered" not in repr(other)
    assert other.respond(PROMPTS[0], settings=SETTINGS) == steered
    other.reset_leash_to_default()
    assert mm.steering_plan is None and other.steering_plan is None
    assert all(not m._forward_pre_hooks for m in model.modules())
    assert mm.respond(PROMPTS[0], settings=SETTINGS) == plain == other.respond(PROMPTS[0], settings=SETTINGS)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MalleableModel(model, tok)  # an unsteered model: no warning


def test_two_models_interleaved_token_by_token():
    """Two steered models, prompt and decode passes interleaved: no shared state."""
    tok = fresh_tokenizer()
    specs = [dict(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0,
                  condition_vector=unit_vectors(2), condition_layer_ids=[1], condition_vector_threshold=0.1,
                  condition_comparator_threshold_is="larger"),
             dict(behavior_vector=unit_vectors(3), behavior_layer_ids=[2, 3], behavior_vector_strength=3.0,
                  condition_vector=unit_vectors(4), condition_layer_ids=[0], condition_vector_threshold=0.0,
                  condition_comparator_threshold_is="smaller")]
    prompts = [tok(["Tell me a story about a cat."], return_tensors="pt").input_ids,
               tok(["hi"], return_tensors="pt").input_ids]

    def run(mm, ids, steps):
        """Yield logits of a greedy loop one pass at a time."""
        with torch.no_grad():
            out = mm(input_ids=ids, use_cache=True)
            yield out.logits[:, -1]
            for _ in range(steps):
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                out = mm(input_ids=nxt, use_cache=True, **cache_kwargs(out))
                yield out.logits[:, -1]

    alone = []
    for spec, ids in zip(specs, prompts):
        mm = MalleableModel(make_model("llama"), tok)
        mm.steer(**spec)
        alone.append([x.clone() for x in run(mm, ids, 6)])
    mms = [MalleableModel(make_model("llama"), tok) for _ in specs]
    for mm, spec in zip(mms, specs):
        mm.steer(**spec)
    gens = [run(mm, ids, 6) for mm, ids in zip(mms, prompts)]
    together = [[], []]
    for _ in range(7):
        for k in (0, 1):
            together[k].append(next(gens[k]).clone())
    for k in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(alone[k], together[k]))
    unsteered = [x.clone() for x in run(MalleableModel(make_model("llama"), tok), prompts[0], 6)]
    assert not all(torch.equal(a, b) for a, b in zip(alone[0], unsteered))


def test_generate_reevaluates_conditions_per_prompt(env):
    """generate() (not only respond) evaluates the condition afresh for each new prompt."""
    model, tok, mm, _ = env
    cond = dict(vector=unit_vectors(2), layers=[1], comparator="larger", mode="mean")
    cond["threshold"] = probe_threshold(model, tok, cond)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0,
             condition_vector=cond["vector"], condition_layer_ids=[1], condition_vector_threshold=cond["threshold"])
    try:
        flags = [simple_respond(model, tok, p, conditions=[cond], max_new=0)[1][0] for p in PROMPTS]
        met, unmet = PROMPTS[flags.index(True)], PROMPTS[flags.index(False)]
        outs = {}
        for order in ((met, unmet), (unmet, met)):
            for p in order:
                enc = tok(format_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
                with torch.no_grad():
                    out = mm.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False, repetition_penalty=1.1,
                                      pad_token_id=tok.eos_token_id)
                outs.setdefault(p, []).append(tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True))
        assert outs[met][0] == outs[met][1] and outs[unmet][0] == outs[unmet][1]
        assert outs[met][0] == mm.respond(met, settings=SETTINGS)
        assert outs[unmet][0] == mm.respond(unmet, settings=SETTINGS)
    finally:
        mm.reset_leash_to_default()
    assert outs[unmet][0] == mm.respond(unmet, settings=SETTINGS)
    assert outs[met][0] != mm.respond(met, settings=SETTINGS)


def test_respond_settings_and_reset_after_response(env):
    _, tok, mm, unsteered = env
    defaults = {"max_new_tokens": 50, "do_sample": False, "repetition_penalty": 1.1, "pad_token_id": tok.eos_token_id}
    assert mm.respond(PROMPTS[0]) == mm.respond(PROMPTS[0], settings=defaults)
    assert mm.respond(PROMPTS[0]) != mm.respond(PROMPTS[0], settings={"repetition_penalty": 1.0})
    assert mm.respond(PROMPTS[0], settings={"max_new_tokens": 3}) == mm.respond(PROMPTS[0], settings={"max_new_tokens": 3})
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0)
    try:
        a = mm.respond(PROMPTS[0], settings=SETTINGS, reset_after_response=False)
        assert mm._ctx.state is not None
        b = mm.respond(PROMPTS[0], settings=SETTINGS)
        assert mm._ctx.state is None and a == b and a != unsteered[0]
        assert mm.steering_plan is not None  # steering stays installed after a response
    finally:
        mm.reset_leash_to_default()
    with pytest.raises(TypeError, match="settings"):
        mm.respond("hi", settings=[1])


def test_bfloat16_model_vectors_in_layer_dtype():
    model = make_model("llama").to(torch.bfloat16)
    tok = fresh_tokenizer()
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0,
             condition_vector=unit_vectors(2), condition_layer_ids=[1], condition_vector_threshold=1.0)
    leashes = [h for m in find_layers_and_base(model)[1] for h in m._forward_pre_hooks.values()]
    assert leashes and all(leash.beh_vecs.dtype == torch.bfloat16 for leash in leashes if leash.has_behaviors)
    ours = [mm.respond(p, settings=SETTINGS) for p in PROMPTS[:3]]
    mm.reset_leash_to_default()
    beh = (3.0, unit_vectors(1), [1, 2], False)
    cond = dict(vector=unit_vectors(2), layers=[1], threshold=1.0, comparator="larger", mode="mean")
    ref = [simple_respond(model, tok, p, behaviors=[beh], conditions=[cond])[0] for p in PROMPTS[:3]]
    assert ours == ref and ours != [mm.respond(p, settings=SETTINGS) for p in PROMPTS[:3]]


def test_leash_layer_logging():
    import logging

    from activation_steering.config import GlobalConfig, get_logger

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1], behavior_vector_strength=3.0,
             condition_vector=unit_vectors(2), condition_layer_ids=[1], condition_vector_threshold=1.0)
    collect = Collect()
    logger = get_logger("LeashLayer")  # created (and its handlers set) before ours is added
    logger.addHandler(collect)
    try:
        GlobalConfig.set_verbose(True, class_name="LeashLayer")
        try:
            mm.respond("hi", settings={"max_new_tokens": 2})
        finally:
            GlobalConfig.set_verbose(False, class_name="LeashLayer")
        text = "\n".join(collect.messages)
        assert "prompt pass: batch 1" in text and "decode pass" in text
        assert "layer 1 (prompt): conditions [1] evaluated, row bitmasks [1]" in text
        # per row: the similarity, the threshold and the decision, consistent with the op's bitmask
        from activation_steering.activations.layers import find_decoder_layers  # noqa: F401
        import re
        rows = re.findall(r"row 0: C1 similarity (-?[0-9.]+) threshold 1.0000 \(larger: met iff similarity < "
                          r"threshold, mean\) -> (met|not met)", text)
        assert rows and all(float(sim) < 1.0 and decision == "met" for sim, decision in rows), text
        n = len(collect.messages)
        mm.respond("hi", settings={"max_new_tokens": 2})  # off by default: nothing logged
        assert len(collect.messages) == n
    finally:
        logger.removeHandler(collect)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to split the model across devices")
def test_model_split_across_devices_matches_single_device():
    """Layers on cuda and cpu (device_map): vectors on each layer's device, the state follows."""
    from accelerate import dispatch_model

    tok = fresh_tokenizer()
    spec = dict(behavior_vector=unit_vectors(1), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0,
                condition_vector=unit_vectors(2), condition_layer_ids=[1, 3], condition_vector_threshold=0.1)
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 0,
                  "model.layers.2": "cpu", "model.layers.3": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    split = dispatch_model(make_model("llama"), device_map=device_map)
    mm2 = MalleableModel(split, tok)
    mm2.steer(**spec)
    ours = [mm2.respond(p, settings=SETTINGS) for p in PROMPTS]
    mm2.reset_leash_to_default()
    beh = (3.0, unit_vectors(1), [1, 2], False)
    cond = dict(vector=unit_vectors(2), layers=[1, 3], threshold=0.1, comparator="larger", mode="mean")
    assert ours == [simple_respond(split, tok, p, behaviors=[beh], conditions=[cond])[0] for p in PROMPTS]
    assert ours != [mm2.respond(p, settings=SETTINGS) for p in PROMPTS]


# --------------------------------------------------------------------------- #
# Bad input: bad arguments raise before anything changes
# --------------------------------------------------------------------------- #
def _bad_cases():
    good_b, good_c = unit_vectors(1), unit_vectors(2)
    short = SteeringVector("llama", {i: np.ones(D - 1, np.float32) for i in range(4)}, {i: 0.5 for i in range(4)})
    nan = SteeringVector("llama", {i: np.full(D, np.nan, np.float32) for i in range(4)}, {i: 0.5 for i in range(4)})
    partial = SteeringVector("llama", {0: good_b.directions[0]}, {0: 0.5})
    no_evr = SteeringVector("llama", dict(good_b.directions), {})
    base = dict(behavior_vector=good_b, behavior_layer_ids=[1, 2], behavior_vector_strength=2.0)
    cond = dict(condition_vector=good_c, condition_layer_ids=[1], condition_vector_threshold=0.1)
    multi = dict(behavior_vectors=[good_b, good_b], behavior_layer_ids=[[1], [2]], behavior_vector_strengths=[1.0, 2.0],
                 condition_vectors=[good_c, good_c], condition_layer_ids=[[1], [2]],
                 condition_vector_thresholds=[0.1, 0.2], condition_comparator_threshold_is=["larger", "smaller"],
                 rules=["if C1 then B1", "if C2 then B2"])
    return [
        ("steer", dict(base, behavior_layer_ids=[4]), ValueError, r"behavior_layer_ids: layer id 4 is out of range"),
        ("steer", dict(base, behavior_layer_ids=[-5]), ValueError, r"behavior_layer_ids: layer id -5"),
        ("steer", dict(base, behavior_layer_ids=[]), ValueError, r"behavior_layer_ids is empty"),
        ("steer", dict(base, behavior_vector=short), ValueError, r"behavior_vector: the direction for layer 1 has 63 values but the model's hidden size is 64"),
        ("steer", dict(base, behavior_vector=partial), ValueError, r"behavior_vector has no direction for layer 1 .*it has layers \[0\]"),
        ("steer", dict(base, behavior_vector=nan), ValueError, r"behavior_vector at layer 1: the direction contains NaN or Inf"),
        ("steer", dict(base, behavior_vector_strength=float("nan")), ValueError, r"strength for behavior_vector is NaN"),
        ("steer", dict(base, behavior_vector_strength="2"), TypeError, r"behavior_vector_strength must be a number"),
        ("steer", dict(base, behavior_vector=no_evr, use_explained_variance=True), ValueError, r"no explained variance for layer 1"),
        ("steer", dict(base, behavior_vector={"directions": 1}), TypeError, r"behavior_vector must be a SteeringVector"),
        ("steer", dict(base, condition_vector=good_c), ValueError, r"condition_vector and condition_layer_ids must be given together"),
        ("steer", dict(base, condition_layer_ids=[1]), ValueError, r"condition_vector and condition_layer_ids must be given together"),
        ("steer", dict(base, **cond) | dict(condition_vector_threshold=None), ValueError, r"condition_vector_threshold is required"),
        ("steer", dict(base, **cond) | dict(condition_vector_threshold=float("inf")), ValueError, r"condition_vector_threshold must be finite"),
        ("steer", dict(base, **cond) | dict(condition_comparator_threshold_is="bigger"), ValueError, r"condition_comparator_threshold_is must be one of 'larger', 'smaller'"),
        ("steer", dict(base, **cond) | dict(condition_threshold_comparison_mode="max"), ValueError, r"condition_threshold_comparison_mode must be one of 'mean', 'last'"),
        ("steer", dict(base, **dict(cond, condition_vector=nan)), ValueError, r"condition_vector at layer 1: the direction contains NaN"),
        ("steer", dict(base, **dict(cond, condition_layer_ids=[9])), ValueError, r"condition_layer_ids: layer id 9 is out of range"),
        ("steer", dict(base, use_ooi_preventive_normalization="yes"), TypeError, r"use_ooi_preventive_normalization must be True or False"),
        ("steer", dict(base, behaviour_vector=good_b), TypeError, r"unexpected keyword argument"),
        ("multisteer", dict(multi, behavior_layer_ids=[[1]]), ValueError, r"behavior_layer_ids has 1 entries but there are 2 behaviors"),
        ("multisteer", dict(multi, behavior_vector_strengths=[1.0]), ValueError, r"behavior_vector_strengths has 1 entries"),
        ("multisteer", dict(multi, condition_vector_thresholds=[0.1]), ValueError, r"condition_vector_thresholds has 1 entries but there are 2 conditions"),
        ("multisteer", dict(multi, condition_comparator_threshold_is=["larger"]), ValueError, r"condition_comparator_threshold_is has 1 entries"),
        ("multisteer", dict(multi, condition_threshold_comparison_modes=["mean"]), ValueError, r"condition_threshold_comparison_modes has 1 entries"),
        ("multisteer", dict(multi, condition_threshold_comparison_modes=["mean", "median"]), ValueError, r"condition_threshold_comparison_modes\[1\] must be one of"),
        ("multisteer", dict(multi, rules=["if C9 then B1"]), ValueError, r"'if C9 then B1'.*it names C9 but only 2 condition\(s\) were given"),
        ("multisteer", dict(multi, rules=["if C1 then B3"]), ValueError, r"it names B3 but only 2 behaviour"),
        ("multisteer", dict(multi, rules=["if C1 and then B1"]), ValueError, r"'if C1 and then B1' is malformed at character 10"),
        ("multisteer", dict(multi, rules="if C1 then B1"), TypeError, r"rules must be a list"),
        ("multisteer", dict(multi, condition_vectors=[good_c, short]), ValueError, r"condition_vectors\[1\]: the direction for layer 2 has 63 values"),
        ("multisteer", dict(multi, behavior_layer_ids=[[1], [7]]), ValueError, r"behavior_layer_ids\[1\]: layer id 7 is out of range"),
        ("multisteer", dict(multi, behavior_vectors=[]), ValueError, r"behavior_layer_ids has 2 entries but there are 0|behavior_vectors is empty"),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize("method,kwargs,exc,match", BAD, ids=[f"{i}-{c[0]}-{c[3][:40]}" for i, c in enumerate(BAD)])
def test_bad_arguments_raise_and_leave_model_unchanged(method, kwargs, exc, match):
    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    with pytest.raises(exc, match=match):
        getattr(mm, method)(**kwargs)
    assert all(not m._forward_pre_hooks for m in model.modules()) and mm.steering_plan is None
    # a steered model keeps its previous steering, untouched
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[1], behavior_vector_strength=3.0)
    plan = mm.steering_plan
    hooks = {id(m): dict(m._forward_pre_hooks) for m in model.modules()}
    with pytest.raises(exc, match=match):
        getattr(mm, method)(**kwargs)
    assert mm.steering_plan is plan and {id(m): dict(m._forward_pre_hooks) for m in model.modules()} == hooks


def test_steer_notes_behaviour_layers_before_the_condition(monkeypatch):
    """A condition read after some behaviour layers leaves them unsteered on the prompt pass (docs/semantics.md):
    steer() says so in the MalleableModel log, and stays quiet when the condition comes first."""
    from activation_steering import malleable_model

    said = []
    monkeypatch.setattr(malleable_model, "log", lambda name, msg: said.append((name, msg)))
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    vec = SteeringVector("llama", {i: np.eye(64, dtype=np.float32)[i] for i in range(4)}, {i: 0.5 for i in range(4)})
    mm.steer(behavior_vector=vec, behavior_layer_ids=[1, 2, 3], condition_vector=vec, condition_layer_ids=[2],
             condition_vector_threshold=0.1)
    assert any(name == "MalleableModel" and "behaviour layers [1] run before the first condition layer" in msg
               for name, msg in said)
    said.clear()
    mm.steer(behavior_vector=vec, behavior_layer_ids=[1, 2, 3], condition_vector=vec, condition_layer_ids=[1],
             condition_vector_threshold=0.1)
    assert not any("run before the first condition layer" in msg for _, msg in said)
