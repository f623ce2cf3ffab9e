"""Plain twin of the C PCA (`_core.pca_fit`, csrc/core/pca.c): numpy full SVD.

The fast path forms a Gram matrix and calls LAPACK's dsyevr per layer; this twin
builds the same training matrix for each method and takes a full SVD, then
applies the same sign rules (docs/semantics.md): each component's largest-|entry|
is positive, and component 0 is flipped so that positives project above their
negatives in most pairs. Float64 throughout; not meant to be fast.
"""
from __future__ import annotations

import numpy as np


def training_matrix(h: np.ndarray, method: str) -> np.ndarray:
    """The rows PCA is fitted on, from pooled rows h[2P, D] ordered pos, neg, pos, neg, ..."""
    h = h.astype(np.float64)
    if method == "pca_pairwise":
        mid = (h[0::2] + h[1::2]) / 2
        t = h.copy()
        t[0::2] -= mid
        t[1::2] -= mid
        return t
    if method == "pca_center":
        return h - h.mean(0)
    if method == "pca_diff":
        return h[0::2] - h[1::2]
    raise ValueError(f"method must be 'pca_pairwise', 'pca_center' or 'pca_diff', got {method!r}")


def reference_pca(h: np.ndarray, method: str, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(components[k, D], explained variance ratios[k], mean[D]) by full SVD."""
    t = training_matrix(h, method)
    mean = t.mean(0)
    _, s, vt = np.linalg.svd(t - mean, full_matrices=True)
    comps = vt[:k].copy()
    for j in range(k):
        if comps[j][np.argmax(np.abs(comps[j]))] < 0:
            comps[j] = -comps[j]
    proj = h.astype(np.float64) @ comps[0]
    if np.sum(proj[0::2] < proj[1::2]) > np.sum(proj[0::2] > proj[1::2]):
        comps[0] = -comps[0]
    return comps, s[:k] ** 2 / np.sum(s ** 2), mean
