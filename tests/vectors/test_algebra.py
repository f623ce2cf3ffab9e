"""Vector algebra: a + b, a - b, -a, k * a, a * k, a / k, layers()/slicing, normalized(), to().

Rules under test (docs/formats.md): same model_type and hidden size or ValueError; layer sets
combine as a union with missing = 0; scaling keeps explained variances, a sum keeps the larger;
nothing renormalises, and steering adds strength x the direction as stored.
"""
import numpy as np
import pytest

from activation_steering import SteeringVector

DIM = 8


def vec(layers=(1, 2, 3), seed=0, model_type="llama", dim=DIM, ev=None, prov=None):
    rng = np.random.default_rng(seed)
    dirs = {i: rng.standard_normal(dim).astype(np.float32) for i in layers}
    return SteeringVector(model_type, dirs, ev or {i: 0.1 * (i + 1) + 0.01 * seed for i in layers},
                          provenance=prov or {"model_type": model_type, "hidden_size": dim, "n_layers": 6,
                                              "method": "pca_pairwise"})


def dirs_equal(a, b, exact=True):
    assert list(a.directions) == list(b.directions)
    for k in a.directions:
        if exact:
            assert np.asarray(a.directions[k]).tobytes() == np.asarray(b.directions[k]).tobytes(), k
        else:
            np.testing.assert_allclose(a.directions[k], b.directions[k], rtol=0, atol=1e-6)


def test_identities():
    a, b = vec(seed=1), vec(seed=2)
    dirs_equal(2 * a, a + a)
    dirs_equal(a * 2, 2 * a)
    dirs_equal(-(-a), a)
    dirs_equal((a + b) - b, a, exact=False)
    dirs_equal(a - b, a + (-b))
    dirs_equal(a / 4, a * 0.25)
    dirs_equal(sum([a, b]), a + b)
    # dyadic values make (a + b) - b exact
    ad = SteeringVector("llama", {1: np.array([0.5, -2.0, 8.0], np.float32)}, {1: 0.3})
    bd = SteeringVector("llama", {1: np.array([0.25, 4.0, -1.0], np.float32)}, {1: 0.2})
    dirs_equal((ad + bd) - bd, ad)


def test_values_are_float32_elementwise():
    a, b = vec(seed=1), vec(seed=2)
    c = 3 * a - b / 2
    for k in a.directions:
        want = a.directions[k] * np.float32(3) - b.directions[k] / np.float32(2)
        assert c.directions[k].dtype == np.float32
        assert c.directions[k].tobytes() == want.tobytes()


def test_union_of_layers_with_missing_as_zero():
    a, b = vec(layers=(1, 2), seed=1), vec(layers=(2, 4), seed=2)
    c = a + b
    assert list(c.directions) == [1, 2, 4]
    assert c.directions[1].tobytes() == a.directions[1].tobytes()
    assert c.directions[4].tobytes() == b.directions[4].tobytes()
    d = a - b
    assert d.directions[4].tobytes() == (-b.directions[4]).tobytes()


def test_explained_variances_and_provenance_rules():
    a = vec(layers=(1, 2), seed=1, ev={1: 0.5, 2: 0.1})
    b = vec(layers=(2, 4), seed=2, ev={2: 0.3, 4: 0.7})
    assert (2 * a).explained_variances == a.explained_variances
    assert (-a).explained_variances == a.explained_variances
    assert (a + b).explained_variances == {1: 0.5, 2: 0.3, 4: 0.7}
    p = (a + b).provenance
    assert p["model_type"] == "llama" and p["hidden_size"] == DIM and p["method"] == "pca_pairwise"
    assert p["formula"] == "(pca_pairwise) + (pca_pairwise)"
    assert (2 * a).provenance["formula"] == "2.0 * (pca_pairwise)"
    other = vec(seed=3, prov={"model_type": "llama", "hidden_size": DIM, "method": "mean_diff",
                              "model_id": "x"})
    q = (a - other).provenance
    assert "method" not in q and "model_id" not in q and q["formula"] == "(pca_pairwise) - (mean_diff)"


def test_mismatches_raise():
    a = vec()
    with pytest.raises(ValueError, match="model_type 'llama' vs 'qwen2'"):
        a + vec(model_type="qwen2")
    with pytest.raises(ValueError, match="hidden size 8 vs 4"):
        a - vec(dim=4, prov={"model_type": "llama"})
    with pytest.raises(ValueError, match="n_layers 6 vs 30"):
        a + vec(prov={"model_type": "llama", "hidden_size": DIM, "n_layers": 30})
    with pytest.raises(TypeError):
        a + 1.0
    with pytest.raises(TypeError):
        a * a
    with pytest.raises(TypeError, match="real number"):
        a * True
    with pytest.raises(TypeError):
        a * "2"
    with pytest.raises(ValueError, match="finite"):
        a * float("nan")
    with pytest.raises(ZeroDivisionError):
        a / 0
    with pytest.raises(ValueError, match="overflows"):
        a * 1e38 * 1e3


def test_layer_selection_and_slicing():
    a = vec(layers=(1, 2, 3, 5))
    s = a.layers([3, 1])
    assert list(s.directions) == [3, 1] and s.explained_variances == {3: a.explained_variances[3],
                                                                     1: a.explained_variances[1]}
    assert s.directions[3].tobytes() == a.directions[3].tobytes()
    assert list(a[2:5].directions) == [2, 3]  # by layer id, not position
    assert list(a[:3].directions) == [1, 2]
    assert list(a[::2].directions) == [1, 3, 5]
    assert list(a[5:0:-2].directions) == [5, 3, 1]
    assert a[3].tobytes() == a.directions[3].tobytes()
    with pytest.raises(KeyError, match=r"layer\(s\) \[4\]"):
        a.layers([4])
    with pytest.raises(KeyError, match="no layer"):
        a[10:20]
    with pytest.raises(ValueError, match="twice"):
        a.layers([1, 1])


def test_normalized_and_to():
    a = 3 * vec()
    n = a.normalized()
    for k in n.directions:
        assert abs(float(np.linalg.norm(n.directions[k].astype(np.float64))) - 1.0) < 1e-6
    zero = SteeringVector("llama", {1: np.zeros(DIM, np.float32)}, {1: 0.0})
    with pytest.raises(ValueError, match="layer 1.*all zeros"):
        zero.normalized()
    h = a.to(np.float16)
    assert all(d.dtype == np.float16 for d in h.directions.values())
    import torch

    assert all(d.dtype == np.float64 for d in a.to(torch.float64).directions.values())
    with pytest.raises(TypeError, match="float dtype"):
        a.to(np.int32)
    with pytest.raises(ValueError, match="overflows"):
        (1e6 * a).to(np.float16)


def test_steering_adds_strength_times_direction_as_stored(tiny_llama, tokenizer):
    """No renormalisation anywhere: 3 * v at strength 1 == v at strength 3, and differs from v."""
    import torch

    from activation_steering import MalleableModel

    dim = tiny_llama.config.hidden_size
    rng = np.random.default_rng(0)
    v = SteeringVector("llama", {1: rng.standard_normal(dim).astype(np.float32) * 4}, {1: 1.0})
    mm = MalleableModel(tiny_llama, tokenizer)
    ids = torch.tensor([[5, 6, 7, 8]])

    def logits(vector, strength):
        mm.steer(vector, [1], strength)
        with torch.no_grad():
            out = mm(input_ids=ids).logits.clone()
        mm.reset_leash_to_default()
        return out

    a = logits(3 * v, 1.0)
    b = logits(v, 3.0)
    c = logits(v, 1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert (a - c).abs().max() > 1e-3
