"""The ``native`` engine: hesskit's own curvature passes, one path per model form.

``NativeEngine(objective)`` returns an instance of the first of its paths
(:attr:`NativeEngine.paths`) that accepts the model; when none does, the last one
refuses it (:class:`~hesskit.engines.native.chain.UnsupportedModelError`), and
:meth:`NativeEngine.unsupported_reason` gives every path's reason. Every path is named
``"native"`` and says which it is in :attr:`NativeEngine.path`:

1. ``"fused chain"`` (:class:`~hesskit.engines.native.fused.FusedChain`): chains of
   Linear layers and pointwise activations, one compiled ``hesskit::sequential_*``
   call per product (forward, R-forward, backward and R-backward fused in C++/CUDA).
2. ``"graph"`` (:class:`~hesskit.engines.native.graph.GraphPath`): any model read as a
   graph of supported layers (CNNs, VGG, ResNets with BatchNorm in eval, MLPs the
   chain form does not cover), one rule per layer type
   (:mod:`~hesskit.engines.native.rules`) for k tangents at once. The rules call
   ATen's convolution, GEMM and pooling kernels directly (no autograd graph), and the
   Linear layers' exact blocks come from the compiled ``kron_block`` op.

Both compute the same exact quantities (products for k vectors, layer blocks,
diagonal, dense), and refuse what they cannot follow exactly by name
(:class:`~hesskit.engines.native.chain.UnsupportedModelError`), so that ``auto``
falls back to ``func`` or ``autograd``.
"""
from __future__ import annotations

from typing import ClassVar

from hesskit.engines.base import CAPABILITIES, Engine

__all__ = ["NativeEngine", "KINDS", "check_kind"]

#: The curvature quantities the native passes compute.
KINDS = ("hessian", "ggn", "functional")


def check_kind(kind: str) -> None:
    """Refuse a ``kind`` other than ``"hessian"``, ``"ggn"`` or ``"functional"``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


class NativeEngine(Engine):
    """The ``native`` engine; constructing it returns the path that fits the model.

    Attributes:
        path: which path this instance is (``"fused chain"`` or ``"graph"``).
        paths: the path classes, in the order they are tried (set by
            :mod:`hesskit.engines.native`).
    """

    name = "native"
    #: above ``func`` (20) and ``autograd`` (10): on the MLP a product costs 0.46 of a
    #: gradient per vector at k=16 (fused chain), on LeNet-5 0.8-1.0 against 1.4-1.9
    #: for double backward and ``vmap`` (benchmarks/bench_native.py, bench_graph.py)
    priority = 30
    capabilities = frozenset(CAPABILITIES)
    path: ClassVar[str] = ""
    paths: ClassVar[tuple[type["NativeEngine"], ...]] = ()

    def __new__(cls, objective):
        if cls is NativeEngine:  # the last path needs no check here: its __init__ refuses
            *first, last = cls.paths
            cls = next((path for path in first if path.unsupported_reason(objective) is None),
                       last)
        return super().__new__(cls)

    @classmethod
    def unsupported_reason(cls, objective) -> str | None:
        """``None`` when some path accepts ``objective``, else every path's reason."""
        reasons = []
        for path in cls.paths:
            reason = path.unsupported_reason(objective)
            if reason is None:
                return None
            reasons.append(f"{path.path} path: {reason}")
        return "; ".join(reasons)
