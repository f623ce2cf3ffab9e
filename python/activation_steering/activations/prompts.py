"""How prompts become token ids — shared by respond, extraction and the condition search.

`format_prompt` is THE formatting of a prompt for generation (SPEC 4 respond):
the chat template with add_generation_prompt=True unless disabled. Strings
rendered by a chat template already contain their special tokens, so they are
tokenized with add_special_tokens=False; raw strings get the tokenizer's usual
special tokens.
"""
from __future__ import annotations

import torch


def require_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{type(tokenizer).__name__} has no chat template; pass use_chat_template=False "
            "(or set tokenizer.chat_template)"
        )


def format_prompt(tokenizer, prompt: str, use_chat_template: bool = True) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if not use_chat_template:
        return prompt
    require_chat_template(tokenizer)
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def encode(tokenizer, texts: list[str], use_chat_template: bool, padding_side: str = "left",
           device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Tokenize already-formatted `texts` into a padded batch (input_ids, attention_mask)."""
    old_side = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        enc = tokenizer(list(texts), return_tensors="pt", padding=True,
                        add_special_tokens=not use_chat_template)
    finally:
        tokenizer.padding_side = old_side
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def ensure_pad_token(tokenizer) -> None:
    """Use eos as pad when the tokenizer has none (SPEC 4)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
