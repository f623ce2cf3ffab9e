"""Steering and extraction on every tiny architecture of tiny_models.ARCHITECTURES.

Each model is a 2-layer (Zamba2: 4), hidden-32 random-weight model built in
process from the installed transformers' config classes: decoder-only attention
models (Llama, Qwen2, GPT-2, GPT-NeoX, OPT, Gemma2, Gemma3 text, Phi3, Falcon,
Bloom), other stack names (MPT and DBRX: transformer.blocks), mixtures of
experts (Mixtral, Qwen2-MoE, OLMoE, DBRX), state-space models without attention
(Mamba, Mamba2, FalconMamba: backbone.layers, caches without a sequence length),
hybrids whose list mixes block classes (Jamba, Zamba2) and a multimodal wrapper
whose vision tower has its own list of the same length (Gemma3ForConditionalGeneration).

Per architecture:
  - discovery: the text decoder's own list, the base model the LM head calls;
  - steering: ActAdd changes the logits; a condition decided on the real
    similarity (just met / just not met) gives exactly the unconditional steered
    logits / the unsteered logits; `respond` equals `generate` with plain hooks
    that add the same vector; reset restores bit-exact logits;
  - extraction: pooled activations of SteeringVector.train equal a plain
    one-string-at-a-time `output_hidden_states` reference, and train returns a
    unit direction per layer.
"""
import numpy as np
import pytest
import torch
from tiny_models import ARCHITECTURES, make_arch_model, make_tokenizer

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.activations.layers import find_decoder_stack, text_layer_count
from activation_steering.activations.pooled import capture_pooled
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.activations.tokens import pooling_spans, tokenize
from activation_steering.conditions.similarity import condition_similarity
from activation_steering.config import GlobalConfig

GlobalConfig.set_verbose(False, "SteeringVector")
GlobalConfig.set_verbose(False, "SteeringDataset")

LAYERS = {"model.layers": ("llama", "qwen2", "gemma2", "gemma3_text", "phi3", "mixtral", "qwen2_moe", "olmoe", "jamba",
                           "zamba2"),
          "transformer.h": ("gpt2", "falcon", "bloom"), "gpt_neox.layers": ("gpt_neox",),
          "model.decoder.layers": ("opt",), "transformer.blocks": ("mpt", "dbrx"),
          "backbone.layers": ("mamba", "mamba2", "falcon_mamba"),
          "model.language_model.layers": ("gemma3", "paligemma")}
EXPECTED_PATH = {arch: path for path, archs in LAYERS.items() for arch in archs}
# the module each LM head calls with input_ids / attention_mask / cache
EXPECTED_BASE = {arch: path.rsplit(".", 1)[0] for arch, path in EXPECTED_PATH.items()}
EXPECTED_BASE["gemma3"] = EXPECTED_BASE["paligemma"] = "model"  # the multimodal model, not its text model
                                                                # (which only gets inputs_embeds and 4-D masks)
# transformers 5.24's PaliGemma gives a row other values in a padded batch than alone,
# even a row without padding (its own forward, see the test below), so only
# batch_size=1 can equal a one-string-at-a-time reference there (extraction, respond_batch).
BATCH_DEPENDENT = {"paligemma"}
PROMPT = "How do I bake bread?"
MAX_NEW = 6
# use_cache=True: the default of every model here but MPT, whose config says use_cache=False
# (as MosaicML's checkpoints do); see test_conditional_generation_without_a_cache.
SETTINGS = {"max_new_tokens": MAX_NEW, "use_cache": True}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models, one thread


@pytest.fixture(scope="module")
def models():
    return {}


def get(models, arch):
    if arch not in models:
        models[arch] = make_arch_model(arch)
    return models[arch]


def unit_vector(arch, n_layers, dim, seed=0) -> SteeringVector:
    rng = np.random.default_rng(seed)
    dirs = {}
    for i in range(n_layers):
        x = rng.standard_normal(dim)
        dirs[i] = (x / np.linalg.norm(x)).astype(np.float32)
    return SteeringVector(model_type=arch, directions=dirs, explained_variances={i: 0.5 for i in range(n_layers)})


