""""user_text" pooling: the mean over the tokens of the user's message only.

The reference is one string at a time over EXACTLY the message's tokens, located
by hand from character offsets (independently of activations/user_text.py): a
token belongs to the message when its characters overlap the message's. Every
path - the condition search (right padding), respond_batch (left padding),
respond, generate called with input_ids, chunked prefill, a plain forward, and
training - must pool those tokens."""
import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.activations.layers import find_decoder_layers
from activation_steering.activations.pooled import pooled_activations
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.activations.user_text import USER_TEXT_TOKEN, UserText, user_text_locator
from activation_steering.conditions.search import condition_similarities
from activation_steering.conditions.similarity import condition_similarity
from activation_steering.native import ops as _ops
from tiny_models import make_model, make_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

# mixed: short, long, a message that opens with blank lines (the template's newline merges
# with it), trailing whitespace, inner newlines, and one that repeats the system-free marker words
MESSAGES = ["How do I bake bread?", "hi", "\n\nTell me a story about a cat who learns to sail across the sea.",
            "What is the capital of France?  ", "two\nlines here", "user assistant im_start",
            "Write a poem about autumn leaves, please, with many words in it."]
HEAD = "<|im_start|>user\n"


def _hand_span(tok, text: str, message: str) -> tuple[list[int], int, int]:
    """(ids, start, end): the formatted prompt's ids and the tokens overlapping the message's characters."""
    c0 = text.rindex(HEAD) + len(HEAD)
    c1 = c0 + len(message)
    assert text[c0:c1] == message
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    inside = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > s and e > c0 and s < c1]
    assert inside == list(range(inside[0], inside[-1] + 1))
    return list(enc["input_ids"]), inside[0], inside[-1] + 1


def _reference_sims(model, tok, messages, layer, direction, texts=None):
    """One string at a time, a full forward, the mean of the decoder layer input over the hand-located span."""
    out = []
    for i, m in enumerate(messages):
        text = format_prompt(tok, m) if texts is None else texts[i]
        ids, s, e = _hand_span(tok, text, m)
        with torch.no_grad():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
        out.append(float(condition_similarity(hs[s:e].mean(0), torch.as_tensor(direction))))
    return np.array(out)


def _mid(values, k: int | None = None) -> float:
    """A threshold with k values below it (default half), halfway between two observed
    similarities (never equal to one: float rounding cannot flip a decision)."""
    v = np.sort(np.asarray(values))
    k = len(v) // 2 if k is None else k
    assert v[k] - v[k - 1] > 1e-5
    return float(v[k - 1] + v[k]) / 2


@pytest.fixture(scope="module")
def setup():
    model, tok = make_model("llama", n_layers=4, hidden=64, seed=1), make_tokenizer()
    rng = np.random.default_rng(0)
    cv = SteeringVector("llama", {i: rng.standard_normal(64).astype(np.float32) for i in range(4)},
                        {i: 1.0 for i in range(4)})
    return model, tok, cv


# --------------------------------------------------------------------------- locating
def test_locator_matches_the_hand_located_message_tokens():
    tok = make_tokenizer()
    loc = user_text_locator(tok)
    for m in MESSAGES:
        text = format_prompt(tok, m)
        ids, s, e = _hand_span(tok, text, m)
        assert loc.span(ids) == (s, e), m
        # rendered as training renders it (no generation prompt) and with a suffix after the turn
        closed = tok.apply_chat_template([{"role": "user", "content": m}], tokenize=False, add_generation_prompt=False)
        for t in (closed, closed + "<|im_start|>assistant\nSure, here"):
            ids, s, e = _hand_span(tok, t, m)
            assert loc.span(ids) == (s, e), (m, t)


def test_the_last_user_message_of_a_conversation_with_a_system_prompt():
    tok = make_tokenizer()
    loc = user_text_locator(tok)
    conv = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"}, {"role": "user", "content": "the real question"}]
    text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    ids, s, e = _hand_span(tok, text, "the real question")
    assert loc.span(ids) == (s, e)
    assert tok.decode(ids[s:e]) == "the real question"


def test_merged_boundary_token_counts_as_the_message():
    tok = make_tokenizer()
    text = format_prompt(tok, "\n\nx")
    ids, s, e = _hand_span(tok, text, "\n\nx")
    assert user_text_locator(tok).span(ids) == (s, e)


def test_a_prompt_without_template_markers_is_the_users_text_minus_edge_special_tokens():
    tok = make_tokenizer()
    loc = user_text_locator(tok)
    ids = tok("plain text here", add_special_tokens=False)["input_ids"]
    assert loc.span(ids) == (0, len(ids))
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert loc.span([bos, *ids, bos]) == (1, len(ids) + 1)


