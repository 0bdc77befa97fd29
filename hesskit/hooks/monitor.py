"""Hessian metrics during training: a stateful monitor and its functional twin.

:class:`HessianMonitor` hooks into an optimizer (``register_step_post_hook``) and,
every ``every`` steps, measures curvature metrics of its
:class:`~hesskit.objective.Objective` at the current parameters;
:func:`measure_metrics` computes the same numbers in one call (the
torchmetrics pattern: a stateful object over a stateless function).

Metrics (``metrics=``):

* ``"lambda_max"``: the largest Hessian eigenvalue (Lanczos).
* ``"top_k"``: the ``k`` largest eigenvalues.
* ``"trace"``: Hutchinson's estimate of ``tr(H)`` (with ``"trace_stderr"``).
* ``"density"``: the spectral density by stochastic Lanczos quadrature.
* ``"layerwise"``: per-layer top eigenvalues and traces
  (:func:`~hesskit.analysis.layerwise_spectra`).

With ``between_iterates=n``, ``"lambda_max_between"`` is the maximum of
:math:`\\lambda_{\\max}` over ``n`` evenly spaced points on the segment between the
previous and the current iterate, both included,

.. math::

    \\max_{t \\in \\{0, \\frac{1}{n-1}, \\dots, 1\\}}
    \\lambda_{\\max}\\big(\\nabla^2 \\mathcal{L}
    (\\theta_{s-1} + t(\\theta_s - \\theta_{s-1}))\\big),

the "between iterates" sharpness of Kaur, Cohen & Lipton (2022, "On the maximum
Hessian eigenvalue and generalization"), which also catches the sharpness that
an oscillating iterate jumps over.
"""
from __future__ import annotations

import contextlib
import json
import numbers
import os
import warnings
from typing import Any, Iterable, Optional

import torch
from torch import Tensor

from hesskit.analysis.layerwise import layerwise_spectra
from hesskit.engines import make_engine
from hesskit.objective import Objective
from hesskit.operators import HessianOperator
from hesskit.spectral import eigenvalues, spectral_density, trace
from hesskit.spectral._common import check_int, check_positive_float
from hesskit.spectral.density import N_RUNS, N_STEPS

__all__ = ["HessianMonitor", "measure_metrics", "METRICS"]

#: The metric names :func:`measure_metrics` and :class:`HessianMonitor` accept.
METRICS = ("lambda_max", "top_k", "trace", "density", "layerwise")

#: File name of the JSON-lines log under ``log_dir``.
LOG_FILE = "hessian_monitor.jsonl"


