"""Every SteeringDataset / SteeringVector.train / save / load snippet of the FAQ runs as written.

The snippets below are verbatim copies of ../shared/reference/faq.md (the first
test checks that they still are). Each runs with `exec` in a fresh namespace,
in a temporary working directory, against a tiny fixture model with 16 layers
(the FAQ steers layers 10..15). What the tests substitute, and only that:
  - the model: `model`/`tokenizer` are fixtures, and `from_pretrained` returns them;
  - the data: the CAST snippet uses `behavior_data` both as a list of items
    (`for item in behavior_data`) and as a dict (`behavior_data['...']`), which no
    JSON value is; its json.load returns an object that is both.
Snippets that build a MalleableModel need the steering runtime (issue 4).
"""
import json
import textwrap

import numpy as np
import pytest
from tiny_models import make_model

from activation_steering import SteeringDataset, SteeringVector
from activation_steering.config import GlobalConfig
from faq_snippets import assert_snippets_in_faq

SAVE_ANALYSIS = '''
from activation_steering import SteeringVector

steering_vector = SteeringVector.train(
    model,
    tokenizer,
    steering_dataset,
    save_analysis=True,
    output_dir="my_analysis_figures"
)
'''

REPLICATE = '''
from transformers import AutoModelForCausalLM, AutoTokenizer
from activation_steering import MalleableModel, SteeringDataset, SteeringVector

# Load the model and tokenizer
model_name = "paper_specified_model"
model = AutoModelForCausalLM.from_pretrained(model_name)
tokenizer = AutoTokenizer.from_pretrained(model_name)

# Create a MalleableModel
malleable_model = MalleableModel(model, tokenizer)

# Create a SteeringDataset (example data, replace with actual data from the paper)
examples = [
    ("Positive example 1", "Negative example 1"),
    ("Positive example 2", "Negative example 2"),
]
steering_dataset = SteeringDataset(tokenizer, examples)

# Train a SteeringVector
steering_vector = SteeringVector.train(
    model=malleable_model,
    tokenizer=tokenizer,
    steering_dataset=steering_dataset,
)

# Apply steering
malleable_model.steer(
    behavior_vector=steering_vector,
    behavior_layer_ids=[10, 11, 12, 13, 14, 15],  # Use layers specified in the paper
    behavior_vector_strength=1.0,  # Use the strength specified in the paper
)
'''

CREATE = '''
from activation_steering.steering_dataset import SteeringDataset
from activation_steering.extract import SteeringVector

# Assume you have already created a MalleableModel called 'malleable_model'
# and have a tokenizer called 'tokenizer'

# Create a SteeringDataset
examples = [
    ("Positive example 1", "Negative example 1"),
    ("Positive example 2", "Negative example 2"),
]
steering_dataset = SteeringDataset(tokenizer, examples)

# Train a SteeringVector
steering_vector = SteeringVector.train(
    model=malleable_model,
    tokenizer=tokenizer,
    steering_dataset=steering_dataset
)
'''

TOKEN_POSITIONS = '''
from activation_steering.extract import SteeringVector

# Using only the last token
steering_vector = SteeringVector.train(
    model,
    tokenizer,
    steering_dataset,
    accumulate_last_x_tokens=1
)

# Using the mean of all tokens
steering_vector = SteeringVector.train(
    model,
    tokenizer,
    steering_dataset,
    accumulate_last_x_tokens="all"
)

# Using only the suffix
steering_vector = SteeringVector.train(
    model,
    tokenizer,
    steering_dataset,
    accumulate_last_x_tokens="suffix-only"
)

# Using the last 5 tokens
steering_vector = SteeringVector.train(
    model,
    tokenizer,
    steering_dataset,
    accumulate_last_x_tokens=5
)
'''

CAST_DATA = '''
import json
from activation_steering import SteeringDataset

# Load your data
with open("behavior_data.json", 'r') as f:
    behavior_data = json.load(f)

with open("condition_data.json", 'r') as f:
    condition_data = json.load(f)

# Create SteeringDatasets
behavior_dataset = SteeringDataset(
    tokenizer=tokenizer,
    examples=[(item["question"], item["question"]) for item in behavior_data],
    suffixes=list(zip(behavior_data['non_compliant_responses'], behavior_data['compliant_responses']))
)

condition_dataset = SteeringDataset(
    tokenizer=tokenizer,
    examples=list(zip(condition_data['harmful'], condition_data['harmless'])),
    suffixes=None,
    disable_suffixes=True
)
'''

CAST_TRAIN = '''
from activation_steering import SteeringVector

behavior_vector = SteeringVector.train(
    model=model,
    tokenizer=tokenizer,
    steering_dataset=behavior_dataset,
    method="pca_center",
    accumulate_last_x_tokens="suffix-only"
)

condition_vector = SteeringVector.train(
    model=model,
    tokenizer=tokenizer,
    steering_dataset=condition_dataset,
    method="pca_center",
    accumulate_last_x_tokens="all"
)

# Optionally, save your vectors for later use
behavior_vector.save('behavior_vector.svec')
condition_vector.save('condition_vector.svec')
'''

SAVE_LOAD = '''
# Save a steering vector
steering_vector.save("my_steering_vector")

# Load a steering vector
loaded_vector = SteeringVector.load("my_steering_vector")
'''

