"""Figures of Sankar et al. (AAAI 2021): layerwise spectra and Hessian trace regularization.

Sankar, Khasbage, Vigneswaran & Balasubramanian, "A deeper look at the Hessian
eigenspectrum of deep neural networks and its applications to regularization":

* :func:`plot_layer_distances`: the distance between each layer's spectral density
  and the full network's against the layer's relative depth, one curve per epoch
  (their figure of "which layer looks like the whole network");
* :func:`plot_layer_densities`: the full network's density with every layer's
  density overlaid;
* :func:`plot_history`: quantities against the epoch (top eigenvalue, trace),
  one line per series;
* :func:`plot_method_bars`: mean ± std of a metric per training method (the
  SGD / SGD + L2 / SGD + HTR comparison), with optional reference values.

Every function takes plain numbers (as stored in the examples' JSON) or
:class:`~hesskit.Density` records, draws into ``ax`` (a new figure when None) and
returns the ``Axes``.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

from hesskit.plotting._figure import new_axes
from hesskit.plotting.density import plot_density
from hesskit.spectral.results import Density

__all__ = ["plot_layer_distances", "plot_layer_densities", "plot_history", "plot_method_bars"]


def _check_series(series: Mapping, name: str) -> None:
    if not isinstance(series, Mapping) or not series:
        raise ValueError(f"{name}: expected a non-empty mapping label -> (x, y), got {series!r}")
    for label, pair in series.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or len(pair[0]) != len(pair[1]):
            raise ValueError(f"{name}[{label!r}]: expected a pair (x, y) of equal lengths")


def plot_layer_distances(series: Mapping[str, tuple], ax=None, *, log: bool = False,
                         ylabel: str = "distance to the full spectrum",
                         title: Optional[str] = None, layer_names: Optional[Sequence[str]] = None,
                         styles: Optional[Mapping[str, dict]] = None):
    """Distance between each layer's spectrum and the full network's, against relative depth.

    Args:
        series: ``{label: (depths, distances)}``, e.g. one entry per epoch
            (``"epoch 3"``); depths in [0, 1] (first to last layer).
        ax: the ``Axes`` to draw into; default a new figure.
        log: a logarithmic distance axis.
        ylabel: the distance axis label.
        title: the axes title.
        layer_names: names written under the depth ticks of the first series.
        styles: ``{label: plot keyword arguments}`` (e.g. a thick line for the mean).

    Returns:
        The ``Axes``; the minimum of each curve is marked with a star.

    Example:
        >>> ax = plot_layer_distances({"epoch 1": ([0, .5, 1], [.3, .1, .2])})
        >>> ax.get_xlabel()
        'relative depth'
    """
    _check_series(series, "series")
    ax = new_axes(ax, (5, 3.5))
    for label, (depths, distances) in series.items():
        line, = ax.plot(depths, distances, label=str(label),
                        **{"marker": "o", **(styles or {}).get(label, {})})
        best = min(range(len(distances)), key=lambda i: distances[i])
        ax.plot([depths[best]], [distances[best]], marker="*", ms=13, color=line.get_color(),
                ls="none")
    if layer_names is not None:
        depths = list(series.values())[0][0]
        if len(layer_names) != len(depths):
            raise ValueError(f"layer_names: expected {len(depths)} names, got {len(layer_names)}")
        ax.set_xticks(list(depths))
        ax.set_xticklabels([f"{d:.2f}\n{n}" for d, n in zip(depths, layer_names)], fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("relative depth")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_layer_densities(full: Density, layers: Mapping[str, Density], ax=None, *,
                         log: bool = True, title: Optional[str] = None):
    """The full Hessian's spectral density with each layer block's density overlaid.

    Args:
        full: the full network's :class:`~hesskit.Density`.
        layers: ``{layer name: Density}`` of the diagonal blocks.
        ax: the ``Axes`` to draw into; default a new figure.
        log: a logarithmic density axis.
        title: the axes title.

    Returns:
        The ``Axes``.

    Example:
        >>> import torch, hesskit as hk
        >>> A = torch.diag(torch.linspace(0, 1, 50, dtype=torch.float64))
        >>> d = hk.spectral_density(A, n_steps=20)
        >>> ax = plot_layer_densities(d, {"fc": d})
        >>> len(ax.get_lines())
        2
    """
    if not isinstance(full, Density):
        raise TypeError(f"full: expected a Density, got {type(full).__name__}")
    if not isinstance(layers, Mapping):
        raise TypeError(f"layers: expected a mapping name -> Density, got {type(layers).__name__}")
    ax = new_axes(ax, (6, 3.8))
    plot_density(full, ax=ax, log=log, color="black", lw=2.0, label="full network")
    for name, density in layers.items():
        plot_density(density, ax=ax, log=log, lw=1.0, alpha=0.85, label=f"layer {name}")
    ax.legend(fontsize=7)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_history(series: Mapping[str, tuple], ax=None, *, xlabel: str = "epoch",
                 ylabel: str = "", log: bool = False,
                 bands: Optional[Mapping[str, Sequence]] = None,
                 title: Optional[str] = None, styles: Optional[Mapping[str, dict]] = None):
    """Quantities along training (top eigenvalue, trace, ...), one line per series.

    Args:
        series: ``{label: (steps, values)}``.
        ax: the ``Axes`` to draw into; default a new figure.
        xlabel: the step axis label.
        ylabel: the value axis label.
        log: a logarithmic value axis.
        bands: ``{label: stds}`` drawn as shaded ``values ± std`` bands.
        title: the axes title.
        styles: ``{label: plot keyword arguments}``.

    Returns:
        The ``Axes``.

    Example:
        >>> ax = plot_history({"SGD": ([1, 2, 3], [5.0, 4.0, 3.5])}, ylabel="trace")
        >>> ax.get_ylabel()
        'trace'
    """
    _check_series(series, "series")
    ax = new_axes(ax, (5, 3.5))
    for label, (steps, values) in series.items():
        kwargs = {"marker": "o" if len(steps) <= 30 else None, **(styles or {}).get(label, {})}
        line, = ax.plot(steps, values, label=str(label), **kwargs)
        if bands and label in bands:
            std = bands[label]
            ax.fill_between(steps, [v - s for v, s in zip(values, std)],
                            [v + s for v, s in zip(values, std)], color=line.get_color(), alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_method_bars(names: Sequence[str], means: Sequence[float], stds: Sequence[float],
                     ax=None, *,
                     reference: Optional[Sequence[float]] = None, reference_label: str = "paper",
                     ylabel: str = "test error (%)", title: Optional[str] = None):
    """Mean ± std of a metric per method as bars, with optional reference values.

    Args:
        names: the methods (bar labels).
        means: the mean per method.
        stds: the standard deviation per method (error bars).
        ax: the ``Axes`` to draw into; default a new figure.
        reference: values to mark on each bar (e.g. the paper's numbers), or None.
        reference_label: legend entry of the reference markers.
        ylabel: the value axis label.
        title: the axes title.

    Returns:
        The ``Axes``; each bar is annotated with ``mean ± std``.

    Example:
        >>> ax = plot_method_bars(["SGD", "HTR"], [2.0, 1.8], [0.1, 0.2], reference=[1.0, 0.86])
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['SGD', 'HTR']
    """
    n = len(names)
    lengths = {len(means), len(stds)} | ({len(reference)} if reference is not None else set())
    if not n or lengths != {n}:
        raise ValueError("names, means, stds (and reference) must have the same non-zero length")
    ax = new_axes(ax, (4.5, 3.5))
    x = list(range(n))
    bars = ax.bar(x, means, yerr=stds, capsize=5, color=[f"C{i}" for i in x], alpha=0.8)
    for bar, m, s in zip(bars, means, stds):
        ax.annotate(f"{m:.2f} ± {s:.2f}", (bar.get_x() + bar.get_width() / 2, m + s),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    if reference is not None:
        ref = [r if r is not None else math.nan for r in reference]
        ax.plot(x, ref, "k_", ms=28, mew=2, ls="none", label=reference_label)
        ax.legend(fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(list(names))
    ax.set_ylabel(ylabel)
    top = max(m + s for m, s in zip(means, stds))
    if reference is not None:
        top = max([top] + [r for r in reference if r is not None])
    ax.set_ylim(0, top * 1.2 if top > 0 else 1)
    if title is not None:
        ax.set_title(title)
    return ax
