"""A JSON reader for untrusted steering-vector data: every failure is one clear message.

Python's json module, fed a hostile file, raises RecursionError (deep nesting), ValueError
without context (a 5000-digit integer exceeds int-string conversion limits) or silently
keeps the last of two equal keys. `strict_loads` turns all of that into `JSONProblem`
with a message in words, and refuses: nesting deeper than MAX_DEPTH, integers longer than
MAX_INT_DIGITS digits, NaN/Infinity literals, numbers that overflow float64 (e.g. 1e999),
and duplicate keys in any object. It is not a general JSON library.
"""
from __future__ import annotations

import json
import math
import re

MAX_DEPTH = 64
MAX_INT_DIGITS = 40
# an integer layer id: ASCII digits only (str.isdigit would accept superscripts and other scripts)
LAYER_KEY = re.compile(r"-?[0-9]{1,9}", re.ASCII)
MAX_LAYER_ID = 1_000_000


class JSONProblem(Exception):
    """What is wrong with a JSON text, in words (the caller adds the file name)."""


def _depth_ok(text: str) -> None:
    depth = 0
    in_string = False
    escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise JSONProblem(f"nests arrays/objects deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONProblem(f"holds an integer with {len(s.lstrip('-'))} digits (more than {MAX_INT_DIGITS})")
    return int(s)


def _parse_float(s: str) -> float:
    if len(s) > 1000:
        raise JSONProblem(f"holds a number written with {len(s)} characters")
    value = float(s)
    if not math.isfinite(value):
        raise JSONProblem(f"holds the number {s[:40]}, which is not a finite float32 (it overflows)")
    return value


def _constant(name: str):
    raise JSONProblem(f"contains {name}, which is not a finite number")


def _pairs(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise JSONProblem(f"has the key {key!r:.40} twice in one object")
        out[key] = value
    return out


def strict_loads(text: str):
    """Parse `text` (str) or raise JSONProblem naming the problem."""
    _depth_ok(text)
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_constant,
                          object_pairs_hook=_pairs)
    except JSONProblem:
        raise
    except json.JSONDecodeError as exc:
        hint = " (the file looks truncated)" if exc.pos >= len(text.rstrip()) else ""
        raise JSONProblem(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}") from None
    except RecursionError:
        raise JSONProblem(f"nests arrays/objects too deeply") from None
    except (ValueError, OverflowError, MemoryError) as exc:
        raise JSONProblem(f"cannot be parsed as JSON ({type(exc).__name__}: {str(exc)[:120]})") from None


def layer_id(key) -> int:
    """An int layer id from a JSON object key: ASCII '-?digits', |id| <= MAX_LAYER_ID, else JSONProblem."""
    if not isinstance(key, str) or LAYER_KEY.fullmatch(key) is None:
        raise JSONProblem(f"has key {key!r:.40}, which is not an integer layer id (ASCII digits, optional '-')")
    value = int(key)
    if abs(value) > MAX_LAYER_ID:
        raise JSONProblem(f"has layer id {value}, beyond any model's depth (|id| <= {MAX_LAYER_ID})")
    return value


__all__ = ["JSONProblem", "strict_loads", "layer_id", "MAX_DEPTH", "MAX_INT_DIGITS", "MAX_LAYER_ID"]
