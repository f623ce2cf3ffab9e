"""Pooled capture of SteeringVector.train against its one-string-at-a-time twin.

The twin (oracles/pooling.pooled_one_at_a_time) is the plainest possible reading
of the pooling rule: run each string alone with output_hidden_states=True and
average hidden_states[i+1] over the string's pooled tokens. Its suffix span is
found independently of the tokenizer's offset mapping: each token's character
end comes from decoding growing prefixes of the ids, and the suffix starts at
the first token that ends after the suffix's first character.
"""
import numpy as np
import pytest
import torch
from tiny_models import make_model

from activation_steering import SteeringDataset, SteeringVector
from activation_steering.activations import prefix_sharing, runner
from activation_steering.activations.pooled import capture_pooled
from activation_steering.activations.prefix_sharing import plan_prefix_sharing, sharing_blockers
from activation_steering.activations.tokens import pooling_spans, tokenize
from activation_steering.config import GlobalConfig
from activation_steering.oracles.pooling import pooled_one_at_a_time
from activation_steering.activations.layers import find_decoder_layers

GlobalConfig.set_verbose(False, "SteeringVector")
GlobalConfig.set_verbose(False, "SteeringDataset")

EXAMPLES = [
    ("I love cats.", "I hate cats and dogs, every single one of them."),
    ("The sea is calm.", "Rough sea."),
    ("Explain how photosynthesis works in plants and algae, please.", "No."),
]
SUFFIXES = [("Sure, here is", "Sorry"), (" yes", " absolutely not, never ever"), ("", "x")]
MODES = [1, 5, "all", "suffix-only"]


def ours_pooled(model, tokenizer, dataset, layer_ids, mode, batch_size, share=None):
    texts = [s for p in dataset.formatted_dataset for s in (p.positive, p.negative)]
    starts = [c for p in dataset.formatted_dataset for c in (p.positive_suffix_start, p.negative_suffix_start)]
    tok = tokenize(tokenizer, texts, not dataset.use_chat_template, starts)
    start, end, _ = pooling_spans(tok, mode)
    return capture_pooled(model, tok, start, end, layer_ids, batch_size, progress=False, share_prefixes=share)


@pytest.fixture(scope="module")
def models():
    return {}


def get_model(models, family):
    if family not in models:
        models[family] = make_model(family, n_layers=4, hidden=64)
    return models[family]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "opt", "qwen2"])
@pytest.mark.parametrize("mode", MODES)
def test_pooled_equals_naive_reference(models, tokenizer, family, mode, monkeypatch):
    monkeypatch.setattr(prefix_sharing, "MIN_GROUP_SAVING", 1)  # every shared prefix forms a group: all 3 levels run
    model = get_model(models, family)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    texts = [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]
    plan = plan_prefix_sharing(tokenize(tokenizer, texts, False).input_ids,
                               tokenize(tokenizer, texts, False).lengths)
    assert plan.root_len > 0 and len(plan.groups) >= 2
    layers = [0, 2, 3]  # 3 is the last layer: hidden_states[4] is the final-norm output
    ref = pooled_one_at_a_time(model, tokenizer, ds, layers, mode)
    for share in (False, True):  # the plain batched path and the shared-prefix path
        got = ours_pooled(model, tokenizer, ds, layers, mode, batch_size=4, share=share)
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4, f"share_prefixes={share}"
    assert model._as_prefix_sharing_ok is True  # the probe agreed, so the shared path really ran


