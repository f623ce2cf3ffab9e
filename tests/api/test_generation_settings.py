"""respond / respond_batch check `settings` before generating: a wrong type or range names
`settings[key]` (transformers would fail deep in the decode loop with an unrelated
TypeError), the installed steering is untouched, and valid numpy scalars still work."""
import numpy as np
import pytest

from activation_steering import MalleableModel
from tiny_models import fresh_tokenizer, make_model, unit_vectors

pytestmark = pytest.mark.usefixtures("one_thread")

BAD = [
    ({"max_new_tokens": "3"}, TypeError, "max_new_tokens"),
    ({"max_new_tokens": 3.0}, TypeError, "max_new_tokens"),
    ({"max_new_tokens": True}, TypeError, "max_new_tokens"),
    ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
    ({"num_beams": 0}, ValueError, "num_beams"),
    ({"top_k": -1}, ValueError, "top_k"),
    ({"temperature": "hot"}, TypeError, "temperature"),
    ({"temperature": 0.0}, ValueError, "temperature"),
    ({"repetition_penalty": float("nan")}, TypeError, "repetition_penalty"),
    ({"top_p": 1.5}, ValueError, "top_p"),
    ({"do_sample": "yes"}, TypeError, "do_sample"),
    ({"eos_token_id": "</s>"}, TypeError, "eos_token_id"),
    ({"eos_token_id": []}, TypeError, "eos_token_id"),
    ([("max_new_tokens", 3)], TypeError, "settings must be a dict"),
]


@pytest.fixture(scope="module")
def steered():
    mm = MalleableModel(make_model(), fresh_tokenizer())
    mm.steer(unit_vectors(0), behavior_layer_ids=[1, 2], behavior_vector_strength=3.0)
    return mm


@pytest.mark.parametrize("settings,exc,name", BAD, ids=[repr(b[0]) for b in BAD])
@pytest.mark.parametrize("entry", ["respond", "respond_batch", "respond_batch_sequential"])
def test_bad_settings_name_the_key(steered, settings, exc, name, entry):
    plan = steered.steering_plan
    call = {"respond": lambda: steered.respond("hi", settings=settings),
            "respond_batch": lambda: steered.respond_batch(["hi", "yo"], settings=settings),
            "respond_batch_sequential": lambda: steered.respond_batch_sequential(["hi"], settings=settings)}[entry]
    with pytest.raises(exc, match=name):
        call()
    assert steered.steering_plan is plan  # nothing changed


def test_numpy_scalars_and_lists_are_accepted(steered):
    a = steered.respond("hi", settings={"max_new_tokens": np.int64(4), "repetition_penalty": np.float32(1.1)})
    b = steered.respond("hi", settings={"max_new_tokens": 4})
    assert a == b
    eos = steered.tokenizer.eos_token_id
    assert steered.respond("hi", settings={"max_new_tokens": 4, "eos_token_id": [eos]}) == b
    assert steered.respond("hi", settings={"max_new_tokens": 4, "repetition_penalty": 1}) == \
        steered.respond("hi", settings={"max_new_tokens": 4, "repetition_penalty": 1.0})
