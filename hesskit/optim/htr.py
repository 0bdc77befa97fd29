r"""SGD with Hessian-trace regularization (SGD-HTR).

Sankar, Khasbage, Vigneswaran and Balasubramanian, "A deeper look at the Hessian
eigenspectrum of deep neural networks and its applications to regularization"
(AAAI 2021): train on :math:`L(w) + \gamma \operatorname{tr} H(w)`, the trace
estimated by Hutchinson's method and, because each estimate costs m
Hessian-vector products and their backward, only on a schedule. On the other
steps this is plain SGD.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from hesskit.optim._wrapped import WrappedOptimizer
from hesskit.regularizers.hessian_trace import HessianTrace, ParamFilter

__all__ = ["SGDHTR"]


class SGDHTR(WrappedOptimizer):
    r"""``torch.optim.SGD`` on :math:`L + \gamma\,\widehat{\operatorname{tr} H}` on scheduled steps, on :math:`L` otherwise.

    .. warning::
        The closure returns the loss and must NOT call ``backward()``: the
        optimizer needs the loss's graph to build the penalty, and it
        backpropagates ``loss + penalty`` itself. ``step()`` clears ``.grad``
        (sets it to ``None``) before calling the closure and raises if the
        closure filled any gradient, so gradients cannot be accumulated across
        ``step()`` calls.

    On steps ``start_step, start_step + every, ...`` (0-based, counted by
    ``step()`` calls) the penalty is :class:`~hesskit.regularizers.HessianTrace`
    over all trainable parameters of the optimizer (or the ``params_filter``
    subset): :math:`\frac{\gamma}{m}\sum_j v_j^\top H v_j`, with its gradient
    through the Hessian-vector products. The update is exactly
    ``torch.optim.SGD``'s (an internal ``torch.optim.SGD`` sharing this
    object's ``param_groups`` and ``state``), so ``gamma=0`` reproduces SGD's
    trajectory bit for bit, and schedulers, ``state_dict()`` (which also holds
    the schedule position) and per-group options work as for SGD.

    Under ``DistributedDataParallel``: give SGDHTR the DDP model's parameters
    and let the closure call the DDP model. The penalty is built from this
    rank's loss, and DDP averages the gradient of ``loss + penalty`` in the one
    ``backward()``, so the loss and penalty gradients are both averaged over
    ranks (formula in :class:`~hesskit.regularizers.HessianTrace`) and the SGD
    step is the same on every rank. Seed ``generator`` alike on every rank to
    share the probes: with equal shards the step is then the single-process
    step on the full batch. ``regularizer.last_trace`` and the returned loss
    are this rank's. With ``static_graph=True``, set ``start_step >= 1``, because
    DDP's first iteration must not be penalized.

    Args:
        params: parameters or param groups (``model.named_parameters()`` gives
            ``params_filter`` the names).
        lr, momentum, dampening, weight_decay, nesterov: as ``torch.optim.SGD``.
        gamma: penalty weight :math:`\gamma \ge 0` (0: plain SGD, no extra work).
        n_probes: Hutchinson probes :math:`m` per penalized step.
        every: penalize one step in ``every``.
        start_step: first penalized step.
        probe, params_filter, generator, batched: as in
            :class:`~hesskit.regularizers.HessianTrace`.

    Attributes:
        regularizer: the :class:`~hesskit.regularizers.HessianTrace` (its
            ``last_trace`` is the latest estimate of :math:`\operatorname{tr} H`).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> x, y = torch.randn(16, 4), torch.randn(16, 1)
        >>> opt = SGDHTR(model.parameters(), lr=0.1, momentum=0.9, gamma=1e-2, n_probes=4, every=2)
        >>> loss = opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))  # no backward()!
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        gamma: float = 1e-3,
        n_probes: int = 10,
        every: int = 50,
        start_step: int = 0,
        *,
        probe: str = "rademacher",
        params_filter: ParamFilter | nn.Module | Iterable[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        batched: bool = True,
    ) -> None:
        self.regularizer = HessianTrace(
            gamma, n_probes, every, start_step, probe, params_filter, generator, batched=batched
        )
        super().__init__(params, {})
        self._adopt(
            torch.optim.SGD(
                self.param_groups,
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
            )
        )

    def _penalized(self) -> list[Any]:
        """The parameters that require grad: (name, param) pairs if every group has names, else tensors."""
        pairs = [
            (name, p)
            for group in self.param_groups
            for name, p in zip(group.get("param_names", [None] * len(group["params"])), group["params"])
            if p.requires_grad
        ]
        if any(name is None for name, _ in pairs):
            return [p for _, p in pairs]
        return pairs

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Clear the gradients, evaluate the loss, backpropagate loss (+ penalty), apply the SGD update.

        Args:
            closure: returns the scalar loss with its graph, WITHOUT calling ``backward()``.

        Returns:
            The loss returned by the closure.

        Raises:
            ValueError: no closure; the closure populated ``.grad`` (it called
                ``backward()``); the loss has no graph.
            TypeError: the closure did not return a tensor.
        """
        if closure is None or not callable(closure):
            raise ValueError(
                f"SGDHTR.step() needs a closure returning the loss (without calling backward()), got {closure!r}"
            )
        self.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = closure()
            if not isinstance(loss, torch.Tensor):
                raise TypeError(f"the closure must return the loss tensor, got {type(loss).__name__}")
            if any(p.grad is not None for group in self.param_groups for p in group["params"]):
                raise ValueError(
                    "the closure populated .grad (it called backward()): SGDHTR's closure must only return "
                    "the loss; the optimizer backpropagates loss + penalty itself"
                )
            if loss.grad_fn is None:
                raise ValueError(
                    "the closure returned a loss without grad_fn: compute it from the parameters with grad "
                    "enabled (not under torch.no_grad(), not .item() or .detach())"
                )
            penalty = self.regularizer(loss, self._penalized())
            (loss + penalty).backward()
        self.inner.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.SGD``'s ``state_dict()`` plus the penalty schedule position."""
        state = super().state_dict()
        state["hessian_trace"] = self.regularizer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (the SGD state and the schedule position).

        A plain ``torch.optim.SGD`` state dict is accepted too; the schedule then restarts at step 0.
        """
        state_dict = dict(state_dict)
        self.regularizer.load_state_dict(state_dict.pop("hessian_trace", {"calls": 0}))
        super().load_state_dict(state_dict)