def measure_metrics(obj: Objective, metrics: Iterable[str] = ("lambda_max", "trace"), *,
                    k: int = 1, n_probes: int = 100, n_runs: int = N_RUNS, n_steps: int = N_STEPS,
                    tol: Optional[float] = None, seed: int = 0, previous: Optional[Tensor] = None,
                    between_iterates: int = 0, engine: str = "auto") -> dict[str, Any]:
    """Hessian metrics of ``obj`` at its current parameters, as JSON values.

    The global RNG state is saved and restored, gradients are enabled inside (so
    it may be called from ``torch.no_grad`` code), and the model is left as it was:
    mode, parameters (bit for bit, also after ``between_iterates``) and ``.grad``.

    Args:
        obj: the objective.
        metrics: names from :data:`METRICS`.
        k: eigenvalues of ``"top_k"`` (and per layer of ``"layerwise"``).
        n_probes: Rademacher probes of the ``"trace"`` estimate (and per layer).
        n_runs: Lanczos runs of ``"density"`` (default: that of
            :func:`~hesskit.spectral_density`).
        n_steps: Lanczos steps per run of ``"density"`` (default: as ``n_runs``).
        tol: relative residual of the eigenvalues (default: that of
            :func:`~hesskit.spectral.eigenvalues`, ``max(1e-6, 128 ε)``).
        seed: seed of every random start and probe (the same for every call, so
            successive measurements share their random numbers and their differences
            are less noisy).
        previous: the previous iterate, a ``(P,)`` vector of the selected parameters;
            with ``between_iterates`` it gives ``"lambda_max_between"``.
        between_iterates: ``0`` (off) or ``n >= 2`` evaluation points, endpoints included.
        engine: engine of the Hessian products.

    Returns:
        ``{"lambda_max": float, "top_k": [float, ...], "trace": float,
        "trace_stderr": float, "density": {...}, "layerwise": {...},
        "lambda_max_between": float}``, with only the entries that were asked for.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> sorted(measure_metrics(obj, ("lambda_max", "trace"), n_probes=50))
        ['lambda_max', 'trace', 'trace_stderr']
    """
    metrics = _check_metrics(metrics)
    check_int(k, "k", 1)
    check_int(n_probes, "n_probes", 2)
    check_int(n_runs, "n_runs", 1)
    check_int(n_steps, "n_steps", 1)
    _check_between(between_iterates)
    if previous is not None:
        previous = obj.check_vector(previous, "previous")
        if previous.ndim != 1:
            raise ValueError(f"previous: expected shape ({obj.n_params},), got "
                             f"{tuple(previous.shape)}")
    out: dict[str, Any] = {}
    devices = [obj.device.index or 0] if obj.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        H = HessianOperator(obj, engine=engine)
        if "lambda_max" in metrics or "top_k" in metrics:
            wanted = k if "top_k" in metrics else 1
            values = eigenvalues(H, k=min(wanted, obj.n_params), tol=tol, seed=seed,
                                 progress=False).values
            if "lambda_max" in metrics:
                out["lambda_max"] = float(values[0])
            if "top_k" in metrics:
                out["top_k"] = [float(v) for v in values]
        if "trace" in metrics:
            estimate = trace(H, method="hutchinson", n_probes=n_probes, seed=seed, progress=False)
            out["trace"], out["trace_stderr"] = float(estimate.value), float(estimate.stderr)
        if "density" in metrics:
            out["density"] = spectral_density(H, n_runs=n_runs, n_steps=min(n_steps, obj.n_params),
                                              seed=seed, progress=False).to_dict()
        if "layerwise" in metrics:
            layers = layerwise_spectra(obj, k=k, n_probes=n_probes, tol=tol, seed=seed,
                                       engine=engine, progress=False)
            out["layerwise"] = {name: layer.to_dict() for name, layer in layers.items()}
        if between_iterates and previous is not None:
            out["lambda_max_between"] = _lambda_max_between(
                obj, previous, between_iterates, tol=tol, seed=seed, engine=engine,
                current=out.get("lambda_max"))
    return out


def _lambda_max_between(obj: Objective, previous: Tensor, n: int, *, tol: Optional[float], seed: int,
                        engine: str, current: Optional[float]) -> float:
    """max over t in linspace(0, 1, n) of λ_max at previous + t (current - previous)."""
    theta = obj.parameters_vector()
    best = -float("inf")
    for t in torch.linspace(0.0, 1.0, n, dtype=torch.float64).tolist():
        if t == 1.0 and current is not None:
            value = current
        else:
            point = theta if t == 1.0 else previous + t * (theta - previous)
            with parameters_at(obj, point):
                H = HessianOperator(obj, engine=engine)
                value = float(eigenvalues(H, k=1, tol=tol, seed=seed, progress=False).values[0])
        best = max(best, value)
    return best


@contextlib.contextmanager
def parameters_at(obj: Objective, point: Tensor):
    """Temporarily sets the objective's selected parameters to ``point``.

    The values are copied in under ``torch.no_grad`` and the saved values are
    copied back on exit (also after an exception), so the parameters are
    restored bit for bit; their autograd version counters do move.

    Args:
        obj: the objective.
        point: a ``(P,)`` vector in the objective's flattening.
    """
    obj.check_vector(point, "point")
    saved = [p.detach().clone() for p in obj.params]
    try:
        with torch.no_grad():
            for p, value in zip(obj.params, obj.unflatten(point)):
                p.copy_(value)
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(obj.params, saved):
                p.copy_(value)


