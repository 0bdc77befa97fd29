"""Figures of the large-batch study (Yao, Gholami, Lei, Keutzer & Mahoney, 2018).

- :func:`plot_batch_spectra`: the top eigenvalues of the final-layer Hessian for
  every batch size (log scale), and the top eigenvalue against the batch size;
- :func:`plot_batch_landscapes`: the loss surfaces along the top two eigenvectors as
  the study draws them, 3-D plots, one per batch size, on one shared z scale so that
  their sharpness can be compared.

Landscapes may be :class:`~hesskit.analysis.Landscape` records or their
``to_dict()`` form (as read back from JSON).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from hesskit.plotting._mpl import as_array

__all__ = ["plot_batch_spectra", "plot_batch_landscapes"]


def _landscape(record) -> dict:
    record = record.to_dict() if hasattr(record, "to_dict") else record
    for key in ("x", "y", "loss"):
        if record.get(key) is None:
            raise ValueError(f"landscapes: each needs a 2-D grid with {key!r}")
    return {key: as_array(record[key], f"landscapes[...][{key!r}]") for key in ("x", "y", "loss")}


def plot_batch_spectra(top_eigenvalues: Mapping[int, Sequence[float]], *,
                       n_outliers: Optional[Mapping[int, int]] = None,
                       title: Optional[str] = None):
    """Top eigenvalues per batch size, and the top eigenvalue vs the batch size.

    Args:
        top_eigenvalues: batch size -> its largest eigenvalues, in any order.
        n_outliers: batch size -> number of outliers (marked by a filled marker).
        title: the figure title.

    Returns:
        The matplotlib ``Figure`` (two panels).
    """
    import matplotlib.pyplot as plt

    sizes = sorted(top_eigenvalues, key=int)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for color, bs in zip(colors, sizes):
        lam = np.sort(as_array(top_eigenvalues[bs], "top_eigenvalues"))[::-1]
        idx = np.arange(1, lam.size + 1)
        k = int(n_outliers[bs]) if n_outliers is not None else 0
        label = f"batch {bs}" + (f" ({k} outliers)" if n_outliers is not None else "")
        ax.plot(idx, np.clip(lam, 1e-12, None), "-", color=color, lw=1, label=label)
        ax.plot(idx[:k], np.clip(lam[:k], 1e-12, None), "o", color=color, ms=4)
        ax.plot(idx[k:], np.clip(lam[k:], 1e-12, None), "o", color=color, ms=4, mfc="none")
    ax.set_yscale("log")
    ax.set_xlabel("eigen-index $i$")
    ax.set_ylabel("eigenvalue $\\lambda_i$ (log scale)")
    ax.set_title("top eigenvalues of the final-layer Hessian")
    ax.legend(fontsize=7)
    top = [float(np.max(as_array(top_eigenvalues[bs], "top_eigenvalues"))) for bs in sizes]
    ax2.plot([int(s) for s in sizes], top, "o-", color="tab:red")
    for s, v in zip(sizes, top):
        ax2.annotate(f"{v:.3g}", (int(s), v), textcoords="offset points", xytext=(0, 6),
                     ha="center", fontsize=8)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks([int(s) for s in sizes], [str(s) for s in sizes])
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("$\\lambda_{max}$")
    ax2.set_title("top eigenvalue vs batch size")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_batch_landscapes(landscapes: Mapping[int, object], *,
                          labels: Sequence[str] = ("$c_1$ (along $v_2$)", "$c_2$ (along $v_1$)"),
                          title: Optional[str] = None):
    """Loss surfaces as the study shows them: 3-D plots on one z scale.

    One ``mplot3d`` surface per batch size (the study's ``plot_surface`` with the
    ``plasma`` colour map), every panel with the same z range and colour scale --
    from ``min(0, lowest loss)`` to the highest loss of all panels -- so that the
    sharpness of the surfaces can be compared by eye, as in the study's figures,
    which share z in [0, 0.5].

    Args:
        landscapes: batch size -> 2-D landscape (``loss[i, j]`` at ``(x[i], y[j])``).
        labels: names of the two grid coordinates; the default is the study's grid
            :math:`W + c_1 v_2 + c_2 v_1` (``x`` along :math:`v_2`, ``y`` along :math:`v_1`).
        title: the figure title.

    Returns:
        The matplotlib ``Figure``: one 3-D panel per batch size, in increasing order, two
        to a row.
    """
    import matplotlib.pyplot as plt

    sizes = sorted(landscapes, key=int)
    if not sizes:
        raise ValueError("landscapes: expected at least one")
    grids = {bs: _landscape(landscapes[bs]) for bs in sizes}
    lo = min(0.0, min(g["loss"].min() for g in grids.values()))
    hi = max(g["loss"].max() for g in grids.values())
    hi = hi if hi > lo else lo + 1.0
    cols = min(2, len(sizes))
    rows = -(-len(sizes) // cols)
    fig = plt.figure(figsize=(5.0 * cols, 4.0 * rows))
    for k, bs in enumerate(sizes, start=1):
        g = grids[bs]
        ax = fig.add_subplot(rows, cols, k, projection="3d")
        ax.set_box_aspect(None, zoom=0.92)   # room for the axis labels inside the panel
        X, Y = np.meshgrid(g["x"], g["y"], indexing="ij")
        ax.plot_surface(X, Y, g["loss"], cmap="plasma", vmin=lo, vmax=hi, shade=True,
                        rstride=1, cstride=1, linewidth=0)
        ax.set_zlim(lo, hi)
        ax.set_title(f"batch {bs}\nloss {g['loss'].min():.3g} to {g['loss'].max():.3g}",
                     fontsize=9)
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
        ax.set_zlabel("training loss", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.0, right=0.94, bottom=0.02, top=0.9 if title else 0.95,
                        wspace=0.1, hspace=0.12)
    return fig
