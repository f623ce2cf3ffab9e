"""Lexicon judges that say which pole of a behaviour a continuation leans to, and the
bootstrap intervals the strength-transfer experiment reports.

What this is for: the strength-transfer experiment (benchmarks/strength_transfer.py) steers
two behaviours, sentiment (positive / negative) and formality (formal / informal), on
held-out neutral sentence starts and needs a cheap, deterministic, second-model-free
verdict per continuation. A `LexiconJudge` counts words from two documented word lists:

    score(text) = #(words of pole A) - #(words of pole B)      (after the rules below)
    label(text) = A if score > 0, B if score < 0, None (neutral) if 0

Rules (the whole rule set):
  * text is lower-cased; curly apostrophes become straight ones; words are maximal runs
    of letters and apostrophes (``[a-z']+``, apostrophes at the ends stripped);
  * each occurrence counts once (repetition counts again: a degenerate loop of "great great
    great" is strongly positive, which is what steering too hard looks like);
  * sentiment only: a lexicon word preceded, within the previous `NEGATION_WINDOW` (2)
    words, by a negator (`NEGATORS`: not, no, never, n't-contractions, ...) counts for
    the OTHER pole ("not good" is negative, "never bad" positive);
  * formality only: each contraction counts one informal point, in addition to the slang
    list. A contraction is a word ending in n't, 're, 've, 'll, 'd or 'm, or one of
    it's that's there's he's she's what's let's here's who's where's how's
    (`is_contraction`); a possessive ("the cat's") is not one.

Known limits (by design): no syntax, no sarcasm, no word senses ("kind" the adjective vs
"kind of"; only "kindly" is listed), English only, and a continuation with no listed word
is neutral. It measures a SHIFT in word choice, which is what steering changes; its
absolute rates are not a sentiment or formality classifier's.

Bootstrap: `bootstrap_ci` is a percentile bootstrap over units (held-out prompts), and
`crossing_strength` the interpolated strength at which a share first reaches a level; the
experiment bootstraps the crossing by resampling prompts.

What this is not: the CAST demo's refusal judge (demo/judge.py), or a model-based judge.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "LexiconJudge", "SENTIMENT", "FORMALITY", "JUDGES", "NEGATORS", "NEGATION_WINDOW",
    "words", "is_contraction", "bootstrap_ci", "crossing_strength",
]

_WORD = re.compile(r"[a-z']+")
_CONTRACTION = re.compile(r"^(?:[a-z]+n't|[a-z]+'(?:re|ve|ll|d|m)|(?:it|that|there|he|she|what|let|here|who|where|how)'s)$")

NEGATION_WINDOW = 2
NEGATORS = frozenset("""
not no never nothing nobody none neither nor without hardly barely
don't doesn't didn't isn't aren't wasn't weren't won't wouldn't can't cannot couldn't
shouldn't haven't hasn't hadn't ain't
""".split())

POSITIVE_WORDS = frozenset("""
good great excellent wonderful fantastic amazing brilliant superb lovely beautiful
happy happily glad delighted pleased joy joyful cheerful love loved loves enjoy
enjoyed enjoying enjoyable fun pleasant pleasure nice friendly warm helpful
perfect perfectly best better success successful proud grateful thankful hope hopeful
exciting excited thrilled thrilling awesome fabulous marvellous marvelous terrific
delightful delicious charming comfortable relaxing relaxed peaceful calm smile smiling
smiled laugh laughter laughing win won winning celebrate celebrated celebration bright
inspiring inspired impressive impressed fortunate lucky positive favourite favorite
adorable gorgeous splendid glorious blessed heartwarming satisfying satisfied
recommend recommended easy beloved admire admired generous honest reassuring
""".split())

NEGATIVE_WORDS = frozenset("""
bad terrible awful horrible dreadful poor worse worst sad sadly unhappy miserable
angry annoyed annoying upset disappointed disappointing disappointment hate hated hates
hating boring bored dull ugly nasty rude unkind unfriendly unpleasant painful pain hurt
hurts fail failed failure failing problem problems wrong broken disaster disgusting
gloomy grim hopeless lonely afraid scared fear fearful worried worry worrying anxious
stress stressful stressed tired exhausting exhausted mess messy dirty cruel
lost lose losing loss sick ill cry crying cried tears regret regretted ashamed
horrid pathetic useless worthless frustrated frustrating furious bitter tragic
tragedy dead death die died dying nightmare chaos chaotic dangerous negative
complain complained complaint unfortunately unfortunate damaged ruined ruin
""".split())

FORMAL_WORDS = frozenset("""
therefore furthermore moreover however thus hence consequently accordingly nevertheless
nonetheless whereas whereby herein hereby therein thereof wherein aforementioned
regarding concerning pursuant notwithstanding subsequently additionally respectively
kindly sincerely respectfully regards dear sir madam esteemed
shall ensure enquire inquire request requested require required requirement
assistance inform informed advise advised acknowledge acknowledged appreciate
appreciated regret regrettably unable commence commenced proceed proceeding
approximately obtain obtained purchase purchased provide provided regard
indicate indicates indicated significant significantly considerable
endeavour endeavor attendance committee convene convened correspondence
facilitate facilitated establish established implement implemented
sufficient insufficient prior forthwith henceforth whilst
""".split())

INFORMAL_WORDS = frozenset("""
gonna wanna gotta kinda sorta dunno lemme gimme ya yeah yep yup nope nah hey hi yo
lol omg wow ok okay cool awesome dude guys buddy mate stuff super totally literally
basically pretty really u ur thx thanks cuz bummer yikes ugh oops hmm huh
folks chill crazy tons bunch freaking damn heck anyway anyways
""".split())


def words(text: str) -> list[str]:
    """Lower-cased words of `text` (see the module rules)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return [w.strip("'") for w in _WORD.findall(text) if w.strip("'")]


