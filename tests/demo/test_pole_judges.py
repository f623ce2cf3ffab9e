"""The strength-transfer experiment's lexicon judges and bootstrap helpers, on labelled cases."""
import math

import numpy as np
import pytest

from activation_steering.demo.pole_judges import (FORMALITY, JUDGES, SENTIMENT, LexiconJudge, bootstrap_ci,
                                                  crossing_strength, is_contraction, words)

SENTIMENT_CASES = [
    ("What a wonderful day, I loved every minute of it.", "positive"),
    ("The food was delicious and the staff were friendly.", "positive"),
    ("It was a terrible, boring film and I hated it.", "negative"),
    ("I feel sad and lonely since the accident.", "negative"),
    ("The bus leaves at nine from the main square.", None),
    ("It was not good at all.", "negative"),           # negation flips "good"
    ("Honestly, it was never bad.", "positive"),        # negation flips "bad"
    ("The dinner wasn\u2019t great.", "negative"),      # curly apostrophe contraction negates
    ("great great great great", "positive"),            # a steering loop still counts
    ("Good food, awful service, terrible music.", "negative"),  # 1 vs 2
]

FORMALITY_CASES = [
    ("We regret to inform you that the committee has therefore declined the request.", "formal"),
    ("Kindly ensure that attendance is recorded prior to the session.", "formal"),
    ("hey guys lol this is gonna be awesome", "informal"),
    ("I'm sure it's fine, don't worry.", "informal"),  # three contractions
    ("yeah dunno, kinda tired tbh", "informal"),
    ("The river runs past the old mill.", None),
    ("My neighbour's garden is green.", None),          # a possessive is not a contraction
]


@pytest.mark.parametrize("text,label", SENTIMENT_CASES)
def test_sentiment_labels(text, label):
    assert SENTIMENT.label(text) == label


@pytest.mark.parametrize("text,label", FORMALITY_CASES)
def test_formality_labels(text, label):
    assert FORMALITY.label(text) == label


def test_scores_count_occurrences_and_negation_window():
    assert SENTIMENT.score("good good bad") == 1
    assert SENTIMENT.counts("not good") == {"positive": 0, "negative": 1}
    # the negator is three words back: outside the window of 2, so "good" stays positive
    assert SENTIMENT.counts("not the very good") == {"positive": 1, "negative": 0}
    assert FORMALITY.counts("don't") == {"formal": 0, "informal": 1}  # no negation on formality


def test_words_and_contractions():
    assert words("It\u2019s 'quoted' -- OK?") == ["it's", "quoted", "ok"]
    assert is_contraction("don't") and is_contraction("we'll") and is_contraction("it's")
    assert not is_contraction("cat's") and not is_contraction("dont")
    with pytest.raises(TypeError, match="text must be a str"):
        words(3)


def test_toward_and_bad_pole():
    assert SENTIMENT.toward("lovely", "positive") and not SENTIMENT.toward("lovely", "negative")
    with pytest.raises(ValueError, match="pole must be one of"):
        SENTIMENT.toward("lovely", "formal")
    assert set(JUDGES) == {"sentiment", "formality"}


def test_lexicons_are_disjoint_and_judge_validates():
    for j in JUDGES.values():
        a, b = j.poles
        assert not (j.lexicon[a] & j.lexicon[b])
    with pytest.raises(ValueError, match="must be the poles"):
        LexiconJudge("x", ("a", "b"), {"a": frozenset()})


def test_crossing_strength_interpolates():
    s = [0, 2, 4, 8]
    assert crossing_strength(s, [0.1, 0.3, 0.7, 0.9]) == pytest.approx(3.0)
    assert crossing_strength(s, [0.6, 0.7, 0.8, 0.9]) == 0.0
    assert math.isinf(crossing_strength(s, [0.1, 0.2, 0.3, 0.4]))
    assert crossing_strength(s, [0.1, 0.5, 0.2, 0.9]) == 2.0  # first crossing, exactly at a grid point
    with pytest.raises(ValueError, match="ascending"):
        crossing_strength([2, 0], [0.1, 0.9])


def test_bootstrap_ci_covers_known_mean_and_is_deterministic():
    rng = np.random.default_rng(1)
    x = rng.binomial(1, 0.3, size=400).astype(float)
    point, lo, hi = bootstrap_ci(x, n_boot=1000, seed=3)
    assert point == pytest.approx(x.mean())
    assert lo < point < hi
    se = math.sqrt(point * (1 - point) / x.size)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)  # normal-theory width
    assert bootstrap_ci(x, n_boot=1000, seed=3) == (point, lo, hi)
    # a constant sample has a zero-width interval
    assert bootstrap_ci(np.ones(10), n_boot=50) == (1.0, 1.0, 1.0)


def test_bootstrap_ci_of_a_crossing_with_never_reached_resamples():
    strengths = np.array([0.0, 1.0, 2.0])
    # per-prompt 0/1 "moved" at each strength: half the prompts move at 1, none at 0
    moved = np.array([[0, 1, 1]] * 5 + [[0, 0, 0]] * 5, dtype=float)
    point, lo, hi = bootstrap_ci(moved, lambda m: crossing_strength(strengths, m.mean(axis=0)), n_boot=500)
    assert point == 1.0
    assert 0.0 < lo < 1.0  # resamples with more movers cross between 0 and 1
    assert math.isinf(hi)  # resamples with fewer than half movers never cross: +inf, not nan


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.5)
