"""Tiny random-weight models and an offline tokenizer for unit tests.

Four families whose decoder layers live in different places and return
different types (Llama/Qwen2: model.layers; GPT-2: transformer.h; GPT-NeoX:
gpt_neox.layers; OPT: model.decoder.layers). All are float32, eval mode, seeded:
fast and deterministic. The tokenizer is a byte-level BPE trained in-process on a
fixed corpus, with a ChatML chat template and no pad token (like SmolLM2's).
"""
from __future__ import annotations

import functools

import torch

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I bake bread at home? Sure, here is a simple recipe.",
    "I'm sorry, but I can't help with that request.",
    "What is the capital of France? The capital of France is Paris.",
    "Tell me a story about a cat who learns to sail across the sea.",
    "Explain how photosynthesis works in plants and algae.",
    "Write a poem about autumn leaves and cold morning light.",
    "Please refuse harmful requests and answer harmless questions helpfully.",
    "0123456789 !?.,;:'\"()[]{}<>-_/\\|@#$%^&*+=~` abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]

FAMILIES = ("llama", "qwen2", "gpt2", "gpt_neox", "opt")


def make_tokenizer():
    """A fresh tokenizer object each call: MalleableModel sets a pad token on the
    tokenizer it is given, and one test's mutation must never leak into another."""
    import copy

    return copy.deepcopy(_base_tokenizer())


@functools.lru_cache(maxsize=1)
def _base_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def fresh_tokenizer():
    """Alias of make_tokenizer (every call already returns a new object)."""
    return make_tokenizer()


def make_config(family: str, n_layers: int = 4, hidden: int = 64):
    import transformers as tf

    vocab = len(_base_tokenizer())
    base = _base_tokenizer()
    common = dict(vocab_size=vocab, eos_token_id=base.eos_token_id, bos_token_id=base.bos_token_id)
    if family == "llama":
        return tf.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **common)
    if family == "qwen2":
        return tf.Qwen2Config(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **common)
    if family == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=n_layers, n_head=4, n_positions=512, **common)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                                num_attention_heads=4, max_position_embeddings=512, **common)
    if family == "opt":
        return tf.OPTConfig(hidden_size=hidden, ffn_dim=2 * hidden, num_hidden_layers=n_layers,
                            num_attention_heads=4, max_position_embeddings=512, word_embed_proj_dim=hidden,
                            pad_token_id=base.eos_token_id, **common)
    raise ValueError(f"unknown family {family!r}")