def is_contraction(word: str) -> bool:
    """Whether a lower-cased word is a contraction in the sense of the module rules."""
    return bool(_CONTRACTION.match(word))


@dataclass(frozen=True)
class LexiconJudge:
    """Counts pole words; `poles[0]` scores positive, `poles[1]` negative."""

    name: str
    poles: tuple[str, str]
    lexicon: dict[str, frozenset] = field(repr=False)
    negation: bool = False            # "not good" counts for the other pole
    contractions_pole: str | None = None   # a pole that each contraction counts for

    def __post_init__(self):
        if set(self.lexicon) != set(self.poles):
            raise ValueError(f"lexicon keys {sorted(self.lexicon)} must be the poles {self.poles}")
        if self.contractions_pole is not None and self.contractions_pole not in self.poles:
            raise ValueError(f"contractions_pole must be one of {self.poles}")

    def counts(self, text: str) -> dict[str, int]:
        """Occurrences per pole after the negation and contraction rules."""
        a, b = self.poles
        out = {a: 0, b: 0}
        ws = words(text)
        for i, w in enumerate(ws):
            pole = a if w in self.lexicon[a] else b if w in self.lexicon[b] else None
            if pole is not None and self.negation and any(
                    p in NEGATORS for p in ws[max(0, i - NEGATION_WINDOW):i]):
                pole = b if pole == a else a
            if pole is not None:
                out[pole] += 1
            if self.contractions_pole is not None and is_contraction(w):
                out[self.contractions_pole] += 1
        return out

    def score(self, text: str) -> int:
        c = self.counts(text)
        return c[self.poles[0]] - c[self.poles[1]]

    def label(self, text: str) -> str | None:
        s = self.score(text)
        return self.poles[0] if s > 0 else self.poles[1] if s < 0 else None

    def toward(self, text: str, pole: str) -> bool:
        """Whether `text` is labelled `pole` (the experiment's "moved toward the pole")."""
        if pole not in self.poles:
            raise ValueError(f"pole must be one of {self.poles}, got {pole!r}")
        return self.label(text) == pole


SENTIMENT = LexiconJudge("sentiment", ("positive", "negative"),
                         {"positive": POSITIVE_WORDS, "negative": NEGATIVE_WORDS}, negation=True)
FORMALITY = LexiconJudge("formality", ("formal", "informal"),
                         {"formal": FORMAL_WORDS, "informal": INFORMAL_WORDS}, contractions_pole="informal")
JUDGES = {j.name: j for j in (SENTIMENT, FORMALITY)}


def bootstrap_ci(units: Sequence | np.ndarray, statistic: Callable[[np.ndarray], float] = np.mean,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(point estimate, lower, upper): percentile bootstrap over the first axis of `units`.

    `statistic` maps a resampled array (same shape, rows drawn with replacement) to a
    float; it may return inf/nan (e.g. a crossing never reached), which the percentiles
    treat as +inf (nan becomes inf). Percentiles are the inverted-CDF ones (an order
    statistic, no interpolation). Deterministic for a given seed."""
    arr = np.asarray(units)
    if arr.shape[0] == 0:
        raise ValueError("units is empty: the bootstrap needs at least one unit")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = arr.shape[0]
    stats = np.empty(int(n_boot))
    for k in range(int(n_boot)):
        stats[k] = statistic(arr[rng.integers(0, n, n)])
    stats = np.where(np.isnan(stats), np.inf, stats)
    alpha = (1 - level) / 2
    # the classical percentile (no interpolation, so +inf endpoints stay inf without nan)
    lo, hi = np.quantile(stats, [alpha, 1 - alpha], method="inverted_cdf")
    point = float(statistic(arr))
    return (np.inf if np.isnan(point) else point), float(lo), float(hi)


def crossing_strength(strengths: Sequence[float], shares: Sequence[float], level: float = 0.5) -> float:
    """Smallest strength where `shares` reaches `level`, linearly interpolated between the
    grid points around the first crossing; inf if never reached. `strengths` ascending
    (magnitudes, e.g. 0, 2, 4, ...)."""
    s = np.asarray(strengths, dtype=float)
    y = np.asarray(shares, dtype=float)
    if s.shape != y.shape or s.ndim != 1 or s.size == 0:
        raise ValueError("strengths and shares must be 1-D and of the same non-zero length")
    if np.any(np.diff(s) <= 0):
        raise ValueError("strengths must be strictly ascending")
    hit = np.flatnonzero(y >= level)
    if hit.size == 0:
        return float("inf")
    j = int(hit[0])
    if j == 0:
        return float(s[0])
    x0, x1, y0, y1 = s[j - 1], s[j], y[j - 1], y[j]
    return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0))
