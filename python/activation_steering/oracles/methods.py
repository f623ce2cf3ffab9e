"""Plain twins of the extraction methods beyond PCA (csrc/core/extract_methods.c).

numpy for ``mean_diff``, scikit-learn's LogisticRegression for ``probe``: slow,
obvious, and what the C core is tested against. Not used by the product.

Rows are one layer's pooled activations, [2P, D], interleaved positive, negative.
"""
from __future__ import annotations

import numpy as np


def pair_sign(rows: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The project's pair rule: negate c iff more pairs have proj(pos) < proj(neg) than >."""
    proj = np.asarray(rows, np.float64) @ np.asarray(c, np.float64)
    smaller = int(np.sum(proj[0::2] < proj[1::2]))
    greater = int(np.sum(proj[0::2] > proj[1::2]))
    return -c if smaller > greater else c


def explained_along(rows: np.ndarray, c: np.ndarray) -> float:
    """sum_p (d_p . c)^2 / (|c|^2 sum_p |d_p|^2), d_p = positive_p - negative_p."""
    r = np.asarray(rows, np.float64)
    diffs = r[0::2] - r[1::2]
    c = np.asarray(c, np.float64)
    return float(np.sum((diffs @ c) ** 2) / (c @ c) / np.sum(diffs * diffs))


def mean_diff(rows: np.ndarray, normalize: bool = True) -> tuple[np.ndarray, float]:
    """(direction float64 [D], explained): the mean over pairs of positive - negative."""
    r = np.asarray(rows, np.float64)
    m = np.mean(r[0::2] - r[1::2], axis=0)
    if normalize:
        m = m / np.linalg.norm(m)
    m = pair_sign(rows, m)
    return m, explained_along(rows, m)


def probe(rows: np.ndarray, l2: float = 1.0, standardize: bool = False
          ) -> tuple[np.ndarray, float, np.ndarray, float]:
    """(unit direction [D], explained, weights [D], intercept) of scikit-learn's
    LogisticRegression(C=1/l2) on positives (1) vs negatives (0), in activation
    space (standardised fits are mapped back: w_j / scale_j, as StandardScaler
    scales), the direction signed by the pair rule; weights and intercept are
    the fitted probe's own (decision function rows @ w + b)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(rows, np.float64)
    y = np.tile([1, 0], x.shape[0] // 2)
    mu = x.mean(axis=0)
    scale = np.ones(x.shape[1])
    if standardize:
        sd = np.sqrt(np.mean((x - mu) ** 2, axis=0))
        scale = np.where(sd > 0, sd, 1.0)
    lr = LogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=100_000, solver="lbfgs")
    lr.fit((x - mu) / scale, y)
    w = lr.coef_[0] / scale
    b = float(lr.intercept_[0] - w @ mu)
    u = w / np.linalg.norm(w)
    signed = pair_sign(rows, u)
    return signed, explained_along(rows, signed), w, b
