"""Engines compute curvature products on one chunk; operators sum them over the data.

``native`` (priority 30, :mod:`hesskit.engines.native`): hesskit's own passes, fused
compiled kernels for chains of Linear layers and pointwise activations, and for CNNs
and ResNets read with ``torch.fx`` one rule per layer type.
``func`` (priority 20, 5 on models with
convolutions, where ``vmap`` is slow: see :meth:`FuncEngine.priority_for`):
``torch.func`` vectorized over the k columns. ``autograd`` (priority 10): double
backward, any differentiable model.

The registry (:data:`ENGINES`, filled by :func:`register_engine`) is the only place
that knows the engines; other modules ask an engine what it can do
(:meth:`Engine.supports`) and never test for one by name.

``engine="auto"`` is deterministic: it walks the registry from the highest priority
(for the objective, :meth:`Engine.priority_for`) down and takes the first engine that
(1) accepts the model in its static check (:meth:`Engine.unsupported_reason`) and
(2) runs a trial product of each kind (Hessian and GGN) on the first two samples with
one column, when an engine of lower priority remains to fall back on. The trial
catches what only running can tell (``vmap`` or forward-mode rules missing for an op
of the model) and costs a few products on two samples, not the caller's block. Nothing is timed, so the same
inputs always give the same engine and the same bits; ``engine.choice`` records why
each engine before the chosen one was passed over. An engine whose fixed cost per call
only pays off on wide blocks declares ``min_columns`` (``func``: 8); ``auto`` then
sends narrower blocks to the next engine that supports the model (``autograd``, whose
single-vector products reuse the gradient graph), and the engine's name says so
(``"func/autograd"``).
"""
from __future__ import annotations

import warnings

import torch

from hesskit.engines.autograd import AutogradEngine
from hesskit.engines.base import CAPABILITIES, Engine, differentiable_attention
from hesskit.engines.func import FuncEngine
from hesskit.objective import Chunk, Objective

__all__ = ["Engine", "AutogradEngine", "FuncEngine", "NativeEngine", "ENGINES", "CAPABILITIES",
           "register_engine", "make_engine", "engines_by_priority",
           "differentiable_attention"]

ENGINES: dict[str, type[Engine]] = {}

#: Samples of the trial products (one column each) that ``auto`` runs before choosing.
TRIAL_SAMPLES = 2


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Make an engine class selectable by its ``name`` (and by ``"auto"``, in order of
    its ``priority``)."""
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise TypeError(f"cls: expected a subclass of hesskit.engines.Engine, got {cls!r}")
    if cls.name == "auto" or not isinstance(cls.name, str):
        raise ValueError(f"cls.name: expected a string other than 'auto', got {cls.name!r}")
    unknown = set(cls.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"cls.capabilities: expected a subset of {CAPABILITIES}, got "
                         f"{sorted(unknown)} too")
    ENGINES[cls.name] = cls
    return cls


def engines_by_priority(objective: Objective | None = None) -> list[type[Engine]]:
    """The registered engine classes, highest priority first (ties by name): their
    ``priority``, or their :meth:`Engine.priority_for` ``objective`` when one is given."""
    def priority(cls):
        return cls.priority if objective is None else cls.priority_for(objective)

    return sorted(ENGINES.values(), key=lambda cls: (-priority(cls), cls.name))


def _trial_failure(engine: Engine, objective: Objective) -> str | None:
    """``None`` when ``engine`` computes a Hessian and a GGN product on the first
    :data:`TRIAL_SAMPLES` samples of the data, else the error it raised."""
    first = next(iter(objective.chunks()))
    chunk = Chunk(first.inputs[:TRIAL_SAMPLES], first.targets[:TRIAL_SAMPLES], first.weight,
                  first.index)
    column = torch.zeros(objective.n_params, 1, dtype=objective.dtype, device=objective.device)
    column[0] = 1
    try:
        for kind in ("hessian", "ggn"):
            engine.product(kind, chunk, column)
    except (RuntimeError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


class _ByColumns(Engine):
    """``auto``'s engine when its first choice has ``min_columns > 1``: products of at
    least that many columns by ``wide``, narrower ones by ``narrow`` (the next engine
    in priority order). Same inputs and number of columns, same engine, same bits."""

    def __init__(self, objective: Objective, wide: Engine, narrow: Engine):
        super().__init__(objective)
        self.wide, self.narrow = wide, narrow
        self.name = f"{wide.name}/{narrow.name}"

    def _engine_for(self, k: int) -> Engine:
        return self.wide if k >= self.wide.min_columns else self.narrow

    def product(self, kind, chunk, V):
        return self._engine_for(V.shape[1]).product(kind, chunk, V)

    def batches_columns(self, k: int) -> bool:
        return self._engine_for(k).batches_columns(k)


def _first_usable(candidates: list[type[Engine]], objective: Objective,
                  passed_over: dict[str, str]) -> Engine:
    """The first of ``candidates`` whose static check accepts ``objective`` and that
    passes the trial products (not run for the last candidate: nothing is left to
    fall back on); the reasons of those passed over are added to ``passed_over``."""
    for position, cls in enumerate(candidates):
        reason = cls.unsupported_reason(objective)
        if reason is None:
            engine = cls(objective)
            if position < len(candidates) - 1:
                reason = _trial_failure(engine, objective)
                if reason is not None:
                    warnings.warn(f"hesskit: engine {cls.name!r} cannot run this model "
                                  f"({reason}); trying the next engine", RuntimeWarning,
                                  stacklevel=4)
            if reason is None:
                return engine
        passed_over[cls.name] = reason
    raise ValueError("engine='auto': no engine supports this model: "
                     + "; ".join(f"{n}: {r}" for n, r in passed_over.items()))


def make_engine(name: str, objective: Objective) -> Engine:
    """Build the engine ``name`` for ``objective``, or choose one with ``"auto"``.

    ``"auto"`` returns the first engine by priority that supports the model (see the
    module docstring); when that engine declares ``min_columns > 1``, narrower blocks
    go to the next one that supports the model (``name`` ``"func/autograd"``, say).

    Raises:
        ValueError: ``name`` is not ``"auto"`` or a registered engine, or the engine
            named refuses the model (the message says why).
    """
    if not isinstance(name, str) or (name != "auto" and name not in ENGINES):
        raise ValueError(f"engine: expected 'auto' or one of {sorted(ENGINES)}, got {name!r}")
    if name != "auto":
        cls = ENGINES[name]
        reason = cls.unsupported_reason(objective)
        if reason is not None:
            raise ValueError(f"engine={name!r} does not support this model: {reason}")
        engine = cls(objective)
        engine.choice = {name: "requested"}
        return engine
    passed_over: dict[str, str] = {}
    candidates = engines_by_priority(objective)
    engine = _first_usable(candidates, objective, passed_over)
    rest = candidates[[cls.name for cls in candidates].index(engine.name) + 1:]
    if engine.min_columns == 1 or not rest:
        engine.choice = {**passed_over, engine.name: "chosen"}
        return engine
    narrow = _first_usable(rest, objective, passed_over)
    split = _ByColumns(objective, engine, narrow)
    split.choice = {**passed_over, engine.name: f"chosen for k >= {engine.min_columns}",
                    narrow.name: f"chosen for k < {engine.min_columns}"}
    return split


register_engine(FuncEngine)
register_engine(AutogradEngine)
from hesskit.engines.native import NativeEngine  # noqa: E402

register_engine(NativeEngine)
