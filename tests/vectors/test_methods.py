"""mean_diff and probe (csrc/core/extract_methods.c via _core.methods_fit and
SteeringVector.train) against their plain twins in activation_steering.oracles.methods:
numpy's mean of differences and scikit-learn's LogisticRegression."""
import json

import numpy as np
import pytest
from tiny_models import make_model, make_tokenizer

from activation_steering import SteeringDataset, SteeringVector, _core
from activation_steering.config import GlobalConfig
from activation_steering.oracles import methods as oracle

GlobalConfig.set_verbose(False, "SteeringVector")
GlobalConfig.set_verbose(False, "SteeringDataset")


def make_rows(n_pairs, d, seed, shift=0.5, noise=1.0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_pairs, d)) * 2.0
    concept = rng.standard_normal(d)
    rows = np.empty((2 * n_pairs, d), np.float32)
    rows[0::2] = base + shift * concept + noise * rng.standard_normal((n_pairs, d))
    rows[1::2] = base - shift * concept + noise * rng.standard_normal((n_pairs, d))
    return rows


def real_shaped_rows(n_pairs, d, seed):
    """Like a residual stream: a large shared offset, a few massive dimensions,
    heavy-tailed per-dimension scales, a weak concept along a random direction."""
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(0.0, 1.0, d))
    scales[rng.choice(d, 3, replace=False)] *= 60.0
    offset = rng.normal(0.0, 5.0, d) * scales
    concept = rng.standard_normal(d) * scales * 0.15
    x = offset + rng.standard_normal((2 * n_pairs, d)) * scales
    x[0::2] += concept
    x[1::2] -= concept
    return x.astype(np.float32)


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --------------------------------------------------------------------------- #
# mean_diff
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("n_pairs,d", [(1, 5), (6, 40), (50, 16), (200, 64)])
def test_mean_diff_equals_numpy_mean_of_differences(n_pairs, d):
    rows = make_rows(n_pairs, d, seed=n_pairs + d)
    direction, ev, info = _core.methods_fit(rows, "mean_diff")
    ref, ref_ev = oracle.mean_diff(rows)
    mean = (rows[0::2].astype(np.float64) - rows[1::2]).mean(0)
    assert direction.dtype == np.float32 and direction.shape == (d,) and ev.shape == ()
    assert abs(np.linalg.norm(direction.astype(np.float64)) - 1) < 1e-6
    np.testing.assert_allclose(direction, ref, rtol=0, atol=2e-7)
    assert float(ev) == pytest.approx(ref_ev, rel=1e-6)
    # explained is its definition (evaluated in double before the float32 rounding)
    assert float(ev) == pytest.approx(oracle.explained_along(rows, mean), rel=1e-12)
    assert float(ev) == pytest.approx(oracle.explained_along(rows, direction), rel=1e-6)
    # weight_scale * direction is the raw mean difference
    np.testing.assert_allclose(info[0] * direction.astype(np.float64), mean, rtol=1e-6, atol=1e-6)
    assert info[1] == 0.0 and info[2] == 0.0


def test_mean_diff_raw_keeps_caa_magnitude():
    rows = make_rows(12, 30, seed=4)
    raw, ev_raw, info = _core.methods_fit(rows, "mean_diff", normalize=False)
    unit, ev_unit, _ = _core.methods_fit(rows, "mean_diff")
    mean = (rows[0::2].astype(np.float64) - rows[1::2]).mean(0)
    np.testing.assert_allclose(raw, mean, rtol=1e-6, atol=1e-7)
    assert info[0] == 1.0
    assert float(ev_raw) == pytest.approx(float(ev_unit), rel=1e-12)   # explained does not depend on scale
    assert cos(raw, unit) > 1 - 1e-12


def test_explained_is_one_iff_every_pair_differs_along_the_direction():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((7, 9)).astype(np.float32)
    u = rng.standard_normal(9).astype(np.float32)
    rows = np.empty((14, 9), np.float32)
    rows[0::2] = base + np.arange(1, 8, dtype=np.float32)[:, None] * u
    rows[1::2] = base
    for method in ("mean_diff", "probe"):
        c, ev, _ = _core.methods_fit(rows, method)
        assert float(ev) == pytest.approx(oracle.explained_along(rows, c), rel=1e-6)
    _, ev, _ = _core.methods_fit(rows, "mean_diff")
    assert float(ev) == pytest.approx(1.0, abs=1e-6)
    rows2 = make_rows(20, 9, seed=1)
    _, ev2, _ = _core.methods_fit(rows2, "mean_diff")
    assert 0.0 < float(ev2) < 1.0


