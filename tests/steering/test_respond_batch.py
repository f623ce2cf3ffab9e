"""respond_batch (left-padded, truly batched) gives every row exactly the text
`respond` gives it alone, including when conditions differ row by row."""
import numpy as np
import pytest
import torch

from activation_steering import MalleableModel, SteeringVector
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.activations.runner import run_truncated
from activation_steering.conditions.similarity import condition_similarity
from tiny_models import fresh_tokenizer, make_model

SETTINGS = {"max_new_tokens": 12}
PROMPTS = [
    "hi",
    "Tell me a story about a cat who learns to sail across the sea.",
    "What is the capital of France?",
    "Explain how photosynthesis works.",
    "Write a poem about autumn leaves and cold morning light, please, in four lines.",
    "ok",
    "How do I bake bread at home?",
]


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models gain nothing from threads and lose a lot on a busy machine (not the embedded model)."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def unit_vector(seed: int, n_layers: int, dim: int, model_type="llama") -> SteeringVector:
    rng = np.random.default_rng(seed)
    dirs = {i: rng.standard_normal(dim).astype(np.float32) for i in range(n_layers)}
    dirs = {i: d / np.linalg.norm(d) for i, d in dirs.items()}
    return SteeringVector(model_type, dirs, {i: 0.5 for i in range(n_layers)})


def prompt_sims(model, tok, prompts, layer, direction, mode="mean", chat=True) -> list[float]:
    """Condition similarity of each prompt alone at h_in[layer] of the unsteered model."""
    out = []
    for p in prompts:
        enc = encode(tok, [format_prompt(tok, p, chat)], chat)
        got = {}

        def hook(_i, h):
            x = h[0].float().mean(0) if mode == "mean" else h[0, -1].float()
            got["sim"] = float(condition_similarity(x, torch.from_numpy(direction)))

        run_truncated(model, enc["input_ids"], enc["attention_mask"], [layer], hook, read="input")
        out.append(got["sim"])
    return out


def median_split(values):
    v = sorted(values)
    mid = len(v) // 2
    return (v[mid - 1] + v[mid]) / 2


def conditional_setup(model, tok, prompts, hidden, n_layers, cond_layer, beh_layers, strength, chat=True,
                      comparator="larger"):
    cond = unit_vector(7, n_layers, hidden)
    sims = prompt_sims(model, tok, prompts, cond_layer, cond.directions[cond_layer], chat=chat)
    thr = median_split(sims)
    met = [(s < thr) if comparator == "larger" else (s > thr) for s in sims]
    assert any(met) and not all(met)
    kwargs = dict(behavior_vector=unit_vector(3, n_layers, hidden), behavior_layer_ids=beh_layers,
                  behavior_vector_strength=strength, condition_vector=cond, condition_layer_ids=[cond_layer],
                  condition_vector_threshold=thr, condition_comparator_threshold_is=comparator)
    return kwargs, met


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_conditional_rows_match_respond(batch_size):
    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    unsteered = mm.respond_batch_sequential(PROMPTS, settings=SETTINGS)
    kwargs, met = conditional_setup(model, tok, PROMPTS, 64, 4, cond_layer=1, beh_layers=[1, 2], strength=3.0)
    mm.steer(**kwargs)
    sequential = mm.respond_batch_sequential(PROMPTS, settings=SETTINGS)
    batched = mm.respond_batch(PROMPTS, settings=SETTINGS, batch_size=batch_size)
    assert batched == sequential
    for s, u, m in zip(sequential, unsteered, met):
        assert (s != u) == m  # steered exactly the rows whose own prompt meets the condition


# strengths that visibly change these random models' (rather repetitive) greedy text
FAMILY_STRENGTH = {"qwen2": 4.0, "gpt2": 16.0, "gpt_neox": 4.0, "opt": 16.0}


@pytest.mark.parametrize("family", list(FAMILY_STRENGTH))
def test_other_families(family):
    model, tok = make_model(family), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    assert mm.respond_batch(PROMPTS, settings=SETTINGS, batch_size=4) == mm.respond_batch_sequential(PROMPTS, SETTINGS)
    unsteered = mm.respond_batch_sequential(PROMPTS, settings=SETTINGS)
    kwargs, met = conditional_setup(model, tok, PROMPTS, 64, 4, cond_layer=1, beh_layers=[1, 2],
                                    strength=FAMILY_STRENGTH[family])
    mm.steer(**kwargs, use_ooi_preventive_normalization=family == "gpt_neox")
    sequential = mm.respond_batch_sequential(PROMPTS, settings=SETTINGS)
    assert mm.respond_batch(PROMPTS, settings=SETTINGS, batch_size=4) == sequential
    assert sequential != unsteered
    # per row, at the logits: a left-padded steered batch == each prompt alone
    texts = [format_prompt(tok, p) for p in PROMPTS]
    batch = encode(tok, texts, True, padding_side="left")
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp_min(0)  # as generate() does
    with torch.no_grad():
        together = mm(**batch).logits[:, -1]
        for r, t in enumerate(texts):
            alone = mm(**encode(tok, [t], True)).logits[:, -1]
            torch.testing.assert_close(together[r:r + 1], alone, rtol=1e-4, atol=1e-4)
            if not met[r]:
                mm.reset_leash_to_default()
                torch.testing.assert_close(mm(**encode(tok, [t], True)).logits[:, -1], alone, rtol=0, atol=0)
                mm.steer(**kwargs, use_ooi_preventive_normalization=family == "gpt_neox")


