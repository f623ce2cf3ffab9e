"""steer / multisteer with behaviour operators (add, ablate, ablate_then_add) and strength
units (absolute, residual_norm, token_norm) on tiny random models: what reaches each
steered decoder layer equals the definition (docs/semantics.md "Operators",
docs/strength_units.md), conditional add/ablate rules per row in a batch equal one
prompt at a time, and bad arguments raise before anything changes."""
import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringVector, _core
from activation_steering.activations.layers import find_layers_and_base
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.activations.runner import run_truncated
from activation_steering.conditions.similarity import condition_similarity
from tiny_models import fresh_tokenizer, make_model

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {"max_new_tokens": 10}
PROMPTS = [
    "hi",
    "Tell me a story about a cat who learns to sail across the sea.",
    "What is the capital of France?",
    "Explain how photosynthesis works.",
    "Write a poem about autumn leaves and cold morning light, please, in four lines.",
    "How do I bake bread at home?",
]
N_LAYERS, HIDDEN = 4, 64
NORMS = {0: 3.0, 1: 7.5, 2: 11.0, 3: 13.0}  # a residual_norms field, set by hand (the norms branch records it)


def vector(seed: int, norms: dict | None = NORMS, scale: float = 1.0) -> SteeringVector:
    rng = np.random.default_rng(seed)
    dirs = {}
    for i in range(N_LAYERS):
        x = rng.standard_normal(HIDDEN).astype(np.float32)
        dirs[i] = (scale * x / np.linalg.norm(x)).astype(np.float32)
    v = SteeringVector("llama", dirs, {i: 0.25 + 0.1 * i for i in range(N_LAYERS)})
    v.residual_norms = None if norms is None else dict(norms)
    return v