@pytest.mark.parametrize("mode", MODES)
def test_raw_text_and_straddling_suffix(models, tokenizer, mode, monkeypatch):
    monkeypatch.setattr(prefix_sharing, "MIN_GROUP_SAVING", 1)
    # No chat template; the suffix starts inside a word ("cat" + "s are ..."), so
    # the boundary token belongs to both sides: it is pooled as suffix.
    model = get_model(models, "llama")
    ds = SteeringDataset(tokenizer, [("The cat", "The dog"), ("How do I bake bread", "Tell me")],
                         suffixes=[("s are nice", "s are bad"), ("?", " a story")], use_chat_template=False)
    ref = pooled_one_at_a_time(model, tokenizer, ds, [1, 3], mode)
    for share in (False, True):
        got = ours_pooled(model, tokenizer, ds, [1, 3], mode, batch_size=3, share=share)
        assert np.abs(got - ref).max() <= 1e-4


def test_pooled_does_not_depend_on_batch_size(models, tokenizer):
    model = get_model(models, "gpt2")
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    runs = [ours_pooled(model, tokenizer, ds, [0, 1, 2, 3], "all", bs, share) for bs in (1, 3, 64)
            for share in (False, True)]
    for r in runs[1:]:
        assert np.abs(r - runs[0]).max() <= 1e-5
    vecs = [SteeringVector.train(model, tokenizer, ds, batch_size=bs) for bs in (1, 5, 64)]
    for v in vecs[1:]:
        for layer, d in v.directions.items():
            assert float(np.dot(d, vecs[0].directions[layer])) >= 0.99999


def test_train_matches_naive_pooling_plus_numpy_pca(models, tokenizer):
    model = get_model(models, "opt")
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    ref = pooled_one_at_a_time(model, tokenizer, ds, [0, 1, 2, 3], "suffix-only")
    with pytest.warns(UserWarning, match="no suffix"):  # the ("", "x") suffix pair has an empty positive
        vec = SteeringVector.train(model, tokenizer, ds, method="pca_center",
                                   accumulate_last_x_tokens="suffix-only", batch_size=4)
    for j, layer in enumerate(range(4)):
        h = ref[j]
        t = h - h.mean(0)
        t = t - t.mean(0)
        _, s, vt = np.linalg.svd(t, full_matrices=False)
        d = vt[0]
        proj = h @ d
        if np.sum(proj[0::2] < proj[1::2]) > np.sum(proj[0::2] > proj[1::2]):
            d = -d
        assert float(np.dot(vec.directions[layer], d)) >= 0.99999
        assert abs(vec.explained_variances[layer] - s[0] ** 2 / np.sum(s ** 2)) <= 1e-5


def test_forward_stops_after_deepest_requested_layer(models, tokenizer):
    model = get_model(models, "llama")
    layers = find_decoder_layers(model)
    fired = {"later": 0, "lm_head": 0, "requested": 0}
    handles = [
        layers[2].register_forward_hook(lambda *a: fired.__setitem__("later", fired["later"] + 1)),
        layers[3].register_forward_hook(lambda *a: fired.__setitem__("later", fired["later"] + 1)),
        model.lm_head.register_forward_hook(lambda *a: fired.__setitem__("lm_head", fired["lm_head"] + 1)),
        layers[1].register_forward_hook(lambda *a: fired.__setitem__("requested", fired["requested"] + 1)),
    ]
    try:
        ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
        vec = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[0, 1], batch_size=5)
    finally:
        for h in handles:
            h.remove()
    assert sorted(vec.directions) == [0, 1]
    assert fired["later"] == 0 and fired["lm_head"] == 0
    assert fired["requested"] >= 1


def test_model_forward_and_output_hidden_states_are_never_used(models, tokenizer, monkeypatch):
    model = get_model(models, "gpt_neox")

    def boom(*args, **kwargs):
        raise AssertionError("the full model forward (LM head, output_hidden_states) must not run")

    monkeypatch.setattr(model, "forward", boom)
    ds = SteeringDataset(tokenizer, EXAMPLES, disable_suffixes=True)
    vec = SteeringVector.train(model, tokenizer, ds, accumulate_last_x_tokens="all")
    assert sorted(vec.directions) == [0, 1, 2, 3]


