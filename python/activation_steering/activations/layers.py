"""Where a Hugging Face causal LM keeps its decoder layers.

Steering and capture hook the decoder layers in place (never replacing modules),
so the first job is to find them. Known layouts, tried in order:

    model.model.layers        Llama, Qwen2, Mistral, Gemma, Phi3, SmolLM, ...
    model.transformer.h       GPT-2, GPT-J, Bloom-style
    model.gpt_neox.layers     GPT-NeoX, Pythia
    model.model.decoder.layers  OPT
    model.transformer.layers  some remote-code models

The *base model* is the module that owns those layers and receives input_ids /
attention_mask (model.model, model.transformer, ...): steering hooks it to see
each new prompt's attention mask.
"""
from __future__ import annotations

from torch import nn

_LAYOUTS = (
    ("model", "layers"),
    ("transformer", "h"),
    ("gpt_neox", "layers"),
    ("model", "decoder", "layers"),
    ("transformer", "layers"),
    ("model", "language_model", "layers"),
)


def _walk(model: nn.Module, path: tuple[str, ...]):
    obj = model
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def unwrap_model(model) -> nn.Module:
    """The underlying HF model of a MalleableModel (or the model itself)."""
    inner = getattr(model, "_as_wrapped_model", None)
    return inner if inner is not None else model


def find_layers_and_base(model) -> tuple[nn.Module, nn.ModuleList]:
    """(base_model, decoder_layers) of `model`; ValueError naming the class if unknown."""
    model = unwrap_model(model)
    for path in _LAYOUTS:
        layers = _walk(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return _walk(model, path[:-1]), layers
    raise ValueError(
        f"activation_steering cannot find the decoder layers of {type(model).__name__}: known layouts are "
        + ", ".join("model." + ".".join(p) for p in _LAYOUTS)
        + ". Use a Hugging Face causal LM with one of these layouts."
    )


def find_decoder_layers(model) -> nn.ModuleList:
    """The decoder layers of `model` (an nn.ModuleList)."""
    return find_layers_and_base(model)[1]


def num_layers(model) -> int:
    return len(find_decoder_layers(model))


def resolve_layer_ids(layer_ids, n_layers: int, arg_name: str) -> list[int]:
    """Normalise layer ids (negatives count from the end) and range-check them.

    Raises ValueError naming `arg_name` and the valid range. Order and duplicates
    are preserved as given, after normalisation duplicates are removed.
    """
    if isinstance(layer_ids, int):
        layer_ids = [layer_ids]
    try:
        ids = list(layer_ids)
    except TypeError:
        raise TypeError(f"{arg_name} must be a list of ints, got {type(layer_ids).__name__}") from None
    out: list[int] = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) and not hasattr(i, "__index__"):
            raise TypeError(f"{arg_name} must contain ints, got {i!r}")
        i = int(i)
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise ValueError(
                f"{arg_name}: layer id {i} is out of range for a model with {n_layers} layers "
                f"(valid: 0..{n_layers - 1} or -{n_layers}..-1)"
            )
        if j not in out:
            out.append(j)
    return out
