"""SteeringVector's compact __repr__ and its Jupyter _repr_html_."""
from __future__ import annotations

import numpy as np

from activation_steering import SteeringVector


def make(layers, dim=8):
    rng = np.random.default_rng(0)
    return SteeringVector(model_type="llama",
                          directions={i: rng.standard_normal(dim).astype(np.float32) for i in layers},
                          explained_variances={i: 0.1 * (k + 1) for k, i in enumerate(layers)})


def test_repr_is_compact():
    assert repr(make(range(30), dim=576)) == "SteeringVector(model_type='llama', layers=0-29 (30), hidden_size=576)"
    assert repr(make([1, 2, 3, 7, 9, 10])) == "SteeringVector(model_type='llama', layers=1-3,7,9-10 (6), hidden_size=8)"
    assert "[]" in repr(SteeringVector("gpt2", {}, {}))


def test_repr_html_has_the_summary_and_one_row_per_layer():
    vec = make([4, 5, 6])
    page = vec._repr_html_()
    assert "llama" in page and "hidden size 8" in page and "3 layers" in page
    assert page.count("<tr><td") == 3
    for layer, ev in vec.explained_variances.items():
        assert f">{layer}</td><td style=\"text-align:right\">{ev:.3f}</td>" in page
    assert "<script" not in page
    assert "&lt;b&gt;" in SteeringVector("<b>", {0: np.ones(2, np.float32)}, {0: 1.0})._repr_html_()
