"""The engine interface: how curvature products are computed on one chunk."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

if TYPE_CHECKING:
    from hesskit.objective import Chunk, Objective

__all__ = ["Engine", "differentiable_attention"]


@contextlib.contextmanager
def differentiable_attention():
    """Attention kernels that can be differentiated twice and batched by ``vmap``.

    PyTorch dispatches ``F.scaled_dot_product_attention`` to fused kernels (flash
    attention on the CPU) that have neither a double backward nor a forward-mode
    derivative, and an ``nn.MultiheadAttention`` in eval mode whose arguments do not
    require grad (as under ``torch.func.jvp``) to ``torch._native_multi_head_attention``,
    which has no forward-mode derivative either. Inside this context attention runs on
    the math backend (the same function written in differentiable ops) and the
    ``MultiheadAttention`` fast path is off; both settings are restored on exit.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class Engine:
    """Computes curvature-matrix products of one chunk's loss.

    Subclasses implement :meth:`hessian` and :meth:`ggn`: the product of the
    Hessian (or GGN) of ``loss_fn(model(x), y)`` on one chunk (its own reduction,
    unweighted) with a block ``V`` of shape ``(P, k)``, returning ``(P, k)``. The
    operators weight the chunks and sum them.
    """

    name = "base"

    def __init__(self, objective: "Objective"):
        self.objective = objective

    @classmethod
    def unsupported_reason(cls, objective: "Objective") -> str | None:
        """``None`` when this engine can handle ``objective``, else why not."""
        return None

    @contextlib.contextmanager
    def evaluation(self, chunk: "Chunk"):
        """The model evaluates as the objective prescribes for ``chunk``
        (:meth:`Objective.evaluation`), with :func:`differentiable_attention`."""
        with self.objective.evaluation(chunk.index), differentiable_attention():
            yield

    def hessian(self, chunk: "Chunk", V: Tensor) -> Tensor:
        raise NotImplementedError

    def ggn(self, chunk: "Chunk", V: Tensor) -> Tensor:
        raise NotImplementedError

    def product(self, kind: str, chunk: "Chunk", V: Tensor) -> Tensor:
        """Dispatch ``kind`` in ``{"hessian", "ggn", "functional"}``."""
        if kind == "hessian":
            return self.hessian(chunk, V)
        if kind == "ggn":
            return self.ggn(chunk, V)
        return self.hessian(chunk, V) - self.ggn(chunk, V)