@pytest.mark.parametrize("method", ["mean_diff", "probe"])
def test_swapping_pairs_negates_the_direction(method):
    rows = make_rows(20, 12, seed=3)
    c, _, _ = _core.methods_fit(rows, method)
    swapped = rows.reshape(20, 2, 12)[:, ::-1].reshape(40, 12).copy()
    c2, _, _ = _core.methods_fit(swapped, method)
    if method == "mean_diff":
        np.testing.assert_array_equal(c2, -c)       # every difference negates exactly
    else:
        assert cos(c2, c) < -1 + 1e-9
    proj = rows.astype(np.float64) @ c.astype(np.float64)
    assert np.sum(proj[0::2] > proj[1::2]) >= np.sum(proj[0::2] < proj[1::2])


def test_pair_rule_overrides_an_outlier_dominated_mean():
    """The rule is applied uniformly: three pairs say -e0, one large pair says +e0.
    The mean points to +e0; the pair rule (documented in as_methods.h) flips it."""
    rows = np.zeros((8, 3), np.float32)
    rows[0::2, 1] = rows[1::2, 1] = 1.0
    rows[0, 0], rows[2, 0], rows[4, 0], rows[6, 0] = -1.0, -1.0, -1.0, 10.0
    c, ev, info = _core.methods_fit(rows, "mean_diff")
    np.testing.assert_array_equal(c, np.array([-1.0, 0.0, 0.0], np.float32))
    assert info[0] < 0    # weight_scale * direction is still the mean (+e0)
    ref, _ = oracle.mean_diff(rows)
    np.testing.assert_allclose(c, ref, atol=1e-7)


# --------------------------------------------------------------------------- #
# probe vs scikit-learn
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("l2", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("n_pairs,d", [(10, 60), (60, 20), (40, 80)])
def test_probe_matches_sklearn_random(n_pairs, d, l2, standardize):
    rows = make_rows(n_pairs, d, seed=n_pairs * 3 + d)
    direction, ev, info = _core.methods_fit(rows, "probe", probe_l2=l2, probe_standardize=standardize)
    ref, ref_ev, w, b = oracle.probe(rows, l2, standardize)
    assert abs(cos(direction, ref)) >= 0.999
    assert cos(direction, ref) >= 0.999999                      # and the same sign
    # the weights themselves (not only their direction) and the intercept
    np.testing.assert_allclose(info[0] * direction.astype(np.float64), w, rtol=0,
                               atol=1e-5 * np.linalg.norm(w))
    assert info[1] == pytest.approx(b, rel=1e-4, abs=1e-5 * (1 + abs(b)))
    assert float(ev) == pytest.approx(ref_ev, rel=1e-5)
    assert abs(np.linalg.norm(direction.astype(np.float64)) - 1) < 1e-6


@pytest.mark.parametrize("n_pairs,d,standardize", [(128, 576, False), (128, 576, True), (400, 576, False)])
def test_probe_matches_sklearn_real_shaped(n_pairs, d, standardize):
    """Residual-stream-like data at SmolLM2's width: 2P < D (kernel form) and 2P > D (primal)."""
    rows = real_shaped_rows(n_pairs, d, seed=d + n_pairs)
    direction, _, info = _core.methods_fit(rows, "probe", probe_standardize=standardize)
    ref, _, w, _ = oracle.probe(rows, 1.0, standardize)
    assert abs(cos(direction, ref)) >= 0.999
    assert cos(direction, ref) >= 0.99999
    assert info[2] < 100


@pytest.mark.parametrize("n_pairs,d", [(15, 50), (50, 15), (32, 64)])
@pytest.mark.parametrize("standardize", [False, True])
def test_primal_and_kernel_forms_agree(n_pairs, d, standardize):
    rows = real_shaped_rows(n_pairs, d, seed=7)
    a, ea, ia = _core.methods_fit(rows, "probe", probe_standardize=standardize, form=1)
    b, eb, ib = _core.methods_fit(rows, "probe", probe_standardize=standardize, form=2)
    assert cos(a, b) > 1 - 1e-10
    assert ia[0] == pytest.approx(ib[0], rel=1e-8) and ia[1] == pytest.approx(ib[1], rel=1e-7, abs=1e-9)
    auto, _, _ = _core.methods_fit(rows, "probe", probe_standardize=standardize)
    assert auto.tobytes() == (b if 2 * n_pairs <= d else a).tobytes()


def test_probe_converges_on_separable_data_with_a_tiny_penalty():
    rows = make_rows(30, 80, seed=2, shift=3.0)       # separable by a wide margin
    direction, _, info = _core.methods_fit(rows, "probe", probe_l2=1e-4)
    ref, _, _, _ = oracle.probe(rows, 1e-4)
    assert cos(direction, ref) >= 0.999
    assert info[2] < 100


def probe_gradient(rows, w, b, l2):
    """Gradient of sum log-loss + l2/2 |w|^2 w.r.t. (w, b), in double."""
    from scipy.special import expit

    x = rows.astype(np.float64)
    y = np.tile([1.0, 0.0], x.shape[0] // 2)
    r = expit(x @ w + b) - y
    return np.concatenate([x.T @ r + l2 * w, [r.sum()]])


@pytest.mark.parametrize("n_pairs", [64, 400])        # kernel form and primal form
@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_probe_scale_equivariant_and_stationary(n_pairs, c):
    """Activations scaled by c with probe_l2 scaled by c^2 give the same direction;
    at probe_l2=1 the solution is a stationary point at any scale (where the
    objective's rounding hides the last decrease, and where lbfgs stops early)."""
    rows = real_shaped_rows(n_pairs, 576, seed=1)
    scaled = (rows.astype(np.float64) * c).astype(np.float32)
    base, _, _ = _core.methods_fit(rows, "probe")
    same, _, _ = _core.methods_fit(scaled, "probe", probe_l2=c * c)
    assert cos(base, same) > 1 - 1e-10
    d, _, info = _core.methods_fit(scaled, "probe", probe_l2=1.0)
    w = info[0] * d.astype(np.float64)
    g0 = np.linalg.norm(probe_gradient(scaled, np.zeros_like(w), 0.0, 1.0))
    assert np.linalg.norm(probe_gradient(scaled, w, info[1], 1.0)) <= 1e-5 * g0
    assert info[2] < 40


def test_probe_single_pair_is_the_difference():
    rows = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, -1.0]], np.float32)
    direction, ev, _ = _core.methods_fit(rows, "probe")
    diff = rows[0].astype(np.float64) - rows[1]
    assert cos(direction, diff) > 1 - 1e-12
    assert float(ev) == pytest.approx(1.0)
    md, ev_md, _ = _core.methods_fit(rows, "mean_diff")
    np.testing.assert_allclose(md, diff / np.linalg.norm(diff), atol=1e-7)
    assert float(ev_md) == pytest.approx(1.0)


