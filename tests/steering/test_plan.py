"""Steering-plan compilation: the C core (`_core.plan_compile`) against a numpy
oracle, and the Python plan builders (steering/plan.py) that feed it."""
import numpy as np
import pytest
import torch

from activation_steering import SteeringVector, _core
from activation_steering.steering.plan import build_multisteer_plan, build_steer_plan


def _flat(items, n_layers):
    """items: [(name, directions dict, evr dict, use_layers, scale, use_evr)] -> plan_compile arguments."""
    args = dict(n_avail=[], avail_layers=[], avail_sizes=[], data=[], evr=[], n_use=[], use_layers=[], scale=[],
                use_evr=[])
    for _, dirs, evr, use, scale, ue in items:
        args["n_avail"].append(len(dirs))
        for layer, d in dirs.items():
            args["avail_layers"].append(layer)
            args["avail_sizes"].append(len(d))
            args["data"].extend(np.asarray(d, np.float32).tolist())
            args["evr"].append(evr.get(layer, np.nan))
        args["n_use"].append(len(use))
        args["use_layers"].extend(use)
        args["scale"].append(scale)
        args["use_evr"].append(int(ue))
    names = [it[0] for it in items]
    return (n_layers, None, names, [n + "_layer_ids" for n in names], np.array(args["n_avail"], np.int64),
            np.array(args["avail_layers"], np.int64), np.array(args["avail_sizes"], np.int64),
            np.array(args["data"], np.float32), np.array(args["evr"], np.float64), np.array(args["n_use"], np.int64),
            np.array(args["use_layers"], np.int64), np.array(args["scale"], np.float64),
            np.array(args["use_evr"], np.uint8))


def compile_items(items, n_layers=6, hidden=8):
    a = list(_flat(items, n_layers))
    a[1] = hidden
    return _core.plan_compile(*a)


def rand_dirs(seed, layers, d=8):
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(d).astype(np.float32) for i in layers}


def test_rows_scaling_and_layer_table_match_numpy():
    d1, d2 = rand_dirs(1, range(6)), rand_dirs(2, [0, 2, 4])
    ev1 = {i: 0.1 * (i + 1) for i in range(6)}
    items = [("a", d1, ev1, [4, 1, 2], 1.7, True), ("b", d2, {}, [2, 0], -0.3, False), ("c", d1, ev1, [2], 1.0, False)]
    rows, offsets, layer_rows = compile_items(items)
    expect = [(d1[4].astype(np.float64) * (1.7 * ev1[4])).astype(np.float32),
              (d1[1].astype(np.float64) * (1.7 * ev1[1])).astype(np.float32),
              (d1[2].astype(np.float64) * (1.7 * ev1[2])).astype(np.float32),
              (d2[2].astype(np.float64) * -0.3).astype(np.float32),
              (d2[0].astype(np.float64) * -0.3).astype(np.float32),
              d1[2]]
    assert rows.dtype == np.float32 and rows.shape == (6, 8)
    np.testing.assert_array_equal(rows, np.stack(expect))  # bit-exact: double product, rounded once
    # CSR per layer, item order within a layer
    per_layer = {l: layer_rows[offsets[l]:offsets[l + 1]].tolist() for l in range(6)}
    assert per_layer == {0: [4], 1: [1], 2: [2, 3, 5], 3: [], 4: [0], 5: []}
    assert offsets[-1] == 6


def test_unrequested_layers_are_never_read():
    dirs = {0: np.full(8, np.nan, np.float32), 1: np.ones(8, np.float32), 5: np.ones(3, np.float32)}
    rows, _, _ = compile_items([("a", dirs, {1: 0.5}, [1], 2.0, True)])
    np.testing.assert_array_equal(rows, np.ones((1, 8), np.float32))


@pytest.mark.parametrize("item,match", [
    (("vec", {0: np.ones(8)}, {}, [6], 1.0, False), r"vec_layer_ids: layer id 6 is out of range for a model with 6 layers"),
    (("vec", {0: np.ones(8)}, {}, [1], 1.0, False), r"vec has no direction for layer 1 \(requested in vec_layer_ids\); it has layers \[0\]"),
    (("vec", {3: np.ones(8), 0: np.ones(8)}, {}, [0, 0], 1.0, False), r"vec_layer_ids: layer 0 is listed twice"),
    (("vec", {0: np.ones(7)}, {}, [0], 1.0, False), r"vec: the direction for layer 0 has 7 values but the model's hidden size is 8"),
    (("vec", {0: np.r_[np.ones(7), np.inf]}, {}, [0], 1.0, False), r"vec at layer 0: the direction contains NaN or Inf"),
    (("vec", {0: np.ones(8)}, {0: np.nan}, [0], 1.0, True), r"vec at layer 0: the explained variance is NaN or Inf"),
    (("vec", {0: np.ones(8)}, {}, [0], np.inf, False), r"the strength for vec is NaN or Inf"),
])
def test_errors_name_the_vector_and_layer(item, match):
    with pytest.raises(ValueError, match=match):
        compile_items([("ok", {0: np.ones(8)}, {}, [0], 1.0, False), item])


def test_inconsistent_arrays_are_rejected():
    a = list(_flat([("a", {0: np.ones(8)}, {}, [0], 1.0, False)], 6))
    a[1] = 8
    bad = list(a)
    bad[7] = np.ones(5, np.float32)  # data shorter than the sizes say
    with pytest.raises(ValueError, match="avail_data has 5 values"):
        _core.plan_compile(*bad)
    bad = list(a)
    bad[2] = []
    with pytest.raises(ValueError, match="one entry per item"):
        _core.plan_compile(*bad)
    bad = list(a)
    bad[1] = 0
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        _core.plan_compile(*bad)


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
