"""steer / multisteer are atomic: every argument is normalised and validated (the
C core owns the facts) before the old hooks go, so nothing after the swap can
raise; what only the layer's dtype can reveal (a scaled vector that is not
finite in fp16) is checked when the plan is placed on the layer, still before
the swap. Also: strengths that overflow float32, all-zero condition directions
and duplicate direction keys are refused naming the argument."""
import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringVector
from tiny_models import fresh_tokenizer, make_model

D = 64


def vec(seed, layers=range(4)):
    rng = np.random.default_rng(seed)
    dirs = {i: rng.standard_normal(D).astype(np.float32) for i in layers}
    return SteeringVector("llama", {i: d / np.linalg.norm(d) for i, d in dirs.items()}, {i: 0.5 for i in layers})


def _hooks(model):
    return {id(m): dict(m._forward_pre_hooks) for m in model.modules()}


@pytest.mark.parametrize("beh_ids,cond_ids", [
    (2, [1]), ([2], 1), (2, 1), ((2, 3), (1,)), (np.array([2, 3]), np.int64(1)), ([np.int32(2)], [-3]),
    (range(2, 4), [1]),
])
def test_layer_id_forms_all_work(beh_ids, cond_ids):
    """A bare int, a tuple, numpy ints and arrays, a range and negatives are
    normalised before anything changes (a bare int condition_layer_ids used to raise
    TypeError AFTER the new hooks were installed)."""
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    mm.steer(behavior_vector=vec(1), behavior_layer_ids=beh_ids, behavior_vector_strength=2.0,
             condition_vector=vec(2), condition_layer_ids=cond_ids, condition_vector_threshold=0.1)
    plan = mm.steering_plan
    assert [i for i, lp in sorted(plan.layers.items()) if lp.cond_ids] == [1]
    want = sorted({int(i) for i in np.atleast_1d(np.asarray(list(beh_ids) if isinstance(beh_ids, range) else beh_ids))})
    assert [i for i, lp in sorted(plan.layers.items()) if lp.beh_ids] == want