def prompt_inputs(tok, model):
    enc = encode(tok, [format_prompt(tok, PROMPT, True)], True)
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def layer_inputs(model, layers, enc) -> dict[int, torch.Tensor]:
    """The hidden state entering each decoder layer on a plain forward (no steering)."""
    seen = {}

    def keep(i):
        def fn(_m, args, kwargs):
            seen.setdefault(i, (args[0] if args else kwargs["hidden_states"]).detach())
        return fn

    handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model(**enc)
    finally:
        for h in handles:
            h.remove()
    return seen


def logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits


def oracle_generate(model, tok, layers, adds: dict[int, torch.Tensor]) -> str:
    """`generate` (respond's settings) with plain pre-hooks adding adds[i] at layer i on every pass."""
    def hook(i):
        def fn(_m, args, kwargs):
            if args:
                return (args[0] + adds[i].to(args[0].dtype), *args[1:]), kwargs
            h = kwargs["hidden_states"]
            return args, {**kwargs, "hidden_states": h + adds[i].to(h.dtype)}
        return fn

    enc = prompt_inputs(tok, model)
    handles = [layers[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in adds]
    try:
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW, repetition_penalty=1.1,
                                 pad_token_id=tok.eos_token_id, use_cache=True)
    finally:
        for h in handles:
            h.remove()
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_decoder_stack_found(models, arch):
    model = get(models, arch)
    stack = find_decoder_stack(model)
    names = {id(m): n for n, m in model.named_modules()}
    assert names[id(stack.layers)] == EXPECTED_PATH[arch]
    assert names[id(stack.base)] == EXPECTED_BASE[arch]
    assert len(stack.layers) == text_layer_count(model)
    if arch in ("gemma3", "paligemma"):  # a vision tower's list of the same length / longer is not picked
        vision = [m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and "vision" in n]
        assert len(vision) == 1 and len(vision[0]) == {"gemma3": 2, "paligemma": 3}[arch]
    if arch in ("jamba", "zamba2"):  # hybrids: one list, two block classes
        assert len({type(b) for b in stack.layers}) == 2
    # the base model runs on token ids alone and returns the final hidden states
    enc = make_tokenizer()(["hello world"], return_tensors="pt")
    with torch.no_grad():
        out = stack.base(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
    assert out.last_hidden_state.shape[:2] == enc.input_ids.shape


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_steering(models, arch):
    model = get(models, arch)
    tok = make_tokenizer()
    layers = find_decoder_stack(model).layers
    n, dim = len(layers), model.get_input_embeddings().weight.shape[1]
    mm = MalleableModel(model, tok)
    enc = prompt_inputs(mm.tokenizer, model)
    seen = layer_inputs(model, layers, enc)
    last = n - 1
    # strength: a few times the residual norm entering the steered layer, so the text moves
    strength = 3.0 * float(seen[last][0].norm(dim=-1).mean())
    beh = unit_vector(arch, n, dim, seed=1)
    cond = unit_vector(arch, n, dim, seed=2)
    add = {last: torch.from_numpy(beh.directions[last] * np.float32(strength))}
    sim = float(condition_similarity(seen[0][0].float().mean(0), torch.from_numpy(cond.directions[0])))

    plain = logits(model, enc)
    plain_text = mm.respond(PROMPT, settings=SETTINGS)
    oracle_text = oracle_generate(model, tok, layers, add)  # before any steering is installed
    try:
        mm.steer(behavior_vector=beh, behavior_layer_ids=[last], behavior_vector_strength=strength)
        steered = logits(model, enc)
        assert not torch.allclose(steered, plain, atol=1e-3)                       # ActAdd changes the output
        steered_text = mm.respond(PROMPT, settings=SETTINGS)
        assert steered_text == oracle_text                                           # = plain hooks, every step
        assert steered_text != plain_text

        common = dict(behavior_vector=beh, behavior_layer_ids=[last], behavior_vector_strength=strength,
                      condition_vector=cond, condition_layer_ids=[0], condition_comparator_threshold_is="larger")
        mm.steer(condition_vector_threshold=sim + 0.02, **common)                   # "larger": met iff sim < t
        assert torch.equal(logits(model, enc), steered)
        assert mm.respond(PROMPT, settings=SETTINGS) == steered_text
        if arch not in BATCH_DEPENDENT:  # prompts of other lengths: left padding, each row its own condition
            prompts = [PROMPT, "Tell me a story about a cat who learns to sail.", "Hi"]
            batched = mm.respond_batch(prompts, settings=SETTINGS)
            assert batched == mm.respond_batch_sequential(prompts, settings=SETTINGS)
        mm.steer(condition_vector_threshold=sim - 0.02, **common)                   # not met: nothing added
        assert torch.equal(logits(model, enc), plain)
        assert mm.respond(PROMPT, settings=SETTINGS) == plain_text
    finally:
        mm.reset_leash_to_default()
    assert torch.equal(logits(model, enc), plain)                                    # reset: bit-exact
    assert not any(layer._forward_pre_hooks for layer in layers)


def test_conditional_generation_without_a_cache(models):
    model = get(models, "mpt")
    assert model.generation_config.use_cache is False or model.config.use_cache is False
    tok = make_tokenizer()
    layers = find_decoder_stack(model).layers
    mm = MalleableModel(model, tok)
    enc = prompt_inputs(mm.tokenizer, model)
    seen = layer_inputs(model, layers, enc)
    beh, cond = unit_vector("mpt", 2, 32, seed=1), unit_vector("mpt", 2, 32, seed=2)
    sim = float(condition_similarity(seen[0][0].float().mean(0), torch.from_numpy(cond.directions[0])))
    settings = {"max_new_tokens": MAX_NEW}
    plain_text = mm.respond(PROMPT, settings=settings)
    strength = 3.0 * float(seen[1][0].norm(dim=-1).mean())
    mm.steer(behavior_vector=beh, behavior_layer_ids=[1], behavior_vector_strength=strength,
             condition_vector=cond, condition_layer_ids=[0], condition_vector_threshold=sim - 0.02)
    try:
        # MPT generates without a KV cache: every step recomputes prompt + generated text, and the
        # condition must still be the one decided on the prompt's positions (not met: nothing added)
        assert mm.respond(PROMPT, settings=settings) == plain_text
    finally:
        mm.reset_leash_to_default()


EXAMPLES = [("I love cats.", "I hate cats and dogs."), ("The sea is calm.", "Rough sea!"),
            ("Explain photosynthesis, please.", "No.")]
SUFFIXES = [("Sure, here is", "Sorry"), (" yes", " absolutely not")]


# transformers' Mamba family leaves the embeddings out of output_hidden_states:
# (h_out[0], ..., h_out[L-2], h_out[L-1], final norm) - still L+1 entries, shifted
# by one against every other model. Our x(s, i) is h_out[i] (the final-norm output
# for the last layer) on every model, so the reference reads those entries there.
HIDDEN_STATES_WITHOUT_EMBEDDINGS = {"mamba", "mamba2", "falcon_mamba"}


def reference_index(arch: str, layer: int, n_layers: int) -> int:
    """Where h_out[layer] sits in `arch`'s output_hidden_states (final norm for the last layer)."""
    if arch in HIDDEN_STATES_WITHOUT_EMBEDDINGS and layer < n_layers - 1:
        return layer
    return layer + 1


def naive_pooled(model, tokenizer, texts, arch, layer_ids, mode) -> np.ndarray:
    """[L, N, D]: h_out[i] of each string alone read from output_hidden_states, pooled."""
    n_layers = len(find_decoder_stack(model).layers)
    out = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        n = enc.input_ids.shape[1]
        a = 0 if mode == "all" else max(0, n - mode)
        out.append([hs[reference_index(arch, i, n_layers)][0, a:n].double().mean(0).numpy() for i in layer_ids])
    return np.asarray(out).transpose(1, 0, 2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_hidden_states_layout(models, arch):
    """The reference's reading of output_hidden_states, checked against hooks on the layers."""
    model = get(models, arch)
    stack = find_decoder_stack(model)
    outs = {}
    def keep(i):
        return lambda _m, _a, o: outs.__setitem__(i, o if torch.is_tensor(o) else o[0])

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(stack.layers)]
    enc = make_tokenizer()(["I love cats and dogs."], return_tensors="pt", add_special_tokens=False)
    try:
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    n = len(stack.layers)
    assert len(hs) == n + 1
    for i in range(n - 1):
        assert torch.equal(hs[reference_index(arch, i, n)], outs[i]), i
    with torch.no_grad():
        final = stack.base(**enc).last_hidden_state
    assert torch.equal(hs[reference_index(arch, n - 1, n)], final)


def test_paligemma_forward_depends_on_the_batch(models):
    model = get(models, "paligemma")
    tok = make_tokenizer()
    a = tok("I love cats and dogs", return_tensors="pt", add_special_tokens=False).input_ids
    b = tok("Hi", return_tensors="pt", add_special_tokens=False).input_ids
    ids = torch.zeros(2, a.shape[1], dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[0], mask[0] = a[0], 1
    ids[1, :b.shape[1]], mask[1, :b.shape[1]] = b[0], 1
    with torch.no_grad():
        alone = model(input_ids=a).logits[0]
        batched = model(input_ids=ids, attention_mask=mask).logits[0]
    assert (alone - batched).abs().max() > 1e-3  # row 0 has no padding at all


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_extraction(models, arch):
    model = get(models, arch)
    tok = make_tokenizer()
    n = len(find_decoder_stack(model).layers)
    ds = SteeringDataset(tok, EXAMPLES, suffixes=SUFFIXES)
    texts = [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]
    layer_ids = list(range(n))  # includes the last layer: hidden_states[L] is the final-norm output
    assert len(model(**tok(texts[:1], return_tensors="pt", add_special_tokens=False),
                     output_hidden_states=True).hidden_states) == n + 1
    for mode in ("all", 2):
        ref = naive_pooled(model, tok, texts, arch, layer_ids, mode)
        t = tokenize(tok, texts, False)
        start, end, _ = pooling_spans(t, mode)
        batch_size = 1 if arch in BATCH_DEPENDENT else 4
        got = capture_pooled(model, t, start, end, layer_ids, batch_size=batch_size, progress=False)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max())), mode
    vec = SteeringVector.train(model, tok, ds, accumulate_last_x_tokens="all", batch_size=4)
    assert sorted(vec.directions) == layer_ids
    for d in vec.directions.values():
        assert np.isfinite(d).all() and abs(float(np.linalg.norm(d)) - 1.0) < 1e-4


