"""Figures of spectral densities (:func:`hesskit.spectral_density`)."""
from __future__ import annotations

from typing import Optional

from hesskit.spectral.results import Density
from hesskit.plotting._mpl import pyplot

__all__ = ["plot_density"]


def plot_density(
    density: Density,
    ax=None,
    log: bool = True,
    *,
    floor: float = 1e-8,
    title: Optional[str] = None,
    **line_kwargs,
):
    """Draws an eigenvalue density, as in Ghorbani et al. (2019) and PyHessian.

    The smoothed density is drawn against the eigenvalue; with ``log=True``
    the density axis is logarithmic, which shows both the bulk near zero and
    the isolated outliers; values below ``floor · max(density)`` are clipped
    to that level so that the empty gaps between outliers stay on the plot.

    Args:
        density: the result of :func:`hesskit.spectral_density`.
        ax: a matplotlib ``Axes`` to draw into; default a new figure.
        log: a logarithmic density axis.
        floor: the relative level below which the density is clipped (``log=True``).
        title: the axes title.
        **line_kwargs: passed to ``Axes.plot`` (``color``, ``label``, ...).

    Returns:
        The ``Axes``.

    Example:
        >>> import torch, hesskit as hk
        >>> from hesskit.plotting.density import plot_density
        >>> d = hk.spectral_density(torch.diag(torch.linspace(0, 1, 200, dtype=torch.float64)))
        >>> ax = plot_density(d, log=False)
        >>> ax.get_xlabel()
        'eigenvalue'
    """
    plt = pyplot()

    if not isinstance(density, Density):
        raise TypeError(f"density: expected a Density, got {type(density).__name__}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0.0 < floor < 1.0:
        raise ValueError(f"floor: expected a float in (0, 1), got {floor!r}")
    grid = density.grid.detach().cpu().double().numpy()
    values = density.density.detach().cpu().double().numpy()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    if log:
        values = values.clip(min=floor * values.max())
        ax.set_yscale("log")
    ax.plot(grid, values, **line_kwargs)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)" if log else "density")
    if title is not None:
        ax.set_title(title)
    return ax