def test_probe_constant_features_standardized():
    rows = make_rows(20, 10, seed=5)
    rows[:, 3] = 7.0                                   # zero variance: scale 1 as in StandardScaler
    direction, _, _ = _core.methods_fit(rows, "probe", probe_standardize=True)
    ref, _, _, _ = oracle.probe(rows, 1.0, True)
    assert cos(direction, ref) >= 0.99999 and abs(direction[3]) < 1e-6


# --------------------------------------------------------------------------- #
# determinism and layers
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["mean_diff", "probe"])
def test_deterministic_bits_and_layers_independent(method):
    stack = np.stack([real_shaped_rows(24, 64, seed=s) for s in range(3)] + [make_rows(24, 64, seed=9)])
    first = _core.methods_fit(stack, method)
    assert first[0].shape == (4, 64) and first[1].shape == (4,) and first[2].shape == (4, 3)
    for _ in range(3):
        again = _core.methods_fit(stack, method)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again))
    for layer in range(4):
        one = _core.methods_fit(stack[layer], method)
        assert all(a.tobytes() == b[layer].tobytes() for a, b in zip(one, first))


# --------------------------------------------------------------------------- #
# hostile inputs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["mean_diff", "probe"])
def test_identical_positives_and_negatives_raise(method):
    rows = np.repeat(make_rows(5, 6, seed=0)[0::2], 2, axis=0)
    with pytest.raises(ValueError, match="identical for every pair"):
        _core.methods_fit(rows, method)


@pytest.mark.parametrize("method", ["mean_diff", "probe"])
def test_nonfinite_names_the_layer_position_and_writes_nothing(method):
    stack = np.stack([make_rows(5, 8, seed=0), make_rows(5, 8, seed=1)])
    stack[1, 3, 2] = np.nan
    with pytest.raises(ValueError) as info:
        _core.methods_fit(stack, method)
    assert info.value.index == 1 and "layer position 1" in str(info.value) and "NaN or Inf" in info.value.reason