BAD = [
    (dict(behavior_vector_strength=1e39), ValueError, r"behavior_vector at layer \d: behavior_vector_strength = 1e\+39 "
                                                       r"times the direction overflows float32"),
    (dict(condition_vector=SteeringVector("llama", {1: np.zeros(D, np.float32)}, {1: 1.0})), ValueError,
     r"condition_vector at layer 1: the direction is all zeros"),
    (dict(behavior_vector=SteeringVector("llama", {1: np.ones(D, np.float32), -3: np.ones(D, np.float32),
                                                    2: np.ones(D, np.float32)}, {1: 1.0, -3: 1.0, 2: 1.0})),
     ValueError, r"behavior_vector has two directions for layer 1 \(keys 1 and -3\)"),
    (dict(condition_layer_ids="1"), TypeError, r"condition_layer_ids must be an int or a list of ints"),
    (dict(condition_layer_ids=[1.0]), TypeError, r"condition_layer_ids must contain ints"),
    (dict(behavior_layer_ids=[True]), TypeError, r"behavior_layer_ids must contain ints"),
    # a repeat (also as the negative alias) is refused, not merged: once or twice the strength?
    (dict(behavior_layer_ids=[2, 2]), ValueError, r"behavior_layer_ids lists layer 2 twice \(as 2 and 2\)"),
    (dict(behavior_layer_ids=[2, 3, -1]), ValueError, r"behavior_layer_ids lists layer 3 twice \(as 3 and -1\)"),
    (dict(condition_layer_ids=[1, -3]), ValueError, r"condition_layer_ids lists layer 1 twice \(as 1 and -3\)"),
    (dict(condition_vector=None, condition_layer_ids=None, condition_vector_threshold=None,
          condition_layer_combination="and"), ValueError, r'condition_layer_combination="and" needs a condition'),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_leave_the_previous_steering(kwargs, exc, match):
    model = make_model("llama")
    mm = MalleableModel(model, fresh_tokenizer())
    mm.steer(behavior_vector=vec(5), behavior_layer_ids=[2], behavior_vector_strength=3.0)
    plan, hooks = mm.steering_plan, _hooks(model)
    args = dict(behavior_vector=vec(1), behavior_layer_ids=[1, 2], behavior_vector_strength=2.0,
                condition_vector=vec(2), condition_layer_ids=[1], condition_vector_threshold=0.1) | kwargs
    with pytest.raises(exc, match=match):
        mm.steer(**args)
    assert mm.steering_plan is plan and _hooks(model) == hooks


def test_multisteer_zero_condition_direction_is_refused():
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    zero = SteeringVector("llama", {2: np.zeros(D, np.float32)}, {2: 1.0})
    with pytest.raises(ValueError, match=r"condition_vectors\[1\] at layer 2: the direction is all zeros") as info:
        mm.multisteer(behavior_vectors=[vec(1)], behavior_layer_ids=[[1]], behavior_vector_strengths=[1.0],
                      condition_vectors=[vec(2), zero], condition_layer_ids=[[1], [2]],
                      condition_vector_thresholds=[0.1, 0.2], condition_comparator_threshold_is=["larger", "larger"],
                      rules=["if C1 or C2 then B1"])
    assert info.value.index == 1 and info.value.layer == 2  # the core's error record
    assert mm.steering_plan is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_strength_checked_in_the_layers_dtype(dtype):
    """1e5 x a unit direction is finite in float32 and bfloat16 but not in float16
    (max 65504): refused at install, from the layer's dtype, before the swap."""
    model = make_model("llama").to(dtype)
    mm = MalleableModel(model, fresh_tokenizer())
    mm.steer(behavior_vector=vec(5), behavior_layer_ids=[2], behavior_vector_strength=3.0)
    plan, hooks = mm.steering_plan, _hooks(model)
    big = SteeringVector("llama", {1: np.ones(D, np.float32)}, {1: 1.0})
    if dtype == torch.float16:
        with pytest.raises(ValueError, match=r"behaviour vector at layer 1 times its strength is not finite in "
                                             r"torch.float16"):
            mm.steer(behavior_vector=big, behavior_layer_ids=[1], behavior_vector_strength=1e5)
        assert mm.steering_plan is plan and _hooks(model) == hooks
    else:
        mm.steer(behavior_vector=big, behavior_layer_ids=[1], behavior_vector_strength=1e5)
        assert mm.steering_plan is not plan


def test_empty_rules_and_non_bool_flags_raise_before_anything_changes():
    """rules=[] would switch no behaviour on (a silent no-op); a flag given as a string ("no" is
    truthy) would silently mean True. Both are refused, naming the argument, and the steering
    installed before stays installed."""
    model = make_model("llama")
    mm = MalleableModel(model, fresh_tokenizer())
    mm.steer(behavior_vector=vec(1), behavior_layer_ids=[1], behavior_vector_strength=2.0)
    before = _hooks(model)
    with pytest.raises(ValueError, match="rules is empty"):
        mm.multisteer([vec(1)], [[1]], [1.0], [vec(2)], [[0]], [0.1], ["larger"], rules=[])
    assert _hooks(model) == before
    with pytest.raises(TypeError, match="use_chat_template"):
        mm.respond("hello", use_chat_template="no")
    with pytest.raises(TypeError, match="use_chat_template"):
        mm.respond_batch(["hello"], use_chat_template="no")
    with pytest.raises(TypeError, match="reset_after_response"):
        mm.respond("hello", reset_after_response="yes")
    assert _hooks(model) == before


def test_steering_dataset_refuses_non_bool_flags():
    from activation_steering import SteeringDataset

    with pytest.raises(TypeError, match="use_chat_template"):
        SteeringDataset(fresh_tokenizer(), [("a", "b")], use_chat_template="no")
    with pytest.raises(TypeError, match="disable_suffixes"):
        SteeringDataset(fresh_tokenizer(), [("a", "b")], disable_suffixes=1)


def test_global_config_and_show_progress_refuse_non_bool():
    from activation_steering import GlobalConfig

    with pytest.raises(TypeError, match="verbose"):
        GlobalConfig.set_verbose("yes")
    with pytest.raises(TypeError, match="enabled"):
        GlobalConfig.set_file_output("yes", class_name="LeashLayer")
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    with pytest.raises(TypeError, match="show_progress"):
        mm.respond_batch(["hello"], show_progress="yes")


def test_multisteer_refuses_a_layer_listed_twice():
    """The same rule as steer, per list: the message names the list by its index."""
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    args = dict(behavior_vectors=[vec(1), vec(3)], behavior_layer_ids=[[1], [2, -2]], behavior_vector_strengths=[1.0, 1.0],
                condition_vectors=[vec(2)], condition_layer_ids=[[1]], condition_vector_thresholds=[0.1],
                condition_comparator_threshold_is=["larger"], rules=["if C1 then B1", "if not C1 then B2"])
    with pytest.raises(ValueError, match=r"behavior_layer_ids\[1\] lists layer 2 twice \(as 2 and -2\)"):
        mm.multisteer(**args)
    assert mm.steering_plan is None
