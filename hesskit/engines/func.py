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


#: ``auto``'s priority for :class:`FuncEngine` on models with convolutions: below the
#: ``autograd`` engine's 10 (see :meth:`FuncEngine.priority_for`).
CONVOLUTION_PRIORITY = 5


class FuncEngine(Engine):
    """``torch.func`` products; ``auto``'s choice for models whose ops support ``vmap``,
    except models with convolutions (:meth:`priority_for`)."""

    name = "func"
    priority = 20
    #: ``vmap``'s fixed cost per call pays off from about 8 columns: on an MLP with
    #: LayerNorm (64-64-64-10, N=512, 1 thread, shared machine) ``func`` took 4.1-5.4x
    #: ``autograd``'s time per vector at k=1, 1.3-1.9x at k=5, 0.66-0.74x at k=16 and
    #: 0.52-0.89x at k=100 (one chunk or four), so ``auto`` leaves narrower blocks
    #: to double backward.
    min_columns = 8

    @classmethod
    def priority_for(cls, objective) -> int:
        """:data:`CONVOLUTION_PRIORITY` when the model has a convolution module
        (``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``), else :attr:`priority`.

        ``vmap`` through convolutions is slow on the CPU, with max or average
        pooling alike: Hessian products per vector on LeNet-5 (3x32x32, N=256,
        float32, 1 thread) cost 3.76/2.04/5.39 gradients with ``func`` against
        1.59/1.56/1.80 with ``autograd`` at k = 1/16/64 (README, idle machine); on a
        shared machine 94/56/420 ms against 69/67/87 ms at k = 1/16/100, and on the
        study-A CNN (N=256) 215/924 ms against 124/262 ms at k = 1/16. Double
        backward's cost per vector does not grow with k, so ``auto`` prefers it on
        convolutional models.
        """
        if any(isinstance(m, nn.modules.conv._ConvNd) for m in objective.model.modules()):
            return CONVOLUTION_PRIORITY
        return cls.priority

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
