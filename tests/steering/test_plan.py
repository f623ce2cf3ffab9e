"""Steering-plan compilation: the C core (`_core.plan_compile`) against a numpy
oracle, and the Python plan builders (steering/plan.py) that feed it."""
import numpy as np
import pytest
import torch

from activation_steering import SteeringVector, _core
from activation_steering.steering.plan import build_multisteer_plan, build_steer_plan


def vtuple(name, dirs, evr, use, value=1.0, use_evr=False, smaller=False, last=False):
    """One vector tuple of _core.plan_compile."""
    keys = list(dirs)
    return (name, name + "_layer_ids", name + "_value", np.array(keys, np.int64), [dirs[k] for k in keys],
            np.array([evr.get(k, 0.0) for k in keys], np.float64), np.array([k in evr for k in keys], np.uint8),
            np.array(use, np.int64), float(value), int(use_evr), int(smaller), int(last))


def compile_items(items, n_layers=6, hidden=8, conditions=(), tables=None):
    """items: [(name, directions dict, evr dict, use_layers, scale, use_evr)] -> the core's per-layer tables."""
    return _core.plan_compile(n_layers, hidden, [vtuple(n, d, e, u, s, ue) for n, d, e, u, s, ue in items],
                              list(conditions), tables)


def rand_dirs(seed, layers, d=8):
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(d).astype(np.float32) for i in layers}


def test_rows_scaling_and_layer_table_match_numpy():
    d1, d2 = rand_dirs(1, range(6)), rand_dirs(2, [0, 2, 4])
    ev1 = {i: 0.1 * (i + 1) for i in range(6)}
    items = [("a", d1, ev1, [4, 1, 2], 1.7, True), ("b", d2, {}, [2, 0], -0.3, False), ("c", d1, ev1, [2], 1.0, False)]
    t = compile_items(items)
    scaled = lambda d, s: (d.astype(np.float64) * s).astype(np.float32)  # noqa: E731  double product, rounded once
    # per layer, behaviours in the order given
    expect = {0: [(1, scaled(d2[0], -0.3))], 1: [(0, scaled(d1[1], 1.7 * ev1[1]))],
              2: [(0, scaled(d1[2], 1.7 * ev1[2])), (1, scaled(d2[2], -0.3)), (2, d1[2])],
              3: [], 4: [(0, scaled(d1[4], 1.7 * ev1[4]))], 5: []}
    bo = t["beh_offsets"]
    assert t["beh_rows"].dtype == np.float32 and t["beh_rows"].shape == (6, 8) and bo[-1] == 6
    for layer, rows in expect.items():
        here = slice(bo[layer], bo[layer + 1])
        assert t["beh_index"][here].tolist() == [k for k, _ in rows]
        np.testing.assert_array_equal(t["beh_rows"][here].reshape(-1, 8), np.array([r for _, r in rows]).reshape(-1, 8))
    assert not t["layer_gated"].any() and (t["beh_tables"] == 1).all()  # no tables: always on
    assert t["cond_rows"].shape == (0, 8) and not t["cond_offsets"].any()


def test_conditions_per_layer_with_codes_and_gates():
    c0, c1, b = rand_dirs(3, range(6)), rand_dirs(4, range(6)), rand_dirs(5, range(6))
    conds = [vtuple("c0", c0, {}, [0, -1], 0.25, smaller=True, last=True), vtuple("c1", c1, {}, [5], -0.5)]
    tables = np.array([[0, 1, 0, 0], [1, 1, 1, 1]], np.uint8)
    t = compile_items([("b0", b, {}, [5], 2.0, False), ("b1", b, {}, [1], 1.0, False)], conditions=conds,
                      tables=tables)
    co = t["cond_offsets"]
    assert co.tolist() == [0, 1, 1, 1, 1, 1, 3]
    assert t["cond_index"].tolist() == [0, 0, 1]
    assert t["cond_codes"].tolist() == [[1, 1, 1], [1, 1, 1], [2, 0, 0]]
    assert t["cond_thresholds"].tolist() == [0.25, 0.25, -0.5]
    np.testing.assert_array_equal(t["cond_rows"], np.stack([c0[0], c0[5], c1[5]]))  # never scaled
    assert t["layer_gated"].tolist() == [0, 0, 0, 0, 0, 1]  # B2's table is all ones: layer 1 needs no gate
    assert t["beh_tables"].tolist() == [[1, 1, 1, 1], [0, 1, 0, 0]]


def test_unrequested_layers_are_never_read():
    dirs = {0: np.full(8, np.nan, np.float32), 1: np.ones(8, np.float32), 5: np.ones(3, np.float32)}
    t = compile_items([("a", dirs, {1: 0.5}, [1], 2.0, True)])
    np.testing.assert_array_equal(t["beh_rows"], np.ones((1, 8), np.float32))