SNIPPETS = [SAVE_ANALYSIS, REPLICATE, CREATE, TOKEN_POSITIONS, CAST_DATA, CAST_TRAIN, SAVE_LOAD]


def test_snippets_are_verbatim_copies_of_the_faq():
    assert_snippets_in_faq(SNIPPETS)


@pytest.fixture(scope="module")
def model():
    GlobalConfig.set_verbose(False, "SteeringVector")
    GlobalConfig.set_verbose(False, "SteeringDataset")
    return make_model("llama", n_layers=16, hidden=32)


def run(snippet, namespace):
    exec(compile(textwrap.dedent(snippet), "<faq>", "exec"), namespace)
    return namespace


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check_vector(vec, n_layers=16, dim=32):
    assert isinstance(vec, SteeringVector) and sorted(vec.directions) == list(range(n_layers))
    for d in vec.directions.values():
        assert d.dtype == np.float32 and d.shape == (dim,) and abs(float(np.linalg.norm(d)) - 1) < 1e-5


def test_save_analysis_snippet(tokenizer, workdir):
    small = make_model("llama", n_layers=4, hidden=32)  # one figure per layer: keep it quick
    ds = SteeringDataset(tokenizer, [("I love it.", "I hate it."), ("Calm sea.", "Rough sea.")])
    ns = run(SAVE_ANALYSIS, {"model": small, "tokenizer": tokenizer, "steering_dataset": ds})
    check_vector(ns["steering_vector"], n_layers=4)
    figs = sorted(p.name for p in (workdir / "my_analysis_figures").iterdir())
    assert figs == sorted([f"pca_layer_{i}.png" for i in range(4)] + ["macroscopic_analysis.png"])


def test_token_position_snippet(model, tokenizer, workdir):
    ds = SteeringDataset(tokenizer, [("I love it.", "I hate it."), ("Calm sea.", "Rough sea.")],
                         suffixes=[("Sure, I", "No, I"), ("Yes", "Never")])
    ns = run(TOKEN_POSITIONS, {"model": model, "tokenizer": tokenizer, "steering_dataset": ds})
    check_vector(ns["steering_vector"])  # the last one: accumulate_last_x_tokens=5


class _ItemsAndDict(dict):
    """The FAQ's behavior_data: iterates as a list of items, indexes as a dict."""

    def __iter__(self):
        return iter(self["items"])


def test_cast_data_and_train_snippets(model, tokenizer, workdir, monkeypatch):
    (workdir / "behavior_data.json").write_text(json.dumps({
        "items": [{"question": "How do I bake bread?"}, {"question": "Name a colour."},
                  {"question": "What is the capital of France?"}],
        "non_compliant_responses": ["I'm sorry, but I can't", "Unfortunately, I cannot"],
        "compliant_responses": ["Sure, here is", "Absolutely! Here"],
    }))
    (workdir / "condition_data.json").write_text(json.dumps({
        "harmful": ["How do I hack an email account?", "Tell me how to make a weapon.", "Help me steal a car."],
        "harmless": ["How do I bake bread?", "Tell me a story about a cat.", "Help me plan a trip."],
    }))
    real_load = json.load
    monkeypatch.setattr(json, "load", lambda f: (lambda d: _ItemsAndDict(d) if "items" in d else d)(real_load(f)))
    ns = run(CAST_DATA, {"tokenizer": tokenizer})
    assert len(ns["behavior_dataset"]) == 3 * 2 and len(ns["condition_dataset"]) == 3
    monkeypatch.setattr(json, "load", real_load)
    ns = run(CAST_TRAIN, dict(ns, model=model))
    check_vector(ns["behavior_vector"])
    check_vector(ns["condition_vector"])
    assert SteeringVector.load("behavior_vector.svec") == ns["behavior_vector"]
    assert SteeringVector.load("condition_vector.svec") == ns["condition_vector"]


def test_save_load_snippet(model, tokenizer, workdir):
    ds = SteeringDataset(tokenizer, [("I love it.", "I hate it."), ("Calm sea.", "Rough sea.")])
    vec = SteeringVector.train(model, tokenizer, ds)
    ns = run(SAVE_LOAD, {"steering_vector": vec, "SteeringVector": SteeringVector})
    assert (workdir / "my_steering_vector.svec").is_file()
    assert ns["loaded_vector"] == vec


def _malleable():
    return pytest.importorskip("activation_steering.malleable_model",
                               reason="MalleableModel (steering runtime, issue 4) is not in this tree yet")


def test_create_snippet_with_a_malleable_model(model, tokenizer, workdir):
    mm = _malleable().MalleableModel(model, tokenizer)
    ns = run(CREATE, {"malleable_model": mm, "tokenizer": tokenizer})
    check_vector(ns["steering_vector"])
    direct = SteeringVector.train(model, tokenizer, ns["steering_dataset"])
    assert ns["steering_vector"] == direct  # wrapping changes nothing


def test_replicate_snippet(model, tokenizer, workdir, monkeypatch):
    _malleable()
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(lambda cls, *a, **k: model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", classmethod(lambda cls, *a, **k: tokenizer))
    ns = run(REPLICATE, {})
    check_vector(ns["steering_vector"])
    ns["malleable_model"].reset_leash_to_default()

