"""The ``func`` engine: ``torch.func`` transforms, vectorized over the k columns.

Hessian products are forward-over-reverse, ``vmap(jvp(grad(loss)))``: all k
tangents travel through one vectorized pass (Dagréou et al. 2024, "How to compute
Hessian-vector products?", find forward-over-reverse the fastest mode). GGN
products are ``vmap(jvp(f))`` for :math:`JV`, the output Hessian, and
``vmap(vjp(f))`` for :math:`J^\\top U`.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, jvp, vjp, vmap

from hesskit.engines.base import Engine
from hesskit.engines.output_hessian import output_hessian_matmat

__all__ = ["FuncEngine"]


def _transformable_loss(loss_fn: Callable) -> Callable:
    """An equivalent of ``loss_fn`` that forward-mode AD can differentiate twice.

    In torch 2.13 ``jvp(grad(F.mse_loss))`` fails ("ZeroTensors are immutable": the
    backward formula writes into the targets' zero tangent), so MSE is written out.
    """
    if isinstance(loss_fn, nn.MSELoss) or loss_fn is F.mse_loss:
        reduction = getattr(loss_fn, "reduction", "mean")

        def mse(outputs, targets):
            squared = (outputs - targets) ** 2
            return squared.mean() if reduction == "mean" else squared.sum()

        return mse
    return loss_fn


class FuncEngine(Engine):
    """``torch.func`` products; the default for models whose ops support ``vmap``."""

    name = "func"

    def __init__(self, objective):
        super().__init__(objective)
        self._loss_fn = _transformable_loss(objective.loss_fn)

    def hessian(self, chunk, V: Tensor) -> Tensor:
        obj = self.objective
        primals = tuple(p.detach() for p in obj.params)
        gradient = grad(lambda ps: obj.chunk_loss(ps, chunk, self._loss_fn))

        def hvp(tangents):
            return jvp(gradient, (primals,), (tangents,))[1]

        with self.evaluation(chunk):
            out = vmap(hvp, randomness="same")(tuple(obj.unflatten(V)))
        return obj.flatten(out)

    def ggn(self, chunk, V: Tensor) -> Tensor:
        obj = self.objective
        primals = tuple(p.detach() for p in obj.params)

        def f(ps):
            return obj.forward(ps, chunk.inputs)

        with self.evaluation(chunk):
            outputs, pullback = vjp(f, primals)
            JV = vmap(lambda t: jvp(f, (primals,), (t,))[1],
                      randomness="same")(tuple(obj.unflatten(V)))
            HJV = output_hessian_matmat(obj.loss_fn, outputs.detach(), chunk.targets, JV,
                                        obj.reduction)
            out = vmap(pullback, randomness="same")(HJV)[0]
        return obj.flatten(out)
