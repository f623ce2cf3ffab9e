"""SteeringVector checks residual_norms where they enter (the constructor), with the rule
the file readers use: a finite number > 0 for exactly the layers of `directions`."""
import numpy as np
import pytest

from activation_steering import SteeringVector

DIRS = {i: np.eye(4, dtype=np.float32)[i] for i in range(3)}
EVR = {i: 0.5 for i in range(3)}


@pytest.mark.parametrize("norms,exc,match", [
    ({0: float("nan"), 1: 1.0, 2: 1.0}, ValueError, "layer 0 must be finite and > 0"),
    ({0: 1.0, 1: -1.0, 2: 1.0}, ValueError, "layer 1 must be finite and > 0"),
    ({0: 1.0, 1: 1.0, 2: 0.0}, ValueError, "layer 2 must be finite and > 0"),
    ({0: 1.0}, ValueError, "exactly the layers of directions"),
    ({0: 1.0, 1: 1.0, 2: 1.0, 9: 1.0}, ValueError, "exactly the layers of directions"),
    ({}, ValueError, "exactly the layers of directions"),
    ({0: "1", 1: 1.0, 2: 1.0}, TypeError, "must be a number"),
    ([1.0, 1.0, 1.0], TypeError, "must be a dict"),
])
def test_bad_residual_norms_are_refused_by_the_constructor(norms, exc, match):
    with pytest.raises(exc, match=match):
        SteeringVector("llama", DIRS, EVR, residual_norms=norms)


def test_good_norms_are_normalised_and_algebra_keeps_them_valid():
    v = SteeringVector("llama", DIRS, EVR, residual_norms={np.int64(0): np.float32(2.0), 1: 3, 2: 4.5})
    assert v.residual_norms == {0: 2.0, 1: 3.0, 2: 4.5} and all(type(x) is float for x in v.residual_norms.values())
    assert (2 * v).residual_norms == v.residual_norms == (-v).residual_norms
    assert (v + v).residual_norms == v.residual_norms
    assert SteeringVector("llama", DIRS, EVR).residual_norms is None
