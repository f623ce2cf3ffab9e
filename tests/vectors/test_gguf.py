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


def test_steering_a_model_of_another_type_warns_naming_the_difference():
    """A vector recorded as trained on gpt2 (same hidden size) steering a llama: a UserWarning names
    model_type and both values; a matching vector installs silently."""
    import warnings

    import numpy as np
    import pytest

    from activation_steering import MalleableModel, SteeringVector
    from tiny_models import fresh_tokenizer, make_model

    rng = np.random.default_rng(0)
    dirs = {i: (lambda v: (v / np.linalg.norm(v)).astype(np.float32))(rng.standard_normal(64)) for i in range(4)}
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    other = SteeringVector(model_type="gpt2", directions=dirs, explained_variances={i: 0.5 for i in range(4)})
    with pytest.warns(UserWarning, match=r"model_type: vector 'gpt2', model 'llama'"):
        mm.steer(behavior_vector=other, behavior_layer_ids=[1])
    same = SteeringVector(model_type="llama", directions=dirs, explained_variances={i: 0.5 for i in range(4)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mm.steer(behavior_vector=same, behavior_layer_ids=[1])
    mm.reset_leash_to_default()
