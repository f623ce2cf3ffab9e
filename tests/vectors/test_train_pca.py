"""The C PCA (as_pca_fit via _core.pca_fit) against its numpy full-SVD twin (oracles/pca.py)."""
import numpy as np
import pytest
from tiny_models import make_model

from activation_steering import SteeringDataset, SteeringVector, _core
from activation_steering.config import GlobalConfig
from activation_steering.oracles.pca import reference_pca, training_matrix

GlobalConfig.set_verbose(False, "SteeringVector")
GlobalConfig.set_verbose(False, "SteeringDataset")
METHODS = ["pca_pairwise", "pca_center", "pca_diff"]


def make_rows(n_pairs, d, seed, shift=3.0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_pairs, d)) * 2.0
    concept = rng.standard_normal(d)
    pos = base + shift * concept + 0.5 * rng.standard_normal((n_pairs, d))
    neg = base - shift * concept + 0.5 * rng.standard_normal((n_pairs, d))
    rows = np.empty((2 * n_pairs, d), np.float32)
    rows[0::2], rows[1::2] = pos, neg
    return rows


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_pairs,d", [(6, 40), (50, 16), (3, 3), (200, 64)])  # row Gram and column Gram paths
def test_matches_numpy_full_svd(method, n_pairs, d):
    rows = make_rows(n_pairs, d, seed=n_pairs * 7 + d)
    comps, ev, proj = _core.pca_fit(rows, method, 2, True)
    ref, ref_ev, mean = reference_pca(rows, method)
    assert comps.dtype == np.float32 and comps.shape == (2, d) and ev.shape == (2,) and proj.shape == (2 * n_pairs, 2)
    assert abs(np.linalg.norm(comps[0].astype(np.float64)) - 1) < 1e-6
    assert float(np.dot(comps[0], ref[0])) >= 0.99999          # same direction AND same pair sign rule
    assert abs(ev[0] - ref_ev[0]) <= 1e-5
    if d > 2 and ref_ev[1] > 1e-6:
        assert float(np.dot(comps[1], ref[1])) >= 0.9999       # canonical sign, next component
        assert abs(ev[1] - ref_ev[1]) <= 1e-5
        assert abs(float(np.dot(comps[0], comps[1]))) < 1e-5
    np.testing.assert_allclose(proj, (rows.astype(np.float64) - mean) @ comps.T.astype(np.float64), rtol=1e-9,
                               atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_explained_variance_matches_sklearn(method):
    from sklearn.decomposition import PCA

    rows = make_rows(30, 20, seed=1)
    _, ev, _ = _core.pca_fit(rows, method, 2)
    sk = PCA(n_components=2, svd_solver="full").fit(training_matrix(rows, method))
    np.testing.assert_allclose(ev, sk.explained_variance_ratio_, atol=1e-10)


def test_sign_rule_follows_the_pairs():
    rows = make_rows(20, 12, seed=3)
    c, _, _ = _core.pca_fit(rows, "pca_pairwise")
    swapped = rows.reshape(20, 2, 12)[:, ::-1].reshape(40, 12).copy()
    c2, _, _ = _core.pca_fit(swapped, "pca_pairwise")
    np.testing.assert_array_equal(c2, -c)
    proj = rows.astype(np.float64) @ c[0].astype(np.float64)
    assert np.sum(proj[0::2] > proj[1::2]) >= np.sum(proj[0::2] < proj[1::2])


def test_many_layers_in_one_call_equal_single_calls_bit_for_bit():
    stack = np.stack([make_rows(9, 30, seed=s) for s in range(4)])
    comps, ev, proj = _core.pca_fit(stack, "pca_center", 2, True)
    assert comps.shape == (4, 2, 30) and ev.shape == (4, 2) and proj.shape == (4, 18, 2)
    for layer in range(4):
        c1, e1, p1 = _core.pca_fit(stack[layer], "pca_center", 2, True)
        assert c1.tobytes() == comps[layer].tobytes() and e1.tobytes() == ev[layer].tobytes()
        assert p1.tobytes() == proj[layer].tobytes()


def test_deterministic_bits():
    stack = np.stack([make_rows(40, 100, seed=s) for s in range(3)])
    first = _core.pca_fit(stack, "pca_pairwise", 2, True)
    for _ in range(3):
        again = _core.pca_fit(stack, "pca_pairwise", 2, True)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again))


