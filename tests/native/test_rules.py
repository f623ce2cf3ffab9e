"""The multisteer rule compiler (csrc/core/rules.c via _core.rules_compile) against
Python's own evaluation of the same expressions, and its error messages."""
import itertools
import random

import numpy as np
import pytest

from activation_steering import _core


def oracle(rules: list[str], n_cond: int, n_beh: int) -> np.ndarray:
    """Truth tables by Python eval: `and`/`or`/`not`/parentheses have the same precedence there."""
    out = np.zeros((n_beh, 1 << n_cond), np.uint8)
    for rule in rules:
        words = rule.replace("(", " ( ").replace(")", " ) ").split()
        assert words[0].lower() == "if" and words[-2].lower() == "then"
        target = int(words[-1][1:]) - 1
        expr = " ".join(f"c[{int(w[1:]) - 1}]" if w[0] in "cC" else w.lower() for w in words[1:-2])
        for m in range(1 << n_cond):
            c = [bool(m >> j & 1) for j in range(n_cond)]
            if eval(expr, {}, {"c": c}):
                out[target, m] = 1
    return out


def random_expr(rng: random.Random, n_cond: int, depth: int = 0) -> str:
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice(["C", "c"]) + str(rng.randint(1, n_cond))
    if r < 0.45:
        return rng.choice(["not ", "NOT ", "not  "]) + random_expr(rng, n_cond, depth + 1)
    if r < 0.6:
        return "(" + rng.choice(["", " "]) + random_expr(rng, n_cond, depth + 1) + rng.choice(["", " "]) + ")"
    op = rng.choice([" and ", " or ", " AND ", " Or ", "  and\t"])
    return random_expr(rng, n_cond, depth + 1) + op + random_expr(rng, n_cond, depth + 1)


def test_random_rules_match_python():
    rng = random.Random(0)
    checked_true = checked_false = 0
    for trial in range(300):
        n_cond, n_beh = rng.randint(1, 5), rng.randint(1, 3)
        rules = [f"{rng.choice(['if', 'IF', 'If'])} {random_expr(rng, n_cond)} {rng.choice(['then', 'THEN'])} "
                 f"{rng.choice('Bb')}{rng.randint(1, n_beh)}" for _ in range(rng.randint(1, 3))]
        got = _core.rules_compile(rules, n_cond, n_beh)
        assert got.dtype == np.uint8 and got.shape == (n_beh, 1 << n_cond)
        np.testing.assert_array_equal(got, oracle(rules, n_cond, n_beh), err_msg=str(rules))
        checked_true += int(got.sum())
        checked_false += int(got.size - got.sum())
    assert checked_true > 1000 and checked_false > 1000


@pytest.mark.parametrize("rule,expect", [
    ("if C1 then B1", [0, 1, 0, 1, 0, 1, 0, 1]),
    ("if C1 or C2 and C3 then B1", [0, 1, 0, 1, 0, 1, 1, 1]),      # and binds tighter than or
    ("if (C1 or C2) and C3 then B1", [0, 0, 0, 0, 0, 1, 1, 1]),
    ("if not C1 and C2 then B1", [0, 0, 1, 0, 0, 0, 1, 0]),         # not binds tighter than and
    ("if not (C1 and C2) then B1", [1, 1, 1, 0, 1, 1, 1, 0]),
    ("if not not C3 then B1", [0, 0, 0, 0, 1, 1, 1, 1]),
    ("  if\tC2   then  B1  ", [0, 0, 1, 1, 0, 0, 1, 1]),
])
def test_precedence_and_layout(rule, expect):
    np.testing.assert_array_equal(_core.rules_compile([rule], 3, 1)[0], expect)


