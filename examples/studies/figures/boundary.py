"""Figures of the decision-boundary study (Sabanayagam et al., arXiv 2306.07104).

- :func:`plot_boundary_maps`: the model's decision regions, the boundary
  reconstructed from the top eigenvectors, and the alignment maps
  :math:`|A_i(x)|` of the top eigenvectors (each titled with :math:`\\lambda_i`),
  with the decision boundary drawn on every panel, optionally marked points
  (e.g. the input of the margin estimate and the extreme training points) and the
  whole spectrum's histogram, outliers marked;
- :func:`plot_boundary_1d`: the same for one input dimension (the study's toy
  set): the decision function along :math:`x`, the alignments
  :math:`|A_i(x)|`, and the training data, the boundary points marked;
- :func:`plot_training_alignment`: the alignment of every training point with
  every eigenvector against the eigen-index, with the random-direction threshold
  that defines the generalization measure :math:`G_\\theta`.

All inputs are tensors, numpy arrays or nested lists (as read back from JSON).
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from hesskit.plotting._mpl import as_array
from hesskit.plotting.histogram import draw_eigenvalue_histogram

__all__ = ["plot_boundary_maps", "plot_boundary_1d", "plot_training_alignment"]

#: Marker styles of the ``marked`` point sets, in order.
MARKERS = ("*", "P", "X", "D", "^", "v")


def plot_boundary_maps(xx, yy, predicted, alignments, eigenvalues, *, reconstruction=None,
                       reconstruction_k: Optional[int] = None, points=None, point_labels=None,
                       marked: Optional[Mapping[str, Sequence]] = None, spectrum=None,
                       bins: int = 200, ncols: int = 4, title: Optional[str] = None):
    """Decision regions, boundary reconstruction and alignment maps on a 2-D grid.

    Args:
        xx, yy: ``(H, W)`` grid coordinates (``meshgrid(..., indexing="xy")``).
        predicted: ``(H*W,)`` or ``(H, W)`` predicted class of every grid point.
        alignments: ``(H*W, k)`` alignments :math:`A_i(x)` of the top ``k``
            eigenvectors (row-major grid order); their absolute values are drawn.
        eigenvalues: ``(k,)`` the matching eigenvalues (panel titles).
        reconstruction: optional ``(H*W,)`` boundary reconstruction, e.g.
            :math:`\\sum_{j\\le k} \\lambda_j |A_j(x)|`, drawn in the second panel.
        reconstruction_k: how many eigenvectors the reconstruction used (title).
        points, point_labels: optional ``(m, 2)`` training inputs and their labels.
        marked: optional legend label -> ``(j, 2)`` (or one ``(2,)``) points, drawn
            with large markers on the decision-region panel (e.g. the margin
            estimate's :math:`x_b` and extreme training points).
        spectrum: optional ``(all_eigenvalues, n_outliers)``: the whole spectrum's
            histogram (log counts, outliers in red) as the last panel
            (:func:`hesskit.plotting.histogram.draw_eigenvalue_histogram`).
        bins: the histogram's bins.
        ncols: panels per row.
        title: the figure title.

    Returns:
        The matplotlib ``Figure``. The decision boundary (where the predicted class
        changes) is drawn as a white line on every panel.
    """
    import matplotlib.pyplot as plt

    xx, yy = as_array(xx, "xx"), as_array(yy, "yy")
    if xx.ndim != 2 or xx.shape != yy.shape:
        raise ValueError(f"xx, yy: expected two (H, W) grids of one shape, got {xx.shape}, "
                         f"{yy.shape}")
    pred = as_array(predicted, "predicted").reshape(xx.shape)
    A = np.abs(as_array(alignments, "alignments"))
    A = A.reshape(xx.size, -1)
    lam = as_array(eigenvalues, "eigenvalues").reshape(-1)
    if lam.size != A.shape[1]:
        raise ValueError(f"eigenvalues: expected {A.shape[1]} values, got {lam.size}")
    classes = np.unique(pred)
    panels = 1 + (reconstruction is not None) + A.shape[1] + (spectrum is not None)
    nrows = math.ceil(panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.0 * nrows), squeeze=False,
                             layout="constrained")
    axes = axes.ravel()
    pts = as_array(points, "points") if points is not None else None
    lab = as_array(point_labels, "point_labels") if point_labels is not None else None

    def draw_boundary(ax, color):
        # the boundary of each predicted class region; shared edges coincide
        if classes.size > 1:
            for c in classes:
                ax.contour(xx, yy, (pred == c).astype(float), levels=[0.5], colors=color,
                           linewidths=1.1)
        if pts is not None:
            ax.scatter(pts[:, 0], pts[:, 1], s=5, c=lab, cmap="tab10", vmin=0, vmax=9,
                       edgecolors="k", linewidths=0.2)

    ax = axes[0]
    ax.pcolormesh(xx, yy, pred, cmap="tab10", vmin=0, vmax=9, alpha=0.45, shading="auto")
    draw_boundary(ax, "k")
    for (name, where), marker in zip((marked or {}).items(), MARKERS):
        where = as_array(where, f"marked[{name!r}]").reshape(-1, 2)
        ax.scatter(where[:, 0], where[:, 1], s=90, marker=marker, c="w", edgecolors="k",
                   linewidths=1.0, label=name, zorder=5)
    if marked:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    ax.set_title("decision regions", fontsize=10)
    i = 1
    if reconstruction is not None:
        ax = axes[i]
        rec = as_array(reconstruction, "reconstruction").reshape(xx.shape)
        ax.pcolormesh(xx, yy, rec, cmap="magma", shading="auto")
        draw_boundary(ax, "w")
        k = f"{reconstruction_k}" if reconstruction_k is not None else "k"
        ax.set_title(f"reconstruction, k = {k}", fontsize=10)
        i += 1
    mesh = None
    for j in range(A.shape[1]):
        ax = axes[i]
        mesh = ax.pcolormesh(xx, yy, A[:, j].reshape(xx.shape), cmap="viridis", vmin=0, vmax=1,
                             shading="auto")
        draw_boundary(ax, "w")
        ax.set_title(f"$|A_{{{j + 1}}}(x)|$, $\\lambda_{{{j + 1}}}$ = {lam[j]:.3g}", fontsize=10)
        i += 1
    maps = axes[:i]
    for ax in maps[1:]:
        ax.sharex(maps[0])
        ax.sharey(maps[0])
    for j, ax in enumerate(maps):
        if j % ncols == 0:
            ax.set_ylabel("$x_2$")
        if j + ncols >= i:   # the lowest map of its column
            ax.set_xlabel("$x_1$")
    if spectrum is not None:
        values, n_outliers = spectrum
        draw_eigenvalue_histogram(axes[i], values, n_outliers, bins=bins)
        axes[i].set_title(f"spectrum ({bins} bins): {int(n_outliers)} outliers", fontsize=10)
        i += 1
    for ax in axes[i:]:
        ax.set_visible(False)
    if mesh is not None:
        fig.colorbar(mesh, ax=maps.tolist(), label="$|A_i(x)|$", shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def plot_boundary_1d(x, outputs, alignments, eigenvalues, *, points=None, point_labels=None,
                     boundary=None, marked: Optional[Mapping[str, Sequence]] = None,
                     title: Optional[str] = None):
    """Decision function, alignments and data along a 1-D input grid.

    The 1-D picture of Sabanayagam et al. (arXiv 2306.07104, Fig. 1): three panels
    sharing the input axis,

    1. the network's outputs :math:`f(x)_c` for every class :math:`c` (the decision
       function), the predicted class shaded;
    2. the alignments :math:`|A_i(x)|` of the top eigenvectors, one line each,
       labelled with :math:`\\lambda_i`;
    3. the training data on a line, coloured by class, and the ``marked`` points.

    The boundary points (where the predicted class changes) are dotted vertical
    lines on every panel.

    Args:
        x: ``(n,)`` increasing grid of inputs.
        outputs: ``(n, C)`` network outputs on the grid.
        alignments: ``(n, k)`` alignments :math:`A_i(x)` (absolute values drawn).
        eigenvalues: ``(k,)`` the matching eigenvalues (legend).
        points, point_labels: optional ``(m,)`` or ``(m, 1)`` training inputs and labels.
        boundary: optional boundary points (default: midpoints of the grid cells
            where the arg-max of ``outputs`` changes).
        marked: optional legend label -> input positions, drawn on the data panel.
        title: the figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    x = as_array(x, "x").reshape(-1)
    out = as_array(outputs, "outputs")
    A = np.abs(as_array(alignments, "alignments"))
    if out.ndim != 2 or out.shape[0] != x.size:
        raise ValueError(f"outputs: expected shape ({x.size}, C), got {out.shape}")
    if A.ndim != 2 or A.shape[0] != x.size:
        raise ValueError(f"alignments: expected shape ({x.size}, k), got {A.shape}")
    lam = as_array(eigenvalues, "eigenvalues").reshape(-1)
    if lam.size != A.shape[1]:
        raise ValueError(f"eigenvalues: expected {A.shape[1]} values, got {lam.size}")
    pred = out.argmax(1)
    if boundary is None:
        change = np.flatnonzero(pred[1:] != pred[:-1])
        boundary = (x[change] + x[change + 1]) / 2
    boundary = as_array(boundary, "boundary").reshape(-1)
    fig, axes = plt.subplots(3, 1, figsize=(7.5, 6.4), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [1.2, 1.2, 0.5]})
    ax = axes[0]
    cmap = plt.get_cmap("tab10")
    edges = np.concatenate([[x[0]], (x[1:] + x[:-1]) / 2, [x[-1]]])
    for c in range(out.shape[1]):
        ax.plot(x, out[:, c], color=cmap(c), label=f"$f(x)_{{{c}}}$")
    runs = np.concatenate([[0], np.flatnonzero(pred[1:] != pred[:-1]) + 1, [x.size]])
    for a, b in zip(runs[:-1], runs[1:]):   # the predicted class, shaded run by run
        ax.axvspan(edges[a], edges[b], color=cmap(pred[a]), alpha=0.12, lw=0)
    ax.set_ylabel("decision function")
    ax.legend(fontsize=7, loc="best")
    ax = axes[1]
    for i in range(A.shape[1]):
        ax.plot(x, A[:, i], lw=1.4 if i < 2 else 0.9,
                label=f"$|A_{{{i + 1}}}(x)|$, $\\lambda_{{{i + 1}}}$ = {lam[i]:.3g}")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("alignment")
    ax.legend(fontsize=7, loc="best")
    ax = axes[2]
    ax.axhline(0, color="0.6", lw=0.8, zorder=0)
    if points is not None:
        pts = as_array(points, "points").reshape(-1)
        lab = as_array(point_labels, "point_labels") if point_labels is not None else None
        ax.scatter(pts, np.zeros_like(pts), c=lab, cmap="tab10", vmin=0, vmax=9, s=50,
                   edgecolors="k", linewidths=0.5, zorder=3)
    for (name, where), marker in zip((marked or {}).items(), MARKERS):
        where = as_array(where, f"marked[{name!r}]").reshape(-1)
        ax.scatter(where, np.full(where.size, 0.5), s=80, marker=marker, c="w",
                   edgecolors="k", linewidths=1.0, label=name, zorder=4)
    if marked:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    ax.set_ylabel("data")
    ax.set_xlabel("input $x$")
    for ax in axes:
        for b in boundary:
            ax.axvline(b, color="k", ls=":", lw=1)
    axes[0].set_xlim(x[0], x[-1])
    if title:
        fig.suptitle(title)
    return fig


