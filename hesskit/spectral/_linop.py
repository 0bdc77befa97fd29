"""The symmetric linear operator every spectral routine works on.

:func:`as_operator` accepts either a curvature operator (duck-typed: anything
with ``shape``, ``dtype``, ``device`` and ``matmat``, such as
:class:`hesskit.HessianOperator`) or a dense symmetric ``(P, P)`` tensor, and
returns a :class:`LinearOperator` that checks every product and counts the
Hessian-vector products spent through it, a block of ``k`` columns counting
``k``, the same rule as ``CurvatureOperator.n_matvecs``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from hesskit._validation import all_finite

__all__ = ["LinearOperator", "as_operator"]


class LinearOperator:
    """A symmetric ``(P, P)`` operator that counts and checks its products.

    Attributes:
        shape: ``(P, P)``.
        dtype: the floating dtype of its products.
        device: the device of its products.
        n_matvecs: products spent through this view (``k`` per ``matmat`` of ``k`` columns,
            plus what the wrapped operator counted while building ``dense``/``diagonal``).
    """

    def __init__(self, op, name: str = "op"):
        self._name = name
        self.n_matvecs = 0
        if isinstance(op, torch.Tensor):
            _check_dense(op, name)
            self._dense, self._op = op, None
        else:
            self._dense, self._op = None, op
        self.shape = tuple(op.shape)
        self.dtype = op.dtype
        self.device = op.device
        if len(self.shape) != 2 or self.shape[0] != self.shape[1]:
            raise ValueError(f"{name}: expected a square (P, P) operator, got shape {self.shape}")
        if not self.dtype.is_floating_point:
            raise TypeError(f"{name}: expected a floating-point operator, got dtype {self.dtype}")

    @property
    def is_dense(self) -> bool:
        """Whether the operator is an explicit tensor (so that products are cheap)."""
        return self._dense is not None

    @property
    def size(self) -> int:
        """The dimension ``P``."""
        return self.shape[0]

    @property
    def eps(self) -> float:
        """The machine epsilon of the dtype."""
        return torch.finfo(self.dtype).eps

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """Returns ``H V`` for ``V`` of shape ``(P, k)`` and counts ``k`` products."""
        if V.ndim != 2 or V.shape[0] != self.size:
            raise ValueError(f"V: expected shape ({self.size}, k), got {tuple(V.shape)}")
        if self._dense is not None:
            out = self._dense @ V
        else:
            out = self._op.matmat(V)
        self.n_matvecs += V.shape[1]
        if tuple(out.shape) != tuple(V.shape):
            raise ValueError(
                f"{self._name}: matmat returned shape {tuple(out.shape)} for a block of "
                f"shape {tuple(V.shape)}"
            )
        if not all_finite(out):
            raise FloatingPointError(f"{self._name}: a curvature product is not finite")
        return out

    def dense(self, max_bytes: Optional[int] = None) -> torch.Tensor:
        """Returns the explicit ``(P, P)`` matrix.

        The wrapped operator's own ``dense(max_bytes)`` when it has one, else the
        product with the identity (one ``matmat`` of ``P`` columns).
        """
        if self._dense is not None:
            return self._dense
        if hasattr(self._op, "dense"):
            return self._counted(lambda: self._op.dense(max_bytes=max_bytes))
        return self.matmat(torch.eye(self.size, dtype=self.dtype, device=self.device))

    def diagonal(self) -> torch.Tensor:
        """Returns the ``(P,)`` diagonal, from ``diagonal()`` when the operator has one."""
        if self._dense is not None:
            return self._dense.diagonal()
        if hasattr(self._op, "diagonal"):
            return self._counted(self._op.diagonal)
        return self.dense().diagonal()

    def _counted(self, compute):
        """Runs ``compute`` and adds the products the wrapped operator counted meanwhile."""
        before = getattr(self._op, "n_matvecs", None)
        out = compute()
        if before is not None:
            self.n_matvecs += int(self._op.n_matvecs) - int(before)
        return out


def as_operator(op, name: str = "op") -> LinearOperator:
    """Wraps a curvature operator or a dense symmetric tensor in a :class:`LinearOperator`.

    Args:
        op: a ``CurvatureOperator`` (anything with ``shape``, ``dtype``, ``device`` and
            ``matmat``) or a symmetric floating-point tensor of shape ``(P, P)``.
        name: the argument name used in error messages.

    Raises:
        TypeError: ``op`` is neither.
        ValueError: ``op`` is not square, or a tensor that is not symmetric.
    """
    if isinstance(op, torch.Tensor) or all(
        hasattr(op, attr) for attr in ("shape", "dtype", "device", "matmat")
    ):
        return LinearOperator(op, name)
    raise TypeError(
        f"{name}: expected a CurvatureOperator (with shape, dtype, device and matmat) or a "
        f"symmetric (P, P) torch.Tensor, got {type(op).__name__}"
    )


def _check_dense(A: torch.Tensor, name: str) -> None:
    """Checks that ``A`` is a finite, square, symmetric floating-point matrix."""
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name}: expected a square (P, P) matrix, got shape {tuple(A.shape)}")
    if not A.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point matrix, got dtype {A.dtype}")
    if not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name}: the matrix has non-finite entries")
    scale = float(A.abs().max()) if A.numel() else 0.0
    asym = float((A - A.mT).abs().max()) if A.numel() else 0.0
    if asym > math.sqrt(torch.finfo(A.dtype).eps) * scale:
        raise ValueError(
            f"{name}: expected a symmetric matrix, got max |A - A^T| = {asym:.3g} "
            f"(max |A| = {scale:.3g})"
        )