def test_negative_layer_ids_resolve_and_repeats_are_refused():
    d = rand_dirs(1, range(6))
    t = compile_items([("a", d, {}, [-1, 2], 1.0, False)])
    assert t["beh_offsets"].tolist() == [0, 0, 0, 1, 1, 1, 2]
    for use, first, again in (([5, -1, 2], 5, -1), ([2, 2], 2, 2)):
        with pytest.raises(ValueError, match=rf"a_layer_ids lists layer {use[0] % 6} twice \(as {first} and {again}\)"):
            compile_items([("a", d, {}, use, 1.0, False)])


@pytest.mark.parametrize("item,match", [
    (("vec", {0: np.ones(8)}, {}, [6], 1.0, False), r"vec_layer_ids: layer id 6 is out of range for a model with 6 layers"),
    (("vec", {0: np.ones(8)}, {}, [-7], 1.0, False), r"vec_layer_ids: layer id -7 is out of range"),
    (("vec", {0: np.ones(8)}, {}, [1], 1.0, False), r"vec has no direction for layer 1 \(requested in vec_layer_ids\); it has layers \[0\]"),
    (("vec", {3: np.ones(8), -3: np.ones(8)}, {}, [0], 1.0, False), r"vec has two directions for layer 3 \(keys 3 and -3\)"),
    (("vec", {0: np.ones(7)}, {}, [0], 1.0, False), r"vec: the direction for layer 0 has 7 values but the model's hidden size is 8"),
    (("vec", {0: np.ones((1, 8))}, {}, [0], 1.0, False), r"must be 1-D \[hidden_size\], got shape \(1, 8\)"),
    (("vec", {0: np.r_[np.ones(7), np.inf]}, {}, [0], 1.0, False), r"vec at layer 0: the direction contains NaN or Inf"),
    (("vec", {0: np.ones(8)}, {0: np.nan}, [0], 1.0, True), r"vec at layer 0: the explained variance is NaN or Inf"),
    (("vec", {0: np.ones(8)}, {}, [0], 1.0, True), r"vec has no explained variance for layer 0"),
    (("vec", {0: np.ones(8)}, {}, [0], np.inf, False), r"the strength for vec is NaN or Inf"),
    (("vec", {0: np.ones(8)}, {}, [0], 1e39, False), r"vec at layer 0: vec_value = 1e\+39 times the direction overflows float32"),
    (("vec", {0: np.ones(8)}, {}, [], 1.0, False), r"vec_layer_ids is empty"),
    (("vec", {}, {}, [0], 1.0, False), r"vec has no directions"),
])
def test_errors_name_the_vector_and_layer(item, match):
    with pytest.raises(ValueError, match=match) as info:
        compile_items([("ok", {0: np.ones(8)}, {}, [0], 1.0, False), item])
    assert info.value.index == 1  # the error record: which vector


def test_condition_errors():
    ok = [("b", {0: np.ones(8)}, {}, [0], 1.0, False)]
    with pytest.raises(ValueError, match=r"c at layer 0: the direction is all zeros") as info:
        compile_items(ok, conditions=[vtuple("c", {0: np.zeros(8)}, {}, [0], 0.1)], tables=np.array([[0, 1]], np.uint8))
    assert info.value.layer == 0 and info.value.argument == "c"
    with pytest.raises(ValueError, match=r"c_value must be finite, got nan"):
        compile_items(ok, conditions=[vtuple("c", {0: np.ones(8)}, {}, [0], np.nan)], tables=np.array([[0, 1]], np.uint8))
    with pytest.raises(ValueError, match=r"supports at most 16"):
        compile_items(ok, conditions=[vtuple("c", {0: np.ones(8)}, {}, [0], 0.1)] * 17)


def test_inconsistent_arrays_are_rejected():
    bad = list(vtuple("a", {0: np.ones(8)}, {}, [0]))
    bad[5] = np.ones(3)  # evr longer than the keys
    with pytest.raises(ValueError, match="differ in length"):
        _core.plan_compile(6, 8, [tuple(bad)], [], None)
    with pytest.raises(TypeError, match="12-tuple"):
        _core.plan_compile(6, 8, [("a",)], [], None)
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        _core.plan_compile(6, 0, [], [], None)
    with pytest.raises(ValueError, match=r"tables must be \[len\(behaviors\), 2\*\*len\(conditions\)\]"):
        _core.plan_compile(6, 8, [vtuple("a", {0: np.ones(8)}, {}, [0])], [], np.ones((1, 2), np.uint8))


def test_max_conditions_is_the_cores():
    from activation_steering.steering.plan import MAX_CONDITIONS

    assert _core.MAX_CONDITIONS == MAX_CONDITIONS == 16


# --------------------------------------------------------------------------- #
# Python plan builders
# --------------------------------------------------------------------------- #
def vec(seed, layers=range(6), d=8):
    return SteeringVector("llama", rand_dirs(seed, layers, d), {i: 0.25 + 0.05 * i for i in layers})


