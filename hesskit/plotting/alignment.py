"""Alignment maps (:func:`hesskit.analysis.alignment`) on a 2-D input grid, as in
Sabanayagam et al. (arXiv 2306.07104, Fig. 1): one panel per eigenvector, titled
with its eigenvalue."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from hesskit.plotting._mpl import as_array, pyplot

__all__ = ["plot_alignment_maps"]


def plot_alignment_maps(A, xx, yy, eigenvalues, *, absolute: bool = True, points=None,
                        point_labels=None, ncols: Optional[int] = None, cmap: str = "viridis"):
    """Draws the alignment of each eigenvector over a 2-D grid of inputs.

    Args:
        A: ``(n_grid, k)`` alignments from ``alignment(obj, V, grid)`` where
            ``grid`` holds the points of ``xx``/``yy`` in row-major order
            (``torch.stack([xx.ravel(), yy.ravel()], 1)``).
        xx: ``(H, W)`` first input coordinate of the grid (as from ``meshgrid``,
            ``indexing="xy"``).
        yy: ``(H, W)`` second input coordinate.
        eigenvalues: ``(k,)`` eigenvalues of the columns of ``A``, shown in the titles.
        absolute: plot :math:`|A_i(x)|` (sign-free, the usual quantity) instead of
            the signed alignment.
        points: optional ``(m, 2)`` inputs (e.g. the training set) drawn on top.
        point_labels: optional ``(m,)`` class labels colouring ``points``.
        ncols: panels per row; default ``min(k, 5)``.
        cmap: the colour map of the maps.

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> xx, yy = torch.meshgrid(torch.linspace(-4, 4, 100), torch.linspace(-4, 4, 100),
        ...                         indexing="xy")
        >>> A = hk.alignment(obj, V, torch.stack([xx.ravel(), yy.ravel()], 1))
        >>> fig = plot_alignment_maps(A, xx, yy, values, points=X, point_labels=y)
    """
    plt = pyplot()

    A, xx, yy, lam = (as_array(t, n) for t, n in ((A, "A"), (xx, "xx"), (yy, "yy"),
                                                 (eigenvalues, "eigenvalues")))
    if xx.ndim != 2 or xx.shape != yy.shape:
        raise ValueError(f"xx, yy: expected two (H, W) grids of one shape, got {xx.shape} "
                         f"and {yy.shape}")
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2 or A.shape[0] != xx.size:
        raise ValueError(f"A: expected shape ({xx.size}, k) for a {xx.shape} grid, got {A.shape}")
    k = A.shape[1]
    if lam.shape != (k,):
        raise ValueError(f"eigenvalues: expected {k} values (one per column of A), got "
                         f"shape {lam.shape}")
    if ncols is None:
        ncols = min(k, 5)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    if point_labels is not None and points is None:
        raise ValueError("point_labels: given without points")
    values = np.abs(A) if absolute else A
    vmin, vmax = (0.0, 1.0) if absolute else (-1.0, 1.0)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows), squeeze=False,
                             sharex=True, sharey=True)
    for i, ax in enumerate(axes.ravel()):
        if i >= k:
            ax.set_visible(False)
            continue
        mesh = ax.pcolormesh(xx, yy, values[:, i].reshape(xx.shape), cmap=cmap, vmin=vmin,
                             vmax=vmax, shading="auto")
        if points is not None:
            pts = as_array(points, "points")
            ax.scatter(pts[:, 0], pts[:, 1], s=6, linewidths=0.2, edgecolors="k",
                       c=None if point_labels is None else as_array(point_labels, "point_labels"),
                       cmap="tab10")
        ax.set_title(f"$v_{{{i + 1}}}$, $\\lambda_{{{i + 1}}}$ = {lam[i]:.3g}")
        if i % ncols == 0:
            ax.set_ylabel("$x_2$")
        if i // ncols == nrows - 1 or i + ncols >= k:
            ax.set_xlabel("$x_1$")
    fig.colorbar(mesh, ax=axes.ravel().tolist(), label="$|A_i(x)|$" if absolute else "$A_i(x)$")
    return fig

