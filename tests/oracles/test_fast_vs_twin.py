"""Each fast path of the activations and conditions rooms against its plain twin
(activation_steering/oracles) over hostile inputs: NaN/Inf, empty, one row, odd
dtypes, ties. The harness is tests/oracles/harness.py."""
import numpy as np
import pytest
from harness import case, check_against_twin, close
from tiny_models import fresh_tokenizer, make_model

from activation_steering import SteeringDataset, _core
from activation_steering.activations.pooled import pooled_activations
from activation_steering.conditions.thresholds import f1_score, threshold_at_false_positive_rate
from activation_steering.config import GlobalConfig
from activation_steering.oracles.pca import reference_pca
from activation_steering.oracles.pooling import pooled_one_at_a_time
from activation_steering.oracles.search import brute_exact, brute_grid, f1_by_counting, fpr_capped_point

GlobalConfig.set_verbose(False, "SteeringDataset")
LABELS = np.array([True, False, True, False])


# --------------------------------------------------------------------------- #
# C condition search (grid and exact) vs literal enumeration
# --------------------------------------------------------------------------- #
def _point(res) -> dict:
    return {"columns": tuple(res["columns"]), "threshold": float(res["threshold"]),
            "comparator": res.get("comparator", res.get("direction")), "f1": float(res["f1"])}


def _search_cases():
    ties = np.full((4, 2), 0.25)
    return [
        case("nan", np.array([[0.1], [np.nan], [0.3], [0.4]]), LABELS, raises=ValueError),
        case("inf", np.array([[0.1], [np.inf], [0.3], [0.4]]), LABELS, raises=ValueError),
        case("empty", np.zeros((0, 2)), np.zeros(0, bool), raises=ValueError),
        case("no layers", np.zeros((4, 0)), LABELS, raises=ValueError),
        case("1-D sims", np.array([0.1, 0.2, 0.3, 0.4]), LABELS, raises=ValueError),
        case("int labels", np.ones((4, 1)) * 0.3, LABELS.astype(np.int64), raises=ValueError),
        case("labels too short", np.ones((4, 1)) * 0.3, LABELS[:3], raises=ValueError),
        case("one row", np.array([[0.3, 0.6]]), np.array([True])),
        case("one row, negative", np.array([[0.3, 0.6]]), np.array([False])),
        case("all tied", ties, LABELS),
        case("tied on grid values", np.array([[0.25, 0.5], [0.5, 0.25], [0.0, 0.75], [0.75, 0.0]]), LABELS),
        case("float32", np.array([[0.1, 0.2], [0.7, 0.1], [0.2, 0.9], [0.8, 0.4]], np.float32), LABELS),
        case("int sims", np.array([[0, 1], [1, 0], [0, 0], [1, 1]]), LABELS),
        case("Fortran order", np.asfortranarray(np.array([[0.1, 0.2], [0.7, 0.1], [0.2, 0.9], [0.8, 0.4]])), LABELS),
        case("no positives", np.array([[0.1], [0.7], [0.2], [0.8]]), np.zeros(4, bool)),
        case("all positives", np.array([[0.1], [0.7], [0.2], [0.8]]), np.ones(4, bool)),
    ]


GRID = np.arange(0.0, 1.0, 0.25)


def _depth(sims) -> int:
    """Combine every layer (1 where sims is not 2-D and must be rejected anyway)."""
    return sims.shape[1] if sims.ndim == 2 else 1


@pytest.mark.parametrize("combination", ["or", "and"])
def test_grid_search_vs_brute_force(combination):
    check_against_twin(
        lambda sims, labels: _point(_core.condsearch_grid(sims, labels, _depth(sims), GRID,
                                                          layer_combination=combination)),
        lambda sims, labels: _point(brute_grid(np.asarray(sims, np.float64), labels, _depth(sims), GRID,
                                               combination)[0]),
        _search_cases())


@pytest.mark.parametrize("combination", ["or", "and"])
def test_exact_search_vs_brute_force(combination):
    check_against_twin(
        lambda sims, labels: _point(_core.condsearch_exact(sims, labels, _depth(sims), layer_combination=combination)),
        lambda sims, labels: _point(brute_exact(np.asarray(sims, np.float64), labels, _depth(sims), combination)[0]),
        _search_cases())


