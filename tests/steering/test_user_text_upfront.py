"""With a "user_text" condition installed, every respond entry point locates all the
prompts' user messages BEFORE generating anything: a bad prompt is named by the
caller's index (not its row inside an internal batch), and no batch runs first."""
import pytest

from activation_steering import MalleableModel
from tiny_models import fresh_tokenizer, make_model, unit_vectors

pytestmark = pytest.mark.usefixtures("one_thread")

BAD = "<|im_end|>"  # the template's end marker typed by the user: the message is empty once it cuts it


@pytest.fixture
def steered():
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    mm.steer(behavior_vector=unit_vectors(1), behavior_layer_ids=[2], behavior_vector_strength=3.0,
             condition_vector=unit_vectors(2), condition_layer_ids=[1], condition_vector_threshold=0.0,
             condition_comparator_threshold_is="smaller", condition_threshold_comparison_mode="user_text")
    return mm


def _count_forwards(mm):
    calls = []
    handle = mm.model.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("entry,name", [
    (lambda mm, ps: mm.respond_batch(ps, settings={"max_new_tokens": 3}, batch_size=4), r"prompts\[9\]"),
    (lambda mm, ps: mm.respond_batch(ps, settings={"max_new_tokens": 3}, batch_size=16), r"prompts\[9\]"),
    (lambda mm, ps: mm.respond_batch_sequential(ps, settings={"max_new_tokens": 3}), r"prompts\[9\]"),
    (lambda mm, ps: mm.respond(ps[-1], settings={"max_new_tokens": 3}), r"prompt\[0\]"),
])
def test_bad_user_text_prompt_named_by_caller_index_before_generating(steered, entry, name):
    prompts = ["hi"] * 9 + [BAD]
    calls, handle = _count_forwards(steered)
    try:
        with pytest.raises(ValueError, match=name + r".*user's message has no tokens"):
            entry(steered, prompts)
    finally:
        handle.remove()
    assert not calls  # nothing was generated and thrown away


def test_good_prompts_still_generate(steered):
    out = steered.respond_batch(["hi", "Tell me a story."], settings={"max_new_tokens": 3}, batch_size=1)
    assert out == [steered.respond(p, settings={"max_new_tokens": 3}) for p in ["hi", "Tell me a story."]]