def test_cancelling_differences_raise():
    """Pair 0 is (a, b), pair 1 is (b, a): the differences cancel, and positives and
    negatives are the same set of points, so the probe's optimum is w = 0."""
    rows = np.array([[1, 0], [0, 0], [0, 0], [1, 0]], np.float32)
    with pytest.raises(ValueError, match="exactly zero"):
        _core.methods_fit(rows, "mean_diff")
    with pytest.raises(ValueError, match="weight vector is zero"):
        _core.methods_fit(rows, "probe")


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="pca"), "method must be"),
    (dict(method="probe", probe_l2=0.0), "probe_l2"),
    (dict(method="probe", probe_l2=float("nan")), "probe_l2"),
    (dict(method="probe", normalize=False), "method='mean_diff' only"),
    (dict(method="probe", form=3), "form"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _core.methods_fit(make_rows(3, 4, seed=0), **kwargs)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="even number"):
        _core.methods_fit(np.zeros((3, 2), np.float32), "mean_diff")
    with pytest.raises(ValueError, match="rows must be"):
        _core.methods_fit(np.zeros((2, 2, 2, 2), np.float32), "probe")


# --------------------------------------------------------------------------- #
# SteeringVector.train: the same capture path as PCA, every pooling mode
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def model():
    return make_model("llama", n_layers=3, hidden=48)


PAIRS = [("I love it.", "I hate it."), ("Calm sea.", "Rough sea, cold wind."), ("Sure, here is how.", "Sorry, I can't.")]


def captured(monkeypatch, model, tokenizer, ds, mode):
    """The pooled buffer train() hands to the core, recorded through pca_fit."""
    seen = {}
    real = _core.pca_fit

    def spy(rows, *args, **kwargs):
        seen["rows"] = np.array(rows, copy=True)
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(_core, "pca_fit", spy)
    SteeringVector.train(model, tokenizer, ds, method="pca_pairwise", accumulate_last_x_tokens=mode, batch_size=2)
    monkeypatch.setattr(_core, "pca_fit", real)
    return seen["rows"]


@pytest.mark.parametrize("mode", [1, 3, "all", "suffix-only"])
@pytest.mark.parametrize("method", ["mean_diff", "probe"])
def test_train_uses_the_pca_capture_path(monkeypatch, model, tokenizer, method, mode):
    ds = SteeringDataset(tokenizer, PAIRS, suffixes=[("Yes", "No"), (" sure", " never")])
    pooled = captured(monkeypatch, model, tokenizer, ds, mode)
    vec = SteeringVector.train(model, tokenizer, ds, method=method, accumulate_last_x_tokens=mode, batch_size=2)
    again = SteeringVector.train(model, tokenizer, ds, method=method, accumulate_last_x_tokens=mode, batch_size=5)
    assert list(vec.directions) == [0, 1, 2]
    dirs, ev, _ = _core.methods_fit(pooled, method)
    for j, layer in enumerate(vec.directions):
        d = vec.directions[layer]
        assert d.dtype == np.float32 and d.shape == (48,)
        assert d.tobytes() == dirs[j].tobytes() and vec.explained_variances[layer] == float(ev[j])
        assert 0.0 < vec.explained_variances[layer] <= 1.0
        assert cos(d, again.directions[layer]) > 1 - 1e-5         # batching changes float rounding only
        ref = oracle.mean_diff(pooled[j])[0] if method == "mean_diff" else oracle.probe(pooled[j])[0]
        assert cos(d, ref) >= 0.999999


def test_train_raw_mean_diff_and_argument_checks(model, tokenizer):
    ds = SteeringDataset(tokenizer, PAIRS)
    raw = SteeringVector.train(model, tokenizer, ds, method="mean_diff", normalize=False)
    unit = SteeringVector.train(model, tokenizer, ds, method="mean_diff")
    for layer in raw.directions:
        assert np.linalg.norm(raw.directions[layer]) > 0
        assert cos(raw.directions[layer], unit.directions[layer]) > 1 - 1e-6
        assert raw.explained_variances[layer] == pytest.approx(unit.explained_variances[layer], rel=1e-6)
    with pytest.raises(ValueError, match="normalize=False"):
        SteeringVector.train(model, tokenizer, ds, method="pca_pairwise", normalize=False)
    with pytest.raises(ValueError, match="probe_l2"):
        SteeringVector.train(model, tokenizer, ds, method="probe", probe_l2=-1.0)
    with pytest.raises(TypeError, match="probe_standardize"):
        SteeringVector.train(model, tokenizer, ds, method="probe", probe_standardize="yes")
    one = SteeringDataset(tokenizer, PAIRS[:1], suffixes=None, disable_suffixes=True)
    assert len(one.formatted_dataset) == 1
    for method in ("mean_diff", "probe"):
        vec = SteeringVector.train(model, tokenizer, one, method=method)   # a single pair is valid
        assert all(v == pytest.approx(1.0, abs=1e-5) for v in vec.explained_variances.values())