class Capture:
    """Each decoder layer's input just before and just after the steering hook (float64 copies)."""

    def __init__(self, model):
        self.layers = find_layers_and_base(model)[1]
        self.before: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}
        self.handles = []
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(self._hook(i, self.before), with_kwargs=True,
                                                                prepend=True))
            self.handles.append(layer.register_forward_pre_hook(self._hook(i, self.after), with_kwargs=True))

    @staticmethod
    def _hook(i, store):
        def hook(_module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            store[i] = h.detach().clone()
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def run_captured(mm, model, tok, prompt):
    cap = Capture(model)
    try:
        with torch.no_grad():
            mm(**encode(tok, [format_prompt(tok, prompt)], True))
    finally:
        cap.remove()
    return cap


def unit(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    return x / x.norm()


@pytest.mark.parametrize("use_evr", [False, True])
@pytest.mark.parametrize("operator,unit_name,strength", [
    ("add", "absolute", 3.0), ("add", "residual_norm", 0.4), ("add", "token_norm", 0.3),
    ("ablate", "absolute", 3.0), ("ablate_then_add", "absolute", 3.0), ("ablate_then_add", "residual_norm", 0.4),
    ("ablate_then_add", "token_norm", 0.3),
])
def test_what_each_steered_layer_receives_is_the_definition(operator, unit_name, strength, use_evr):
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    v = vector(3)
    steered = [1, 2]
    mm.steer(behavior_vector=v, behavior_layer_ids=steered, behavior_vector_strength=strength,
             behavior_operator=operator, strength_unit=unit_name, use_explained_variance=use_evr)
    cap = run_captured(mm, model, tok, PROMPTS[1])
    for i in range(N_LAYERS):
        before, after = cap.before[i].double(), cap.after[i].double()
        if i not in steered:
            assert torch.equal(cap.before[i], cap.after[i])  # a layer without steering is untouched
            continue
        direction = torch.from_numpy(v.directions[i]).double()
        d = unit(direction)
        expect = before
        if operator in ("ablate", "ablate_then_add"):
            expect = expect - (before @ d).unsqueeze(-1) * d
        if operator in ("add", "ablate_then_add"):
            s = strength * (v.explained_variances[i] if use_evr else 1.0)
            if unit_name == "residual_norm":
                s = s * NORMS[i]
            scale = before.norm(dim=-1, keepdim=True) if unit_name == "token_norm" else 1.0
            expect = expect + s * scale * direction
        torch.testing.assert_close(after, expect, rtol=0, atol=2e-5)
        if operator != "add":
            assert (cap.before[i].double() @ d).abs().min() > 1e-3  # there was something to remove
        if operator == "ablate":
            assert (after @ d).abs().max() < 1e-4                   # h . d = 0 at every steered position


def test_ablation_is_strength_free():
    """Strength, unit and explained variance play no part in "ablate"."""
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    v = vector(3)
    outs = []
    for kw in (dict(behavior_vector_strength=1.0), dict(behavior_vector_strength=50.0, use_explained_variance=True),
               dict(behavior_vector_strength=-2.0, strength_unit="token_norm")):
        mm.steer(behavior_vector=v, behavior_layer_ids=[1, 2], behavior_operator="ablate", **kw)
        with torch.no_grad():
            outs.append(mm(**encode(tok, [format_prompt(tok, PROMPTS[2])], True)).logits)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_residual_norm_is_absolute_times_the_layer_norm():
    """strength s in residual_norm at one layer == strength s * norm in absolute (bit for bit:
    both rows are rounded once from double)."""
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    v = vector(5, norms={2: 8.0})                      # a power of two: s * 8 is exact
    mm.steer(behavior_vector=v, behavior_layer_ids=[2], behavior_vector_strength=0.375, strength_unit="residual_norm")
    rel = mm.respond_batch_sequential(PROMPTS[:3], SETTINGS)
    mm.steer(behavior_vector=v, behavior_layer_ids=[2], behavior_vector_strength=3.0)
    assert mm.respond_batch_sequential(PROMPTS[:3], SETTINGS) == rel


# --------------------------------------------------------------------------- #
# conditional rules per row: batched == one prompt at a time
# --------------------------------------------------------------------------- #
def prompt_sims(model, tok, prompts, layer, direction):
    out = []
    for p in prompts:
        enc = encode(tok, [format_prompt(tok, p)], True)
        got = {}

        def hook(_i, h):
            got["sim"] = float(condition_similarity(h[0].float().mean(0), torch.from_numpy(direction)))

        run_truncated(model, enc["input_ids"], enc["attention_mask"], [layer], hook, read="input")
        out.append(got["sim"])
    return out


def condition_at_median(model, tok, layer=1):
    cond = vector(7)
    sims = prompt_sims(model, tok, PROMPTS, layer, cond.directions[layer])
    s = sorted(sims)
    thr = (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    met = [x < thr for x in sims]  # comparator "larger"
    assert any(met) and not all(met)
    return cond, thr, met


def test_if_c1_add_if_not_c1_ablate_per_row():
    """"if C1 then B1 (add)", "if not C1 then B2 (ablate)": every row of a mixed batch gets exactly
    what the unconditional add (met) or ablation (not met) gives it alone, and batch == sequential."""
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    cond, thr, met = condition_at_median(model, tok)
    beh = vector(3, scale=1.0)
    layers = [1, 2, 3]
    unsteered = mm.respond_batch_sequential(PROMPTS, SETTINGS)
    mm.steer(behavior_vector=beh, behavior_layer_ids=layers, behavior_vector_strength=4.0)
    added = mm.respond_batch_sequential(PROMPTS, SETTINGS)
    mm.steer(behavior_vector=beh, behavior_layer_ids=layers, behavior_operator="ablate")
    ablated = mm.respond_batch_sequential(PROMPTS, SETTINGS)
    assert added != unsteered and ablated != unsteered
    mm.multisteer(behavior_vectors=[beh, beh], behavior_layer_ids=[layers, layers],
                  behavior_vector_strengths=[4.0, 1.0], condition_vectors=[cond], condition_layer_ids=[[1]],
                  condition_vector_thresholds=[thr], condition_comparator_threshold_is=["larger"],
                  rules=["if C1 then B1", "if not C1 then B2"], behavior_operators=["add", "ablate"])
    sequential = mm.respond_batch_sequential(PROMPTS, SETTINGS)
    assert sequential == [a if m else b for a, b, m in zip(added, ablated, met)]
    for batch_size in (2, 6):
        assert mm.respond_batch(PROMPTS, SETTINGS, batch_size=batch_size) == sequential
    plan = mm.steering_plan
    mm.multisteer(behavior_vectors=[beh, beh], behavior_layer_ids=[layers, layers],  # numpy lists are accepted
                  behavior_vector_strengths=[4.0, 1.0], condition_vectors=[cond], condition_layer_ids=[[1]],
                  condition_vector_thresholds=[thr], condition_comparator_threshold_is=["larger"],
                  rules=["if C1 then B1", "if not C1 then B2"], behavior_operators=np.array(["add", "ablate"]))
    assert mm.steering_plan.behavior_operators == plan.behavior_operators == ("add", "ablate")


@pytest.mark.parametrize("ooi", [False, True])
def test_relative_units_and_ablate_then_add_with_conditions_ooi_evr_batch_equals_single(ooi):
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    cond, thr, met = condition_at_median(model, tok)
    b1, b2 = vector(3), vector(11)
    unsteered = mm.respond_batch_sequential(PROMPTS, SETTINGS)
    mm.multisteer(behavior_vectors=[b1, b2], behavior_layer_ids=[[1, 2], [2, 3]],
                  behavior_vector_strengths=[0.5, 0.4], condition_vectors=[cond], condition_layer_ids=[[1]],
                  condition_vector_thresholds=[thr], condition_comparator_threshold_is=["larger"],
                  rules=["if C1 then B1", "if not C1 then B2"], behavior_operators=["ablate_then_add", "add"],
                  strength_unit=["token_norm", "residual_norm"], use_explained_variance=True,
                  use_ooi_preventive_normalization=ooi)
    sequential = mm.respond_batch_sequential(PROMPTS, SETTINGS)
    assert sequential != unsteered
    assert mm.respond_batch(PROMPTS, SETTINGS, batch_size=6) == sequential
    # at the logits: a left-padded batch == each prompt alone
    texts = [format_prompt(tok, p) for p in PROMPTS]
    batch = encode(tok, texts, True, padding_side="left")
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        together = mm(**batch).logits[:, -1]
        for r, t in enumerate(texts):
            torch.testing.assert_close(together[r:r + 1], mm(**encode(tok, [t], True)).logits[:, -1], rtol=1e-4,
                                       atol=1e-4)


def test_one_unit_string_means_every_behaviour():
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    cond, thr, _ = condition_at_median(model, tok)
    kw = dict(behavior_vectors=[vector(3), vector(4)], behavior_layer_ids=[[2], [2]],
              behavior_vector_strengths=[0.5, 0.2], condition_vectors=[cond], condition_layer_ids=[[1]],
              condition_vector_thresholds=[thr], condition_comparator_threshold_is=["larger"],
              rules=["if C1 then B1", "if not C1 then B2"])
    mm.multisteer(**kw, strength_unit="token_norm")
    one = mm.steering_plan.layers[2]
    assert one.beh_modes == (1 | 4, 1 | 4)
    mm.multisteer(**kw, strength_unit=["token_norm", "token_norm"])
    assert mm.steering_plan.layers[2].beh_modes == one.beh_modes
    assert torch.equal(mm.steering_plan.layers[2].beh_vecs, one.beh_vecs)
    mm.multisteer(**kw)
    assert mm.steering_plan.layers[2].beh_modes is None  # plain ActAdd: the op's original call


# --------------------------------------------------------------------------- #
# bad input: a clear error naming the argument, before any state changes
# --------------------------------------------------------------------------- #
MULTI = dict(behavior_layer_ids=[[1], [2]], behavior_vector_strengths=[1.0, 1.0], condition_vectors=[vector(7)],
             condition_layer_ids=[[1]], condition_vector_thresholds=[0.0], condition_comparator_threshold_is=["larger"],
             rules=["if C1 then B1", "if not C1 then B2"])


@pytest.mark.parametrize("call,match", [
    (lambda mm, v: mm.steer(behavior_vector=v, behavior_layer_ids=[1], behavior_operator="subtract"),
     "behavior_operator must be one of 'add', 'ablate', 'ablate_then_add'"),
    (lambda mm, v: mm.steer(behavior_vector=v, behavior_layer_ids=[1], strength_unit="relative"),
     "strength_unit must be one of 'absolute', 'residual_norm', 'token_norm'"),
    (lambda mm, v: mm.steer(behavior_vector=vector(1, norms=None), behavior_layer_ids=[1],
                            strength_unit="residual_norm"),
     r"strength_unit = \"residual_norm\" needs behavior_vector.residual_norms.*retrain it \(train records them\), or use "
     r"strength_unit = \"absolute\""),
    (lambda mm, v: mm.steer(behavior_vector=vector(1, norms={1: 2.0}), behavior_layer_ids=[1, 2],
                            strength_unit="residual_norm"),
     r"no finite norm > 0 for layer 2; retrain.*strength_unit = \"absolute\""),
    (lambda mm, v: mm.steer(behavior_vector=vector(1, norms={1: float("nan")}), behavior_layer_ids=[1],
                            strength_unit="residual_norm"),
     "no finite norm > 0 for layer 1"),
    (lambda mm, v: mm.steer(behavior_vector=SteeringVector("llama", {1: np.zeros(HIDDEN, np.float32)}, {1: 0.5}),
                            behavior_layer_ids=[1], behavior_operator="ablate"),
     "direction is all zeros, so there is no direction to ablate"),
    (lambda mm, v: mm.multisteer([v, v], **MULTI, behavior_operators=["add", "ablat"]),
     "behavior_operators\\[1\\] must be one of"),
    (lambda mm, v: mm.multisteer([v, v], **MULTI, behavior_operators=["add"]),
     "behavior_operators has 1 entries but there are 2 behaviors"),
    (lambda mm, v: mm.multisteer([v, v], **MULTI, strength_unit=["absolute", "tokens"]),
     "strength_unit\\[1\\] must be one of"),
    (lambda mm, v: mm.multisteer([v, vector(2, norms={1: 3.0})], **MULTI, strength_unit="residual_norm"),
     r"strength_unit = \"residual_norm\": behavior_vectors\[1\].residual_norms has no finite norm > 0 for layer 2"),
])
def test_bad_arguments_raise_before_anything_changes(call, match):
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    v = vector(3)
    mm.steer(behavior_vector=v, behavior_layer_ids=[1, 2], behavior_vector_strength=2.0)
    plan = mm.steering_plan
    before = mm.respond(PROMPTS[0], SETTINGS)
    with pytest.raises(ValueError, match=match):
        call(mm, v)
    assert mm.steering_plan is plan
    assert mm.respond(PROMPTS[0], SETTINGS) == before


def test_bad_types_raise():
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    v = vector(3)
    with pytest.raises(TypeError, match="behavior_operators must be a list"):
        mm.multisteer([v, v], **MULTI, behavior_operators="ablate")
    with pytest.raises(TypeError, match="residual_norms must be a dict"):
        bad = vector(3)
        bad.residual_norms = [1.0, 2.0]
        mm.steer(behavior_vector=bad, behavior_layer_ids=[1], strength_unit="residual_norm")
    assert mm.steering_plan is None


def test_ablate_needs_no_residual_norms():
    """"ablate" adds nothing, so a vector without residual_norms is fine in any unit."""
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=vector(3, norms=None), behavior_layer_ids=[1], behavior_operator="ablate",
             strength_unit="residual_norm")
    assert mm.steering_plan.layers[1].beh_modes == (2,)


# --------------------------------------------------------------------------- #
# the core's own checks (plan.c), through the error record
# --------------------------------------------------------------------------- #
def core_tuple(op=1, unit=0, norms=None, direction=None, use=(0,)):
    d = np.ones(8, np.float32) if direction is None else direction
    has = None if norms is None else np.array([1], np.uint8)
    return ("behavior_vectors[0]", "behavior_layer_ids[0]", "behavior_vector_strengths[0]", np.array([0], np.int64),
            [d], np.array([0.5]), np.array([1], np.uint8), np.array(use, np.int64), 2.0, 0, 0, 0,
            op, "behavior_operators[0]", unit, "strength_unit[0]", None if norms is None else np.array(norms), has)


def test_core_rejects_unknown_codes_naming_the_argument():
    for bad, arg in ((core_tuple(op=4), "behavior_operators[0]"), (core_tuple(op=-1), "behavior_operators[0]"),
                     (core_tuple(unit=3), "strength_unit[0]"), (core_tuple(unit=1), "strength_unit[0]"),
                     (core_tuple(unit=1, norms=[0.0]), "strength_unit[0]"),
                     (core_tuple(op=2, direction=np.zeros(8, np.float32)), "behavior_vectors[0]")):
        with pytest.raises(ValueError) as info:
            _core.plan_compile(2, 8, [bad], [], None)
        assert info.value.argument == arg, (bad[12], bad[14], str(info.value))


def test_core_tables():
    """beh_rows, beh_dirs and beh_modes per operator and unit; a 12-tuple is add / absolute."""
    d = np.arange(1, 9, dtype=np.float32)
    unit_d = (d.astype(np.float64) / np.linalg.norm(d.astype(np.float64))).astype(np.float32)
    t = _core.plan_compile(2, 8, [core_tuple(op=1, unit=1, norms=[4.0], direction=d),
                                  core_tuple(op=2, direction=d), core_tuple(op=3, unit=2, direction=d)], [], None)
    assert t["beh_modes"].tolist() == [_core.MODE_ADD, _core.MODE_ABLATE,
                                       _core.MODE_ADD | _core.MODE_ABLATE | _core.MODE_TOKEN_NORM]
    assert np.array_equal(t["beh_rows"][0], (8.0 * d).astype(np.float32))            # 2.0 * norm 4.0
    assert not t["beh_rows"][1].any() and not t["beh_dirs"][0].any()                # ablate adds nothing
    assert np.array_equal(t["beh_rows"][2], 2.0 * d)                                 # token_norm: |h| in the op
    assert np.array_equal(t["beh_dirs"][1], unit_d) and np.array_equal(t["beh_dirs"][2], unit_d)
    old = _core.plan_compile(2, 8, [core_tuple(direction=d)[:12]], [], None)
    assert old["beh_modes"].tolist() == [_core.MODE_ADD] and np.array_equal(old["beh_rows"][0], 2.0 * d)


@pytest.mark.parametrize("operators,unit_", [(["add", "ablate"], "token_norm"),
                                             (["ablate_then_add", "add"], ["residual_norm", "token_norm"])])
def test_steered_forward_with_operators_compiles_fullgraph(operators, unit_):
    """The hooks and the op with its modes trace into one graph (fake kernel), same logits as eager."""
    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    cond, thr, _ = condition_at_median(model, tok)
    mm.multisteer(behavior_vectors=[vector(3), vector(4)], behavior_layer_ids=[[1, 2], [2, 3]],
                  behavior_vector_strengths=[0.3, 0.2], condition_vectors=[cond], condition_layer_ids=[[1]],
                  condition_vector_thresholds=[thr], condition_comparator_threshold_is=["larger"],
                  rules=["if C1 then B1", "if not C1 then B2"], behavior_operators=operators, strength_unit=unit_,
                  use_ooi_preventive_normalization=True)
    batch = encode(tok, [format_prompt(tok, p) for p in PROMPTS[:3]], True, padding_side="left")
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            eager = model(**batch, use_cache=False).logits
            state = mm._ctx.state.clone()
            got = torch.compile(model, fullgraph=True, backend="eager")(**batch, use_cache=False).logits
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, eager, rtol=0, atol=1e-5)
    assert torch.equal(mm._ctx.state, state)


@pytest.mark.filterwarnings("ignore:.*cannot be expressed in a llama.cpp control vector")  # layers 0-1, not steered
@pytest.mark.parametrize("suffix", [".svec", ".gguf", ".safetensors"])
def test_residual_norm_with_a_trained_vector_in_every_format(tmp_path, suffix):
    """A vector trained here records residual_norms; after a save/load round trip in each format,
    residual_norm steering adds s * residual_norms[i] * direction[i] at every steered layer."""
    from activation_steering import SteeringDataset

    model, tok = make_model("llama", N_LAYERS, HIDDEN), fresh_tokenizer()
    ds = SteeringDataset(tok, [("I love cats.", "I hate cats."), ("The sea is calm.", "The sea is rough."),
                               ("What a lovely day.", "What an awful day.")])
    trained = SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="all")
    assert trained.residual_norms is not None and set(trained.residual_norms) >= {2, 3}
    trained.save(str(tmp_path / f"v{suffix}"))
    v = SteeringVector.load(str(tmp_path / f"v{suffix}"))
    assert v.residual_norms is not None
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=v, behavior_layer_ids=[2, 3], behavior_vector_strength=0.05,
             strength_unit="residual_norm")
    cap = run_captured(mm, model, tok, PROMPTS[3])
    for i in (2, 3):
        expect = 0.05 * float(v.residual_norms[i]) * torch.from_numpy(np.asarray(v.directions[i])).double()
        torch.testing.assert_close((cap.after[i].double() - cap.before[i].double())[0],
                                   expect.expand_as(cap.after[i][0]), rtol=0, atol=2e-5)
