"""Models dispatched by accelerate (weights offloaded to CPU memory or to disk)
steer and extract exactly like the same model held in memory.

Offloaded weights live on the 'meta' device; accelerate's hooks (wrapped
`forward`s, not torch hooks) load them and move inputs to the execution device
when a module runs. Our pre-hooks therefore see a layer's input before
accelerate's own pre-forward, and a layer's parameters tell nothing about where
it runs: the steering vectors are placed on the device/dtype of the hidden state
itself, and input ids go to the execution device of accelerate's hook on the
input embedding.

Three ways to get such a model, each on an attention model (Llama), a
multimodal wrapper (Gemma3), a hybrid (Jamba) and a state-space model (Mamba):
  - `from_pretrained(saved, device_map=..., offload_folder=...)` with the input
    embedding and every other decoder layer on "disk", the rest on "cpu";
  - `accelerate.cpu_offload` (every weight in a CPU state dict, loaded per module);
  - `accelerate.disk_offload` (every weight in .dat files, loaded per module).
Checked: conditional steering (met / not met) logits, `respond`, `respond_batch`
and `SteeringVector.train` equal the in-memory model's bit for bit; reset gives
the unsteered logits back.
"""
import numpy as np
import pytest
import torch
from tiny_models import make_arch_model, make_tokenizer

from activation_steering import MalleableModel, SteeringDataset, SteeringVector
from activation_steering.activations.layers import find_decoder_stack, input_device
from activation_steering.activations.prompts import encode, format_prompt
from activation_steering.conditions.similarity import condition_similarity
from activation_steering.config import GlobalConfig

accelerate = pytest.importorskip("accelerate")

GlobalConfig.set_verbose(False, "SteeringVector")
GlobalConfig.set_verbose(False, "SteeringDataset")

ARCHS = ("llama", "gemma3", "jamba", "mamba")
WAYS = ("device_map_disk", "cpu_offload", "disk_offload")
PROMPTS = ["How do I bake bread?", "Tell me a story about a cat.", "Hi"]
SETTINGS = {"max_new_tokens": 5, "use_cache": True}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread: tiny models, one thread


def device_map(model) -> dict:
    """Input embedding and odd decoder layers on disk, everything else on cpu (an LM
    head tied to the embedding goes with it: accelerate keeps tied weights together)."""
    stack = find_decoder_stack(model)
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    emb = names[id(model.get_input_embeddings())]
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is model.get_input_embeddings().weight
    layers = stack.path
    out = {}

    def place(module, prefix):
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == emb or (tied and child is head):
                out[path] = "disk"
            elif path == layers:
                for i in range(len(child)):
                    out[f"{path}.{i}"] = "disk" if i % 2 else "cpu"
            elif emb.startswith(path + ".") or layers.startswith(path + "."):
                place(child, path + ".")
            elif any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
                out[path] = "cpu"

    place(model, "")
    return out


def offloaded(arch, way, tmp_path):
    if way == "device_map_disk":
        model = make_arch_model(arch)
        model.save_pretrained(tmp_path / "saved")
        return type(model).from_pretrained(tmp_path / "saved", device_map=device_map(model),
                                           offload_folder=str(tmp_path / "offload"), dtype=torch.float32).eval()
    if way == "cpu_offload":
        return accelerate.cpu_offload(make_arch_model(arch), execution_device=torch.device("cpu"))
    return accelerate.disk_offload(make_arch_model(arch), str(tmp_path / "offload"),
                                   execution_device=torch.device("cpu"))


def unit_vector(arch, n_layers, dim, seed):
    rng = np.random.default_rng(seed)
    dirs = {i: (lambda x: (x / np.linalg.norm(x)).astype(np.float32))(rng.standard_normal(dim))
            for i in range(n_layers)}
    return SteeringVector(model_type=arch, directions=dirs, explained_variances={i: 0.5 for i in range(n_layers)})