def test_single_pair_is_defined():
    rows = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, -1.0]], np.float32)
    comps, ev, _ = _core.pca_fit(rows, "pca_pairwise", 2)
    diff = (rows[0] - rows[1]) / np.linalg.norm(rows[0] - rows[1])
    np.testing.assert_allclose(comps[0], diff, atol=1e-7)   # positive side scores higher
    assert ev[0] == pytest.approx(1.0) and ev[1] == 0.0
    assert not comps[1].any()                                # beyond the rank: zeros


@pytest.mark.parametrize("rows, method, exc, match", [
    (np.zeros((4, 3), np.float32), "pca_pairwise", ValueError, "zero variance"),
    (np.ones((6, 3), np.float32), "pca_center", ValueError, "zero variance"),
    (np.array([[1, 2], [0, 1]], np.float32), "pca_diff", ValueError, "zero variance"),
    (np.array([[1, np.nan], [0, 1]], np.float32), "pca_pairwise", ValueError, "NaN or Inf"),
    (np.array([[1, np.inf], [0, 1]], np.float32), "pca_center", ValueError, "NaN or Inf"),
    (np.zeros((3, 2), np.float32), "pca_pairwise", ValueError, "even number"),
    (np.zeros((2, 2), np.float32), "pca", ValueError, "method"),
    (np.zeros((2, 2, 2, 2), np.float32), "pca_pairwise", ValueError, "rows must be"),
])
def test_bad_inputs_raise(rows, method, exc, match):
    with pytest.raises(exc, match=match):
        _core.pca_fit(rows, method)


def test_failure_names_the_layer_position_and_writes_nothing():
    stack = np.stack([make_rows(5, 8, seed=0), np.zeros((10, 8), np.float32)])
    with pytest.raises(ValueError) as info:
        _core.pca_fit(stack)
    assert info.value.index == 1 and "layer position 1" in str(info.value)    # the core's error record
    assert "zero variance" in info.value.reason and info.value.argument == "rows"
    with pytest.raises(ValueError, match="n_components"):
        _core.pca_fit(stack[0], "pca_pairwise", 3)


@pytest.fixture(scope="module")
def model():
    return make_model("llama", n_layers=3, hidden=48)


@pytest.mark.parametrize("method", METHODS)
def test_train_end_to_end_and_bytes_identical(model, tokenizer, method):
    ds = SteeringDataset(tokenizer, [("I love it.", "I hate it."), ("Calm sea.", "Rough sea, cold wind."),
                                     ("Sure, here is how.", "Sorry, I can't.")])
    a = SteeringVector.train(model, tokenizer, ds, method=method, batch_size=7)
    b = SteeringVector.train(model, tokenizer, ds, method=method, batch_size=7)
    assert list(a.directions) == [0, 1, 2]
    for layer in a.directions:
        assert a.directions[layer].dtype == np.float32 and a.directions[layer].shape == (48,)
        assert a.directions[layer].tobytes() == b.directions[layer].tobytes()
        assert a.explained_variances[layer] == b.explained_variances[layer]
        assert 0.0 < a.explained_variances[layer] <= 1.0


def test_save_analysis_writes_figures(model, tokenizer, tmp_path):
    ds = SteeringDataset(tokenizer, [("I love it.", "I hate it."), ("Calm sea.", "Rough sea.")])
    out = tmp_path / "figs"
    vec = SteeringVector.train(model, tokenizer, ds, save_analysis=True, output_dir=str(out), hidden_layer_ids=[0, 2])
    plain = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[0, 2])
    assert vec == plain  # the second component for the plots changes nothing
    names = sorted(p.name for p in out.iterdir())
    assert names == ["macroscopic_analysis.png", "pca_layer_0.png", "pca_layer_2.png"]
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
