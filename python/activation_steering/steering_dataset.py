"""SteeringDataset: contrastive (positive, negative) text pairs, formatted for extraction (docs/semantics.md, "Extraction").

    from activation_steering import SteeringDataset
    ds = SteeringDataset(tokenizer, [("I love it.", "I hate it.")])
    ds.formatted_dataset[0].positive     # the exact string the model will read

What happens to each example, in order:

1. *Cleaning*: the tokenizer's special-token strings (bos/eos/pad/unk and every
   other added token marked special) are broken up inside user text
   (``<|im_end|>`` -> ``<||im_end||>``, ``<s>`` -> ``<|s|>``), so user text can never
   inject a special token into the formatted string. Examples and system messages
   are cleaned; suffixes are not (see 3).
2. *Rendering*: with ``use_chat_template`` each side becomes a one-turn user
   message rendered by ``apply_chat_template(..., tokenize=False,
   add_generation_prompt=False)``, after an optional system turn
   (``system_message=(pos_sys, neg_sys)``). Without it the cleaned text is used.
3. *Suffix expansion* (suffix-major product): the suffix is appended verbatim to
   the rendered string, as the reference library does, so it reads as the
   continuation after the user's turn (e.g. a response opener). Suffixes are
   deliberately not cleaned: they sit outside the template and may carry template
   tokens on purpose (``"<|im_start|>assistant\\nSure"``).

Every formatted pair records the character offset where each side's suffix
starts (`ContrastivePair.positive_suffix_start` / `negative_suffix_start`), so
``accumulate_last_x_tokens="suffix-only"`` pools exactly that string's suffix
tokens (mapped through the tokenizer's offsets at training time).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._args import check_flag
from .config import log
from .activations.prompts import require_chat_template

# Our own default openers: the empty string first, then short generic
# sentence starts that give each example several contexts to be read in. They
# are joined to the formatted text with a space unless it already ends in
# whitespace (a rendered chat turn ends in a newline).
DEFAULT_SUFFIXES: tuple[str, ...] = (
    "",
    "That is",
    "I think",
    "The answer is",
    "Here is",
    "Well,",
    "In my view,",
    "To be honest,",
    "Let me explain.",
    "It seems that",
    "Of course,",
    "Actually,",
    "I would say",
    "First of all,",
    "The truth is",
    "As I see it,",
    "So,",
    "My reply is",
    "Honestly,",
    "Simply put,",
    "What I mean is",
)


@dataclass(frozen=True)
class ContrastivePair:
    """One formatted pair. `*_suffix_start` is the character offset in the string
    where its suffix begins (== len(string) for an empty suffix), or None when the
    dataset was built without suffixes."""

    positive: str
    negative: str
    positive_suffix_start: int | None = None
    negative_suffix_start: int | None = None


def _special_token_strings(tokenizer) -> list[str]:
    """Every special-token string the tokenizer would turn into a special id, longest first."""
    found: set[str] = set()
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        tok = getattr(tokenizer, name, None)
        if isinstance(tok, str) and tok:
            found.add(tok)
    for tok in getattr(tokenizer, "all_special_tokens", None) or []:
        if isinstance(tok, str) and tok:
            found.add(tok)
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    for added in decoder.values():
        content = getattr(added, "content", None)
        if getattr(added, "special", False) and isinstance(content, str) and content:
            found.add(content)
    return sorted(found, key=lambda s: (-len(s), s))


def _break_token(token: str) -> str:
    """`<s>` -> `<|s|>`: a `|` after the first and before the last character."""
    if len(token) < 2:
        return " "
    if len(token) == 2:
        return f"{token[0]}|{token[1]}"
    return f"{token[0]}|{token[1:-1]}|{token[-1]}"


def clean_text(tokenizer, text: str) -> str:
    """`text` with every special-token string of `tokenizer` broken up (see module doc)."""
    specials = _special_token_strings(tokenizer)
    # One pass suffices unless a replacement happens to spell another special
    # token; repeat until none is left (each pass strictly lengthens the text).
    for _ in range(16):
        if not any(tok in text for tok in specials):
            return text
        for tok in specials:
            if tok in text:
                text = text.replace(tok, _break_token(tok))
    raise ValueError(f"could not remove special tokens from {text[:80]!r}")  # pragma: no cover


def _check_examples(examples) -> list[tuple[str, str]]:
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence) and not hasattr(examples, "__iter__"):
        raise TypeError("examples must be a list of (positive, negative) string pairs")
    pairs = list(examples)
    if not pairs:
        raise ValueError("examples is empty: pass at least one (positive, negative) pair")
    out = []
    for i, ex in enumerate(pairs):
        if isinstance(ex, (str, bytes)) or not isinstance(ex, Sequence) or len(ex) != 2:
            raise ValueError(f"examples[{i}] must be a (positive, negative) pair of strings, got {ex!r:.80}")
        pos, neg = ex
        if not isinstance(pos, str) or not isinstance(neg, str):
            raise TypeError(f"examples[{i}] must hold two str, got ({type(pos).__name__}, {type(neg).__name__})")
        out.append((pos, neg))
    return out


def _check_suffixes(suffixes) -> tuple[list[tuple[str, str]], bool]:
    """(list of (pos_suffix, neg_suffix), paired?) from a user suffix list."""
    if isinstance(suffixes, (str, bytes)) or not hasattr(suffixes, "__iter__"):
        raise TypeError("suffixes must be a list of strings or of (positive_suffix, negative_suffix) pairs")
    items = list(suffixes)
    if not items:
        raise ValueError("suffixes is empty: pass None for the default suffixes or disable_suffixes=True for none")
    paired = not isinstance(items[0], str)
    out = []
    for i, s in enumerate(items):
        if isinstance(s, str):
            if paired:
                raise ValueError(f"suffixes mixes pairs and strings (suffixes[{i}] = {s!r:.60}); use one kind")
            out.append((s, s))
        elif isinstance(s, Sequence) and len(s) == 2 and all(isinstance(x, str) for x in s):
            if not paired:
                raise ValueError(f"suffixes mixes strings and pairs (suffixes[{i}] = {s!r:.60}); use one kind")
            out.append((s[0], s[1]))
        else:
            raise ValueError(f"suffixes[{i}] must be a str or a (positive_suffix, negative_suffix) pair, got {s!r:.80}")
    return out, paired


def _check_system_message(system_message) -> tuple[str, str] | None:
    if system_message is None:
        return None
    if isinstance(system_message, str):
        return (system_message, system_message)
    if isinstance(system_message, Sequence) and len(system_message) == 2 and all(isinstance(s, str) for s in system_message):
        return (system_message[0], system_message[1])
    raise ValueError("system_message must be a (positive_system, negative_system) pair of strings (or one str for both)")


class SteeringDataset:
    """Formatted contrastive pairs for `SteeringVector.train`.

    Each side is cleaned (special-token strings inside user text are broken up so
    they cannot inject special tokens), rendered as a one-turn user message with the
    chat template, and, unless suffixes are disabled, followed by each suffix pair
    (suffix-major order: for each suffix, every example).

    Args:
        tokenizer: the model's Hugging Face tokenizer (needs a chat template when
            `use_chat_template`).
        examples: `[(positive, negative), ...]` strings.
        suffixes: `[(positive_suffix, negative_suffix), ...]` or `[suffix, ...]`
            (the same on both sides); None: the built-in default suffixes.
        disable_suffixes: use the examples as given, with no suffixes.
        use_chat_template: render with the chat template (else raw strings).
        system_message: `(positive_system, negative_system)` prepended as a system turn.

    Raises:
        ValueError: empty or malformed examples or suffixes, a tokenizer without a chat
            template, or `system_message` without the chat template.
        TypeError: no tokenizer, or a flag that is not a bool.

    Attributes:
        formatted_dataset: list[ContrastivePair] in suffix-major order (for each
            suffix, every example).
        formatted_dataset_pre_populated: the rendered examples before suffixes.
        suffixes: the (positive, negative) suffix pairs used, or None if disabled.
        use_chat_template: whether strings carry the chat template (then they are
            tokenized without adding special tokens again).
    """

    def __init__(self, tokenizer: Any, examples: Sequence[tuple[str, str]],
                 suffixes: Sequence[tuple[str, str]] | Sequence[str] | None = None, disable_suffixes: bool = False,
                 use_chat_template: bool = True, system_message: tuple[str, str] | None = None) -> None:
        if tokenizer is None or not callable(tokenizer):
            # never advise dropping the tokenizer: it is also what cleans special tokens out of the examples
            raise TypeError(f"tokenizer must be the model's Hugging Face tokenizer, got {type(tokenizer).__name__}: "
                            "it renders the chat template AND breaks up special-token strings inside the examples "
                            "(with use_chat_template=False too); pass the tokenizer the model was trained with")
        check_flag(use_chat_template, "use_chat_template")
        check_flag(disable_suffixes, "disable_suffixes")
        pairs = _check_examples(examples)
        sys_pair = _check_system_message(system_message)
        if use_chat_template:
            require_chat_template(tokenizer)
        elif sys_pair is not None:
            raise ValueError("system_message needs use_chat_template=True (a raw string has no system turn); "
                             "drop system_message or enable the chat template")
        if disable_suffixes:
            suffix_pairs, joiner = None, False
        elif suffixes is None:
            suffix_pairs, joiner = [(s, s) for s in DEFAULT_SUFFIXES], True
        else:
            suffix_pairs, _ = _check_suffixes(suffixes)
            joiner = False

        self.tokenizer = tokenizer
        self.use_chat_template = bool(use_chat_template)
        self.system_message = sys_pair
        self.suffixes = suffix_pairs
        log("SteeringDataset", f"Processing {len(pairs)} examples")

        rendered = [(self._render(tokenizer, pos, sys_pair[0] if sys_pair else None),
                     self._render(tokenizer, neg, sys_pair[1] if sys_pair else None)) for pos, neg in pairs]
        self.formatted_dataset_pre_populated = [ContrastivePair(p, n) for p, n in rendered]

        if suffix_pairs is None:
            self.formatted_dataset = list(self.formatted_dataset_pre_populated)
        else:
            self.formatted_dataset = [
                ContrastivePair(p + self._join(p, ps, joiner), n + self._join(n, ns, joiner), len(p), len(n))
                for ps, ns in suffix_pairs
                for p, n in rendered
            ]
        log("SteeringDataset", f"Final dataset size: {len(self.formatted_dataset)} pairs")
        log("SteeringDataset", f"Positive example: {self.formatted_dataset[0].positive!r}")
        log("SteeringDataset", f"Negative example: {self.formatted_dataset[0].negative!r}")

    def _render(self, tokenizer, text: str, system: str | None) -> str:
        text = clean_text(tokenizer, text)
        if not self.use_chat_template:
            return text
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": clean_text(tokenizer, system)})
        messages.append({"role": "user", "content": text})
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as exc:  # jinja TemplateError and friends: say which input caused it
            what = "a system turn (system_message)" if system is not None else "a user turn"
            raise ValueError(f"the chat template of {type(tokenizer).__name__} failed to render {what}: {exc}") from exc

    @staticmethod
    def _join(text: str, suffix: str, joiner: bool) -> str:
        """The string appended to `text`: the suffix, or for default openers ' ' + it
        when `text` does not already end in whitespace."""
        if joiner and suffix and text and not text[-1].isspace():
            return " " + suffix
        return suffix

    def clean_text(self, text: str) -> str:
        """`text` with this tokenizer's special-token strings broken up."""
        return clean_text(self.tokenizer, text)

    def __len__(self) -> int:
        return len(self.formatted_dataset)

    def __repr__(self) -> str:
        n_suf = "disabled" if self.suffixes is None else len(self.suffixes)
        return (f"SteeringDataset({len(self.formatted_dataset_pre_populated)} examples x suffixes={n_suf} -> "
                f"{len(self.formatted_dataset)} pairs, chat_template={self.use_chat_template})")
