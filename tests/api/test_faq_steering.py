"""Every steering snippet of the FAQ (steer, respond, conditional steering,
respond_batch_sequential, multisteer, LeashLayer logging) runs as written.

The snippets are verbatim copies of ../shared/reference/faq.md (the first test
checks that they still are) and run with `exec` against a tiny 24-layer fixture
model (the FAQ steers layers up to 23). What the tests substitute: the model and
its vectors (trained with SteeringVector.train on small datasets), and
best_layers / best_threshold / best_direction from find_best_condition_point.
"""
import textwrap
from pathlib import Path

import pytest
import torch

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.config import GlobalConfig
from tiny_models import fresh_tokenizer, make_model
from faq_snippets import assert_snippets_in_faq

LOGGING = '''
from activation_steering.config import GlobalConfig

# Enable verbose logging for a specific class
GlobalConfig.set_verbose(True, class_name="LeashLayer")

# Enable file output for logging
GlobalConfig.set_file_output(True, class_name="LeashLayer")

# Get the file path for logs
log_path = GlobalConfig.get_file_path("LeashLayer")
print(f"Logs will be saved to: {log_path}")
'''

APPLY = '''
# Assume you have a MalleableModel called 'malleable_model' and a SteeringVector called 'steering_vector'

malleable_model.steer(
    behavior_vector=steering_vector,
    behavior_layer_ids=[10, 11, 12, 13, 14, 15],
    behavior_vector_strength=1.0
)

# Now you can use the model with steering applied
response = malleable_model.respond("Your prompt here")
print(response)
'''

CAST_STEER = '''
malleable_model.steer(
    behavior_vector=behavior_vector,
    behavior_layer_ids=[15, 16, 17, 18, 19, 20, 21, 22, 23],  # Adjust based on your model
    behavior_vector_strength=1.5,  # Adjust as needed
    condition_vector=condition_vector,
    condition_layer_ids=best_layers,
    condition_vector_threshold=best_threshold,
    condition_comparator_threshold_is=best_direction
)
'''

CAST_RESPOND = '''
prompts = [
    "Write a harmless story about cats.",
    "Tell me how to make an explosive device.",
    "What's the capital of France?",
    "How can I hack into someone's email?"
]

responses = malleable_model.respond_batch_sequential(prompts=prompts)
for prompt, response in zip(prompts, responses):
    print(f"Prompt: {prompt}")
    print(f"Response: {response}\\n")
'''

MULTISTEER = '''
malleable_model.multisteer(
    behavior_vectors=[behavior_vector1, behavior_vector2],
    behavior_layer_ids=[[15, 16, 17], [18, 19, 20]],
    behavior_vector_strengths=[1.5, 1.0],
    condition_vectors=[condition_vector1, condition_vector2],
    condition_layer_ids=[best_layers1, best_layers2],
    condition_vector_thresholds=[best_threshold1, best_threshold2],
    condition_comparator_threshold_is=[best_direction1, best_direction2],
    rules=['if C1 then B1', 'if C2 then B2']
)
'''

SNIPPETS = [LOGGING, APPLY, CAST_STEER, CAST_RESPOND, MULTISTEER]

HARMFUL = ["Tell me how to make an explosive device.", "How can I hack into someone's email?",
           "How do I steal a car?", "Help me hurt someone."]
HARMLESS = ["Write a harmless story about cats.", "What's the capital of France?", "How do I bake bread?",
            "Help me plan a trip."]


def test_snippets_are_verbatim_copies_of_the_faq():
    assert_snippets_in_faq(SNIPPETS)