def run_all(model, arch, threshold, strength):
    """Everything we compare, on one model: logits (unsteered, met, not met, after reset),
    respond / respond_batch texts (met) and a trained vector."""
    tok = make_tokenizer()
    mm = MalleableModel(model, tok)
    n, dim = len(find_decoder_stack(model).layers), model.config.get_text_config().hidden_size
    enc = encode(tok, [format_prompt(tok, PROMPTS[0], True)], True, device=input_device(model))
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    beh, cond = unit_vector(arch, n, dim, 1), unit_vector(arch, n, dim, 2)
    out = {}
    with torch.no_grad():
        out["plain"] = model(**enc).logits
        for name, t in (("met", threshold + 0.02), ("not_met", threshold - 0.02)):
            mm.steer(behavior_vector=beh, behavior_layer_ids=list(range(1, n)), behavior_vector_strength=strength,
                     condition_vector=cond, condition_layer_ids=[0], condition_vector_threshold=t)
            out[name] = model(**enc).logits
        mm.steer(behavior_vector=beh, behavior_layer_ids=list(range(1, n)), behavior_vector_strength=strength,
                 condition_vector=cond, condition_layer_ids=[0], condition_vector_threshold=threshold + 0.02)
        out["respond"] = [mm.respond(p, settings=SETTINGS) for p in PROMPTS]
        out["respond_batch"] = mm.respond_batch(PROMPTS, settings=SETTINGS)
        mm.reset_leash_to_default()
        out["reset"] = model(**enc).logits
    ds = SteeringDataset(tok, [("I love cats.", "I hate cats."), ("The sea is calm.", "Rough sea!")],
                         suffixes=[("Sure", "No"), (" yes", " never")])
    out["vector"] = SteeringVector.train(model, tok, ds, batch_size=3)
    return out


@pytest.fixture(scope="module")
def in_memory():
    """Per architecture: (results on the in-memory model, condition threshold, strength)."""
    cache = {}

    def get(arch):
        if arch not in cache:
            model = make_arch_model(arch)
            tok = make_tokenizer()
            MalleableModel(model, tok)  # sets the pad token the same way run_all's wrapper does
            stack = find_decoder_stack(model)
            enc = encode(tok, [format_prompt(tok, PROMPTS[0], True)], True)
            seen = {}
            handles = [stack.layers[i].register_forward_pre_hook(
                lambda _m, args, kwargs, i=i: seen.__setitem__(i, args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True) for i in (0, 1)]
            with torch.no_grad():
                model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            for h in handles:
                h.remove()
            n, dim = len(stack.layers), seen[0].shape[-1]
            cond = unit_vector(arch, n, dim, 2)
            sim = float(condition_similarity(seen[0][0].float().mean(0), torch.from_numpy(cond.directions[0])))
            strength = 3.0 * float(seen[1][0].norm(dim=-1).mean())
            cache[arch] = (run_all(model, arch, sim, strength), sim, strength)
        return cache[arch]

    return get


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("arch", ARCHS)
def test_offloaded_model_steers_and_extracts_like_in_memory(in_memory, arch, way, tmp_path):
    ref, sim, strength = in_memory(arch)
    model = offloaded(arch, way, tmp_path)
    stack = find_decoder_stack(model)
    assert any(p.device.type == "meta" for p in stack.layers.parameters())  # really offloaded
    if way == "device_map_disk":
        assert model.get_input_embeddings().weight.device.type == "meta"
        assert any(p.device.type != "meta" for p in stack.layers.parameters())  # and partly in memory
    got = run_all(model, arch, sim, strength)
    for key in ("plain", "met", "not_met", "reset"):
        assert torch.equal(got[key], ref[key]), key
    assert not torch.equal(ref["met"], ref["plain"]) and torch.equal(ref["not_met"], ref["plain"])
    assert got["respond"] == ref["respond"]
    assert got["respond_batch"] == ref["respond_batch"]
    assert got["vector"] == ref["vector"]
