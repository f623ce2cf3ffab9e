"""The equivalence matrix: steering gives the same text however the prompt arrives.

Every position is a prompt position or a generated one (docs/semantics.md,
"Prompt positions and generated positions"). The one-pass reference is each
prompt generated ALONE through the default path (one prompt pass with an empty
cache, then one token per step). Every other generation path must give each
prompt exactly that text, or raise the documented clear error before generating:

paths   default, use_cache=False, prefill_chunk_size 1/3/8, a caller prefix cache,
        a static cache, prompt-lookup decoding, inputs_embeds, beams,
        num_return_sequences (the last two against the one-pass beam search)
modes   plain, plain with apply_behavior_on_first_call=False, conditional,
        conditional with apply_behavior_on_first_call=False, multisteer with a
        `not` rule, OOI

The paths run on a LEFT-PADDED batch of prompts of different lengths (except
prompt lookup, which transformers runs for one prompt at a time), through the
wrapped model's own `generate`. Conditions split the prompts (some rows steered,
some not). So that equality has teeth, every mode's reference is checked to
differ from the unsteered text and from the known-wrong outcomes (the behaviour
applied / not applied at prompt positions, the condition ignored).

Also: respond_batch (its row-dropping loop and its `generate` fallback) under
the same settings, MalleableModel.generate, a torch.compile'd forward, and
continuous batching (refused clearly while steered).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from activation_steering import MalleableModel, SteeringVector
from tiny_models import fresh_tokenizer, make_model

D, N_LAYERS, MAX_NEW = 64, 4, 8
PROMPTS = [
    "Tell me a story about a cat who learns to sail across the sea.",
    "hi",
    "What is the capital of France?",
    "Explain how photosynthesis works in plants and algae, please.",
    "Write a poem",
]
GEN = dict(max_new_tokens=MAX_NEW, do_sample=False, repetition_penalty=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models, one thread


def unit(seed: int) -> SteeringVector:
    rng = np.random.default_rng(seed)
    dirs = {}
    for i in range(N_LAYERS):
        x = rng.standard_normal(D).astype(np.float32)
        dirs[i] = (x / np.linalg.norm(x)).astype(np.float32)
    return SteeringVector(model_type="llama", directions=dirs, explained_variances={i: 0.5 for i in range(N_LAYERS)})


STRENGTH = 2.0


# --------------------------------------------------------------------------- #
# the fixture world: one tiny model, its prompts, the modes and their references
# --------------------------------------------------------------------------- #
class World:
    def __init__(self):
        self.model = make_model("llama")
        self.tok = fresh_tokenizer()
        self.mm = MalleableModel(self.model, self.tok)
        self.eos = self.tok.eos_token_id
        # raw prompts (no chat template): with the template every prompt ends in the same
        # tokens and this tiny random model then answers them all alike
        self.tok.padding_side = "left"
        self.singles = [self.tok([t], return_tensors="pt") for t in PROMPTS]
        self.batch = self.tok(PROMPTS, return_tensors="pt", padding=True)
        self.gen = dict(GEN, pad_token_id=self.eos)
        self.thresholds = {}
        self.modes = self._modes()

    # thresholds that split the prompts: the median of each prompt's condition similarity,
    # read from the one-pass prompt pass itself (the per-row condition bits after it)
    def _split(self, install, bit: int, larger: bool = True) -> float:
        """Bisect a threshold until some prompts meet condition `bit` and some do not
        ("larger": met iff sim < threshold, so a larger threshold meets more)."""
        lo, hi = -1.0, 1.0
        for _ in range(30):  # bisect the threshold until the prompts split
            mid = (lo + hi) / 2
            install(mid)
            bits = self.bits()
            n_met = sum(1 for b in bits if b & bit)
            if 0 < n_met < len(bits):
                return mid
            if (n_met == 0) == larger:
                lo = mid
            else:
                hi = mid
        raise AssertionError("no threshold splits the prompts")

    def bits(self) -> list[int]:
        out = []
        for enc in self.singles:
            with torch.no_grad():
                self.model(**enc)
            out.append(int(self.mm._ctx.state[0]))
        return out

    def _modes(self) -> dict:
        b, c1, c2, b2 = unit(3), unit(7), unit(11), unit(4)
        mm = self.mm

        def plain(first=True, ooi=False):
            return lambda: mm.steer(behavior_vector=b, behavior_layer_ids=[1, 2], behavior_vector_strength=STRENGTH,
                                    use_ooi_preventive_normalization=ooi, apply_behavior_on_first_call=first)

        def cond_install(thr, first=True):
            mm.steer(behavior_vector=b, behavior_layer_ids=[1, 2, 3], behavior_vector_strength=STRENGTH,
                     condition_vector=c1, condition_layer_ids=[2], condition_vector_threshold=thr,
                     apply_behavior_on_first_call=first)

        t_cond = self._split(cond_install, 1)

        def multi_install(t1, t2, first=True):
            mm.multisteer([b, b2], [[1, 2, 3], [0, 2]], [STRENGTH, STRENGTH], [c1, c2], [[2], [1]], [t1, t2],
                          ["larger", "smaller"], ["if C1 and not C2 then B1", "if not C1 then B2"],
                          apply_behavior_on_first_call=first)

        # C2 first (layer 1; with B2 at layer 0 on prompt positions since `not C2` holds there), then C1
        t2 = self._split(lambda t: multi_install(0.0, t), 2, larger=False)
        t1 = self._split(lambda t: multi_install(t, t2), 1)
        return {
            "plain": plain(True),
            "plain_first_off": plain(False),
            "cond": lambda: cond_install(t_cond, True),
            "cond_first_off": lambda: cond_install(t_cond, False),
            "multi_not": lambda: multi_install(t1, t2, True),
            "ooi": plain(True, ooi=True),
        }

    def install(self, mode: str) -> None:
        self.modes[mode]()


@pytest.fixture(scope="module")
def world():
    return World()


def trim(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def rows(out: torch.Tensor, width: int, eos: int) -> list[list[int]]:
    return [trim(r[width:].tolist(), eos) for r in out]


# --------------------------------------------------------------------------- #
# references: each prompt alone, default path
# --------------------------------------------------------------------------- #
REF_KINDS = {"greedy": {}, "beams": {"num_beams": 2}, "nrs": {"num_beams": 2, "num_return_sequences": 2}}


def reference(world: World, mode: str | None, kind: str = "greedy") -> list[list[list[int]]]:
    """Per prompt, the generated sequences (1, or num_return_sequences) of the one-pass path."""
    if mode is None:
        world.mm.reset_leash_to_default()
    else:
        world.install(mode)
    out = []
    for enc in world.singles:
        with torch.no_grad():
            got = world.model.generate(**enc, **world.gen, **REF_KINDS[kind])
        out.append(rows(got, enc["input_ids"].shape[1], world.eos))
    return out


@pytest.fixture(scope="module")
def refs(world):
    table = {}
    for kind in REF_KINDS:
        table[(None, kind)] = reference(world, None, kind)
        for mode in world.modes:
            table[(mode, kind)] = reference(world, mode, kind)
    world.mm.reset_leash_to_default()
    return table


# the known-wrong outcome of each mode: what a path that confuses prompt and generated
# positions (or ignores the condition) would produce instead
WRONG = {
    "plain": ["plain_first_off"],
    "plain_first_off": ["plain"],
    "cond": ["cond_first_off", "plain"],
    "cond_first_off": ["cond", "plain_first_off"],
    "multi_not": ["cond"],
    "ooi": ["plain"],
}


def test_references_have_teeth(world, refs):
    for kind in REF_KINDS:
        plain = refs[(None, kind)]
        for mode in world.modes:
            got = refs[(mode, kind)]
            assert got != plain, (mode, kind, "steering does not change the text")
            for wrong in WRONG[mode]:
                assert got != refs[(wrong, kind)], (mode, kind, f"indistinguishable from {wrong}")
        for mode in ("cond", "cond_first_off", "multi_not"):
            same = [g == p for g, p in zip(refs[(mode, kind)], plain)]
            assert any(same) and not all(same), (mode, kind, "the condition must split the prompts")


# --------------------------------------------------------------------------- #
# the matrix
# --------------------------------------------------------------------------- #
PATHS = ["default", "no_cache", "chunk1", "chunk3", "chunk8", "prefix_cache", "static", "prompt_lookup",
         "inputs_embeds", "beams", "nrs"]
MODES = ["plain", "plain_first_off", "cond", "cond_first_off", "multi_not", "ooi"]

FIRST_ON = {"plain", "cond", "multi_not", "ooi"}


def expected_error(path: str, mode: str) -> str | None:
    """The documented clear errors: where the one-pass result cannot be reproduced."""
    if path == "prefix_cache" and mode in FIRST_ON:
        # the cached prompt positions were computed without the behaviour that the
        # one-pass prompt pass adds there (apply_behavior_on_first_call=True)
        return r"apply_behavior_on_first_call.*cache|cache.*apply_behavior_on_first_call"
    if path in ("chunk1", "chunk3", "chunk8") and mode == "ooi":
        # OOI rescales a row when ANY of its prompt positions grows: needs the whole prompt in one pass
        return r"prefill_chunk_size"
    return None


def run_path(world: World, path: str) -> tuple[list[list[list[int]]], str]:
    """Run `path` on the batch; per prompt the generated sequences, and the reference kind."""
    model, batch, gen = world.model, world.batch, world.gen
    width = batch["input_ids"].shape[1]
    n_out = 1
    kind = "greedy"
    with torch.no_grad():
        if path == "default":
            out = model.generate(**batch, **gen)
        elif path == "no_cache":
            out = model.generate(**batch, **gen, use_cache=False)
        elif path.startswith("chunk"):
            out = model.generate(**batch, **gen, prefill_chunk_size=int(path[5:]))
        elif path == "prefix_cache":
            cache = prefix_cache(world, 6)
            out = model.generate(**batch, **gen, cache=cache)
        elif path == "static":
            out = model.generate(**batch, **gen, cache_implementation="static")
        elif path == "prompt_lookup":  # transformers runs assisted decoding one prompt at a time
            got = []
            for enc in world.singles:
                o = model.generate(**enc, **gen, prompt_lookup_num_tokens=3)
                got.append(rows(o, enc["input_ids"].shape[1], world.eos))
            return got, kind
        elif path == "inputs_embeds":
            emb = model.get_input_embeddings()(batch["input_ids"])
            out = model.generate(inputs_embeds=emb, attention_mask=batch["attention_mask"], **gen)
            width = 0  # only the new tokens come back
        elif path == "beams":
            out, kind = model.generate(**batch, **gen, num_beams=2), "beams"
        elif path == "nrs":
            out, kind, n_out = model.generate(**batch, **gen, num_beams=2, num_return_sequences=2), "nrs", 2
        else:
            raise AssertionError(path)
    flat = rows(out, width, world.eos)
    return [flat[i * n_out:(i + 1) * n_out] for i in range(len(PROMPTS))], kind


def prefix_cache(world: World, k: int) -> DynamicCache:
    """The unsteered model's cache of the batch's first k positions (a shared system-prompt prefix)."""
    ids, mask = world.batch["input_ids"][:, :k], world.batch["attention_mask"][:, :k]
    cache = DynamicCache(config=world.model.config)
    plan = world.mm.steering_plan
    hooks = world.mm._handles
    assert plan is not None and hooks
    # computed by the plain model: steering hooks detached for the prefix, as a caller's cache would be
    for h in hooks:
        h.remove()
    try:
        with torch.no_grad():
            world.model(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True,
                        position_ids=(mask.cumsum(-1) - 1).clamp_min(0))
    finally:
        world.mm._install(plan)
    return cache


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", PATHS)
def test_matrix(world, refs, path, mode):
    world.install(mode)
    err = expected_error(path, mode)
    if err is not None:
        with pytest.raises(ValueError, match=err):
            run_path(world, path)
        return
    got, kind = run_path(world, path)
    assert got == refs[(mode, kind)], (path, mode)
    assert got != refs[(None, kind)]
    for wrong in WRONG[mode]:
        assert got != refs[(wrong, kind)], (path, mode, wrong)


def test_old_cache_keyword_is_read_too(world):
    """`past_key_values=` (the older name of `cache=`) is recognised as a caller's cache."""
    world.install("plain")
    with pytest.raises(ValueError, match="apply_behavior_on_first_call"):
        world.model.generate(**world.batch, **world.gen, past_key_values=prefix_cache(world, 6))