def test_steer_plan_layout():
    plan = build_steer_plan(6, 8, vec(1), [1, -1], 2.0, vec(2), [0, 1], 0.25, "smaller", "last",
                            use_explained_variance=True, use_ooi_preventive_normalization=True,
                            apply_behavior_on_first_call=False)
    assert sorted(plan.layers) == [0, 1, 5]
    assert plan.n_conditions == 1 and plan.n_behaviors == 1
    assert plan.use_ooi_preventive_normalization and not plan.apply_behavior_on_first_call
    l0, l1, l5 = plan.layers[0], plan.layers[1], plan.layers[5]
    assert l0.beh_vecs is None and l0.cond_ids == (0,)
    assert torch.equal(l0.cond_dirs, torch.from_numpy(vec(2).directions[0]).unsqueeze(0))  # conditions never scaled
    assert l0.cond_thresholds.tolist() == [0.25] and l0.cond_codes.tolist() == [[1, 1, 1]]
    assert l1.cond_ids == (0,) and l1.beh_ids == (0,)
    expect = (vec(1).directions[5].astype(np.float64) * (2.0 * vec(1).explained_variances[5])).astype(np.float32)
    assert torch.equal(l5.beh_vecs[0], torch.from_numpy(expect))
    assert l5.beh_tables.tolist() == [[0, 1]]  # "if C1 then B1"
    assert "layers [1, 5]" in plan.describe()


def test_unconditional_plan_has_no_tables():
    plan = build_steer_plan(6, 8, vec(1), [2, 3], 1.5)
    assert sorted(plan.layers) == [2, 3] and all(lp.beh_tables is None and lp.cond_dirs is None
                                                 for lp in plan.layers.values())
    assert torch.equal(plan.layers[2].beh_vecs[0], torch.from_numpy((vec(1).directions[2] * np.float64(1.5))
                                                                    .astype(np.float32)))
    assert build_steer_plan(6, 8).layers == {}  # no vectors: nothing to install


def test_multisteer_plan_tables_and_shared_layers():
    plan = build_multisteer_plan(6, 8, [vec(1), None, vec(3)], [[1, 2], [0], [2]], [1.0, 5.0, -2.0],
                                 [vec(4), vec(5)], [[0], [0, 2]], [0.1, 0.2], ["larger", "smaller"],
                                 ["if C1 and not C2 then B1", "if C2 then B3", "if C1 then B2"],
                                 condition_threshold_comparison_modes=["mean", "last"])
    l0, l2 = plan.layers[0], plan.layers[2]
    assert l0.cond_ids == (0, 1) and l0.cond_codes.tolist() == [[1, 0, 0], [2, 1, 1]] and l0.beh_ids == ()
    assert l2.cond_ids == (1,) and l2.beh_ids == (0, 2)  # behaviours in the order given
    assert l2.beh_tables.tolist() == [[0, 1, 0, 0], [0, 0, 1, 1]]
    assert torch.equal(l2.beh_vecs[1], torch.from_numpy((vec(3).directions[2] * np.float64(-2.0)).astype(np.float32)))
    assert plan.n_behaviors == 3 and plan.n_conditions == 2


def test_behaviour_no_rule_switches_on_is_dropped():
    plan = build_multisteer_plan(6, 8, [vec(1), vec(2)], [[1], [1, 3]], [1.0, 1.0], [vec(4)], [[0]], [0.1],
                                 ["larger"], ["if C1 then B1"])
    assert plan.layers[1].beh_ids == (0,) and 3 not in plan.layers


def test_tautology_rule_needs_no_table():
    plan = build_multisteer_plan(6, 8, [vec(1)], [[1]], [1.0], [vec(4)], [[0]], [0.1], ["larger"],
                                 ["if C1 or not C1 then B1"])
    assert plan.layers[1].beh_tables is None


def test_negative_and_string_direction_keys():
    v = SteeringVector("llama", {"1": np.ones(8, np.float32), -1: np.full(8, 2, np.float32)}, {"1": 0.5, -1: 0.5})
    plan = build_steer_plan(6, 8, v, [1, 5], 1.0)
    assert plan.layers[1].beh_vecs[0].tolist() == [1.0] * 8 and plan.layers[5].beh_vecs[0].tolist() == [2.0] * 8
    bad = SteeringVector("llama", {"x": np.ones(8, np.float32)}, {})
    with pytest.raises(ValueError, match="direction keys must be layer ids"):
        build_steer_plan(6, 8, bad, [1], 1.0)
    two_d = SteeringVector("llama", {1: np.ones((1, 8), np.float32)}, {})
    with pytest.raises(ValueError, match=r"must be 1-D \[hidden_size\], got shape \(1, 8\)"):
        build_steer_plan(6, 8, two_d, [1], 1.0)


def test_duck_typed_vectors_are_accepted():
    class Plain:
        directions = {1: [0.5] * 8}
        explained_variances = {1: 1.0}

    plan = build_steer_plan(6, 8, Plain(), [1], 2.0)
    assert plan.layers[1].beh_vecs[0].tolist() == [1.0] * 8


def test_too_many_conditions():
    with pytest.raises(ValueError, match="at most 16"):
        build_multisteer_plan(6, 8, [vec(1)], [[1]], [1.0], [vec(2)] * 17, [[0]] * 17, [0.1] * 17, ["larger"] * 17,
                              ["if C1 then B1"])
