"""Figures of Kaur, Cohen & Lipton (2022), "On the maximum Hessian eigenvalue and generalization".

* :func:`plot_sharpness_generalization`: test accuracy against :math:`\\lambda_{\\max}`,
  one point per training run, grouped by colour / marker / fill (learning rate,
  batch size, optimizer, dropout, ...);
* :func:`plot_edge_of_stability`: :math:`\\lambda_{\\max}` against :math:`2/\\eta`
  (the stability threshold of gradient descent with step :math:`\\eta`; Cohen et
  al., ICLR 2021), where full-batch runs should sit on the diagonal.

Both take plain numbers (as stored in the example's JSON), draw into ``ax`` (a
new figure when None) and return the ``Axes``.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

__all__ = ["plot_sharpness_generalization", "plot_edge_of_stability"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _distinct(runs, key, sort=True):
    """The distinct values of ``run[key]``, sorted when possible (else in order of appearance)."""
    if key is None:
        return [None]
    values = []
    for run in runs:
        if key not in run:
            raise ValueError(f"runs: a run has no key {key!r} (keys: {sorted(run)})")
        if run[key] not in values:
            values.append(run[key])
    if sort:
        try:
            return sorted(values)
        except TypeError:
            pass
    return values


def _plain_log_axis(axis):
    """Plain numbers on a log axis, no labels on the minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_sharpness_generalization(runs: Sequence[Mapping], ax=None, *, x: str = "lambda_max",
                                  y: str = "test_accuracy", color_by: Optional[str] = "lr",
                                  marker_by: Optional[str] = "batch_size",
                                  hollow_by: Optional[str] = None, log: bool = True,
                                  names: Optional[Mapping[str, str]] = None,
                                  title: Optional[str] = None):
    """Test accuracy against :math:`\\lambda_{\\max}`, one point per run, grouped.

    Args:
        runs: one mapping per training run with at least the keys ``x``, ``y`` and the
            grouping keys.
        ax: the ``Axes`` to draw into; default a new figure.
        x: the key of the abscissa (default ``"lambda_max"``).
        y: the key of the ordinate (default ``"test_accuracy"``).
        color_by: the key whose values get distinct colours (None: one colour).
        marker_by: the key whose values get distinct markers (None: circles).
        hollow_by: a key whose values after the first one met in ``runs`` are drawn
            as hollow markers, e.g. ``"optimizer"`` with SGD runs first: SGD filled,
            SAM hollow.
        log: a logarithmic :math:`\\lambda_{\\max}` axis.
        names: display names of the keys in the legend (``{"lr": "η"}``).
        title: the axes title.

    Returns:
        The ``Axes``; the legend has one entry per colour, per marker and per fill.

    Example:
        >>> runs = [{"lambda_max": 20.0, "test_accuracy": .95, "lr": .1, "batch_size": 32},
        ...         {"lambda_max": 60.0, "test_accuracy": .93, "lr": .02, "batch_size": 32}]
        >>> ax = plot_sharpness_generalization(runs)
        >>> ax.get_xlabel()
        'λ_max'
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if not runs:
        raise ValueError("runs: expected at least one run")
    for run in runs:
        for key in (x, y):
            if key not in run:
                raise ValueError(f"runs: a run has no key {key!r} (keys: {sorted(run)})")
    names = dict(names or {})
    colors = {v: f"C{i % 10}" for i, v in enumerate(_distinct(runs, color_by))}
    markers = {v: _MARKERS[i % len(_MARKERS)] for i, v in enumerate(_distinct(runs, marker_by))}
    fills = _distinct(runs, hollow_by, sort=False)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    for run in runs:
        color = colors[run[color_by] if color_by else None]
        hollow = hollow_by is not None and fills.index(run[hollow_by]) > 0
        ax.scatter([run[x]], [run[y]], marker=markers[run[marker_by] if marker_by else None], s=55,
                   facecolors="none" if hollow else color, edgecolors=color, linewidths=1.5)
    handles = []
    if color_by:
        handles += [Line2D([], [], ls="none", marker="o", color=c,
                           label=f"{names.get(color_by, color_by)}={v}") for v, c in colors.items()]
    if marker_by:
        handles += [Line2D([], [], ls="none", marker=m, color="0.4",
                           label=f"{names.get(marker_by, marker_by)}={v}")
                    for v, m in markers.items()]
    if hollow_by:
        handles += [Line2D([], [], ls="none", marker="o", color="0.4", mfc="none" if i else "0.4",
                           label=f"{names.get(hollow_by, hollow_by)}={v}")
                    for i, v in enumerate(fills)]
    if log:
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis)
    ax.set_xlabel("λ_max" if x == "lambda_max" else x)
    ax.set_ylabel(y.replace("_", " "))
    if handles:
        ax.legend(handles=handles, fontsize=7)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_edge_of_stability(lrs: Sequence[float], lambda_max: Sequence[float], ax=None, *,
                           labels: Optional[Sequence[str]] = None,
                           markers: Optional[Sequence[str]] = None, title: Optional[str] = None):
    """:math:`\\lambda_{\\max}` against the stability threshold :math:`2/\\eta`, log-log.

    Gradient descent with step :math:`\\eta` on a quadratic diverges when
    :math:`\\lambda_{\\max} > 2/\\eta`; full-batch training of neural networks
    hovers at that edge (Cohen, Kaur, Li, Kolter & Talwalkar, ICLR 2021), so its
    points lie on the dashed diagonal.

    Args:
        lrs: the learning rates :math:`\\eta` of the runs.
        lambda_max: the measured :math:`\\lambda_{\\max}` of the runs.
        ax: the ``Axes`` to draw into; default a new figure.
        labels: a label per run (legend), or None.
        markers: a matplotlib marker per run (e.g. by optimizer), or None (circles).
        title: the axes title.

    Returns:
        The ``Axes``.

    Example:
        >>> ax = plot_edge_of_stability([0.02, 0.2], [95.0, 10.5])
        >>> ax.get_xlabel()
        '2 / learning rate'
    """
    import matplotlib.pyplot as plt

    if len(lrs) != len(lambda_max) or not lrs:
        raise ValueError("lrs and lambda_max must have the same non-zero length")
    if any(not (lr > 0) for lr in lrs):
        raise ValueError(f"lrs: expected positive learning rates, got {list(lrs)}")
    for name, per_run in (("labels", labels), ("markers", markers)):
        if per_run is not None and len(per_run) != len(lrs):
            raise ValueError(f"{name}: expected {len(lrs)} entries, got {len(per_run)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    threshold = [2.0 / lr for lr in lrs]
    positive = [v for v in list(lambda_max) + threshold if v > 0 and math.isfinite(v)]
    lo, hi = min(positive) / 2, max(positive) * 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="λ_max = 2/η")
    for i, (t, v) in enumerate(zip(threshold, lambda_max)):
        ax.scatter([t], [v], s=55, color=f"C{i % 10}", marker=markers[i] if markers else "o",
                   label=labels[i] if labels else None, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax.xaxis)
    _plain_log_axis(ax.yaxis)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("2 / learning rate")
    ax.set_ylabel("λ_max")
    ax.legend(fontsize=7)
    if title is not None:
        ax.set_title(title)
    return ax