def test_wrapped_model_and_negative_layer_ids(models, tokenizer):
    model = get_model(models, "qwen2")

    class Wrapper:  # what layers.unwrap_model recognises (MalleableModel stores the HF model there)
        _as_wrapped_model = model

    ds = SteeringDataset(tokenizer, EXAMPLES, disable_suffixes=True)
    a = SteeringVector.train(Wrapper(), tokenizer, ds, hidden_layer_ids=[-1, 1])
    b = SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[3, 1])
    assert list(a.directions) == [3, 1] and a == b and a.model_type == "qwen2"


def test_bad_arguments_raise_before_any_forward(models, tokenizer):
    model = get_model(models, "llama")
    calls = []
    handle = find_decoder_layers(model)[0].register_forward_pre_hook(lambda *a: calls.append(1))
    ds = SteeringDataset(tokenizer, EXAMPLES, disable_suffixes=True)
    one = SteeringDataset(tokenizer, EXAMPLES[:1], disable_suffixes=True)

    class Empty:
        formatted_dataset = []

    bad = [
        (dict(method="pca"), ValueError, "method"),
        (dict(accumulate_last_x_tokens=0), ValueError, "accumulate_last_x_tokens"),
        (dict(accumulate_last_x_tokens="last"), ValueError, "accumulate_last_x_tokens"),
        (dict(accumulate_last_x_tokens=True), TypeError, "accumulate_last_x_tokens"),
        (dict(accumulate_last_x_tokens=1.5), TypeError, "accumulate_last_x_tokens"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size="8"), ValueError, "batch_size"),
        (dict(hidden_layer_ids=[4]), ValueError, "hidden_layer_ids"),
        (dict(hidden_layer_ids=[-5]), ValueError, "hidden_layer_ids"),
        (dict(hidden_layer_ids=[]), ValueError, "hidden_layer_ids"),
        (dict(hidden_layer_ids=["a"]), TypeError, "hidden_layer_ids"),
        (dict(steering_dataset=Empty()), ValueError, "empty"),
        (dict(steering_dataset=[("a", "b")]), TypeError, "SteeringDataset"),
        (dict(steering_dataset=one, method="pca_diff"), ValueError, "pca_diff"),
    ]
    try:
        for kwargs, exc, match in bad:
            args = dict(model=model, tokenizer=tokenizer, steering_dataset=ds)
            args.update(kwargs)
            with pytest.raises(exc, match=match):
                SteeringVector.train(**args)
    finally:
        handle.remove()
    assert calls == []


def test_identical_pairs_are_a_clear_error_naming_the_layer(models, tokenizer):
    model = get_model(models, "llama")
    ds = SteeringDataset(tokenizer, [("same", "same"), ("other", "other")], disable_suffixes=True)
    with pytest.raises(ValueError, match=r"layer 2: .*zero variance"):
        SteeringVector.train(model, tokenizer, ds, hidden_layer_ids=[2, 3])


def test_suffix_only_without_suffixes_warns_and_uses_last_token(models, tokenizer):
    model = get_model(models, "llama")
    ds = SteeringDataset(tokenizer, EXAMPLES, disable_suffixes=True)
    with pytest.warns(UserWarning, match="6 of 6 strings have no suffix"):
        a = SteeringVector.train(model, tokenizer, ds, accumulate_last_x_tokens="suffix-only")
    b = SteeringVector.train(model, tokenizer, ds, accumulate_last_x_tokens=1)
    assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("mode", [3, "all", "suffix-only"])
def test_embedded_model_pooled_equals_naive(embedded, mode, monkeypatch):
    monkeypatch.setattr(prefix_sharing, "MIN_GROUP_SAVING", 1)
    model, tok = embedded
    ds = SteeringDataset(tok, [("How do I bake bread?", "How do I bake bread?"),
                               ("Name a colour.", "Tell me a long story about a cat who sails.")],
                         suffixes=[("Sure! Here", "I can't help"), ("", " No")])
    layers = [0, 14, 29]
    ref = pooled_one_at_a_time(model, tok, ds, layers, mode)
    scale = max(1.0, float(np.abs(ref).max()))
    for share in (False, True):
        got = ours_pooled(model, tok, ds, layers, mode, batch_size=3, share=share)
        assert np.abs(got - ref).max() <= 1e-4 * scale


