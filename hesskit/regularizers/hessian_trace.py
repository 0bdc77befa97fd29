r"""Hessian-trace regularization with Hutchinson's estimator.

The penalty of Sankar, Khasbage, Vigneswaran and Balasubramanian, "A deeper look
at the Hessian eigenspectrum of deep neural networks and its applications to
regularization" (AAAI 2021):

.. math::

    R(w) = \gamma\, \operatorname{tr} H(w) \approx \frac{\gamma}{m} \sum_{j=1}^{m} v_j^\top H(w)\, v_j,
    \qquad \mathbb{E}[v v^\top] = I,

with :math:`H` the Hessian of the loss with respect to the selected parameters
and :math:`v_j` Rademacher (or Gaussian) probes (Hutchinson, "A stochastic
estimator of the trace of the influence matrix for Laplacian smoothing splines",
1989). The Hessian-vector products are built with ``create_graph=True``, so
:math:`\nabla R` (a third-derivative term, :math:`\frac{\gamma}{m}\sum_j
\nabla_w (v_j^\top H(w) v_j)` at fixed probes) comes from an ordinary
``backward()``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["HessianTrace"]

ParamFilter = Callable[[str, torch.Tensor], bool]
_PROBES = ("rademacher", "gaussian")


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _named(params: Any) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` pairs from a Module, (name, tensor) pairs or bare tensors (named by position)."""
    if isinstance(params, nn.Module):
        return [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    if isinstance(params, torch.Tensor):
        params = [params]
    pairs = []
    for i, item in enumerate(params):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, p = item
        else:
            name, p = str(i), item
        if not isinstance(p, torch.Tensor):
            raise TypeError(
                "params must be an nn.Module or an iterable of tensors or (name, tensor) pairs, "
                f"got an item of type {type(p).__name__}"
            )
        if not p.requires_grad:
            raise ValueError(f"params: parameter {name!r} does not require grad")
        pairs.append((name, p))
    return pairs


def _refuse_static_graph_first_iteration(params: Any) -> None:
    """Raise for a ``DistributedDataParallel(static_graph=True)`` module before its first backward.

    On that iteration DDP defers the all-reduce to a callback queued on the first
    autograd pass through its output, which would be the penalty's inner
    ``torch.autograd.grad``: the callback fires before any ``.grad`` exists, and the
    real ``backward()`` then leaves every rank with its own, unsynchronized gradient.
    The "first iteration" flag is private to DDP; without it the check is skipped.
    """
    if not (torch.distributed.is_available() and isinstance(params, nn.parallel.DistributedDataParallel)):
        return
    if params.static_graph and not getattr(params, "_static_graph_delay_allreduce_enqueued", True):
        raise ValueError(
            "params: DistributedDataParallel(static_graph=True) cannot be penalized on its first iteration "
            "(DDP would synchronize nothing in that backward); make the first step unpenalized "
            "(start_step >= 1) or construct DDP without static_graph"
        )


class _Among:
    """``params_filter`` predicate: the parameter is one of ``tensors`` (by identity)."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors  # keeps them alive, so their ids stay theirs
        self.ids = {id(t) for t in tensors}

    def __call__(self, name: str, param: torch.Tensor) -> bool:
        return id(param) in self.ids


class HessianTrace:
    r"""Differentiable Hutchinson estimate of :math:`\gamma \operatorname{tr} H`, on a schedule.

    ``penalty = reg(loss, params)`` returns the scalar
    :math:`\frac{\gamma}{m}\sum_{j=1}^m v_j^\top H v_j` (Sankar et al., AAAI
    2021), :math:`H` the Hessian of ``loss`` with respect to the selected
    parameters and :math:`v_j` fresh probes drawn from ``generator`` (the global
    RNG of the parameters' device if ``None``). Its gradient, the third-order
    term, flows through ``(loss + penalty).backward()``: ``loss`` must carry its
    graph (do not call ``backward()`` on it first). The gradient of ``loss``
    is taken with ``create_graph=True``, and the m Hessian-vector products are
    vectorized with ``torch.autograd.grad(..., is_grads_batched=True)`` (one
    batched backward instead of m; ``batched=False`` loops instead, for models
    with operations that ``vmap`` cannot batch).

    Every call counts (``calls``); the penalty is computed on calls
    ``start_step, start_step + every, start_step + 2*every, ...`` (0-based) and
    is a zero scalar (no graph, nothing to special-case) on the others, or
    always when ``gamma == 0``.

    Under ``DistributedDataParallel``: compute ``loss`` with the DDP model and
    backpropagate ``loss + penalty`` with one ``backward()``. The inner
    products (``torch.autograd.grad``) fill no ``.grad`` and fire none of DDP's
    hooks; the final ``backward()`` accumulates the gradient of ``loss +
    penalty`` once per parameter, and DDP averages it. With R ranks holding
    shard losses :math:`L_r` (Hessians :math:`H_r`), every rank's gradient is

    .. math::

        \frac{1}{R}\sum_{r=1}^{R} \nabla_w \Bigl(L_r + \frac{\gamma}{m}\sum_{j=1}^{m} v_{rj}^\top H_r v_{rj}\Bigr),

    with no extra communication. With the same probes on every rank (a
    ``generator`` seeded alike) and equal shards, :math:`\frac{1}{R}\sum_r H_r = H`,
    which is the single-process gradient on the full batch with those probes.
    With independent probes (e.g. seeds that differ by rank), it is the gradient
    of the mean of R estimates, each on its own shard, and is still unbiased for
    :math:`\gamma \nabla \operatorname{tr} H`. ``last_trace`` is this rank's
    estimate; all-reduce it for the global one. This works with the default DDP
    options and with ``find_unused_parameters=True``. With
    ``static_graph=True``, the first iteration must not be penalized
    (``start_step >= 1``): DDP defers that iteration's all-reduce to the end
    of the first autograd pass, which here would be the penalty's inner one
    (a call given the DDP module itself raises ``ValueError`` there).

    Args:
        gamma: weight :math:`\gamma \ge 0` of the penalty.
        n_probes: number of probes :math:`m \ge 1`.
        every: apply the penalty on one call in ``every``.
        start_step: first call (0-based) on which it is applied.
        probe: ``"rademacher"`` (entries :math:`\pm 1`, lowest variance) or ``"gaussian"``.
        params_filter: which of the ``params`` given at call time are regularized,
            e.g. only the middle layers as in Sankar et al. ``None``: all. A
            callable ``(name, param) -> bool`` (names are those of
            ``model.named_parameters()`` when ``params`` is a module or (name,
            param) pairs, and the positions ``"0", "1", ...`` for bare tensors).
            An ``nn.Module`` (e.g. ``model[2:4]``) or an iterable of tensors:
            the parameters among them. The Hessian is the block of those
            parameters; the penalty's gradient still reaches every parameter
            the block depends on.
        generator: ``torch.Generator`` for the probes (drawn on its device).
        batched: vectorize the m Hessian-vector products (default) or loop over
            them. Same values either way. Measured on CPU for m = 10 (one
            penalized training step, ``benchmarks/bench_training.py``): batched is
            about 1.8x faster for an MLP 64-32-32-10, while for LeNet-5 the loop
            is about 20% faster (``vmap`` over the convolution double backward);
            both keep the m product graphs alive until ``backward()``. With
            ``n_probes=1`` there is nothing to batch: one plain product.

    Attributes:
        calls: number of calls so far (``step_count`` is the same number).
        last_trace: the detached Hutchinson estimate of :math:`\operatorname{tr} H`
            (without :math:`\gamma`) from the last call that computed it, or ``None``.

    Raises:
        ValueError / TypeError: arguments out of range or of the wrong type (named).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> reg = HessianTrace(gamma=1e-2, n_probes=4, generator=torch.Generator().manual_seed(0))
        >>> loss = torch.nn.functional.mse_loss(model(torch.randn(16, 4)), torch.randn(16, 1))
        >>> (loss + reg(loss, model)).backward()
    """

    def __init__(
        self,
        gamma: float = 1e-3,
        n_probes: int = 10,
        every: int = 1,
        start_step: int = 0,
        probe: str = "rademacher",
        params_filter: ParamFilter | nn.Module | Iterable[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        *,
        batched: bool = True,
    ) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}")
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        if probe not in _PROBES:
            raise ValueError(f"probe must be one of {_PROBES}, got {probe!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if not isinstance(batched, bool):
            raise TypeError(f"batched must be a bool, got {type(batched).__name__}")
        self.gamma = float(gamma)
        self.n_probes = _check_int(n_probes, "n_probes", 1)
        self.every = _check_int(every, "every", 1)
        self.start_step = _check_int(start_step, "start_step", 0)
        self.probe = probe
        self.params_filter = self._make_filter(params_filter)
        self.generator = generator
        self.batched = batched
        self.calls = 0
        self.last_trace: torch.Tensor | None = None

    @staticmethod
    def _make_filter(params_filter: Any) -> ParamFilter | None:
        if params_filter is None or (callable(params_filter) and not isinstance(params_filter, nn.Module)):
            return params_filter
        if isinstance(params_filter, nn.Module):
            chosen = list(params_filter.parameters())
        elif isinstance(params_filter, torch.Tensor):
            chosen = [params_filter]
        else:
            try:
                chosen = list(params_filter)
            except TypeError:
                chosen = None
            if chosen is None or not all(isinstance(p, torch.Tensor) for p in chosen):
                raise TypeError(
                    "params_filter must be None, a callable (name, param) -> bool, an nn.Module or an "
                    f"iterable of tensors, got {params_filter!r}"
                )
        return _Among(chosen)

    @property
    def step_count(self) -> int:
        """Number of calls so far (same as ``calls``)."""
        return self.calls

    def is_active(self, call: int | None = None) -> bool:
        """Whether call number ``call`` (default: the next one) computes the penalty."""
        call = self.calls if call is None else call
        return self.gamma > 0 and call >= self.start_step and (call - self.start_step) % self.every == 0

    def state_dict(self) -> dict[str, Any]:
        """The schedule position (``calls``); the generator's state is the caller's to save."""
        return {"calls": self.calls}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the schedule position saved by :meth:`state_dict`."""
        self.calls = _check_int(state_dict["calls"], "state_dict['calls']", 0)

    def __call__(self, loss: torch.Tensor, params: nn.Module | Iterable[Any]) -> torch.Tensor:
        """The penalty for this call (a zero scalar on skipped calls).

        Args:
            loss: scalar loss with its autograd graph.
            params: an ``nn.Module`` (its trainable parameters), or an iterable of
                tensors or of ``(name, tensor)`` pairs (e.g. ``model.named_parameters()``).

        Returns:
            A 0-dim tensor of ``loss``'s dtype and device, differentiable on active calls.

        Raises:
            ValueError: on an active call, ``params`` is a ``DistributedDataParallel``
                module built with ``static_graph=True`` before its first backward
                (see the class docstring).
        """
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss must be a torch.Tensor, got {type(loss).__name__}")
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
        if loss.grad_fn is None:
            raise ValueError(
                "loss has no autograd graph (grad_fn is None): compute it from parameters that require "
                "grad, outside torch.no_grad(), and pass it before calling backward() on it"
            )
        named = _named(params)
        if self.params_filter is not None:
            kept = [(n, p) for n, p in named if self.params_filter(n, p)]
            if not kept:
                raise ValueError(
                    f"params_filter selected none of the {len(named)} parameters "
                    f"(names: {[n for n, _ in named][:8]}...)"
                )
            named = kept
        elif not named:
            raise ValueError("params is empty")
        active = self.is_active()
        if active:
            _refuse_static_graph_first_iteration(params)
        self.calls += 1
        zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
        if not active:
            return zero
        estimate = self._hutchinson([p for _, p in named], loss)
        if estimate is None:  # the loss is at most linear in these parameters
            self.last_trace = zero
            return zero
        self.last_trace = estimate.detach()
        return self.gamma * estimate

    def _probes(self, p: torch.Tensor) -> torch.Tensor:
        shape = (self.n_probes, *p.shape)
        device = self.generator.device if self.generator is not None else p.device
        if self.probe == "rademacher":
            v = torch.randint(0, 2, shape, generator=self.generator, device=device, dtype=p.dtype).mul_(2).sub_(1)
        else:
            v = torch.randn(shape, generator=self.generator, device=device, dtype=p.dtype)
        return v.to(p.device)

    def _hutchinson(self, params: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor | None:
        r"""Differentiable :math:`\frac{1}{m}\sum_j v_j^\top H v_j`; ``None`` if the Hessian block is zero."""
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        # A gradient without a graph is constant: its Hessian row (and, by symmetry, column) is zero.
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
        if not pairs:
            return None
        params = [p for p, _ in pairs]
        grads = [g for _, g in pairs]
        probes = [self._probes(p) for p in params]
        if self.batched and self.n_probes > 1:  # one probe: a plain product, vmap would only add overhead
            try:
                hvps = torch.autograd.grad(
                    grads, params, probes, create_graph=True, allow_unused=True, is_grads_batched=True
                )
            except RuntimeError as err:
                raise RuntimeError(
                    f"batched Hessian-vector products failed ({err}); HessianTrace(batched=False) loops instead"
                ) from err
        else:
            per_probe = [
                torch.autograd.grad(grads, params, [v[j] for v in probes], create_graph=True, allow_unused=True)
                for j in range(self.n_probes)
            ]
            hvps = [
                None if per_probe[0][i] is None else torch.stack([hv[i] for hv in per_probe])
                for i in range(len(params))
            ]
        quad = [(v * hv).flatten(1).sum(1).to(loss.device) for v, hv in zip(probes, hvps) if hv is not None]
        if not quad:
            return None
        return sum(quad).mean()  # (1/m) sum_j v_j^T H v_j