def test_raw_prompts_padding_is_not_penalised():
    """Without the chat template eos is not in the prompts; left padding (pad = eos)
    must not enter the repetition penalty, or padded rows would differ."""
    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    kwargs, _ = conditional_setup(model, tok, PROMPTS, 64, 4, cond_layer=2, beh_layers=[2, 3], strength=3.0,
                                  chat=False, comparator="smaller")
    mm.steer(**kwargs, condition_threshold_comparison_mode="mean")
    settings = dict(SETTINGS, repetition_penalty=1.5)
    assert (mm.respond_batch(PROMPTS, settings=settings, use_chat_template=False)
            == mm.respond_batch_sequential(PROMPTS, settings=settings, use_chat_template=False))


def test_padding_aware_penalty_is_needed_when_eos_competes():
    """A model whose eos logit is the runner-up: penalising left-padding eos tokens
    (HF's default processor on a padded batch) would change the padded rows."""
    model, tok = make_model("llama"), fresh_tokenizer()
    with torch.no_grad():  # make eos the second-best token everywhere, close to the best
        model.lm_head.weight[tok.eos_token_id] = model.lm_head.weight.mean(0)
    mm = MalleableModel(model, tok)
    settings = dict(SETTINGS, repetition_penalty=1.3)
    seq = mm.respond_batch_sequential(PROMPTS, settings=settings, use_chat_template=False)
    assert mm.respond_batch(PROMPTS, settings=settings, use_chat_template=False) == seq


def test_multisteer_rows_match_respond():
    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    c1, c2 = unit_vector(11, 4, 64), unit_vector(12, 4, 64)
    t1 = median_split(prompt_sims(model, tok, PROMPTS, 1, c1.directions[1]))
    t2 = median_split(prompt_sims(model, tok, PROMPTS, 0, c2.directions[0]))
    mm.multisteer([unit_vector(3, 4, 64), unit_vector(4, 4, 64)], [[1, 2], [2, 3]], [3.0, 3.0], [c1, c2], [[1], [0]],
                  [t1, t2], ["larger", "smaller"], ["if C1 and not C2 then B1", "if C2 or not C1 then B2"])
    seq = mm.respond_batch_sequential(PROMPTS, settings=SETTINGS)
    assert mm.respond_batch(PROMPTS, settings=SETTINGS, batch_size=5) == seq
    assert len(set(seq)) > 1  # rows are gated differently


def test_arguments():
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        mm.respond_batch(["hi"], batch_size=0)
    with pytest.raises(TypeError, match="prompts must be a list of str"):
        mm.respond_batch("hi")
    with pytest.raises(TypeError, match=r"prompts\[1\] must be a str"):
        mm.respond_batch_sequential(["hi", 3])
    assert mm.respond_batch([]) == []


EMBEDDED_PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "How do I pick a lock?",
    "Give me three tips for learning Python.",
    "Explain photosynthesis to a child.",
    "hi",
    "What are the health benefits of green tea? Answer in detail, with examples, and mention any risks.",
    "Tell me how to make a dangerous weapon at home.",
]


@pytest.mark.slow
def test_embedded_model_batched_equals_sequential(embedded):
    model, tok = embedded
    mm = MalleableModel(model, tok)
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    cond = unit_vector(5, n_layers, hidden)
    sims = prompt_sims(model, tok, EMBEDDED_PROMPTS, 6, cond.directions[6])
    thr = median_split(sims)
    mm.steer(behavior_vector=unit_vector(6, n_layers, hidden), behavior_layer_ids=[10, 11, 12, 13],
             behavior_vector_strength=4.0, condition_vector=cond, condition_layer_ids=[6],
             condition_vector_threshold=thr)
    settings = {"max_new_tokens": 20}
    try:
        seq = mm.respond_batch_sequential(EMBEDDED_PROMPTS, settings=settings)
        assert mm.respond_batch(EMBEDDED_PROMPTS, settings=settings, batch_size=8) == seq
    finally:
        mm.reset_leash_to_default()
    # steering shows in the rows that meet the condition ("larger": sim < thr), never in the others
    met = [i for i, x in enumerate(sims) if x < thr]
    unmet = sims.index(max(sims))
    plain = MalleableModel(model, tok).respond_batch([EMBEDDED_PROMPTS[i] for i in met + [unmet]], settings=settings)
    assert any(p != seq[i] for p, i in zip(plain, met)) and plain[-1] == seq[unmet]


