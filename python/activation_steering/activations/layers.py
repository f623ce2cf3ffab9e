"""Where a Hugging Face causal LM keeps its decoder layers (the residual stack).

Steering and capture hook the decoder layers in place (never replacing modules),
so the first job is to find them. There is no table of layouts: the rule is

    the text decoder's own stack is the nn.ModuleList that
      1. has as many blocks as the TEXT config says (`config.get_text_config()`
         .num_hidden_layers, i.e. `text_config` of a multimodal wrapper), is not
         nested inside another such list's blocks (per-layer sub-lists), and is
         run by the forward of the module that owns it (`self.<name>` appears in
         that forward's source; when no source is available this test abstains);
      2. among those, sits closest to the input token embeddings (the lowest
         common ancestor of the list and `get_input_embeddings()` is deepest): a
         vision or audio tower's list, even of the same length, lives beside the
         text model, not inside it;
      3. then, as tie-breakers in this order: its owner's forward is known to run
         it, its blocks are of classes the model declares as blocks
         (`_no_split_modules`), and it is the shallowest.
    Hybrids whose list mixes block classes (Jamba: Mamba and attention blocks;
    Zamba2: Mamba and hybrid blocks) are found like any other: the rule never
    looks at the block class beyond the tie-breaker. A model with no such list,
    or two lists the rule cannot tell apart (an encoder-decoder's two stacks),
    gets a ValueError naming its class and what was looked for.

The *base model* is the module that receives input_ids / attention_mask / the
cache from the LM head wrapper: the outermost module on the way from the model to
the layers' owner that the model's forward calls (`self.model(`,
`self.transformer(`, `self.backbone(`, OPT's `self.model.decoder(`), else
Hugging Face's `model.base_model`, else the layers' owner. Steering pre-hooks it
to see each prompt's 2-D attention mask; a multimodal wrapper's inner text model
only gets `inputs_embeds` and a dict of 4-D masks, so it is not the base there.

Also here, because they answer "where does the text decoder run": the residual
width from the TEXT config (`text_hidden_size`), and the device input ids must be
put on (`input_device`: under accelerate offload the embedding's weight is on
'meta' and its hook's execution device is the answer).

Not here: what the hooks do (steering/, activations/runner.py); this module only
finds modules and normalises layer ids.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch
from torch import nn

_COUNT_NAMES = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")


@dataclass(frozen=True)
class DecoderStack:
    """What `find_decoder_stack` found in a model.

    base:        the module that receives input_ids / attention_mask / cache
    layers:      the text decoder's blocks, in the order its forward runs them
    text_model:  the module that owns `layers` and iterates them (== base for a plain LM)
    final_norm:  the text model's final normalisation, when it has exactly one
                 recognisable one (None otherwise; informative only)
    path:        dotted name of `layers` inside the model
    """

    base: nn.Module
    layers: nn.ModuleList
    text_model: nn.Module
    final_norm: nn.Module | None
    path: str


def unwrap_model(model) -> nn.Module:
    """The underlying HF model of a MalleableModel (or the model itself)."""
    inner = getattr(model, "_as_wrapped_model", None)
    return inner if inner is not None else model


def text_layer_count(model) -> int | None:
    """num_hidden_layers of the model's TEXT config (None when the config says nothing)."""
    config = _text_config(model)
    if config is None:
        return None
    for name in _COUNT_NAMES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _text_config(model):
    config = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text):
        try:
            return get_text(decoder=True)
        except Exception:  # an old or custom config without decoder sections
            pass
    return config