def test_unsteered_paths_agree(world, refs):
    """The premise: without steering every path already gives the one-pass text."""
    world.mm.reset_leash_to_default()
    for path in PATHS:
        got, kind = run_path(world, path) if path != "prefix_cache" else (None, None)
        if got is not None:
            assert got == refs[(None, kind)], path


# --------------------------------------------------------------------------- #
# the same through MalleableModel.generate, respond_batch, torch.compile
# --------------------------------------------------------------------------- #
def test_malleable_generate_is_the_wrapped_generate(world, refs):
    world.install("cond")
    with torch.no_grad():
        out = world.mm.generate(**world.batch, **world.gen, prefill_chunk_size=3)
    width = world.batch["input_ids"].shape[1]
    assert [[r] for r in rows(out, width, world.eos)] == refs[("cond", "greedy")]


RB_SETTINGS = [
    {},
    {"use_cache": False},
    {"prefill_chunk_size": 3},
    {"cache_implementation": "static"},
    {"num_beams": 2},
    {"num_beams": 2, "num_return_sequences": 2, "repetition_penalty": 1.0},
    {"num_beams": 2, "num_return_sequences": 2},
    {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
    {"min_new_tokens": 4, "eos_token_id": [2, 5]},
    {"max_length": 60},
    {"min_length": 14},
    {"stop_strings": ["e"]},
]


@pytest.mark.parametrize("settings", RB_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "greedy")
@pytest.mark.parametrize("mode", ["plain", "cond_first_off", "multi_not", "ooi"])
def test_respond_batch_equals_sequential(world, settings, mode):
    world.install(mode)
    settings = dict(settings, max_new_tokens=settings.get("max_new_tokens", MAX_NEW))
    if "max_length" in settings:
        settings.pop("max_new_tokens")
    if mode == "ooi" and "prefill_chunk_size" in settings:
        with pytest.raises(ValueError, match="prefill_chunk_size"):
            world.mm.respond_batch(PROMPTS, settings=settings, batch_size=3)
        with pytest.raises(ValueError, match="prefill_chunk_size"):
            world.mm.respond_batch_sequential(PROMPTS, settings=settings)
        return
    seq = world.mm.respond_batch_sequential(PROMPTS, settings=settings)
    assert world.mm.respond_batch(PROMPTS, settings=settings, batch_size=3) == seq
    assert world.mm.respond_batch(PROMPTS, settings=settings, batch_size=16) == seq
    if set(settings) <= {"max_new_tokens", "use_cache", "prefill_chunk_size", "cache_implementation"}:
        # these settings change how the prompt arrives, never the text
        assert seq == world.mm.respond_batch_sequential(PROMPTS, settings={"max_new_tokens": MAX_NEW})


def test_respond_batch_fallback_runs_generate(world, monkeypatch):
    """The beam settings take the `generate` fallback (the row-dropping loop is greedy only)."""
    world.install("cond")
    calls = []
    real = world.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs.get("input_ids").shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(world.model, "generate", spy)
    settings = {"num_beams": 2, "num_return_sequences": 2, "max_new_tokens": MAX_NEW}
    got = world.mm.respond_batch(PROMPTS, settings=settings, batch_size=16)
    monkeypatch.undo()
    assert calls and max(calls) > 1  # really batched through generate
    assert got == world.mm.respond_batch_sequential(PROMPTS, settings=settings)


def test_sampling_rows_draw_from_respond_distribution(world):
    """With sampling, respond_batch draws each row from the distribution respond uses: with
    top_k=1 that distribution is a point mass, so batched and sequential agree exactly."""
    world.install("cond")
    settings = {"do_sample": True, "top_k": 1, "max_new_tokens": MAX_NEW, "num_beams": 1}
    torch.manual_seed(0)
    seq = world.mm.respond_batch_sequential(PROMPTS, settings=settings)
    torch.manual_seed(1)
    assert world.mm.respond_batch(PROMPTS, settings=settings, batch_size=4) == seq


@pytest.mark.parametrize("mode", ["cond", "multi_not"])
def test_compiled_forward(world, refs, mode):
    world.install(mode)
    model = world.model
    torch._dynamo.reset()
    compiled = torch.compile(model.forward, backend="eager")
    model.forward = compiled
    try:
        for path in ("default", "no_cache", "chunk3"):
            got, kind = run_path(world, path)
            assert got == refs[(mode, kind)], path
    finally:
        del model.forward
        torch._dynamo.reset()


def test_continuous_batching_is_refused_clearly(world):
    world.install("cond")
    ids = [world.singles[0]["input_ids"][0].tolist()]
    with pytest.raises(NotImplementedError, match="continuous batching"):
        world.model.generate_batch(inputs=ids, generation_config=None)
    with pytest.raises(NotImplementedError, match="continuous batching"):
        world.model.generate(input_ids=world.singles[0]["input_ids"], cache_implementation="paged", max_new_tokens=2)


# --------------------------------------------------------------------------- #
# prompts that cannot generate, plain forwards, threads
# --------------------------------------------------------------------------- #
def test_empty_and_too_long_prompts_fail_first(world):
    world.install("cond")
    with pytest.raises(ValueError, match="empty"):
        world.mm.respond("", use_chat_template=False)
    with pytest.raises(ValueError, match="empty"):
        world.mm.respond_batch(["hi", ""], use_chat_template=False)
    long = "word " * 700
    with pytest.raises(ValueError, match="max_position_embeddings"):
        world.mm.respond(long)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        world.mm.respond_batch(["hi", long])
    assert world.mm._ctx.state is None


def test_plain_forward_is_one_whole_prompt(world):
    """Outside generate (training, evaluation, use_cache=False), each call is one whole prompt."""
    world.install("cond")
    enc = world.singles[0]
    with torch.no_grad():
        a = world.model(**enc, use_cache=False).logits
        b = world.model(**enc, use_cache=False).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_two_threads_are_serialised(world, refs):
    """One model used from two threads at once: generations are serialised, each gets its own text."""
    import threading

    world.install("cond")
    results = {}

    def worker(i):
        results[i] = world.mm.respond_batch_sequential([PROMPTS[i]], settings={"max_new_tokens": MAX_NEW})[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(PROMPTS))] * 1
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = world.mm.respond_batch_sequential(PROMPTS, settings={"max_new_tokens": MAX_NEW})
    assert [results[i] for i in range(len(PROMPTS))] == alone


def test_forward_from_a_second_thread_during_generation_is_refused(world):
    """A plain forward of the same steered model from another thread, while one thread
    generates, would mix its rows into the generation's state: it raises instead."""
    import threading

    from transformers import LogitsProcessor, LogitsProcessorList

    world.install("cond")
    inside, release = threading.Event(), threading.Event()

    class Pause(LogitsProcessor):
        def __call__(self, input_ids, scores):
            inside.set()
            release.wait(60)
            return scores

    done = {}

    def generate():
        with torch.no_grad():
            done["out"] = world.model.generate(**world.singles[0], **world.gen,
                                               logits_processor=LogitsProcessorList([Pause()]))

    t = threading.Thread(target=generate)
    t.start()
    try:
        assert inside.wait(60)
        with pytest.raises(RuntimeError, match="another thread"), torch.no_grad():
            world.model(**world.singles[1])
    finally:
        release.set()
        t.join()
    width = world.singles[0]["input_ids"].shape[1]
    assert [rows(done["out"], width, world.eos)] == [reference(world, "cond")[0]]
