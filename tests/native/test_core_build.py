"""The C core is built and wired to OpenBLAS: C result == numpy reference."""
import numpy as np
import pytest

from activation_steering import _core


def test_version():
    """The C core reports the package's one version string (activation_steering/_version.py)."""
    from activation_steering import __version__

    assert _core.version() == __version__


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (64, 129), (300, 17)])
def test_gram_f32_matches_numpy(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    got = _core.gram_f32(x)
    ref = x.astype(np.float64).T @ x.astype(np.float64)
    assert got.dtype == np.float32 and got.shape == (shape[1], shape[1])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4 * shape[0])
    np.testing.assert_array_equal(got, got.T)  # both triangles written


def test_gram_f32_non_contiguous_input_is_copied():
    x = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    np.testing.assert_allclose(_core.gram_f32(x), x.T @ x)


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.float32), np.zeros(3, np.float32), "nope"])
def test_gram_f32_bad_input_names_argument(bad):
    with pytest.raises(ValueError, match="x"):
        _core.gram_f32(bad)


def test_core_does_not_link_torch():
    import subprocess

    out = subprocess.run(["ldd", _core.__file__], capture_output=True, text=True).stdout
    assert "torch" not in out and "openblas" in out
