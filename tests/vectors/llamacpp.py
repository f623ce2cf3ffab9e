"""Driving a real llama.cpp (llama-cpp-python's low-level API) for the control-vector check.

Not a test file: tests/vectors/test_llama_cpp.py and benchmarks/llama_cpp_check.py use it.

- `f32_gguf()` makes, offline and once, an F32 copy of the embedded SmolLM2 Q4_1 GGUF with the
  `gguf` package (same metadata, every tensor dequantised), so llama.cpp and our float32 HF model
  (itself dequantised from that file) run the same weights and differ only by float rounding.
- `load_control_vector(path, scale)` is llama.cpp's own file loader logic (common/common.cpp,
  common_control_vector_load_one) run on llama.cpp's C GGUF reader (gguf_init_from_file in
  libggml-base, through ctypes): the same checks (tensor names direction.K, K >= 1, F32, 1-D,
  one size) and the same layout (K-1 slot, scaled by `scale`, as --control-vector-scaled). The
  common library itself is not exported by llama-cpp-python, so its ~40 lines are restated
  here; the file parsing is llama.cpp's.
- `Llama` wraps model/context creation, `llama_set_adapter_cvec`, first-token logits and greedy
  decoding over token ids we give it (tokenised by the HF tokenizer, so both sides see the same ids).
"""
from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

import numpy as np


def f32_gguf(dest: Path | None = None) -> Path:
    """An F32 GGUF of the embedded model (created once, atomically, next to the HF cache)."""
    import gguf
    from gguf.quants import dequantize

    from activation_steering.models import cache_dir, gguf_path

    src = gguf_path()
    dest = dest or cache_dir().with_name("SmolLM2-135M-Instruct.F32.gguf")
    if dest.is_file():
        return dest
    reader = gguf.GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(None, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_uint32(name, 0)  # LLAMA_FTYPE_ALL_F32
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(s) for s in reversed(t.shape.tolist())]
        writer.add_tensor(t.name, np.ascontiguousarray(data.reshape(shape)))
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dest)
    return dest


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


def _ggml():
    """ctypes handle on libggml-base (the gguf C reader) shipped inside llama_cpp."""
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    cands = sorted(libdir.glob("libggml-base.so*")) + sorted(libdir.glob("libggml-base*.dylib"))
    lib = ctypes.CDLL(str(cands[0]))
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GGUFInitParams]  # params by value
    lib.gguf_get_n_tensors.restype = ctypes.c_int64
    lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    lib.gguf_get_tensor_name.restype = ctypes.c_char_p
    lib.gguf_get_tensor_name.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.ggml_get_tensor.restype = ctypes.c_void_p
    lib.ggml_get_tensor.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_n_dims.restype = ctypes.c_int
    lib.ggml_n_dims.argtypes = [ctypes.c_void_p]
    lib.ggml_nelements.restype = ctypes.c_int64
    lib.ggml_nelements.argtypes = [ctypes.c_void_p]
    lib.ggml_get_data_f32.restype = ctypes.POINTER(ctypes.c_float)
    lib.ggml_get_data_f32.argtypes = [ctypes.c_void_p]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.ggml_free.argtypes = [ctypes.c_void_p]
    return lib


GGML_TYPE_F32 = 0


def load_control_vector(path, scale: float = 1.0) -> tuple[int, np.ndarray]:
    """(n_embd, flat data) exactly as llama.cpp's common_control_vector_load_one builds it.

    Raises ValueError with llama.cpp's own reason where that loader would skip the file.
    """
    lib = _ggml()
    ctx = ctypes.c_void_p()
    params = _GGUFInitParams(False, ctypes.pointer(ctx))
    g = lib.gguf_init_from_file(os.fsencode(str(path)), params)
    if not g:
        raise ValueError(f"llama.cpp: failed to load control vector file from {path}")
    n_embd = -1
    data = np.zeros(0, np.float32)
    try:
        for i in range(lib.gguf_get_n_tensors(g)):
            name = lib.gguf_get_tensor_name(g, i).decode()
            layer_idx = -1
            head, dot, tail = name.partition(".")
            if dot and head == "direction":
                m = re.match(r"\s*[+-]?\d+", tail)  # std::stoi: leading integer
                layer_idx = int(m.group()) if m else -1
            if layer_idx < 0:
                raise ValueError(f"llama.cpp: invalid/unparsable direction tensor layer index in {path}")
            if layer_idx == 0:
                raise ValueError(f"llama.cpp: invalid (zero) direction tensor layer index in {path}")
            t = lib.ggml_get_tensor(ctx, name.encode())
            ttype = ctypes.c_int.from_address(t).value  # struct ggml_tensor starts with enum ggml_type type
            if ttype != GGML_TYPE_F32:
                raise ValueError(f"llama.cpp: invalid (non-F32) direction tensor type in {path}")
            if lib.ggml_n_dims(t) != 1:
                raise ValueError(f"llama.cpp: invalid (non-1D) direction tensor shape in {path}")
            n = lib.ggml_nelements(t)
            if n_embd == -1:
                n_embd = n
            elif n != n_embd:
                raise ValueError(f"llama.cpp: direction tensor in {path} does not match previous dimensions")
            if data.size < n_embd * layer_idx:
                data = np.concatenate([data, np.zeros(n_embd * layer_idx - data.size, np.float32)])
            src = np.ctypeslib.as_array(lib.ggml_get_data_f32(t), shape=(n,))
            data[n_embd * (layer_idx - 1):n_embd * layer_idx] += src * np.float32(scale)
    finally:
        lib.gguf_free(g)
        if ctx:
            lib.ggml_free(ctx)
    return n_embd, data