@pytest.mark.parametrize("text, fragment", [
    ("<|im_start|>system\nYou are helpful.<|im_end|>\n", "no user turn"),
    ("<|im_start|>user\nan unfinished message", "not closed"),
    ("<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n", "no tokens"),
    ("<|im_end|>\n", "no user turn"),
])
def test_prompts_with_markers_but_no_delimitable_message_raise(text, fragment):
    tok = make_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match=fragment):
        user_text_locator(tok).span(ids)


def test_templates_that_do_not_mark_the_message_are_refused():
    tok = make_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="no marker"):
        UserText(tok)


def test_the_locator_is_rebuilt_when_the_template_changes():
    tok = make_tokenizer()
    a = user_text_locator(tok)
    assert user_text_locator(tok) is a
    tok.chat_template = tok.chat_template.replace("'\n'", "'\n\n'")
    b = user_text_locator(tok)
    assert b is not a and b.head_sep != a.head_sep


# --------------------------------------------------------------------------- the op
def test_op_pools_the_marked_tokens_and_the_twin_agrees(setup):
    from activation_steering.oracles import ops as twin

    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16)
    mask = torch.tensor([[0, 0, 1, 2, 2, 1, 1], [1, 2, 2, 2, 2, 2, 1], [1, 1, 1, 1, 1, 2, 0]])
    dirs = torch.randn(3, 16)
    codes = torch.tensor([[1, 0, 0], [2, 0, 1], [4, 0, 2]])
    got = _ops.condition_similarity(hidden, mask, dirs, codes)
    np.testing.assert_allclose(got.numpy(), twin.condition_similarity(hidden, mask, dirs, codes).numpy(), atol=2e-6)
    for b in range(3):
        user = hidden[b][mask[b] == 2].mean(0)
        real = hidden[b][mask[b] != 0]
        assert abs(float(got[b, 2]) - float(condition_similarity(user, dirs[2]))) < 2e-6
        assert abs(float(got[b, 0]) - float(condition_similarity(real.mean(0), dirs[0]))) < 2e-6
        assert abs(float(got[b, 1]) - float(condition_similarity(real[-1], dirs[1]))) < 2e-6
    state = torch.zeros(3, dtype=torch.long)
    thr = torch.full((3,), 0.0)
    _ops.steer_layer(hidden, state, mask, dirs, thr, codes, None, None, False)
    state2 = torch.zeros(3, dtype=torch.long)
    twin.steer_layer(hidden, state2, mask, dirs, thr, codes, None, None, False)
    assert state.tolist() == state2.tolist()
    expected = sum(((got[:, k] < 0).long() << k) for k in range(3))
    assert state.tolist() == expected.tolist()