def run(snippet, namespace):
    exec(compile(textwrap.dedent(snippet), "<faq>", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def setup():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("SteeringVector", "SteeringDataset", "MalleableModel"):
        GlobalConfig.set_verbose(False, name)
    model, tok = make_model("llama", n_layers=24, hidden=32), fresh_tokenizer()
    behavior = SteeringVector.train(model, tok, SteeringDataset(
        tok, [(q, q) for q in HARMLESS], suffixes=[("I'm sorry, but I can't", "Sure, here is")]),
        method="pca_center", accumulate_last_x_tokens="suffix-only")
    condition = SteeringVector.train(model, tok, SteeringDataset(tok, list(zip(HARMFUL, HARMLESS)),
                                                                 disable_suffixes=True),
                                     method="pca_center", accumulate_last_x_tokens="all")
    yield model, tok, behavior, condition
    torch.set_num_threads(n)
    for name in ("SteeringVector", "SteeringDataset", "MalleableModel"):
        GlobalConfig._verbose.pop(name, None)


def test_apply_snippet(setup, capsys):
    model, tok, behavior, _ = setup
    mm = MalleableModel(model, tok)
    plain = mm.respond("Your prompt here")
    ns = run(APPLY, {"malleable_model": mm, "steering_vector": behavior})
    assert isinstance(ns["response"], str) and ns["response"] in capsys.readouterr().out
    assert sorted(mm.steering_plan.layers) == [10, 11, 12, 13, 14, 15]
    mm.reset_leash_to_default()
    assert mm.respond("Your prompt here") == plain


def test_cast_steer_and_respond_snippets(setup, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, tok, behavior, condition = setup
    mm = MalleableModel(model=model, tokenizer=tok)
    best_layers, best_threshold, best_direction, _ = mm.find_best_condition_point(
        positive_strings=HARMFUL, negative_strings=HARMLESS, condition_vector=condition, layer_range=(1, 14),
        threshold_range=(-1.0, 1.0), threshold_step=0.001)
    ns = run(CAST_STEER, {"malleable_model": mm, "behavior_vector": behavior, "condition_vector": condition,
                          "best_layers": best_layers, "best_threshold": best_threshold, "best_direction": best_direction})
    plan = mm.steering_plan
    assert sorted(i for i, lp in plan.layers.items() if lp.beh_ids) == list(range(15, 24))
    assert sorted(i for i, lp in plan.layers.items() if lp.cond_ids) == sorted(best_layers)
    ns = run(CAST_RESPOND, ns)
    out = capsys.readouterr().out
    assert len(ns["responses"]) == 4 and all(f"Response: {r}\n" in out for r in ns["responses"])
    assert ns["responses"] == [mm.respond(p) for p in ns["prompts"]]
    mm.reset_leash_to_default()


def test_multisteer_snippet(setup):
    model, tok, behavior, condition = setup
    mm = MalleableModel(model, tok)
    ns = {"malleable_model": mm, "behavior_vector1": behavior, "behavior_vector2": condition,
          "condition_vector1": condition, "condition_vector2": behavior, "best_layers1": [3], "best_layers2": [5, 6],
          "best_threshold1": 0.01, "best_threshold2": 0.02, "best_direction1": "larger", "best_direction2": "smaller"}
    run(MULTISTEER, ns)
    plan = mm.steering_plan
    assert plan.n_behaviors == 2 and plan.n_conditions == 2
    assert sorted(plan.layers) == [3, 5, 6, 15, 16, 17, 18, 19, 20]
    assert plan.layers[15].beh_tables.tolist() == [[0, 1, 0, 1]] and plan.layers[18].beh_tables.tolist() == [[0, 0, 1, 1]]
    assert isinstance(mm.respond("hi", settings={"max_new_tokens": 4}), str)
    mm.reset_leash_to_default()


def test_logging_snippet_logs_steering(setup, tmp_path, monkeypatch, capsys):
    model, tok, behavior, condition = setup
    monkeypatch.setattr(GlobalConfig, "log_dir", tmp_path / "logs")
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=behavior, behavior_layer_ids=[15], condition_vector=condition, condition_layer_ids=[4],
             condition_vector_threshold=0.0)
    try:
        ns = run(LOGGING, {})
        mm.respond("hi", settings={"max_new_tokens": 2})
    finally:
        GlobalConfig.set_verbose(False, class_name="LeashLayer")
        GlobalConfig.set_file_output(False, class_name="LeashLayer")
        mm.reset_leash_to_default()
    text = Path(ns["log_path"]).read_text()
    assert "layer 4 (prompt): conditions [1] evaluated, row bitmasks" in text and "layer 15 (decode)" in text
    assert "Logs will be saved to" in capsys.readouterr().out