_QUIET = None


class Llama:
    """One llama.cpp model + context on token ids; control vectors via llama_set_adapter_cvec."""

    def __init__(self, model_path, n_ctx: int = 512, n_threads: int = 2):
        import llama_cpp as L

        self.L = L
        global _QUIET
        if _QUIET is None:  # llama.cpp logs every tensor it loads; keep test output readable
            _QUIET = L.llama_log_callback(lambda level, text, user_data: None)
            L.llama_log_set(_QUIET, ctypes.c_void_p())
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        if hasattr(mp, "use_extra_bufts"):
            # the CPU "extra" buffer types (weight repacking, AMX) crash llama_decode on the Q4_1 file
            # in this build (segfault, llama-cpp-python 0.3.36 on an AMX CPU); plain kernels do not
            mp.use_extra_bufts = False
        self.model = L.llama_model_load_from_file(os.fsencode(str(model_path)), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model_path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_ctx
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.n_layer = L.llama_model_n_layer(self.model)
        self.n_embd = L.llama_model_n_embd(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))

    def set_control_vector(self, path=None, scale: float = 1.0) -> None:
        """Load `path` like --control-vector-scaled path:scale (None removes it)."""
        L = self.L
        if path is None:
            rc = L.llama_set_adapter_cvec(self.ctx, None, 0, self.n_embd, 0, 0)
        else:
            n_embd, data = load_control_vector(path, scale)
            buf = (ctypes.c_float * data.size)(*data.tolist())
            # common_init_from_params: layer range 1 .. n_layer
            rc = L.llama_set_adapter_cvec(self.ctx, buf, data.size, n_embd, 1, self.n_layer)
        if rc != 0:
            raise RuntimeError(f"llama_set_adapter_cvec failed ({rc})")

    def _clear(self) -> None:
        L = self.L
        mem = L.llama_get_memory(self.ctx)
        L.llama_memory_clear(mem, True)

    def _decode(self, ids: list[int]) -> np.ndarray:
        L = self.L
        arr = (L.llama_token * len(ids))(*ids)
        batch = L.llama_batch_get_one(arr, len(ids))
        rc = L.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc})")
        ptr = L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64).copy()

    def first_logits(self, ids: list[int]) -> np.ndarray:
        """Logits of the first generated token after the prompt `ids`."""
        self._clear()
        return self._decode(list(ids))

    def greedy(self, ids: list[int], n_new: int, stop: set[int] = frozenset()) -> list[int]:
        """Greedy continuation token ids (stops after a token in `stop`)."""
        self._clear()
        logits = self._decode(list(ids))
        out = []
        for _ in range(n_new):
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in stop:
                break
            logits = self._decode([tok])
        return out

    def close(self) -> None:
        L = self.L
        if getattr(self, "ctx", None):
            L.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            L.llama_model_free(self.model)
            self.model = None


# ---------------------------------------------------------------------------------------------
# The two measurements (used by test_llama_cpp.py and benchmarks/llama_cpp_check.py)
# ---------------------------------------------------------------------------------------------
PROMPTS = ["Tell me about the ocean.", "How do I bake bread?", "Write a short poem about autumn.",
           "What is the capital of France?"]


