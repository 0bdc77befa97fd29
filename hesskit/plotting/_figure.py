"""The new figure every single-axes plotting function draws into when given no ``ax``."""
from __future__ import annotations

from hesskit.plotting._mpl import pyplot


def new_axes(ax, figsize: tuple[float, float]):
    """Returns ``ax``, or when it is None the axes of a new ``figsize`` figure.

    The new figure uses matplotlib's constrained layout, which sizes the margins
    to the tick labels, axis labels and title when the figure is drawn or saved:
    a plain ``fig.savefig(path)`` at the default size keeps them on the canvas,
    whatever their length. A given ``ax`` is left to its figure's layout.
    """
    if ax is not None:
        return ax
    _, ax = pyplot().subplots(figsize=figsize, layout="constrained")
    return ax