def test_several_rules_or_together_and_untargeted_behaviours_are_off():
    t = _core.rules_compile(["if C1 then B2", "if C2 then B2"], 2, 3)
    np.testing.assert_array_equal(t, [[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(_core.rules_compile([], 2, 2), np.zeros((2, 4), np.uint8))


def test_faq_rules():
    t = _core.rules_compile(["if C1 then B1", "if C2 then B2"], 2, 2)
    np.testing.assert_array_equal(t, [[0, 1, 0, 1], [0, 0, 1, 1]])


def test_sixteen_conditions_is_the_limit():
    t = _core.rules_compile(["if C16 and not C1 then B1"], 16, 1)
    m = np.arange(1 << 16)
    np.testing.assert_array_equal(t[0], ((m >> 15 & 1) & ~m & 1).astype(np.uint8))
    with pytest.raises(ValueError, match="at most 16 conditions"):
        _core.rules_compile(["if C1 then B1"], 17, 1)


@pytest.mark.parametrize("rule,pos,text", [
    ("if C9 then B1", 3, "it names C9 but only 2 condition(s) were given (C1..C2)"),
    ("if C1 then B3", 11, "it names B3 but only 1 behaviour(s) were given (B1..B1)"),
    ("if C0 then B1", 3, "C0 is not a condition: they are numbered from 1"),
    ("if C1 then B0", 11, "B0 is not a behaviour"),
    ("C1 then B1", 0, "a rule must start with 'if'"),
    ("", 0, "a rule must start with 'if'"),
    ("if then B1", 3, "expected a condition C<j>, 'not' or '('"),
    ("if C1 and then B1", 10, "expected a condition C<j>, 'not' or '('"),
    ("if C1 B1", 6, "expected 'and', 'or' or 'then'"),
    ("if C1 & C2 then B1", 6, "unexpected character"),
    ("if (C1 then B1", 7, "expected ')'"),
    ("if (C1 or C2", 3, "'(' is never closed"),
    ("if C1) then B1", 5, "')' without a matching '('"),
    ("if C1 then", 10, "expected a behaviour B<k> after 'then'"),
    ("if C1 then C2", 11, "expected a behaviour B<k> after 'then'"),
    ("if C1 then B1 and C2", 14, "unexpected text after the behaviour"),
    ("if C1x then B1", 3, "expected a condition C<j>"),
    ("if C99999999999999 then B1", 3, "it names C"),
    ("if C1 ∧ C2 then B1", 6, "unexpected character"),
    ("if é and C1 then B1", 3, "unexpected character"),
    ("if C1 and é then B1", 10, "unexpected character"),
])
def test_errors_quote_the_rule_and_point_at_the_token(rule, pos, text):
    with pytest.raises(ValueError) as info:
        _core.rules_compile(["if C1 then B1", rule], 2, 1)
    msg = str(info.value)
    assert msg.startswith(f"rules[1] {rule!r} is malformed at character {pos}: "), msg
    assert text in msg
    lines = msg.split("\n")
    assert lines[-2] == "    " + rule and lines[-1] == "    " + " " * pos + "^"


def test_nesting_limit():
    ok = "if " + "(" * 60 + "C1" + ")" * 60 + " then B1"
    np.testing.assert_array_equal(_core.rules_compile([ok], 1, 1), [[0, 1]])
    with pytest.raises(ValueError, match="nested too deeply"):
        _core.rules_compile(["if " + "not " * 100 + "C1 then B1"], 1, 1)
    with pytest.raises(ValueError, match="nested too deeply"):
        _core.rules_compile(["if " + "(" * 100000 + "C1" + ")" * 100000 + " then B1"], 1, 1)


def test_argument_types():
    with pytest.raises(TypeError, match="single str"):
        _core.rules_compile("if C1 then B1", 1, 1)
    with pytest.raises(TypeError, match=r"rules\[0\] must be a str"):
        _core.rules_compile([3], 1, 1)
    with pytest.raises(ValueError, match="at least one behaviour"):
        _core.rules_compile([], 1, 0)
    with pytest.raises(ValueError, match="at most 16"):
        _core.rules_compile([], -1, 1)


def test_all_two_condition_functions_are_expressible():
    """Every boolean function of two conditions compiles from its disjunctive normal form."""
    for bits in itertools.product([0, 1], repeat=4):
        terms = []
        for m, b in enumerate(bits):
            if b:
                terms.append("(" + " and ".join(("" if m >> j & 1 else "not ") + f"C{j + 1}" for j in range(2)) + ")")
        rules = [f"if {' or '.join(terms)} then B1"] if terms else []
        np.testing.assert_array_equal(_core.rules_compile(rules, 2, 1)[0], bits)
