"""Where the user's message lies in a prompt's token ids ("user_text" pooling).

What this is for: `condition_threshold_comparison_mode="user_text"` (steer,
multisteer, find_best_condition_point) and `accumulate_last_x_tokens="user_text"`
(SteeringVector.train) pool over the tokens of the user's message only, not over
the chat template's system prompt and turn markers, which are the same in every
prompt. Every path (respond, respond_batch, generate with input_ids, a plain
forward, the condition search, training) locates the message with the ONE
function `UserText.span`, from token ids alone, so all of them pool the same
tokens. The rule (docs/semantics.md, "Which tokens a condition pools"):

- The template's fixed tokens are derived once per tokenizer by rendering its
  chat template on probe messages: the user-turn marker before a user message
  (HEAD, e.g. ``<|im_start|>user\\n``) and the end-of-turn marker after it (END,
  e.g. ``<|im_end|>\\n``). Each is split into its core (the tokens without
  leading/trailing whitespace-only tokens) and its whitespace separator.
- In a row's real tokens: the message starts after the LAST occurrence of HEAD's
  core and the separator tokens that follow it exactly; it ends before the first
  occurrence of END's core after that (and before the separator tokens that
  precede it exactly). A token where the separator merged with the message's
  first or last characters (e.g. ``"\\n\\n"`` for a message starting with a
  newline) holds message characters, so it counts as the message's.
- A prompt without any of the template's markers (use_chat_template=False, or a
  tokenizer without a chat template) is the user's text as a whole: all its real
  tokens except the tokenizer's own special tokens at its start and end (BOS).
- A prompt with template markers in which no user message can be delimited (no
  user turn, an unclosed one, or an empty message) raises ValueError: pooling
  silently over something else would hide the mistake.

What this is not: it never runs a model and never pools anything; callers turn
the spans into pooling spans (tokens.py, pooled.py) or into the op's token mask
(value USER_TEXT_TOKEN at the message's tokens; conditions/search.py,
steering/state.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

REAL_TOKEN = 1        # token_mask value of a real token outside the user's message
USER_TEXT_TOKEN = 2   # token_mask value of a token of the user's message (the op pools these for "user_text")

_PROBES = ("Zq7 probe message", "How do I bake bread?", " leading space", "trailing space ", "two\nlines",
           "\n\nblank line first")
_FIRST, _REPLY = "Xk3 first turn", "Yw5 reply turn"


def _find(seq: Sequence[int], sub: tuple[int, ...], start: int = 0, stop: int | None = None) -> int:
    """First index i >= start with seq[i:i+len(sub)] == sub and i+len(sub) <= stop, else -1."""
    stop = len(seq) if stop is None else stop
    n, first = len(sub), sub[0]
    for i in range(start, stop - n + 1):
        if seq[i] == first and tuple(seq[i:i + n]) == sub:
            return i
    return -1


def _rfind(seq: Sequence[int], sub: tuple[int, ...]) -> int:
    n, first = len(sub), sub[0]
    for i in range(len(seq) - n, -1, -1):
        if seq[i] == first and tuple(seq[i:i + n]) == sub:
            return i
    return -1


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n:]


class UserText:
    """The user-message locator of one tokenizer (build with `user_text_locator`)."""

    def __init__(self, tokenizer) -> None:
        self.specials = frozenset(int(t) for t in (getattr(tokenizer, "all_special_ids", None) or []))
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self.head: tuple[int, ...] = ()
        self.head_sep: tuple[int, ...] = ()
        self.end: tuple[int, ...] = ()
        self.end_sep: tuple[int, ...] = ()
        self.marker_ids: frozenset[int] = frozenset()
        if self.templated:
            self._derive(tokenizer)
            self._verify(tokenizer)

    # ------------------------------------------------------------ derivation
    def _derive(self, tokenizer) -> None:
        def render(messages, gen):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

        probe = _PROBES[0]
        one = render([{"role": "user", "content": probe}], True)
        one_closed = render([{"role": "user", "content": probe}], False)
        if one.count(probe) != 1 or one_closed.count(probe) != 1:
            raise ValueError(f"{type(tokenizer).__name__}'s chat template does not render a user message verbatim, "
                             "so the user's text cannot be located; use the 'mean' or 'last' pooling")
        before = one[:one.index(probe)]
        end_text = one_closed[one_closed.index(probe) + len(probe):] or one[one.index(probe) + len(probe):]
        head_text = before
        try:  # a later user turn: the marker between the assistant's reply and the message
            two = render([{"role": "user", "content": _FIRST}, {"role": "assistant", "content": _REPLY},
                          {"role": "user", "content": probe}], True)
            gap = two[two.index(_REPLY) + len(_REPLY):two.rindex(probe)]
            head_text = _common_suffix(before, gap)
        except Exception:  # noqa: BLE001 - templates that refuse multi-turn: the single-turn prefix
            pass
        if end_text and head_text.startswith(end_text):  # the previous turn's end is not part of the user marker
            head_text = head_text[len(end_text):]

        def ids(text):
            return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]

        def blank(t):
            return t not in self.specials and tokenizer.decode([t]).strip() == ""

        head, end = ids(head_text), ids(end_text)
        a, b = 0, len(head)
        while a < b and blank(head[a]):
            a += 1
        while b > a and blank(head[b - 1]):
            b -= 1
        self.head, self.head_sep = tuple(head[a:b]), tuple(head[b:])
        a, b = 0, len(end)
        while a < b and blank(end[a]):
            a += 1
        while b > a and blank(end[b - 1]):
            b -= 1
        self.end, self.end_sep = tuple(end[a:b]), tuple(end[:a])
        if not self.head or not self.end:
            raise ValueError(f"{type(tokenizer).__name__}'s chat template has no marker "
                             f"{'before' if not self.head else 'after'} a user message, so the user's text cannot be "
                             "located; use the 'mean' or 'last' pooling")
        self.marker_ids = frozenset(t for t in self.head + self.end if t in self.specials)

    def _verify(self, tokenizer) -> None:
        """The rule must recover every probe message from its own rendering (else: refuse to pool)."""
        for p in _PROBES:
            for messages in ([{"role": "user", "content": p}],
                             [{"role": "user", "content": _FIRST}, {"role": "assistant", "content": _REPLY},
                              {"role": "user", "content": p}]):
                try:
                    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                except Exception:  # noqa: BLE001 - multi-turn refused by the template (see _derive)
                    continue
                row = [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
                try:
                    s, e = self.span(row)
                except ValueError:
                    s = e = 0
                if tokenizer.decode(row[s:e]).strip() != p.strip():
                    raise ValueError(
                        f"{type(tokenizer).__name__}'s chat template does not delimit the user's message in token ids "
                        f"by fixed markers (probe {p!r} was located as {tokenizer.decode(row[s:e])!r}); use the "
                        "'mean' or 'last' pooling")

    # ------------------------------------------------------------ the rule
    def span(self, row: Sequence[int], what: str = "the prompt") -> tuple[int, int]:
        """[start, end) of the user's message among `row`, a prompt's REAL token ids (no padding).

        Raises ValueError (naming `what`) when the row has template markers but no
        delimitable, non-empty user message."""
        n = len(row)
        h = _rfind(row, self.head) if self.head else -1
        if h < 0:
            if self.marker_ids.intersection(row) or (self.end and _find(row, self.end) >= 0):
                raise ValueError(f"{what} has chat-template markers but no user turn (no {self.describe('head')}); "
                                 "user_text pooling pools the LAST user message: format the prompt with the chat "
                                 "template, or pass one without any template markers (use_chat_template=False)")
            s, e = 0, n
            while s < e and row[s] in self.specials:
                s += 1
            while e > s and row[e - 1] in self.specials:
                e -= 1
        else:
            s = h + len(self.head)
            for t in self.head_sep:  # the separator, unless it merged with the message's first characters
                if s < n and row[s] == t:
                    s += 1
                else:
                    break
            c = _find(row, self.end, s)
            if c < 0:
                raise ValueError(f"{what}: the last user message is not closed (no {self.describe('end')} after "
                                 "it); user_text pooling needs the whole message")
            e = c
            for t in reversed(self.end_sep):
                if e - 1 >= s and row[e - 1] == t:
                    e -= 1
                else:
                    break
        if e <= s:
            raise ValueError(f"{what}: the user's message has no tokens, so there is nothing to pool for user_text")
        return s, e

    def describe(self, which: str) -> str:
        return f"{which} marker token ids {list(self.head if which == 'head' else self.end)}"

    def mask(self, input_ids: torch.Tensor, real: torch.Tensor, what: str = "prompt row") -> torch.Tensor:
        """token_mask[B, T] int64 for the op: 0 padding, REAL_TOKEN, USER_TEXT_TOKEN at the message.

        `real` [B, T] marks the real tokens (any padding side); the message is
        located among each row's real ids. Computed on the CPU (ids are small)."""
        ids = input_ids.detach().to("cpu", torch.long)
        r = real.detach().to("cpu") != 0
        out = r.to(torch.long)
        for b in range(ids.shape[0]):
            pos = torch.nonzero(r[b]).flatten()
            s, e = self.span(ids[b, pos].tolist(), f"{what} {b}")
            out[b, pos[s:e]] = USER_TEXT_TOKEN
        return out.to(real.device)


def user_text_locator(tokenizer) -> UserText:
    """The cached locator of `tokenizer` (rebuilt when its chat template changes).

    Raises ValueError when the template does not delimit a user message by fixed
    markers (the mode then cannot be used with it)."""
    if tokenizer is None:
        raise ValueError("user_text pooling needs the tokenizer (to find the chat template's markers)")
    key = getattr(tokenizer, "chat_template", None)
    cached = getattr(tokenizer, "_as_user_text", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    loc = UserText(tokenizer)
    try:
        tokenizer._as_user_text = (key, loc)
    except Exception:  # noqa: BLE001 - a tokenizer that refuses attributes: rebuild each time
        pass
    return loc