# --------------------------------------------------------------------------- search and runtime
def test_search_similarities_equal_the_one_string_reference(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    for layer in (1, 3):
        ref = _reference_sims(model, tok, MESSAGES, layer, cv.directions[layer])
        got = condition_similarities(mm, MESSAGES, cv, [layer], "user_text", batch_size=3)[:, 0]
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
        mean = condition_similarities(mm, MESSAGES, cv, [layer], "mean", batch_size=3)[:, 0]
        assert np.abs(mean - ref).max() > 1e-3  # the modes really pool different tokens


def _runtime_sims(mm, tok, cv, layer, run):
    """The similarity and the condition bit the hook computes on the prompt pass at `layer`, per prompt
    (keyed by the prompt's real ids), while `run()` generates."""
    model = mm._as_wrapped_model
    seen, ids_of_pass = {}, {}
    codes = torch.tensor([[1, 0, 2]])

    def watch_ids(_m, args, kwargs):
        ids_of_pass["ids"] = kwargs.get("input_ids", args[0] if args else None)

    def after_leash(_m, args, kwargs):
        ctx = mm._ctx
        if not ctx.evaluate or ids_of_pass.get("ids") is None or ids_of_pass["ids"].shape[1] != ctx.token_mask.shape[1]:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        sims = _ops.condition_similarity(hidden, ctx.token_mask, torch.as_tensor(cv.directions[layer]).reshape(1, -1),
                                         codes)
        for row, ids in enumerate(ids_of_pass["ids"]):
            real = ids[ctx.token_mask[row] != 0]
            user = ids[ctx.token_mask[row] == USER_TEXT_TOKEN]
            seen[tuple(real.tolist())] = (float(sims[row, 0]), bool(ctx.state[row] & 1), user.tolist())

    handles = [model.register_forward_pre_hook(watch_ids, with_kwargs=True),
               find_decoder_layers(model)[layer].register_forward_pre_hook(after_leash, with_kwargs=True)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return seen


def test_respond_batch_left_padding_agrees_with_the_search_and_the_reference(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    layer = 2
    ref = _reference_sims(model, tok, MESSAGES, layer, cv.directions[layer])
    searched = condition_similarities(mm, MESSAGES, cv, [layer], "user_text", batch_size=4)[:, 0]
    thr = _mid(searched)
    mm.steer(condition_vector=cv, condition_layer_ids=[layer], condition_vector_threshold=thr,
             condition_comparator_threshold_is="larger", condition_threshold_comparison_mode="user_text")
    seen = _runtime_sims(mm, tok, cv, layer, lambda: mm.respond_batch(MESSAGES, settings={"max_new_tokens": 1},
                                                                         batch_size=4))
    mm.reset_leash_to_default()
    for i, m in enumerate(MESSAGES):
        ids, s, e = _hand_span(tok, format_prompt(tok, m), m)
        sim, met, user = seen[tuple(ids)]
        assert user == ids[s:e]
        assert abs(sim - ref[i]) < 2e-6 and abs(sim - searched[i]) < 2e-6
        assert met == (searched[i] < thr)
    assert 0 < sum(searched < thr) < len(MESSAGES)


def _cast(mm, cv, thr, mode="user_text"):
    mm.steer(behavior_vector=cv, behavior_layer_ids=[2, 3], behavior_vector_strength=6.0, condition_vector=cv,
             condition_layer_ids=[1], condition_vector_threshold=thr, condition_comparator_threshold_is="larger",
             condition_threshold_comparison_mode=mode, apply_behavior_on_first_call=False)


def test_respond_batch_equals_respond_one_at_a_time_and_the_condition_matters(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    sims = condition_similarities(mm, MESSAGES, cv, [1], "user_text")[:, 0]
    thr = _mid(sims)
    settings = {"max_new_tokens": 6}
    plain = [mm.respond(m, settings=settings) for m in MESSAGES]
    _cast(mm, cv, thr)
    batched = mm.respond_batch(MESSAGES, settings=settings, batch_size=4)
    _cast(mm, cv, thr)
    one = [mm.respond(m, settings=settings, reset_after_response=False) for m in MESSAGES]
    mm.reset_leash_to_default()
    assert batched == one
    met = sims < thr
    assert all((one[i] != plain[i]) == bool(met[i]) for i in range(len(MESSAGES))), (met, one, plain)


def test_generate_with_input_ids_chunked_prefill_and_a_plain_forward_equal_respond(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    sims = condition_similarities(mm, MESSAGES, cv, [1], "user_text")[:, 0]
    thr = _mid(sims)
    _cast(mm, cv, thr)
    want = [mm.respond(m, settings={"max_new_tokens": 5}, reset_after_response=False) for m in MESSAGES]
    batch = encode(tok, [format_prompt(tok, m) for m in MESSAGES], use_chat_template=True, padding_side="left")
    width = batch["input_ids"].shape[1]
    for extra in ({}, {"prefill_chunk_size": 3}, {"use_cache": False}):
        out = mm._as_wrapped_model.generate(**batch, max_new_tokens=5, do_sample=False, repetition_penalty=1.1,
                                            pad_token_id=tok.pad_token_id, **extra)
        got = [tok.decode(o[width:], skip_special_tokens=True) for o in out]
        assert got == want, extra
    # a caller's cache of the first 6 prompt positions (computed unsteered): the pre-pass pools the message
    from transformers import DynamicCache

    for i, m in enumerate(MESSAGES[:3]):
        ids = encode(tok, [format_prompt(tok, m)], use_chat_template=True)["input_ids"]
        cache = DynamicCache(config=model.config)
        mm.reset_leash_to_default()
        with torch.no_grad():
            model(input_ids=ids[:, :6], cache=cache, use_cache=True)
        _cast(mm, cv, thr)
        out = mm._as_wrapped_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache,
                                            max_new_tokens=5, do_sample=False, repetition_penalty=1.1,
                                            pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == want[i], m
    # a plain forward (outside generate) decides the conditions on its prompt from the same tokens
    model_ = mm._as_wrapped_model
    with torch.no_grad():
        model_(**batch)
    state = mm._ctx.state.tolist()
    assert [bool(s & 1) for s in state] == (sims < thr).tolist()
    mm.reset_leash_to_default()


def test_multisteer_mixes_pooling_modes_per_condition(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    ut = condition_similarities(mm, MESSAGES, cv, [1], "user_text")[:, 0]
    mean = condition_similarities(mm, MESSAGES, cv, [1], "mean")[:, 0]
    t1, t2 = _mid(ut), _mid(mean, 2)  # 3 vs 2 prompts met: the bits must differ
    mm.multisteer(behavior_vectors=[cv], behavior_layer_ids=[[3]], behavior_vector_strengths=[1.0],
                  condition_vectors=[cv, cv], condition_layer_ids=[[1], [1]], condition_vector_thresholds=[t1, t2],
                  condition_comparator_threshold_is=["larger", "larger"], rules=["if C1 then B1"],
                  condition_threshold_comparison_modes=["user_text", "mean"])
    batch = encode(tok, [format_prompt(tok, m) for m in MESSAGES], use_chat_template=True, padding_side="left")
    with torch.no_grad():
        mm._as_wrapped_model(**batch)
    state = mm._ctx.state.tolist()
    mm.reset_leash_to_default()
    assert [bool(s & 1) for s in state] == (ut < t1).tolist()
    assert [bool(s & 2) for s in state] == (mean < t2).tolist()
    assert (ut < t1).tolist() != (mean < t2).tolist()  # the two pooling modes decide differently here


# --------------------------------------------------------------------------- training
def test_training_pools_exactly_the_message_tokens(setup):
    model, tok, _cv = setup
    pairs = [("I love it.", "I hate it."), ("\n\ngood day", "bad day  "), ("two\nlines", "one line")]
    ds = SteeringDataset(tok, pairs, suffixes=None, disable_suffixes=True)
    texts = [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]
    messages = [s for p in pairs for s in p]
    pooled = pooled_activations(model, tok, texts, [0, 2], "user_text", batch_size=4, add_special_tokens=False)
    for n, (text, m) in enumerate(zip(texts, messages)):
        ids, s, e = _hand_span(tok, text, m)
        with torch.no_grad():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for j, layer in enumerate([0, 2]):
            np.testing.assert_allclose(pooled[j, n], hs[layer + 1][0, s:e].mean(0).numpy(), atol=2e-5)
    v = SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="user_text", hidden_layer_ids=[0, 2],
                             method="mean_diff")
    diff = (pooled[:, 0::2] - pooled[:, 1::2]).mean(1)
    for j, layer in enumerate([0, 2]):
        np.testing.assert_allclose(v.directions[layer], diff[j] / np.linalg.norm(diff[j]), atol=1e-5)


# --------------------------------------------------------------------------- without the chat template
def test_use_chat_template_false_pools_the_whole_prompt(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    ut = condition_similarities(mm, MESSAGES, cv, [1, 2], "user_text", use_chat_template=False)
    mean = condition_similarities(mm, MESSAGES, cv, [1, 2], "mean", use_chat_template=False)
    np.testing.assert_allclose(ut, mean, atol=2e-6)  # this tokenizer adds no BOS: the whole prompt
    thr = _mid(ut[:, 0])
    _cast(mm, cv, thr)
    batched = mm.respond_batch(MESSAGES, settings={"max_new_tokens": 4}, use_chat_template=False)
    _cast(mm, cv, thr)
    one = [mm.respond(m, settings={"max_new_tokens": 4}, use_chat_template=False, reset_after_response=False)
           for m in MESSAGES]
    mm.reset_leash_to_default()
    assert batched == one


def test_a_tokenizer_without_chat_template(setup):
    model, tok, cv = setup
    tok = make_tokenizer()
    tok.chat_template = None
    mm = MalleableModel(model, tok)
    ut = condition_similarities(mm, MESSAGES, cv, [1], "user_text", use_chat_template=False)
    mean = condition_similarities(mm, MESSAGES, cv, [1], "mean", use_chat_template=False)
    np.testing.assert_allclose(ut, mean, atol=2e-6)


# --------------------------------------------------------------------------- bad input
def test_unknown_modes_name_the_argument(setup):
    model, tok, cv = setup
    mm = MalleableModel(model, tok)
    with pytest.raises(ValueError, match="condition_threshold_comparison_mode"):
        mm.steer(condition_vector=cv, condition_layer_ids=[1], condition_vector_threshold=0.1,
                 condition_threshold_comparison_mode="user")
    with pytest.raises(ValueError, match=r"condition_threshold_comparison_modes\[0\]"):
        mm.multisteer(behavior_vectors=[cv], behavior_layer_ids=[[3]], behavior_vector_strengths=[1.0],
                      condition_vectors=[cv], condition_layer_ids=[[1]], condition_vector_thresholds=[0.1],
                      condition_comparator_threshold_is=["larger"], rules=["if C1 then B1"],
                      condition_threshold_comparison_modes=["usertext"])
    with pytest.raises(ValueError, match="condition_threshold_comparison_mode"):
        mm.find_best_condition_point(["a"], ["b"], cv, layer_range=(1, 2), condition_threshold_comparison_mode="text")
    ds = SteeringDataset(tok, [("a", "b")])
    with pytest.raises(ValueError, match="accumulate_last_x_tokens"):
        SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="user")
    assert mm.steering_plan is None


def test_ill_suited_inputs_raise_before_anything_changes(setup):
    model, tok, cv = setup
    bad = make_tokenizer()
    bad.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    mm = MalleableModel(model, bad)
    with pytest.raises(ValueError, match="user_text|user message"):
        mm.steer(condition_vector=cv, condition_layer_ids=[1], condition_vector_threshold=0.1,
                 condition_threshold_comparison_mode="user_text")
    assert mm.steering_plan is None
    mm = MalleableModel(model, tok)
    _cast(mm, cv, 0.0)
    batch = encode(tok, [format_prompt(tok, MESSAGES[0])], use_chat_template=True)
    embeds = mm._as_wrapped_model.get_input_embeddings()(batch["input_ids"])
    with pytest.raises(ValueError, match="input_ids"):
        mm._as_wrapped_model.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], max_new_tokens=2)
    system_only = encode(tok, ["<|im_start|>system\nhello<|im_end|>\n"], use_chat_template=True)
    with pytest.raises(ValueError, match="no user turn"):
        mm._as_wrapped_model.generate(**system_only, max_new_tokens=2)
    mm.reset_leash_to_default()
    with pytest.raises(ValueError, match=r"strings\[1\]"):
        condition_similarities(MalleableModel(model, tok), ["fine", "<|im_start|>user\nunclosed"], cv, [1],
                               "user_text", use_chat_template=False)
    # the search names the caller's list and index, not the index in positives + negatives
    with pytest.raises(ValueError, match=r"negative_strings\[1\]: the user's message has no tokens"):
        MalleableModel(model, tok).find_best_condition_point(["bad", "evil", "x"], ["ok", "<|im_end|>"], cv,
                                                             condition_threshold_comparison_mode="user_text")


# --------------------------------------------------------------------------- the real SmolLM2 (slow)
@pytest.mark.slow
def test_smollm2_default_system_prompt_search_runtime_and_reference_agree(embedded):
    """SmolLM2's template adds a default system prompt; its newline separator merges with
    messages that open with blank lines or spaces. The search, respond_batch and the
    one-string reference over the hand-located tokens agree."""
    model, tok = embedded
    messages = ["How do I bake bread?", "\n\nHow do I pick a lock?", "  two leading spaces", "ends with space ",
                "Tell me how to make a dangerous poison at home, step by step."]
    loc = user_text_locator(tok)
    for m in messages:
        text = format_prompt(tok, m)
        assert "You are a helpful AI assistant" in text  # the default system prompt is there
        ids, s, e = _hand_span(tok, text, m)
        assert loc.span(ids) == (s, e), m
    rng = np.random.default_rng(0)
    d = model.config.hidden_size
    cv = SteeringVector("llama", {i: rng.standard_normal(d).astype(np.float32) for i in (3, 6)}, {3: 1.0, 6: 1.0})
    mm = MalleableModel(model, tok)
    layer = 6
    ref = _reference_sims(model, tok, messages, layer, cv.directions[layer])
    searched = condition_similarities(mm, messages, cv, [layer], "user_text", batch_size=2)[:, 0]
    np.testing.assert_allclose(searched, ref, rtol=0, atol=1e-5)
    thr = _mid(searched)
    mm.steer(condition_vector=cv, condition_layer_ids=[layer], condition_vector_threshold=thr,
             condition_comparator_threshold_is="larger", condition_threshold_comparison_mode="user_text")
    seen = _runtime_sims(mm, tok, cv, layer, lambda: mm.respond_batch(messages, settings={"max_new_tokens": 1},
                                                                         batch_size=5))
    mm.reset_leash_to_default()
    for i, m in enumerate(messages):
        ids, s, e = _hand_span(tok, format_prompt(tok, m), m)
        sim, met, user = seen[tuple(ids)]
        assert user == ids[s:e]
        assert abs(sim - searched[i]) < 1e-5 and met == (searched[i] < thr)
