"""Eigenvalue histograms: a whole Hessian spectrum per setup, its outliers marked.

Sabanayagam et al. (arXiv 2306.07104) and Yao et al. (2018) read the number of
outlier eigenvalues -- about C - 1 for C classes (Papyan, 2020) -- off such
histograms; :func:`hesskit.spectral.count_outliers` gives a rule for it.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from hesskit.plotting._mpl import as_array, pyplot

__all__ = ["plot_eigenvalue_histograms", "draw_eigenvalue_histogram"]


def plot_eigenvalue_histograms(spectra: Mapping[str, Sequence[float]],
                               n_outliers: Mapping[str, int], *, bins: int = 50,
                               title: Optional[str] = None):
    """The full Hessian spectrum of each setup, log-count histogram, outliers in red.

    Args:
        spectra: setup name -> all eigenvalues.
        n_outliers: setup name -> number of outliers (the largest eigenvalues).
        bins: histogram bins between the smallest and largest eigenvalue.
        title: the figure title.

    Returns:
        The matplotlib ``Figure``, one panel per setup.
    """
    plt = pyplot()

    names = list(spectra)
    if not names:
        raise ValueError("spectra: expected at least one setup")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        draw_eigenvalue_histogram(ax, as_array(spectra[name], f"spectra[{name!r}]"),
                                  n_outliers[name], bins=bins, name=name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def draw_eigenvalue_histogram(ax, values, n_outliers: int, *, bins: int = 50,
                              name: Optional[str] = None):
    """One spectrum's histogram on the matplotlib axes ``ax``: log counts, the
    ``n_outliers`` largest eigenvalues in red and marked by triangles, the top three
    values written in a box, the title ``"<name>: P=..., k outliers"``.

    Args:
        ax: the matplotlib ``Axes`` to draw on.
        values: all eigenvalues, in any order.
        n_outliers: how many of the largest are outliers.
        bins: histogram bins between the smallest and largest eigenvalue.
        name: the setup's name, leading the title.
    """
    lam = np.sort(as_array(values, "values").reshape(-1))[::-1]
    k = int(n_outliers)
    edges = np.linspace(lam[-1], lam[0], bins + 1)
    ax.hist(lam[k:], bins=edges, log=True, color="tab:blue", label="bulk")
    if k:
        ax.hist(lam[:k], bins=edges, log=True, color="tab:red", label=f"outliers ({k})")
        ymax = ax.get_ylim()[1]
        ax.plot(lam[:k], np.full(k, ymax * 0.5), "v", color="tab:red", ms=5)
    top = ", ".join(f"$\\lambda_{{{j + 1}}}$={v:.3g}" for j, v in enumerate(lam[:3]))
    ax.text(0.97, 0.62, top, transform=ax.transAxes, ha="right", va="top", fontsize=7,
            bbox=dict(boxstyle="round", fc="w", ec="0.7"))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("count (log scale)")
    lead = f"{name}: " if name else ""
    ax.set_title(f"{lead}P={lam.size}, {k} outlier{'s' if k != 1 else ''}")
    ax.legend(fontsize=7, loc="center right", bbox_to_anchor=(1.0, 0.4))
