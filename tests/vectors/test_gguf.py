"""GGUF files this package writes read back with every layer they hold."""


def test_our_file_without_provenance_keeps_every_layer(tmp_path):
    """A vector built in code (no provenance n_layers) whose layers happen to be 2..L-1 must not be
    mistaken for a cvector-generator file (direction.1 .. direction.(L-1)) whose last direction is dropped."""
    import warnings

    import numpy as np

    from activation_steering import SteeringVector

    rng = np.random.default_rng(0)
    v = SteeringVector(model_type="llama", directions={i: rng.standard_normal(8).astype(np.float32) for i in range(6)},
                       explained_variances={i: 0.1 * i for i in range(6)})
    path = tmp_path / "e.gguf"
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        v.export_gguf(path)                          # layers 0 and 1 cannot be expressed (warned)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # no "dropped direction" warning on our own file
        back = SteeringVector.load(path)
    assert sorted(back.directions) == [2, 3, 4, 5]
    for layer in (2, 3, 4, 5):
        assert np.array_equal(back.directions[layer], v.directions[layer])