def text_hidden_size(model) -> int | None:
    """Width D of the residual stream the decoder layers see: the TEXT config's
    hidden size (a multimodal config's own `hidden_size` may be the projector's),
    else the input embedding's width, else None."""
    model = unwrap_model(model)
    config = _text_config(model)
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    get = getattr(model, "get_input_embeddings", None)
    try:
        weight = getattr(get(), "weight", None) if callable(get) else None
    except Exception:  # NotImplementedError on models without a text embedding
        weight = None
    return int(weight.shape[-1]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


_SOURCE_CACHE: dict[tuple[type, str], str | None] = {}


def _forward_source(module: nn.Module) -> str | None:
    """Source of type(module).forward (None when unavailable)."""
    return _class_source(type(module), "forward")


def _class_source(cls: type, which: str) -> str | None:
    """which="forward": the source of cls.forward; which="methods": the source of
    the methods the module's own class defines, but __init__ (a forward may hand
    its loop to a helper method). None when no source is available."""
    key = (cls, which)
    if key not in _SOURCE_CACHE:
        try:
            if which == "forward":
                _SOURCE_CACHE[key] = inspect.getsource(cls.forward)
            else:
                parts = []
                for name, f in vars(cls).items():
                    f = getattr(f, "__func__", f)  # staticmethod / classmethod
                    if name != "__init__" and inspect.isfunction(f):
                        try:
                            parts.append(inspect.getsource(f))
                        except (OSError, TypeError):
                            pass
                _SOURCE_CACHE[key] = "\n".join(parts)
        except (OSError, TypeError):  # no source (compiled, interactive): this test abstains
            _SOURCE_CACHE[key] = None
    return _SOURCE_CACHE[key]


def _iterated_by_owner(owner: nn.Module, attr: str) -> bool | None:
    """Does the owner's forward (or another method of its own class but __init__)
    refer to self.<attr>? None when no source is available."""
    pattern = rf"\bself\.{re.escape(attr)}\b"
    src = _forward_source(owner)
    if src is None:
        return None
    if re.search(pattern, src):
        return True
    methods = _class_source(type(owner), "methods")
    return methods is not None and re.search(pattern, methods) is not None


def _common_depth(a: str, b: str) -> int:
    """Number of leading dotted components two module paths share."""
    pa, pb = a.split(".") if a else [], b.split(".") if b else []
    n = 0
    while n < min(len(pa), len(pb)) and pa[n] == pb[n]:
        n += 1
    return n


def _input_embedding_path(model: nn.Module, names: dict[int, str]) -> str | None:
    get = getattr(model, "get_input_embeddings", None)
    if not callable(get):
        return None
    try:
        emb = get()
    except Exception:  # NotImplementedError on models without a text embedding
        return None
    return names.get(id(emb)) if emb is not None else None


def _no_split_classes(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for m in model.modules():
        value = getattr(m, "_no_split_modules", None)
        if isinstance(value, (list, tuple, set)):
            names.update(str(v) for v in value)
    return names


def _final_norm(text_model: nn.Module, layers: nn.ModuleList) -> nn.Module | None:
    children = list(text_model.named_children())
    norms = [(i, m) for i, (_n, m) in enumerate(children) if "norm" in type(m).__name__.lower()]
    if len(norms) == 1:
        return norms[0][1]
    pos = next((i for i, (_n, m) in enumerate(children) if m is layers), -1)
    after = [m for i, m in norms if i > pos]
    return after[-1] if len(after) == 1 else None


def _owner(model: nn.Module, path: str) -> nn.Module:
    owner_path = path.rpartition(".")[0]
    return model.get_submodule(owner_path) if owner_path else model


def _entry_module(model: nn.Module, text_path: str, text_model: nn.Module) -> nn.Module:
    """The outermost module between the model and its text model that the model's
    forward calls directly (`self.model(`, `self.transformer(`, `self.model.decoder(`):
    the one that receives input_ids / attention_mask / cache. OPT's LM head calls
    `self.model.decoder(...)`, skipping OPTModel; a multimodal wrapper calls its
    `self.model(...)`, which embeds the text and calls the text model with
    inputs_embeds and 4-D masks."""
    if not text_path:
        return model
    parts = text_path.split(".")
    chain = [".".join(parts[:k]) for k in range(1, len(parts) + 1)]
    src = _forward_source(model)
    if src is not None:
        for p in chain:
            if re.search(rf"\bself\.{re.escape(p)}\s*\(", src):
                return model.get_submodule(p)
    base = getattr(model, "base_model", None)  # Hugging Face's own notion, when it lies on the chain
    if isinstance(base, nn.Module) and any(base is model.get_submodule(p) for p in chain):
        return base
    return text_model


def find_decoder_stack(model) -> DecoderStack:
    """The text decoder's stack of `model` (see the module doc for the rule).

    Raises ValueError naming the model's class and what was looked for when no
    list qualifies, or when two lists qualify equally."""
    model = unwrap_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module (a Hugging Face causal LM), got {type(model).__name__}")
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=True)}
    n_text = text_layer_count(model)
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
             and all(isinstance(b, nn.Module) for b in m)]
    sized = [(n, m) for n, m in lists if n_text is None or len(m) == n_text]
    # a list nested inside another candidate's blocks is a per-layer sub-list
    outer = [(n, m) for n, m in sized if not any(o != n and n.startswith(o + ".") for o, _ in sized)]
    # ... and a list its owner's forward never mentions is not a stack it runs
    outer = [(n, m) for n, m in outer if _iterated_by_owner(_owner(model, n), n.rpartition(".")[2]) is not False]
    what = (f"an nn.ModuleList of {n_text} decoder blocks (the text config's num_hidden_layers)" if n_text
            else "an nn.ModuleList of decoder blocks (the config states no layer count)")
    if not outer:
        found = ", ".join(f"{n or '<root>'} ({len(m)})" for n, m in lists[:8]) or "none"
        raise ValueError(
            f"activation_steering cannot find the decoder layers of {type(model).__name__}: looked for {what} "
            f"next to the input embeddings and run by its owner's forward; module lists found: {found}. Use a "
            "Hugging Face causal LM whose decoder runs an nn.ModuleList of blocks.")
    emb_path = _input_embedding_path(model, names)
    no_split = _no_split_classes(model)

    def score(item):
        path, layers = item
        near = _common_depth(path, emb_path) if emb_path is not None else 0
        iterated = _iterated_by_owner(_owner(model, path), path.rpartition(".")[2])
        blocks = all(type(b).__name__ in no_split for b in layers)
        return (near, iterated is True, blocks, -path.count("."))

    ranked = sorted(outer, key=score, reverse=True)
    best = ranked[0]
    if len(ranked) > 1 and score(ranked[1]) == score(best):
        raise ValueError(
            f"activation_steering cannot tell which decoder stack of {type(model).__name__} to use: looked for "
            f"{what} next to the input embeddings, and both {best[0]!r} and {ranked[1][0]!r} qualify (is it an "
            "encoder-decoder model? Only decoder-only causal LMs and multimodal wrappers of one are supported).")
    path, layers = best
    text_model = _owner(model, path)
    base = _entry_module(model, path.rpartition(".")[0], text_model)
    return DecoderStack(base=base, layers=layers, text_model=text_model,
                        final_norm=_final_norm(text_model, layers), path=path)