def make_model(family: str = "llama", n_layers: int = 4, hidden: int = 64, seed: int = 0):
    """A seeded random-weight causal LM of `family`, float32, eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(make_config(family, n_layers, hidden), dtype=torch.float32)
    # Random init gives near-uniform logits; scale the embeddings so greedy text
    # depends visibly on activations (steering tests need that sensitivity).
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.mul_(1.0 / emb.std().clamp_min(1e-6))
    return model.eval()


# --------------------------------------------------------------------------- #
# More architectures (decoder-stack discovery, steering and extraction on each)
# --------------------------------------------------------------------------- #
# Every builder makes a 2-layer (Zamba2: 4, to hold both block kinds twice),
# hidden-32 random-weight model from the installed transformers' config class:
# no hub, well under a second each. Where the layers live:
#   model.layers            llama, qwen2, gemma2, gemma3_text, phi3, mixtral, qwen2_moe, olmoe,
#                           jamba (Mamba and attention blocks mixed), zamba2 (Mamba and hybrid blocks)
#   transformer.h           gpt2, falcon, bloom
#   gpt_neox.layers         gpt_neox
#   model.decoder.layers    opt
#   transformer.blocks      mpt, dbrx
#   backbone.layers         mamba, mamba2, falcon_mamba (state-space: no attention, no KV length)
#   model.language_model.layers   gemma3 (multimodal; the vision tower has its own list, same length),
#                                 paligemma (multimodal; the vision tower's list is longer: 3 blocks)
ARCHITECTURES = ("llama", "qwen2", "gpt2", "gpt_neox", "opt", "gemma2", "gemma3_text", "phi3", "falcon", "bloom",
                 "mpt", "dbrx", "mixtral", "qwen2_moe", "olmoe", "mamba", "mamba2", "falcon_mamba", "jamba",
                 "zamba2", "gemma3", "paligemma")
# Extra token ids the multimodal builder reserves above the tokenizer's vocabulary
# (image placeholders must never come out of the tokenizer).
_MM_EXTRA = 3


def make_arch_config(arch: str, hidden: int = 32):
    """The config of a tiny `arch` model (see ARCHITECTURES)."""
    import transformers as tf

    if arch in FAMILIES:
        return make_config(arch, n_layers=2, hidden=hidden)
    base = _base_tokenizer()
    vocab = len(base)
    common = dict(vocab_size=vocab, eos_token_id=base.eos_token_id, bos_token_id=base.bos_token_id,
                  pad_token_id=base.eos_token_id)
    attn = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256)
    if arch == "gemma2":
        return tf.Gemma2Config(head_dim=hidden // 4, sliding_window=16, **attn, **common)
    if arch == "gemma3_text":
        return tf.Gemma3TextConfig(head_dim=hidden // 4, sliding_window=16, **attn, **common)
    if arch == "phi3":
        return tf.Phi3Config(**attn, **common)
    if arch == "mixtral":
        return tf.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **attn, **common)
    if arch == "qwen2_moe":
        return tf.Qwen2MoeConfig(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden,
                                 shared_expert_intermediate_size=hidden, **attn, **common)
    if arch == "olmoe":
        return tf.OlmoeConfig(num_experts=4, num_experts_per_tok=2, **attn, **common)
    if arch == "falcon":
        return tf.FalconConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                               max_position_embeddings=256, **common)
    if arch == "bloom":
        return tf.BloomConfig(hidden_size=hidden, n_layer=2, n_head=4, **common)
    if arch == "mpt":
        return tf.MptConfig(d_model=hidden, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=256, **common)
    if arch == "dbrx":
        cfg = tf.DbrxConfig(d_model=hidden, n_heads=4, n_layers=2, max_seq_len=256,
                            attn_config=dict(kv_n_heads=2, clip_qkv=8.0),
                            ffn_config=dict(ffn_hidden_size=2 * hidden, moe_num_experts=4, moe_top_k=2), **common)
        # transformers 5.24's DbrxAttention reads attn_config.rope_theta, which the
        # attention config no longer declares; clip_qkv=None crashes its clamp.
        cfg.attn_config.rope_theta = 10000.0
        return cfg
    if arch == "mamba":
        return tf.MambaConfig(hidden_size=hidden, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4, **common)
    if arch == "falcon_mamba":
        return tf.FalconMambaConfig(hidden_size=hidden, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4,
                                    **common)
    if arch == "mamba2":
        return tf.Mamba2Config(hidden_size=hidden, state_size=8, num_hidden_layers=2, expand=2, num_heads=8,
                               head_dim=hidden * 2 // 8, n_groups=1, conv_kernel=4, chunk_size=16, **common)
    if arch == "jamba":
        return tf.JambaConfig(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
                              num_experts=2, num_experts_per_tok=1, mamba_d_state=4, mamba_d_conv=4, mamba_expand=2,
                              mamba_dt_rank=4, **attn, **common)
    if arch == "zamba2":
        return tf.Zamba2Config(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=4,
                               num_attention_heads=4, num_key_value_heads=4, mamba_d_state=8, mamba_headdim=8,
                               n_mamba_heads=hidden * 2 // 8, mamba_ngroups=1, mamba_d_conv=4, mamba_expand=2,
                               chunk_size=16, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
                               num_mem_blocks=1, use_mem_rope=False, max_position_embeddings=256, **common)
    if arch == "gemma3":
        text = dict(attn, head_dim=hidden // 4, sliding_window=16, vocab_size=vocab + _MM_EXTRA)
        vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
                      image_size=16, patch_size=8)
        return tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                               image_token_index=vocab, boi_token_index=vocab + 1, eoi_token_index=vocab + 2,
                               eos_token_id=base.eos_token_id, bos_token_id=base.bos_token_id,
                               pad_token_id=base.eos_token_id)
    if arch == "paligemma":
        text = dict(attn, model_type="gemma", head_dim=hidden // 4, vocab_size=vocab + 1)
        vision = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3, num_attention_heads=4,
                      image_size=16, patch_size=8, projection_dim=hidden)
        return tf.PaliGemmaConfig(text_config=text, vision_config=vision, image_token_index=vocab,
                                  projection_dim=hidden, eos_token_id=base.eos_token_id,
                                  bos_token_id=base.bos_token_id, pad_token_id=base.eos_token_id)
    raise ValueError(f"unknown architecture {arch!r}; known: {ARCHITECTURES}")


def make_arch_model(arch: str, hidden: int = 32, seed: int = 0):
    """A seeded random-weight tiny `arch` model, float32, eval mode (embeddings
    rescaled like make_model's, so greedy text depends visibly on activations)."""
    import transformers as tf

    if arch in FAMILIES:
        return make_model(arch, n_layers=2, hidden=hidden, seed=seed)
    config = make_arch_config(arch, hidden)
    torch.manual_seed(seed)
    if arch == "gemma3":
        model = tf.Gemma3ForConditionalGeneration(config)
    elif arch == "paligemma":
        model = tf.PaliGemmaForConditionalGeneration(config)
    else:
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model = model.to(torch.float32)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.mul_(1.0 / emb.std().clamp_min(1e-6))
    return model.eval()


def unit_vectors(seed: int, n_layers: int = 4, dim: int = 64):
    """A seeded SteeringVector of random unit directions for layers 0..n_layers-1."""
    import numpy as np

    from activation_steering import SteeringVector

    rng = np.random.default_rng(seed)
    dirs = {}
    for i in range(n_layers):
        x = rng.standard_normal(dim).astype(np.float32)
        dirs[i] = (x / np.linalg.norm(x)).astype(np.float32)
    evr = {i: float(0.3 + 0.1 * i) for i in range(n_layers)}
    return SteeringVector(model_type="llama", directions=dirs, explained_variances=evr)