def prompt_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def hf_first_logits(malleable, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = malleable(input_ids=torch.tensor([ids]))
    return out.logits[0, -1].double().numpy().copy()


def random_vector(n_layers: int, dim: int, seed: int = 0):
    """A different random unit direction at every layer (so a one-layer offset also changes the direction)."""
    from activation_steering import SteeringVector

    rng = np.random.default_rng(seed)
    dirs = {}
    for i in range(n_layers):
        d = rng.standard_normal(dim)
        dirs[i] = (d / np.linalg.norm(d)).astype(np.float32)
    return SteeringVector("llama", dirs, {i: 1.0 for i in dirs},
                          provenance={"model_type": "llama", "hidden_size": dim, "n_layers": n_layers})


def shift_correlations(model, tokenizer, llm: "Llama", tmp: Path, layers=(3, 10, 20), strength: float = 8.0,
                       text: str = PROMPTS[0], seed: int = 0) -> list[dict]:
    """Per layer: corr(llama.cpp shift, HF shift) for the exported vector, and for it moved one layer deeper."""
    import warnings

    from activation_steering import MalleableModel, SteeringVector

    n_layers = llm.n_layer
    vec = random_vector(n_layers, llm.n_embd, seed)
    mm = MalleableModel(model, tokenizer)
    ids = prompt_ids(tokenizer, text)
    base_hf = hf_first_logits(mm, ids)
    llm.set_control_vector(None)
    base_ll = llm.first_logits(ids)
    rows = []
    for layer in layers:
        one = vec.layers([layer])
        mm.steer(behavior_vector=one, behavior_layer_ids=[layer], behavior_vector_strength=strength)
        shift_hf = hf_first_logits(mm, ids) - base_hf
        mm.reset_leash_to_default()
        row = {"layer": layer, "strength": strength, "hf_shift_norm": float(np.linalg.norm(shift_hf))}
        for name, at in (("exported", layer), ("shifted_one_layer", layer + 1)):
            moved = SteeringVector("llama", {at: one.directions[layer]}, {at: 1.0}, provenance=dict(vec.provenance))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = moved.export_gguf(tmp / f"L{layer}_{name}.gguf")
            llm.set_control_vector(path, strength)
            shift_ll = llm.first_logits(ids) - base_ll
            llm.set_control_vector(None)
            row[name] = float(np.corrcoef(shift_ll, shift_hf)[0, 1])
        rows.append(row)
    # every expressible layer at once (2 .. L-1), one file
    full = vec.layers(list(range(2, n_layers)))
    mm.steer(behavior_vector=full, behavior_layer_ids=list(range(2, n_layers)), behavior_vector_strength=strength / 4)
    shift_hf = hf_first_logits(mm, ids) - base_hf
    mm.reset_leash_to_default()
    llm.set_control_vector(full.export_gguf(tmp / "all_layers.gguf"), strength / 4)
    shift_ll = llm.first_logits(ids) - base_ll
    llm.set_control_vector(None)
    rows.append({"layer": "2..%d" % (n_layers - 1), "strength": strength / 4,
                 "exported": float(np.corrcoef(shift_ll, shift_hf)[0, 1])})
    return rows


def hf_greedy(malleable, ids: list[int], n_new: int, eos: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = malleable.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=n_new, do_sample=False, repetition_penalty=1.0, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=eos, eos_token_id=eos)
    return [int(t) for t in out[0, len(ids):]]


def greedy_comparison(model, tokenizer, llm: "Llama", vector, layer_ids, strength: float, tmp: Path,
                      prompts=PROMPTS, n_new: int = 24) -> list[dict]:
    """Greedy continuations, unsteered and steered, from HF (MalleableModel) and llama.cpp (exported GGUF)."""
    from activation_steering import MalleableModel

    mm = MalleableModel(model, tokenizer)
    eos = int(tokenizer.eos_token_id)
    path = vector.layers(list(layer_ids)).export_gguf(tmp / "behaviour.gguf")
    rows = []
    for text in prompts:
        ids = prompt_ids(tokenizer, text)
        llm.set_control_vector(None)
        ll_plain = llm.greedy(ids, n_new, {eos})
        hf_plain = hf_greedy(mm, ids, n_new, eos)
        llm.set_control_vector(path, strength)
        ll_steer = llm.greedy(ids, n_new, {eos})
        llm.set_control_vector(None)
        mm.steer(behavior_vector=vector, behavior_layer_ids=list(layer_ids), behavior_vector_strength=strength)
        hf_steer = hf_greedy(mm, ids, n_new, eos)
        mm.reset_leash_to_default()
        rows.append({"prompt": text,
                     "hf_plain": tokenizer.decode(hf_plain, skip_special_tokens=True),
                     "llama_plain": tokenizer.decode(ll_plain, skip_special_tokens=True),
                     "hf_steered": tokenizer.decode(hf_steer, skip_special_tokens=True),
                     "llama_steered": tokenizer.decode(ll_steer, skip_special_tokens=True),
                     "ids": {"hf_plain": hf_plain, "llama_plain": ll_plain, "hf_steered": hf_steer,
                             "llama_steered": ll_steer}})
    return rows


def train_refusal_vector(model, tokenizer, layer_ids=range(10, 16), n_questions: int = 20, n_suffixes: int = 8):
    """The demo's refusal behaviour vector, on a small seeded sample of the package data."""
    import json
    import random

    from importlib.resources import files

    from activation_steering import SteeringDataset, SteeringVector

    data = json.loads(files("activation_steering").joinpath("data/behavior_refusal.json").read_text())
    questions = random.Random(0).sample(data["questions"], n_questions)
    picks = random.Random(1).sample(range(len(data["refusal_openers"])), n_suffixes)
    suffixes = [(data["refusal_openers"][i], data["compliance_openers"][i]) for i in picks]
    ds = SteeringDataset(tokenizer=tokenizer, examples=[(q, q) for q in questions], suffixes=suffixes)
    return SteeringVector.train(model, tokenizer, ds, method="pca_center", accumulate_last_x_tokens="suffix-only",
                                hidden_layer_ids=list(layer_ids))