def test_grid_search_rejects_hostile_thresholds_and_depths():
    sims = np.array([[0.1], [0.7], [0.2], [0.8]])
    check_against_twin(
        lambda grid, k: _point(_core.condsearch_grid(sims, LABELS, k, grid)), None,
        [case("empty grid", np.array([]), 1, raises=ValueError),
         case("NaN in grid", np.array([np.nan, 0.5]), 1, raises=ValueError),
         case("decreasing grid", np.array([0.5, 0.1]), 1, raises=ValueError),
         case("2-D grid", np.array([[0.1]]), 1, raises=ValueError),
         case("depth 0", GRID, 0, raises=ValueError),
         case("depth above the layers", GRID, 2, raises=ValueError)])


# --------------------------------------------------------------------------- #
# C PCA vs numpy full SVD
# --------------------------------------------------------------------------- #
def _pca_fast(rows, method):
    comps, ev, _ = _core.pca_fit(rows[None], method, 1, False)
    return {"direction": comps[0, 0], "ratio": float(ev[0, 0])}


def _pca_twin(rows, method):
    comps, ratios, _ = reference_pca(rows, method, 1)
    return {"direction": comps[0], "ratio": float(ratios[0])}


def test_pca_vs_numpy_svd():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 5)).astype(np.float32)
    check_against_twin(_pca_fast, _pca_twin, [
        case("NaN", np.array([[1, np.nan], [0, 1]], np.float32), "pca_pairwise", raises=ValueError),
        case("Inf", np.array([[1, np.inf], [0, 1]], np.float32), "pca_center", raises=ValueError),
        case("no rows", np.zeros((0, 3), np.float32), "pca_pairwise", raises=ValueError),
        case("odd rows", np.ones((3, 2), np.float32), "pca_pairwise", raises=ValueError),
        case("all rows equal", np.ones((4, 3), np.float32), "pca_center", raises=ValueError),
        case("one pair, pca_diff", rows[:2], "pca_diff", raises=ValueError),
        case("one pair", rows[:2], "pca_pairwise"),
        case("one column", rows[:, :1].copy(), "pca_pairwise"),
        case("a tied pair", np.array([[1, 1], [1, 1], [2, 2], [0, 0]], np.float32), "pca_pairwise"),
        case("pairwise", rows, "pca_pairwise"),
        case("center", rows, "pca_center"),
        case("diff", rows, "pca_diff"),
        case("large offset", rows + 1e3, "pca_center"),
    ], compare=close(atol=2e-4, rtol=1e-4))


# --------------------------------------------------------------------------- #
# F1 and the FPR-capped threshold
# --------------------------------------------------------------------------- #
def test_f1_vs_counting():
    t, f = True, False
    check_against_twin(f1_score, f1_by_counting, [
        case("empty", np.zeros(0, bool), np.zeros(0, bool)),
        case("one right", np.array([t]), np.array([t])),
        case("one wrong", np.array([t]), np.array([f])),
        case("no positives", np.array([f, f]), np.array([f, f])),
        case("mixed", np.array([t, t, f, f]), np.array([t, f, t, f])),
        case("int predictions", np.array([1, 0]), np.array([t, f]), raises=TypeError),
        case("float truth", np.array([t, f]), np.array([1.0, 0.0]), raises=TypeError),
        case("lengths differ", np.array([t]), np.array([t, f, t]), raises=ValueError),
        case("2-D", np.ones((2, 2), bool), np.ones((2, 2), bool), raises=ValueError),
    ])


def _fpr_fast(pos, neg, comparator, cap):
    _, tpr, fpr = threshold_at_false_positive_rate(pos, neg, comparator, cap)
    return (tpr, -fpr)


