"""mean_diff and probe (the C core via _core.methods_fit) against their plain twins
(activation_steering/oracles/methods.py: numpy's mean of differences, scikit-learn's
LogisticRegression) over hostile inputs, with the shared harness (harness.py).
The thorough checks (scales, forms, determinism, train) are tests/vectors/test_methods.py."""
import numpy as np
from harness import case, check_against_twin

from activation_steering import _core
from activation_steering.oracles import methods as oracle


def _fast(rows, method, **kw):
    d, ev, _ = _core.methods_fit(rows[None], method, **kw)
    return d[0].astype(np.float64), float(ev[0])


def _twin(rows, method, probe_l2=1.0, probe_standardize=False, normalize=True):
    if method == "mean_diff":
        return oracle.mean_diff(rows, normalize)
    u, ev, _, _ = oracle.probe(rows, probe_l2, probe_standardize)
    return u, ev


def _compare(got, want, where="result"):
    (g, gev), (w, wev) = got, want
    assert g.shape == w.shape, f"{where}: shape {g.shape} != {w.shape}"
    scale = max(np.linalg.norm(w), 1e-30)
    assert np.linalg.norm(g - w) <= 1e-5 * scale, f"{where}: |fast - twin| = {np.linalg.norm(g - w)} (|twin| {scale})"
    assert abs(gev - wev) <= 1e-5 * max(abs(wev), 1e-12), f"{where}: explained {gev} != {wev}"


def _rows(n_pairs=12, d=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2 * n_pairs, d)).astype(np.float32)
    x[0::2] += 0.8
    return x


def test_mean_diff_and_probe_vs_twins():
    rows = _rows()
    cases = []
    for m in ("mean_diff", "probe"):
        cases += [
            case(f"{m}: NaN", np.array([[1, np.nan], [0, 1]], np.float32), m, raises=ValueError),
            case(f"{m}: Inf", np.array([[1, np.inf], [0, 1]], np.float32), m, raises=ValueError),
            case(f"{m}: no rows", np.zeros((0, 3), np.float32), m, raises=ValueError),
            case(f"{m}: odd rows", np.ones((3, 2), np.float32), m, raises=ValueError),
            case(f"{m}: identical pairs", np.repeat(rows[0::2], 2, axis=0), m, raises=ValueError),
            case(f"{m}: one pair", rows[:2], m),
            case(f"{m}: one column", rows[:, :1].copy(), m),
            case(f"{m}: D > 2P", _rows(4, 30, seed=1), m),
            case(f"{m}: large offset", rows + 1e3, m),
            case(f"{m}: plain", rows, m),
        ]
    cases += [
        case("mean_diff raw", rows, "mean_diff", normalize=False),
        case("probe l2=0.05", rows, "probe", probe_l2=0.05),
        case("probe standardised", rows * np.linspace(0.1, 50, 7, dtype=np.float32), "probe", probe_standardize=True),
        case("probe l2=0", rows, "probe", probe_l2=0.0, raises=ValueError),
    ]
    check_against_twin(_fast, _twin, cases, compare=_compare)
