"""Figures of loss landscapes (:func:`hesskit.analysis.loss_landscape`)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from hesskit.analysis.landscape import Landscape
from hesskit.plotting._mpl import pyplot

__all__ = ["plot_landscape"]


def plot_landscape(landscape: Landscape, ax=None, *, labels: Optional[Sequence[str]] = None,
                   levels: int = 30, log: bool = False, title: Optional[str] = None):
    """Draws a 1-D loss curve or a 2-D loss contour map.

    A 1-D landscape is drawn as the curve :math:`a \\mapsto L(\\theta + a d_1)` with
    the centre marked; a 2-D landscape as filled contours of
    :math:`L(\\theta + a d_1 + b d_2)` with contour lines, a colour bar and the
    centre marked.

    Args:
        landscape: the result of ``loss_landscape``.
        ax: a matplotlib ``Axes`` to draw into; default a new figure.
        labels: the axis names of the directions, e.g. ``("$v_1$", "$v_2$")``;
            default ``"direction 1"``, ``"direction 2"``.
        levels: the number of contour levels (2-D).
        log: plot :math:`\\log_{10}` of the loss (it must then be positive).
        title: the axes title.

    Returns:
        The ``Axes``.

    Example:
        >>> ax = plot_landscape(loss_landscape(obj, top2, torch.linspace(-.3, .3, 13)),
        ...                     labels=("$v_1$", "$v_2$"))
        >>> ax.figure.savefig("surface.png")
    """
    plt = pyplot()

    if not isinstance(landscape, Landscape):
        raise TypeError(f"landscape: expected a Landscape, got {type(landscape).__name__}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels: expected an int of at least 2, got {levels!r}")
    names = list(labels) if labels is not None else ["direction 1", "direction 2"]
    if len(names) < landscape.ndim:
        raise ValueError(f"labels: expected {landscape.ndim} names, got {len(names)}")
    loss = landscape.loss.detach().cpu().double().numpy()
    if log:
        if not (loss > 0).all():
            raise ValueError("log: the loss has non-positive values; use log=False")
        loss = np.log10(loss)
    quantity = "log10 loss" if log else "loss"
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4) if landscape.ndim == 2 else (5, 3.5))
    x = landscape.x.detach().cpu().double().numpy()
    if landscape.ndim == 1:
        ax.plot(x, loss, marker="." if x.size <= 30 else None)
        ax.axvline(0.0, color="0.6", lw=0.8, ls="--")
        ax.set_xlabel(names[0])
        ax.set_ylabel(quantity)
    else:
        y = landscape.y.detach().cpu().double().numpy()
        # loss[i, j] sits at (x[i], y[j]): contour wants rows along y
        filled = ax.contourf(x, y, loss.T, levels=levels, cmap="viridis")
        ax.contour(x, y, loss.T, levels=filled.levels, colors="k", linewidths=0.3)
        ax.figure.colorbar(filled, ax=ax, label=quantity)
        ax.plot([0.0], [0.0], marker="*", color="w", markeredgecolor="k", ms=10)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    if title is not None:
        ax.set_title(title)
    return ax
