"""Figures of Hessian ranks against predictions (Singh, Bachmann & Hofmann, NeurIPS 2021).

:func:`plot_rank_sweep` draws, for one swept quantity (sample size, width,
depth), the measured ranks of the loss Hessian :math:`H_L`, its outer-product part
:math:`H_o` and its functional part :math:`H_F` as lines and the predictions of
:func:`hesskit.theory.hessian_rank_predictions` as dots of the same colour;
:func:`plot_rank_sweeps` lays out a grid of them (one row per loss, one column per
sweep).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["plot_rank_sweep", "plot_rank_sweeps", "HESSIAN_LABELS"]

#: Legend names of the keys used by ``hessian_rank_predictions``.
HESSIAN_LABELS = {"loss": "$H_L$ (loss)", "outer": "$H_o$ (outer / GGN)",
                  "functional": "$H_F$ (functional)"}
_COLORS = {"loss": "tab:blue", "outer": "tab:orange", "functional": "tab:green"}


def plot_rank_sweep(x: Sequence[float], empirical: Mapping[str, Sequence[float]],
                    predicted: Optional[Mapping[str, Sequence[float]]] = None, ax=None, *,
                    xlabel: str = "", title: Optional[str] = None,
                    n_params: Optional[Sequence[float]] = None,
                    extra: Optional[Mapping[str, Sequence[float]]] = None,
                    extra_label: str = "", legend: bool = True):
    """Measured ranks as lines, predicted ranks as dots, for the three Hessians.

    Args:
        x: the swept values.
        empirical: ``{"loss" | "outer" | "functional": ranks}`` measured at each ``x``.
        predicted: the same keys, the predicted ranks (dots); optional.
        ax: a matplotlib ``Axes``; default a new figure.
        xlabel: the name of the swept quantity.
        title: the axes title.
        n_params: when given, every rank is divided by the parameter count at that
            ``x`` (rank / #params on the y axis).
        extra: optional further measured ranks (e.g. a ReLU network), dashed.
        extra_label: the legend suffix of ``extra``, e.g. ``"ReLU"``.
        legend: draw a legend.

    Returns:
        The ``Axes``.
    """
    import matplotlib.pyplot as plt

    x = np.asarray(x, dtype=np.float64)
    scale = np.asarray(n_params, dtype=np.float64) if n_params is not None else np.ones_like(x)
    if scale.shape != x.shape:
        raise ValueError(f"n_params: expected {x.size} values, got {scale.size}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    for key, ranks in empirical.items():
        ranks = np.asarray(ranks, dtype=np.float64)
        if ranks.shape != x.shape:
            raise ValueError(f"empirical[{key!r}]: expected {x.size} values, got {ranks.size}")
        color = _COLORS.get(key)
        ax.plot(x, ranks / scale, "-", color=color, lw=1.5,
                label=HESSIAN_LABELS.get(key, key) + " measured")
        if predicted is not None and key in predicted:
            ax.plot(x, np.asarray(predicted[key], dtype=np.float64) / scale, "o", color=color,
                    ms=5, mfc="none", mew=1.3, label="predicted")
        if extra is not None and key in extra:
            ax.plot(x, np.asarray(extra[key], dtype=np.float64) / scale, "--", color=color,
                    lw=1.0, alpha=0.8, label=f"{extra_label} measured")
    if np.allclose(x, np.round(x)):
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rank / #params" if n_params is not None else "rank")
    if title:
        ax.set_title(title)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        seen = {}
        for h, lab in zip(handles, labels):
            seen.setdefault(lab, h)   # one "predicted" entry, not three
        ax.legend(seen.values(), seen.keys(), fontsize=7)
    return ax


def plot_rank_sweeps(sweeps: Mapping[str, Mapping], losses: Sequence[str], *,
                     relative: bool = False, title: Optional[str] = None):
    """A grid of :func:`plot_rank_sweep` panels: one row per loss, one column per sweep.

    Args:
        sweeps: sweep name -> ``{"x": [...], "xlabel": str, "n_params": [...],
            "<loss>": {"empirical": {...}, "predicted": {...}, "relu": {...} (optional)}}``.
        losses: the loss keys to draw, one row each (e.g. ``["mse", "ce"]``).
        relative: divide ranks by the parameter count.
        title: the figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    names = list(sweeps)
    fig, axes = plt.subplots(len(losses), len(names), figsize=(4.4 * len(names),
                                                               3.4 * len(losses)),
                             squeeze=False)
    for i, loss in enumerate(losses):
        for j, name in enumerate(names):
            s = sweeps[name]
            part = s[loss]
            plot_rank_sweep(s["x"], part["empirical"], part.get("predicted"), axes[i][j],
                            xlabel=s["xlabel"], title=f"{loss.upper()}: rank vs {s['xlabel']}",
                            n_params=s["n_params"] if relative else None,
                            extra=part.get("relu"), extra_label="ReLU",
                            legend=(i == 0 and j == 0) or part.get("relu") is not None)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