class HessianMonitor:
    """Measures Hessian metrics on a schedule of optimizer steps.

    ``monitor.attach(optimizer)`` registers a step post-hook; after every
    ``every``-th ``optimizer.step()`` (steps counted from the attachment: with
    ``every=3``, steps 3, 6, 9, ...) the monitor calls :meth:`measure`, which
    computes :func:`measure_metrics` on its objective at the current parameters,
    appends ``{"step": step, **values}`` to :attr:`history` and, with a
    ``log_dir``, appends it as one JSON line to ``log_dir/hessian_monitor.jsonl``
    (flushed at once) and writes its scalars to TensorBoard (a ``SummaryWriter`` on
    ``log_dir``, or the ``writer`` given); without the ``tensorboard`` package it
    says so once (a ``UserWarning``) and writes only the JSON lines. With an
    objective sharded over ``torch.distributed`` processes, every process measures
    (and holds the same history) and only rank 0 writes the files.

    The training is not changed: the model's mode, parameters (bit for bit),
    ``.grad`` fields and the global RNG state are the same after a measurement as
    before. The objective should hold fixed data (e.g. a fixed subset of the
    training set), not the training loader itself.

    With ``between_iterates=n`` the monitor also keeps a copy of the parameters
    before each measured step and records ``"lambda_max_between"`` (see
    :mod:`hesskit.hooks.monitor`). This needs :meth:`attach`; a manual
    :meth:`measure` can pass ``previous=`` instead.

    Args:
        obj: the objective measured (its parameters are the trained ones).
        every: measure after every ``every``-th optimizer step.
        metrics: names from :data:`METRICS`.
        log_dir: folder of the JSON-lines log and TensorBoard events; None: no files.
        writer: an existing ``torch.utils.tensorboard.SummaryWriter`` (anything with
            ``add_scalar(tag, value, step)``) that receives the scalars instead of a
            new writer on ``log_dir``; it works without ``log_dir`` and is left open
            by :meth:`close` (its owner closes it).
        k: eigenvalues of ``"top_k"`` and per layer.
        between_iterates: ``0`` (off) or ``n >= 2`` points between two iterates.
        n_probes: probes of the trace estimates.
        n_runs: Lanczos runs of ``"density"`` (default: that of
            :func:`~hesskit.spectral_density`).
        n_steps: Lanczos steps of ``"density"`` (default: as ``n_runs``).
        tol: relative residual of the eigenvalues (default: that of
            :func:`~hesskit.spectral.eigenvalues`, ``max(1e-6, 128 ε)``).
        seed: seed of the random starts and probes, the same at every measurement.
        engine: engine of the Hessian products.

    Attributes:
        history: the records so far, oldest first.
        steps: optimizer steps seen since :meth:`attach`.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> probe = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X[:32], y[:32]))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> monitor = HessianMonitor(probe, every=2, metrics=("lambda_max",))
        >>> handle = monitor.attach(optimizer)
        >>> for _ in range(4):                    # train as usual
        ...     optimizer.zero_grad()
        ...     torch.nn.functional.cross_entropy(model(X), y).backward()
        ...     optimizer.step()
        >>> handle.remove(); monitor.close()
        >>> [r["step"] for r in monitor.history]
        [2, 4]
    """

    def __init__(self, obj: Objective, every: int = 100,
                 metrics: Iterable[str] = ("lambda_max", "trace"), log_dir: Optional[str] = None,
                 writer: Any = None, k: int = 1, between_iterates: int = 0, n_probes: int = 100,
                 n_runs: int = N_RUNS, n_steps: int = N_STEPS, tol: Optional[float] = None,
                 seed: int = 0, engine: str = "auto"):
        if not isinstance(obj, Objective):
            raise TypeError(f"obj: expected a hesskit.Objective, got {type(obj).__name__}")
        self.obj = obj
        self.every = check_int(every, "every", 1)
        self.metrics = _check_metrics(metrics)
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir: expected a path or None, got {type(log_dir).__name__}")
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(f"writer: expected a SummaryWriter (with add_scalar), got "
                            f"{type(writer).__name__}")
        self.between_iterates = _check_between(between_iterates)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        make_engine(engine, obj)  # fail now, not at the first measurement
        self.options = dict(k=check_int(k, "k", 1), n_probes=check_int(n_probes, "n_probes", 2),
                            n_runs=check_int(n_runs, "n_runs", 1),
                            n_steps=check_int(n_steps, "n_steps", 1),
                            tol=None if tol is None else check_positive_float(tol, "tol"),
                            seed=seed, engine=engine)
        self.history: list[dict[str, Any]] = []
        self.steps = 0
        self._previous: Optional[Tensor] = None
        self._previous_step: Optional[int] = None
        self._own_writer = writer is None  # a writer we create is ours to close
        self._writer = writer  # None: not tried yet; False: TensorBoard unavailable

    # ---------------------------------------------------------------- schedule
    def attach(self, optimizer: torch.optim.Optimizer):
        """Measures after every ``every``-th ``optimizer.step()`` from now on.

        A :class:`~hesskit.optim.SAM` step counts once, measured back at ``w``
        after its base step, whether it is driven by ``step(closure)`` or by
        ``first_step()`` / ``second_step()``. A loop that steps another optimizer
        directly (SAM's GradScaler recipe steps ``opt.base_optimizer``) is
        monitored by attaching to that optimizer.

        Args:
            optimizer: the training optimizer (any ``torch.optim.Optimizer``).

        Returns:
            The ``torch.utils.hooks.RemovableHandle`` of the hook: ``handle.remove()``
            stops the monitor.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self._remember_previous()
        return optimizer.register_step_post_hook(self._after_step)

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.measure(self.steps)
        self._remember_previous()

    def _remember_previous(self) -> None:
        """Copies the parameters when the next step will be measured."""
        if self.between_iterates and (self.steps + 1) % self.every == 0:
            self._previous = self.obj.parameters_vector().clone()
            self._previous_step = self.steps

    # ---------------------------------------------------------------- measure
    def measure(self, step: Optional[int] = None, previous: Optional[Tensor] = None) -> dict:
        """Measures the metrics now, records and logs them.

        Args:
            step: the step recorded with the values; default :attr:`steps`.
            previous: the previous iterate for ``between_iterates``; default the
                copy taken before step ``step`` by the hook, if there is one.

        Returns:
            The record ``{"step": step, **values}`` (also appended to :attr:`history`).
        """
        step = self.steps if step is None else check_int(step, "step", 0)
        if previous is None and self._previous_step == step - 1:
            previous = self._previous
        values = measure_metrics(self.obj, self.metrics, previous=previous,
                                 between_iterates=self.between_iterates, **self.options)
        if self.between_iterates and "lambda_max_between" not in values:
            values["lambda_max_between"] = None  # no previous iterate to compare with
        record = {"step": step, **values}
        self.history.append(record)
        if self._logging_rank():
            self._log(record)
        return record

    def _logging_rank(self) -> bool:
        """Whether this process writes the log: every process measures (the products
        are summed over all of them) but only rank 0 of the objective's group writes."""
        group = self.obj.process_group
        return group is None or torch.distributed.get_rank(group) == 0

    # ---------------------------------------------------------------- logging
    def _log(self, record: dict) -> None:
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)
            with open(os.path.join(self.log_dir, LOG_FILE), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        writer = self._tensorboard()
        if writer:
            for tag, value in scalars(record).items():
                writer.add_scalar(tag, value, record["step"])
            if callable(getattr(writer, "flush", None)):
                writer.flush()

    def _tensorboard(self):
        """The writer of the scalars: the given one, a new one on ``log_dir``, or False."""
        if self._writer is None and self.log_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard package is optional
                self._writer = False
                warnings.warn("HessianMonitor: TensorBoard is not installed (`pip install tensorboard`); "
                              f"the metrics go to {os.path.join(self.log_dir, LOG_FILE)} only",
                              UserWarning, stacklevel=2)
            else:
                self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def close(self) -> None:
        """Closes the TensorBoard writer it created (a given ``writer`` stays open)."""
        if self._own_writer:
            if self._writer:
                self._writer.close()
            self._writer = None

    def __repr__(self) -> str:
        return (f"HessianMonitor(every={self.every}, metrics={self.metrics}, "
                f"steps={self.steps}, records={len(self.history)})")


def scalars(record: dict) -> dict[str, float]:
    """The scalar series of a record, as TensorBoard tags ``hessian/...``.

    Real numbers keep their name, ``top_k`` becomes ``top_k/1`` ... ``top_k/k``, and
    ``layerwise`` gives ``layerwise/<module>/lambda_max`` and ``.../trace``;
    densities and missing values are left out.
    """
    out = {}
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[f"hessian/{key}"] = float(value)
        elif key == "top_k":
            out.update({f"hessian/top_k/{i + 1}": float(v) for i, v in enumerate(value)})
        elif key == "layerwise":
            for name, layer in value.items():
                out[f"hessian/layerwise/{name}/lambda_max"] = float(layer["eigenvalues"][0])
                out[f"hessian/layerwise/{name}/trace"] = float(layer["trace"])
    return out


def _check_metrics(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    try:
        metrics = tuple(metrics)
    except TypeError:
        raise TypeError(f"metrics: expected names from {METRICS}, got "
                        f"{type(metrics).__name__}") from None
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics: expected a non-empty selection of {METRICS}, got "
                         f"{list(metrics)}")
    return metrics


def _check_between(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"between_iterates: expected an int, got {type(n).__name__}")
    if n == 1 or n < 0:
        raise ValueError(f"between_iterates: expected 0 (off) or at least 2 points, got {n}")
    return n
