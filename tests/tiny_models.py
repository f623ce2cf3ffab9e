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
