"""A tokenizer without a chat template (a base model, like the embedded Gemma 3 270M):
every entry point that would apply one fails first with an error that names the fix
(use_chat_template=False; --no-chat-template on the command line) and changes no state;
with use_chat_template=False everything runs on raw text."""
import json

import pytest

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.cli import main
from tiny_models import make_model, make_tokenizer

PAIRS = [("I love this, it is great", "I hate this, it is awful"),
         ("What a wonderful day", "What a terrible day"),
         ("The food was delicious", "The food was disgusting")]
FIX = "use_chat_template=False"


@pytest.fixture
def base_tok():
    tok = make_tokenizer()
    tok.chat_template = None
    return tok


@pytest.fixture
def steered(base_tok):
    model = make_model("llama")
    vec = SteeringVector.train(model, base_tok, SteeringDataset(base_tok, PAIRS, use_chat_template=False),
                               accumulate_last_x_tokens="all")
    mm = MalleableModel(model, base_tok)
    mm.steer(behavior_vector=vec, behavior_layer_ids=[1, 2], behavior_vector_strength=2.0)
    return mm, vec


def test_steering_dataset_names_the_fix(base_tok):
    with pytest.raises(ValueError, match=FIX):
        SteeringDataset(base_tok, PAIRS)
    raw = SteeringDataset(base_tok, PAIRS, use_chat_template=False, disable_suffixes=True)
    assert raw.formatted_dataset[0].positive == PAIRS[0][0]


@pytest.mark.parametrize("call", ["respond", "respond_batch", "respond_batch_sequential"])
def test_respond_entry_points_name_the_fix_and_keep_steering(steered, call):
    mm, _ = steered
    plan = mm.steering_plan
    arg = "Tell me a story" if call == "respond" else ["Tell me a story", "Hi"]
    with pytest.raises(ValueError, match=FIX):
        getattr(mm, call)(arg, settings={"max_new_tokens": 3})
    assert mm.steering_plan is plan  # nothing was changed or reset


def test_respond_batch_equals_sequential_on_raw_text(steered):
    mm, _ = steered
    prompts = ["Tell me a story", "What is the capital of France?", "Hi"]
    settings = {"max_new_tokens": 6}
    batched = mm.respond_batch(prompts, settings=settings, use_chat_template=False, batch_size=2)
    assert batched == mm.respond_batch_sequential(prompts, settings=settings, use_chat_template=False)
    assert mm.respond(prompts[0], settings=settings, use_chat_template=False) == batched[0]


def test_condition_search_names_the_fix_then_runs_raw(steered):
    mm, vec = steered
    pos, neg = ["I love sunny days", "This is wonderful"], ["I hate rain", "This is awful"]
    plan = mm.steering_plan
    with pytest.raises(ValueError, match=FIX):
        mm.find_best_condition_point(pos, neg, vec, layer_range=(1, 3))
    assert mm.steering_plan is plan  # the search resets steering only after its checks
    layers, threshold, direction, f1 = mm.find_best_condition_point(pos, neg, vec, layer_range=(1, 3),
                                                                    use_chat_template=False)
    assert layers and 0.0 <= f1 <= 1.0


def test_cli_names_the_flag_and_runs_with_it(tmp_path, base_tok, capsys):
    model_dir = tmp_path / "base_model"
    make_model("llama").save_pretrained(model_dir)
    base_tok.save_pretrained(model_dir)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"examples": [list(p) for p in PAIRS], "suffixes": None}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("I love sunny days\nI hate rain\n")
    vec = tmp_path / "vec.svec"
    train = ["train", "--data", str(data), "--out", str(vec), "--model", str(model_dir), "--no-suffixes"]
    search = ["search", "--positive", str(prompts), "--negative", str(prompts), "--vector", str(vec),
              "--model", str(model_dir), "--layer-range", "1,3", "--threshold-step", "0.1"]
    steer = ["steer", "--prompts", str(prompts), "--behavior", str(vec), "--layers", "1-2",
             "--model", str(model_dir), "--max-new-tokens", "3"]
    for argv in (train, search, steer):
        if argv is not train:
            assert main(train + ["--no-chat-template"]) == 0 and vec.is_file()
        capsys.readouterr()
        assert main(argv) == 2
        assert "--no-chat-template" in capsys.readouterr().err
        assert main(argv + ["--no-chat-template"]) == 0


def test_cli_rejects_unknown_model_name(capsys):
    assert main(["steer", "--prompts", __file__, "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "gemma3-270m" in err and "smollm2-135m-instruct" in err