def find_layers_and_base(model) -> tuple[nn.Module, nn.ModuleList]:
    """(base_model, decoder_layers) of `model`; ValueError naming the class if none is found."""
    stack = find_decoder_stack(model)
    return stack.base, stack.layers


def find_decoder_layers(model) -> nn.ModuleList:
    """The decoder layers of `model` (an nn.ModuleList)."""
    return find_decoder_stack(model).layers


def hidden_size(model) -> int:
    """Width D of the residual stream the decoder layers see (text_hidden_size);
    ValueError when the model reveals none."""
    size = text_hidden_size(model)
    if size is None:
        raise ValueError(f"cannot tell the hidden size of {type(unwrap_model(model)).__name__}: its text config has no "
                         "hidden_size/n_embd/d_model and it has no input embedding")
    return size


def num_layers(model) -> int:
    return len(find_decoder_layers(model))


def resolve_layer_ids(layer_ids, n_layers: int, arg_name: str) -> list[int]:
    """Normalise layer ids (negatives count from the end) and range-check them.

    Raises ValueError naming `arg_name` and the valid range, or the layer given twice
    (also as its negative alias): a repeat is refused everywhere a layer list is taken
    (docs/semantics.md, "Layer lists"). Order is preserved as given.
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
        if j in out:
            first = ids[out.index(j)]
            raise ValueError(f"{arg_name} lists layer {j} twice (as {int(first)} and {i}); give each layer once")
        out.append(j)
    return out


def _hook_execution_device(module: nn.Module):
    """The execution device of an accelerate hook on `module` (None when there is none)."""
    hook = getattr(module, "_hf_hook", None)
    todo = [hook] if hook is not None else []
    while todo:
        h = todo.pop()
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev) if not isinstance(dev, torch.device) else dev
        todo.extend(getattr(h, "hooks", ()) or ())  # accelerate's SequentialHook
    return None


def input_device(model) -> torch.device:
    """Where input ids must be put: the input embedding's device. When accelerate
    offloads the embedding (its weight lives on 'meta' and is loaded at run time),
    the execution device of accelerate's hook on it (or on the model), else the
    first real parameter's device, else CPU."""
    model = unwrap_model(model)
    emb = None
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except Exception:  # NotImplementedError on models without a text embedding
            emb = None
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
        return weight.device
    for m in (emb, model):
        if isinstance(m, nn.Module):
            dev = _hook_execution_device(m)
            if dev is not None:
                return dev
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")
