"""`save_analysis=True` figures of SteeringVector.train (docs/extraction_methods.md).

One scatter per layer of every pooled row projected on the layer's first two
principal components (positives vs negatives) — ``pca_layer_<id>.png`` — and one
plot of PC1's explained-variance ratio by layer — ``macroscopic_analysis.png``
(the reference library's file names). The projections come from the same C PCA
call that produced the directions, so the plots show exactly what was fitted.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so saving
them never switches or opens the user's GUI backend and is safe in threads.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def save_analysis_figures(projections: np.ndarray, explained: np.ndarray, layer_ids: list[int],
                          output_dir: str | os.PathLike, method: str) -> list[str]:
    """Write the figures; returns their paths.

    projections[L, 2P, 2]: rows (pos, neg interleaved) on PC1/PC2 per layer;
    explained[L, 2]: explained-variance ratios of PC1/PC2 per layer. For mean_diff
    and probe (see extract.py) axis 0 is the method's direction (explained: its
    share of the pair-difference variance) and axis 1 the first principal
    component of what the direction leaves."""
    pca = method.startswith("pca")
    x_name, y_name = ("PC1", "PC2") if pca else (f"{method} direction", "PC1 of the rest")
    x_of = "variance" if pca else "pair-difference variance"
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    for j, layer in enumerate(layer_ids):
        proj = projections[j]
        fig = _new_figure((8, 6))
        ax = fig.add_subplot(1, 1, 1)
        ax.scatter(proj[0::2, 0], proj[0::2, 1], alpha=0.7, label="Positive examples")
        ax.scatter(proj[1::2, 0], proj[1::2, 1], alpha=0.7, label="Negative examples")
        ax.set_xlabel(f"{x_name} ({explained[j, 0]:.1%} of {x_of})")
        ax.set_ylabel(f"{y_name} ({explained[j, 1]:.1%} of {'variance' if pca else 'the rest'})")
        ax.set_title(f"PCA of pooled activations ({method}) - layer {layer}")
        ax.legend()
        fig.tight_layout()
        path = out / f"pca_layer_{layer}.png"
        fig.savefig(path)
        paths.append(str(path))

    order = np.argsort(np.asarray(layer_ids), kind="stable")
    xs = [layer_ids[i] for i in order]
    fig = _new_figure((10, 6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, [float(explained[i, 0]) for i in order], marker="o")
    ax.set_xlabel("Layer id")
    ax.set_ylabel("Variance explained by PC1" if pca else "Pair-difference variance along the direction")
    ax.set_title(f"Explained variance of the steering direction by layer ({method})")
    ax.grid(True)
    ax.set_xticks(xs)
    fig.tight_layout()
    path = out / "macroscopic_analysis.png"
    fig.savefig(path)
    paths.append(str(path))
    return paths
