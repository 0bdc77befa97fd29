"""Figures of the large-batch study (Yao, Gholami, Lei, Keutzer & Mahoney, 2018).

- :func:`plot_batch_spectra`: the top eigenvalues of the final-layer Hessian for
  every batch size (log scale), and the top eigenvalue against the batch size;
- :func:`plot_batch_landscapes`: the 2-D loss surfaces along the top two
  eigenvectors, one panel per batch size, on one shared colour scale so that their
  sharpness can be compared, plus the 1-D cross-sections along :math:`v_1`.

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


def plot_batch_landscapes(landscapes: Mapping[int, object], *, levels: int = 20,
                          title: Optional[str] = None):
    """Loss surfaces along the top-2 eigenvectors, one shared colour scale.

    Args:
        landscapes: batch size -> 2-D landscape (``loss[i, j]`` at ``(x[i], y[j])``).
        levels: contour levels (shared by every panel).
        title: the figure title.

    Returns:
        The matplotlib ``Figure``: one contour panel per batch size and a last panel
        with the cross-sections :math:`L(\\theta + a v_1)` through the centre.
    """
    import matplotlib.pyplot as plt

    sizes = sorted(landscapes, key=int)
    if not sizes:
        raise ValueError("landscapes: expected at least one")
    grids = {bs: _landscape(landscapes[bs]) for bs in sizes}
    lo = min(g["loss"].min() for g in grids.values())
    hi = max(g["loss"].max() for g in grids.values())
    bounds = np.linspace(lo, hi if hi > lo else lo + 1, levels + 1)
    n = len(sizes) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False, layout="constrained")
    axes = axes[0]
    filled = None
    for ax, bs in zip(axes, sizes):
        g = grids[bs]
        filled = ax.contourf(g["x"], g["y"], g["loss"].T, levels=bounds, cmap="viridis")
        ax.contour(g["x"], g["y"], g["loss"].T, levels=bounds, colors="k", linewidths=0.3)
        ax.plot([0], [0], "*", color="w", mec="k", ms=9)
        ax.set_title(f"batch {bs}\nloss {g['loss'].min():.3g} to {g['loss'].max():.3g}",
                     fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("along $v_1$")
    axes[0].set_ylabel("along $v_2$")
    fig.colorbar(filled, ax=axes[:-1].tolist(), label="training loss", shrink=0.85)
    ax = axes[-1]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for color, bs in zip(colors, sizes):
        g = grids[bs]
        j = int(np.argmin(np.abs(g["y"])))
        ax.plot(g["x"], g["loss"][:, j], "o-", ms=2.5, color=color, label=f"batch {bs}")
    ax.set_xlabel("along $v_1$")
    ax.set_ylabel("training loss")
    ax.set_title("cross-sections through the centre\n(along $v_1$)", fontsize=9)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