def plot_training_alignment(alignments: Mapping[str, Sequence],
                            max_alignment: Mapping[str, Sequence],
                            threshold: Mapping[str, float], measure: Mapping[str, float], *,
                            title: Optional[str] = None):
    """Alignment of every training point with each eigenvector, vs the eigen-index.

    Args:
        alignments: setup -> ``(n, K)`` :math:`|A_i(x_n)|` for the top ``K``
            eigenvectors (dots, one per training point and eigenvector).
        max_alignment: setup -> ``(P,)`` :math:`\\max_n |A_i(x_n)|` for all
            eigenvectors (line).
        threshold: setup -> the random-direction threshold (dashed line).
        measure: setup -> :math:`G_\\theta` (in the title).
        title: the figure title.

    Returns:
        The matplotlib ``Figure``, one panel per setup, eigen-index on a log axis.
    """
    import matplotlib.pyplot as plt

    names = list(alignments)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False,
                             sharey=True)
    for ax, name in zip(axes[0], names):
        A = np.abs(as_array(alignments[name], "alignments"))
        n, K = A.shape
        idx = np.broadcast_to(np.arange(1, K + 1), (n, K))
        ax.scatter(idx.ravel(), A.ravel(), s=2, alpha=0.3, color="tab:blue", rasterized=True,
                   label="$|A_i(x_n)|$, training points")
        top = as_array(max_alignment[name], "max_alignment")
        ax.plot(np.arange(1, top.size + 1), top, color="k", lw=0.8, label="$\\max_n |A_i(x_n)|$")
        ax.axhline(float(threshold[name]), color="tab:red", ls="--", lw=1,
                   label=f"random threshold {float(threshold[name]):.3f}")
        ax.set_xscale("log")
        ax.set_xlabel("eigen-index $i$ (descending $\\lambda$)")
        ax.set_title(f"{name}: $G_\\theta$ = {float(measure[name]):.4f}")
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("alignment $|A_i(x)|$")
    axes[0][0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