def test_train_identical_pairs_error_names_the_layer(model, tokenizer):
    ds = SteeringDataset(tokenizer, [("Same text.", "Same text."), ("Again.", "Again.")])
    for method in ("mean_diff", "probe"):
        with pytest.raises(ValueError, match=r"SteeringVector.train: layer 1: .*identical for every pair"):
            SteeringVector.train(model, tokenizer, ds, method=method, hidden_layer_ids=[1, 2])


def test_train_nan_activation_error_names_the_layer(monkeypatch, model, tokenizer):
    ds = SteeringDataset(tokenizer, PAIRS)
    real = _core.methods_fit

    def poisoned(rows, *args, **kwargs):
        rows = np.array(rows, copy=True)
        rows[1, 0, 0] = np.nan
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(_core, "methods_fit", poisoned)
    with pytest.raises(ValueError, match=r"SteeringVector.train: layer 2: .*NaN or Inf"):
        SteeringVector.train(model, tokenizer, ds, method="probe", hidden_layer_ids=[0, 2])


@pytest.mark.parametrize("method", ["mean_diff", "probe"])
def test_save_analysis_with_new_methods(model, tokenizer, tmp_path, method):
    ds = SteeringDataset(tokenizer, PAIRS)
    out = tmp_path / "figs"
    vec = SteeringVector.train(model, tokenizer, ds, method=method, save_analysis=True, output_dir=str(out),
                               hidden_layer_ids=[0, 2])
    assert vec == SteeringVector.train(model, tokenizer, ds, method=method, hidden_layer_ids=[0, 2])
    assert sorted(p.name for p in out.iterdir()) == ["macroscopic_analysis.png", "pca_layer_0.png", "pca_layer_2.png"]


def test_cli_train_accepts_the_new_methods(tmp_path):
    from activation_steering.cli import main

    model_dir = tmp_path / "tiny"
    make_model("llama").save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"examples": [list(p) for p in PAIRS], "suffixes": None}))
    outs = {}
    for name, extra in [("md", ["--method", "mean_diff"]), ("raw", ["--method", "mean_diff", "--raw"]),
                        ("probe", ["--method", "probe", "--probe-l2", "0.5", "--probe-standardize"])]:
        assert main(["train", "--data", str(data), "--out", str(tmp_path / name), "--model", str(model_dir),
                     "--no-suffixes", *extra]) == 0
        outs[name] = SteeringVector.load(tmp_path / name)
    for layer, d in outs["md"].directions.items():
        assert np.linalg.norm(d) == pytest.approx(1.0, abs=1e-5)
        assert cos(outs["raw"].directions[layer], d) > 1 - 1e-6
        assert np.linalg.norm(outs["probe"].directions[layer]) == pytest.approx(1.0, abs=1e-5)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--model", str(model_dir),
                 "--method", "pca_center", "--raw"]) == 2


# --------------------------------------------------------------------------- #
# the embedded model on the project's condition data
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_probe_and_mean_diff_on_smollm2_condition_data(monkeypatch, embedded):
    from activation_steering.demo import project_data

    model, tok = embedded
    data = project_data()
    ds = SteeringDataset(tok, list(zip(data.train_harmful, data.train_harmless))[:96], suffixes=None,
                         disable_suffixes=True)
    layers = [3, 9, 15]
    pooled = {}
    real = _core.methods_fit

    def spy(rows, *args, **kwargs):
        pooled["rows"] = np.array(rows, copy=True)
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(_core, "methods_fit", spy)
    vecs = {m: SteeringVector.train(model, tok, ds, method=m, accumulate_last_x_tokens="all", hidden_layer_ids=layers)
            for m in ("mean_diff", "probe")}
    rows = pooled["rows"]
    assert rows.shape == (3, 192, 576)
    for j, layer in enumerate(layers):
        ref_md, ref_ev = oracle.mean_diff(rows[j])
        assert cos(vecs["mean_diff"].directions[layer], ref_md) > 1 - 1e-9
        assert vecs["mean_diff"].explained_variances[layer] == pytest.approx(ref_ev, rel=1e-6)
        ref_probe = oracle.probe(rows[j])[0]
        assert abs(cos(vecs["probe"].directions[layer], ref_probe)) >= 0.999
        assert cos(vecs["probe"].directions[layer], ref_probe) >= 0.9999