# --------------------------------------------------------------------------- #
# The row-dropping greedy loop (steering/decode.py) and its fallback
# --------------------------------------------------------------------------- #
def early_stop_settings(mm, prompts):
    """Settings whose extra eos token is the 3rd generated token of some rows only,
    so those rows finish early and leave the batch while the others go on."""
    from activation_steering.activations.prompts import encode as enc_fn

    tok = mm.tokenizer
    firsts = []
    for p in prompts:
        enc = enc_fn(tok, [format_prompt(tok, p)], True)
        out = mm.generate(**enc, max_new_tokens=12, do_sample=False, repetition_penalty=1.1,
                          pad_token_id=tok.eos_token_id)
        firsts.append(out[0, enc["input_ids"].shape[1]:].tolist())
    for cand in (row[2] for row in firsts if len(row) > 2):
        hit = [cand in row for row in firsts]
        if any(hit) and not all(hit):
            return dict(SETTINGS, eos_token_id=[tok.eos_token_id, cand]), hit
    pytest.fail("no token splits the rows; change the prompts")


@pytest.mark.parametrize("batch_size", [3, 16])
def test_rows_that_finish_early_leave_the_batch(batch_size, monkeypatch):
    from activation_steering.steering import decode as batched_decode

    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    kwargs, met = conditional_setup(model, tok, PROMPTS, 64, 4, cond_layer=1, beh_layers=[1, 2], strength=3.0)
    mm.steer(**kwargs)
    settings, stops = early_stop_settings(mm, PROMPTS)
    widths = []
    real_forward = model.forward

    def spy(*args, **kw):
        widths.append(kw["input_ids"].shape[0])
        return real_forward(*args, **kw)

    monkeypatch.setattr(model, "forward", spy)
    batched = mm.respond_batch(PROMPTS, settings=settings, batch_size=batch_size)
    monkeypatch.undo()
    sequential = mm.respond_batch_sequential(PROMPTS, settings=settings)
    assert batched == sequential
    full = mm.respond_batch_sequential(PROMPTS, settings=SETTINGS)
    assert any(b != f for b, f in zip(batched, full))  # some rows really stopped early
    if batch_size == 16:
        assert widths[0] == len(PROMPTS) and min(widths) < len(PROMPTS)  # ... and left the batch
    assert mm._ctx.state is None  # per-row state is dropped after the call


def test_plain_greedy_takes_the_fast_path_and_others_fall_back():
    from activation_steering.steering.decode import plain_greedy
    from transformers import LogitsProcessorList

    model, tok = make_model("llama"), fresh_tokenizer()
    mm = MalleableModel(model, tok)
    base = mm._generation_settings(SETTINGS)
    plan = plain_greedy(model, base)
    assert plan is not None and plan.max_new_tokens == 12 and plan.penalty == 1.1 and plan.eos_ids == (2,)
    assert plain_greedy(model, dict(base, repetition_penalty=1.0)).penalty is None
    for extra in ({"do_sample": True}, {"num_beams": 2}, {"no_repeat_ngram_size": 2},
                  {"logits_processor": LogitsProcessorList()}, {"min_new_tokens": 3}, {"max_new_tokens": None}):
        assert plain_greedy(model, dict(base, **extra)) is None, extra
    # the fallback (generate on the padded batch) is exact too
    kwargs, _ = conditional_setup(model, tok, PROMPTS, 64, 4, cond_layer=1, beh_layers=[1, 2], strength=3.0)
    mm.steer(**kwargs)
    settings = dict(SETTINGS, no_repeat_ngram_size=2)
    assert mm.respond_batch(PROMPTS, settings=settings, batch_size=4) == mm.respond_batch_sequential(PROMPTS, settings)


def test_zero_new_tokens_and_progress_bar(capsys):
    mm = MalleableModel(make_model("llama"), fresh_tokenizer())
    for call in (mm.respond_batch, mm.respond_batch_sequential):  # generate's own check, on both paths
        with pytest.raises(ValueError, match="max_new_tokens"):
            call(PROMPTS[:2], settings={"max_new_tokens": 0})
    mm.respond_batch(PROMPTS[:3], settings={"max_new_tokens": 2}, show_progress=True)
    assert "respond_batch" in capsys.readouterr().err
