"""The engine interface: how curvature products are computed on one chunk.

An engine declares what it can compute (:attr:`Engine.capabilities`) and how strongly
``engine="auto"`` prefers it (:attr:`Engine.priority`); :mod:`hesskit.engines` keeps
the registry and makes the choice, so no other module needs to know engines by name.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

if TYPE_CHECKING:
    from hesskit.objective import Chunk, Objective

__all__ = ["Engine", "CAPABILITIES", "differentiable_attention", "wrong_second_derivative"]

#: What an engine can provide: ``"products"`` (``product`` for a
#: block of k vectors), ``"blocks"`` (``layer_blocks(kind)``: every layer's exact
#: diagonal block at once), ``"diagonal"`` (``diagonal(kind)``: the exact diagonal
#: without P products), ``"dense"`` (``dense(kind)``: the explicit matrix without P
#: products).
CAPABILITIES = ("products", "blocks", "diagonal", "dense")


def wrong_second_derivative(model: torch.nn.Module) -> str | None:
    """Why PyTorch's own second derivative of ``model`` is wrong, or ``None``.

    The fused ``torch._weight_norm`` (``weight_norm`` with ``dim`` not None, as a
    parametrization or as the older hook) has a double backward that gives an
    asymmetric Hessian (off by 0.33 from finite differences of the gradient on a small
    CNN, torch 2.13 CPU); ``dim=None`` runs plain differentiable ops and is exact.
    """
    from torch.nn.utils.parametrizations import _WeightNorm
    from torch.nn.utils.weight_norm import WeightNorm

    for name, module in model.named_modules():
        fused = [attr for attr, plist in getattr(module, "parametrizations", {}).items()
                 if any(isinstance(p, _WeightNorm) and p.dim != -1 for p in plist)]
        fused += [hook.name for hook in module._forward_pre_hooks.values()
                  if isinstance(hook, WeightNorm) and hook.dim != -1]
        if fused:
            return (f"module {name!r} ({type(module).__name__}) has weight_norm of "
                    f"{fused[0]!r} with a dim: torch's second derivative of the fused "
                    "torch._weight_norm is wrong (use weight_norm(..., dim=None) or "
                    "remove it)")
    return None


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
    operators weight the chunks and sum them. An engine that declares more
    :data:`CAPABILITIES` implements the methods they name.

    Attributes:
        name: the name ``engine=`` selects it by.
        priority: ``engine="auto"`` tries the registered engines from the highest
            priority down (as given by :meth:`priority_for` the objective) and takes
            the first that supports the model.
        capabilities: the subset of :data:`CAPABILITIES` the engine implements.
        min_columns: ``"auto"`` sends products of fewer columns to the next engine
            in priority order (for an engine whose fixed cost per call only pays off
            on wide blocks).
        choice: how the engine was chosen: ``{engine name: why it was passed over}``
            for every engine ``"auto"`` tried before it, then ``{name: "chosen"}``
            (``"requested"`` when named explicitly; ``"chosen for k >= m"`` and
            ``"chosen for k < m"`` when ``auto`` splits blocks by ``min_columns``).
    """

    name: ClassVar[str] = "base"
    priority: ClassVar[int] = 0
    capabilities: ClassVar[frozenset[str]] = frozenset({"products"})
    min_columns: ClassVar[int] = 1

    def __init__(self, objective: "Objective"):
        self.objective = objective
        self.choice: dict[str, str] = {}

    @classmethod
    def supports(cls, capability: str) -> bool:
        """Whether the engine implements ``capability`` (one of :data:`CAPABILITIES`)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"capability: expected one of {CAPABILITIES}, got {capability!r}")
        return capability in cls.capabilities

    @classmethod
    def priority_for(cls, objective: "Objective") -> int:
        """The engine's priority for ``objective`` (a static rule: it must not run
        products); :attr:`priority` unless the engine knows it is slow on such models."""
        return cls.priority

    @classmethod
    def unsupported_reason(cls, objective: "Objective") -> str | None:
        """``None`` when this engine can handle ``objective``, else why not (a static
        check: it must not run products). By default: :func:`wrong_second_derivative`,
        which no engine that differentiates through PyTorch can get right."""
        return wrong_second_derivative(objective.model)

    @contextlib.contextmanager
    def evaluation(self, chunk: "Chunk"):
        """The model evaluates as the objective prescribes for ``chunk``
        (:meth:`Objective.evaluation`), with :func:`differentiable_attention`."""
        with self.objective.evaluation(chunk.index), differentiable_attention():
            yield

    def batches_columns(self, k: int) -> bool:
        """Whether a product of ``k`` columns costs markedly less than ``k`` products of
        one column, so that block methods, which spend more products to need fewer
        passes, pay off (:func:`hesskit.eigenvalues` picks its block size by it). True
        unless an engine knows better."""
        return True

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