# --------------------------------------------------------------------------- #
# Prefix sharing: the plan, and when it is (not) used
# --------------------------------------------------------------------------- #
def test_plan_groups_share_their_prefix_and_count_tokens():
    rng = np.random.default_rng(0)
    root = [1, 2, 3]
    questions = [list(rng.integers(10, 99, size=rng.integers(5, 12))) for _ in range(6)]
    suffixes = [list(rng.integers(100, 199, size=rng.integers(1, 4))) for _ in range(5)]
    ids = [root + q + s for s in suffixes for q in questions] + [root + [7]]
    lengths = np.array([len(x) for x in ids])
    assert plan_prefix_sharing(ids, lengths).groups == []        # each group saves < MIN_GROUP_SAVING tokens
    plan = plan_prefix_sharing(ids, lengths, min_saving=1)
    assert plan.root_len == 3
    assert sorted(len(g) for g in plan.groups) == [5] * 6       # one group per question
    for rows, k in zip(plan.groups, plan.group_len):
        assert all(ids[r][:k] == ids[rows[0]][:k] for r in rows)
        assert all(lengths[r] > k for r in rows)                  # every string keeps a token of its own
    covered = np.sort(np.concatenate(plan.groups + [plan.ungrouped]))
    assert covered.tolist() == list(range(len(ids)))
    shared = plan.root_len + sum(k - plan.root_len for k in plan.group_len) + sum(
        lengths[r] - k for rows, k in zip(plan.groups, plan.group_len) for r in rows) + sum(
        lengths[r] - plan.root_len for r in plan.ungrouped)
    assert plan.tokens_shared == shared and plan.tokens_plain == lengths.sum()


def test_plan_without_anything_shared():
    plan = plan_prefix_sharing([[1, 2], [3, 4], [5]], np.array([2, 2, 1]))
    assert plan.root_len == 0 and not plan.groups and plan.tokens_shared == plan.tokens_plain


def test_sharing_is_not_used_on_a_steered_model(models, tokenizer):
    model = get_model(models, "llama")
    assert sharing_blockers(model) == []
    handle = find_decoder_layers(model)[1].register_forward_pre_hook(lambda *a: None)
    try:
        assert any("hooks" in why for why in sharing_blockers(model))
    finally:
        handle.remove()


def test_a_failing_probe_falls_back_to_the_plain_path(tokenizer, monkeypatch):
    monkeypatch.setattr(prefix_sharing, "MIN_GROUP_SAVING", 1)
    # Simulate an architecture that ignores position_ids when given a cache.
    model = make_model("llama", n_layers=4, hidden=64, seed=1)
    real_run = runner.TruncatedForward.run

    def run_ignoring_positions(self, ids, mask, on_hidden, cache=None, positions=None, on_input=None):
        if cache is None:
            return real_run(self, ids, mask, on_hidden, on_input=on_input)
        self._on_hidden, self._on_input = on_hidden, on_input
        try:
            self.base(input_ids=ids, attention_mask=mask, use_cache=True, **{self.cache_kw: cache})
        except runner._StopForward:
            pass

    monkeypatch.setattr(runner.TruncatedForward, "run", run_ignoring_positions)
    ds = SteeringDataset(tokenizer, EXAMPLES, suffixes=SUFFIXES)
    got = ours_pooled(model, tokenizer, ds, [1, 3], "all", batch_size=4)
    assert model._as_prefix_sharing_ok is False
    assert np.abs(got - pooled_one_at_a_time(model, tokenizer, ds, [1, 3], "all")).max() <= 1e-4