# --------------------------------------------------------------------------- #
# The rule itself, on models built to test it
# --------------------------------------------------------------------------- #
class _Config:
    def __init__(self, n):
        self.num_hidden_layers = n


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.sub = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])  # a per-layer sub-list

    def forward(self, x):
        return x + self.proj(x)


class _Trunk(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.tok = torch.nn.Embedding(10, 4)
        self.stages = torch.nn.ModuleList([_Block() for _ in range(n)])
        self.unused = torch.nn.ModuleList([_Block() for _ in range(n)])  # same length, never run

    def forward(self, input_ids):
        x = self.tok(input_ids)
        for stage in self.stages:
            x = stage(x)
        return x


class _Tower(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block() for _ in range(n)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class _Custom(torch.nn.Module):
    """A decoder nobody listed: blocks under an unusual name, a second list of the same
    length its forward never runs, and a side tower of the same length away from the embeddings."""

    def __init__(self, n=2):
        super().__init__()
        self.config = _Config(n)
        self.tower = _Tower(n)
        self.trunk = _Trunk(n)

    def get_input_embeddings(self):
        return self.trunk.tok

    def forward(self, input_ids):
        return self.trunk(input_ids)


def test_rule_on_an_unlisted_layout():
    model = _Custom()
    stack = find_decoder_stack(model)
    assert stack.layers is model.trunk.stages  # not `unused` (never run), not the tower, not a block's sub-list
    assert stack.base is model.trunk and stack.text_model is model.trunk
    assert stack.path == "trunk.stages"


def test_rule_when_forward_hands_the_loop_to_a_helper():
    class Trunk(_Trunk):
        def forward(self, input_ids):
            return self._run(self.tok(input_ids))

        def _run(self, x):
            for stage in self.stages:
                x = stage(x)
            return x

    model = _Custom()
    model.trunk = Trunk(2)
    assert find_decoder_stack(model).layers is model.trunk.stages


def test_no_stack_of_the_configured_size_is_a_clear_error():
    model = _Custom()
    model.config.num_hidden_layers = 5  # e.g. layers pruned without updating the config
    with pytest.raises(ValueError, match=r"_Custom.*5 decoder blocks.*num_hidden_layers.*trunk\.stages \(2\)"):
        find_decoder_stack(model)


def test_encoder_decoder_is_ambiguous_not_guessed():
    import transformers as tf

    t5 = tf.T5ForConditionalGeneration(tf.T5Config(d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8,
                                                   vocab_size=50))
    with pytest.raises(ValueError, match=r"T5ForConditionalGeneration.*encoder\.block.*decoder\.block"):
        find_decoder_stack(t5)