def test_fpr_capped_threshold_vs_grid_twin():
    pos = np.array([[0.1], [0.3], [0.3], [0.6]])
    neg = np.array([[0.2], [0.3], [0.7], [0.9]])
    check_against_twin(_fpr_fast, fpr_capped_point, [
        case("NaN", np.array([[np.nan]]), neg, "larger", 0.0, raises=ValueError),
        case("empty positives", np.zeros((0, 1)), neg, "larger", 0.0, raises=ValueError),
        case("layers differ", np.zeros((2, 2)), neg, "larger", 0.0, raises=ValueError),
        case("cap above 1", pos, neg, "larger", 1.5, raises=ValueError),
        case("unknown comparator", pos, neg, "bigger", 0.1, raises=ValueError),
        case("one row each", pos[:1], neg[:1], "larger", 0.0),
        case("all tied", np.full((3, 1), 0.5), np.full((3, 1), 0.5), "smaller", 0.0),
        case("ties across classes", pos, neg, "larger", 0.25),
        case("smaller, cap 0", pos, neg, "smaller", 0.0),
        case("cap 1", pos, neg, "larger", 1.0),
        case("1-D input", pos[:, 0], neg[:, 0], "larger", 0.5),
        case("int input", np.array([[0], [1]]), np.array([[1], [2]]), "larger", 0.0),
    ])


# --------------------------------------------------------------------------- #
# Pooled capture (batched, right-padded, prefix-shared, truncated) vs one string at a time
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def llama():
    return make_model("llama", n_layers=4, hidden=64, seed=2)


def test_pooled_capture_vs_one_string_at_a_time(llama):
    tok = fresh_tokenizer()

    def dataset(examples, suffixes=None, chat=True):
        return SteeringDataset(tok, examples, suffixes=suffixes, use_chat_template=chat)

    def fast(ds, layers, mode, batch_size):
        texts = [s for p in ds.formatted_dataset for s in (p.positive, p.negative)]
        starts = [c for p in ds.formatted_dataset for c in (p.positive_suffix_start, p.negative_suffix_start)]
        return pooled_activations(llama, tok, texts, layers, mode, batch_size, not ds.use_chat_template, starts)

    def twin(ds, layers, mode, _batch_size):
        return pooled_one_at_a_time(llama, tok, ds, layers, mode)

    same = [("The same words.", "The same words.")]
    check_against_twin(fast, twin, [
        case("one pair, last token", dataset([("Yes.", "No.")]), [0, 3], 1, 1),
        case("k beyond the string", dataset([("Yes.", "No.")], chat=False), [1], 500, 2),
        case("identical positive and negative", dataset(same), [1, 2], "all", 4),
        case("suffix-only without suffixes", dataset([("Calm sea.", "Rough sea.")]), [2], "suffix-only", 3),
        case("suffixes, one per batch", dataset([("Calm sea.", "Rough sea, cold wind.")], [("Sure", "No way")]),
             [0, 1, 2, 3], "suffix-only", 1),
        case("raw strings, all tokens", dataset([("a", "b c d e f g"), ("hi", "hello there")], chat=False),
             [3], "all", 3),
    ], compare=close(atol=1e-4, rtol=1e-4))


def test_the_harness_reports_each_kind_of_disagreement():
    def boom(_x):
        raise KeyError("x")

    for fast, twin, cases in [
        (lambda x: x + 1e-9, lambda x: x, [case("value", np.float64(1.0))]),
        (lambda x: x, lambda x: x, [case("should have raised", 1.0, raises=ValueError)]),
        (boom, lambda x: x, [case("only the fast path raises", 1.0)]),
        (boom, lambda x: [][1], [case("different exception types", 1.0)]),
        (lambda x: {"a": x}, lambda x: {"b": x}, [case("keys", 1.0)]),
        (lambda x: ((0,), "larger"), lambda x: ((0,), "smaller"), [case("strings", 1.0)]),
        (lambda x: np.array([np.nan, 1]), lambda x: np.array([np.nan, 2]), [case("NaN-aware but exact", 1.0)]),
    ]:
        with pytest.raises(AssertionError, match=cases[0].name):
            check_against_twin(fast, twin, cases)
    check_against_twin(lambda x: np.array([np.nan, x]), lambda x: np.array([np.nan, x]), [case("NaN == NaN", 1.0)])
