"""Curvature operators: matrix-free Hessian, GGN and functional Hessian of an Objective.

For an :class:`~hesskit.objective.Objective` with loss
:math:`\\mathcal{L}(\\theta) = \\sum_b w_b \\ell_b(\\theta)` the operators represent

* :class:`HessianOperator`: :math:`H = \\nabla^2_\\theta \\mathcal{L}`;
* :class:`GGNOperator`: the generalized Gauss-Newton matrix
  :math:`G = \\sum_b w_b J_b^\\top (\\nabla^2_f \\ell_b) J_b` (exact, not sampled);
* :class:`FunctionalHessianOperator`: :math:`H_F = H - G`, the part of the
  Hessian carried by the second derivatives of the network itself
  (Singh, Bachmann & Hofmann 2021).

``matmat`` is the primitive: a block of k vectors costs one pass over the data.
Vectors follow the flattening convention of :class:`Objective` (selected
parameters in ``model.named_parameters()`` order, each ``p.reshape(-1)``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hesskit._validation import all_finite
from hesskit.engines import make_engine
from hesskit.objective import Objective

__all__ = ["CurvatureOperator", "HessianOperator", "GGNOperator",
           "FunctionalHessianOperator", "DEFAULT_MAX_BYTES"]

#: ``dense()`` refuses to allocate more than this unless ``max_bytes`` says otherwise.
DEFAULT_MAX_BYTES = 4 * 2**30


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class CurvatureOperator:
    """A symmetric P×P curvature matrix of an :class:`Objective`, applied matrix-free.

    Args:
        objective: what is differentiated (model, loss, data, parameters).
        engine: ``"auto"``, ``"func"``, ``"autograd"`` or ``"native"`` (see
            :mod:`hesskit.engines`).
        column_block: how many columns ``dense()``/``diagonal()`` push through one
            ``matmat`` (memory grows with it).

    Attributes:
        n_matvecs: number of matrix-vector products so far (a ``matmat`` of k
            columns counts k).
    """

    kind = "hessian"

    def __init__(self, objective: Objective, engine: str = "auto", column_block: int = 64):
        if not isinstance(objective, Objective):
            raise TypeError(f"objective: expected a hesskit.Objective, got "
                            f"{type(objective).__name__}")
        if not isinstance(column_block, int) or column_block < 1:
            raise ValueError(f"column_block: expected a positive int, got {column_block!r}")
        self.objective = objective
        self.engine = make_engine(engine, objective)
        self.column_block = column_block
        self.n_matvecs = 0

    # ----------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, int]:
        return (self.objective.n_params, self.objective.n_params)

    @property
    def dtype(self) -> torch.dtype:
        return self.objective.dtype

    @property
    def device(self) -> torch.device:
        return self.objective.device

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(P={self.shape[0]}, engine={self.engine.name!r}, "
                f"dtype={self.dtype}, n_matvecs={self.n_matvecs})")

    # -------------------------------------------------------------- products
    def matmat(self, V: Tensor) -> Tensor:
        """The product with a block ``V`` of shape ``(P, k)``: one pass over the data."""
        self.objective.check_vector(V, "V")
        if V.ndim != 2:
            raise ValueError(f"V: expected shape (P, k), got {tuple(V.shape)}")
        if not all_finite(V):
            raise ValueError("V: contains non-finite values")
        V = V.contiguous()
        out = torch.zeros_like(V)
        if V.shape[1] == 0:
            return out
        for chunk in self.objective.chunks():
            out += chunk.weight * self.engine.product(self.kind, chunk, V)
        self.objective.all_reduce(out)
        self.n_matvecs += V.shape[1]
        self._check_finite(out)
        return out

    def matvec(self, v: Tensor) -> Tensor:
        """The product with one vector ``v`` of shape ``(P,)``."""
        self.objective.check_vector(v, "v")
        if v.ndim != 1:
            raise ValueError(f"v: expected shape ({self.shape[0]},), got {tuple(v.shape)}")
        return self.matmat(v.unsqueeze(1)).squeeze(1)

    def __matmul__(self, other: Tensor) -> Tensor:
        if isinstance(other, Tensor) and other.ndim == 1:
            return self.matvec(other)
        return self.matmat(other)

    def _check_finite(self, out: Tensor) -> None:
        if not all_finite(out):
            bad = ~torch.isfinite(out)
            row = int(bad.any(dim=1).nonzero()[0])
            raise FloatingPointError(
                f"{type(self).__name__}: the product has non-finite entries, first in "
                f"parameter {self.objective.name_of_index(row)!r}")

    # ------------------------------------------------------------ explicit forms
    def _columns(self, desc: str, progress: bool | None = None):
        """Yield ``(start, block)`` with ``block = self @ I[:, start:start+b]``; a bar
        when ``progress`` is True, or is None and there are 8 blocks or more."""
        P = self.shape[0]
        starts = range(0, P, self.column_block)
        bar = tqdm(starts, desc=desc, unit="block", leave=False,
                   disable=progress is False or (progress is None and len(starts) < 8))
        for start in bar:
            stop = min(start + self.column_block, P)
            E = torch.zeros(P, stop - start, dtype=self.dtype, device=self.device)
            E[torch.arange(start, stop), torch.arange(stop - start)] = 1
            yield start, self.matmat(E)

    def dense(self, max_bytes: int | None = None, progress: bool | None = None) -> Tensor:
        """The explicit P×P matrix.

        Args:
            max_bytes: refuse (``ValueError``, before allocating) when the matrix
                would need more bytes; default :data:`DEFAULT_MAX_BYTES` (4 GiB).
            progress: a bar over the blocks of basis columns: True, False, or None
                (shown from 8 blocks on).
        """
        P = self.shape[0]
        limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
        need = P * P * torch.empty((), dtype=self.dtype).element_size()
        if need > limit:
            raise ValueError(f"dense(): the {P}×{P} {self.dtype} matrix needs "
                             f"{_format_bytes(need)}, more than max_bytes="
                             f"{_format_bytes(limit)}; raise max_bytes to allow it")
        if self.engine.supports("dense"):
            D = self.objective.all_reduce(self.engine.dense(self.kind))
            self.n_matvecs += P
            return D
        D = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for start, block in self._columns("dense", progress):
            D[:, start:start + block.shape[1]] = block
        return D

    def diagonal(self, progress: bool | None = None) -> Tensor:
        """The diagonal (P,), exact (through blocks of basis columns, or the engine's
        own exact diagonal where it has one); ``progress`` as for :meth:`dense`."""
        if self.engine.supports("diagonal"):
            return self.objective.all_reduce(self.engine.diagonal(self.kind))
        diag = torch.empty(self.shape[0], dtype=self.dtype, device=self.device)
        for start, block in self._columns("diagonal", progress):
            b = block.shape[1]
            diag[start:start + b] = block[torch.arange(start, start + b), torch.arange(b)]
        return diag

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` applying this operator (float64 or
        float32 numpy arrays in and out; the products still run in torch)."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32

        def _apply(X):
            X = np.asarray(X)
            t = torch.as_tensor(X.reshape(self.shape[0], -1), dtype=self.dtype,
                                device=self.device)
            return self.matmat(t).cpu().numpy().astype(np_dtype, copy=False).reshape(X.shape)

        return LinearOperator(self.shape, matvec=_apply, rmatvec=_apply, matmat=_apply,
                              dtype=np_dtype)


class HessianOperator(CurvatureOperator):
    """The Hessian :math:`\\nabla^2_\\theta \\mathcal{L}` of the dataset loss.

    Example:
        >>> H = HessianOperator(obj)
        >>> Hv = H @ torch.randn(H.shape[0])
    """

    kind = "hessian"


class GGNOperator(CurvatureOperator):
    """The exact generalized Gauss-Newton matrix :math:`\\sum_b w_b J_b^\\top
    \\nabla^2_f\\ell_b\\, J_b` (closed-form output Hessian for cross-entropy and MSE,
    ``torch.func`` for any other loss). Positive semi-definite for convex losses."""

    kind = "ggn"


class FunctionalHessianOperator(CurvatureOperator):
    """The functional Hessian :math:`H - G`: the terms with the network's own second
    derivatives, :math:`\\sum_c \\partial_{f_c}\\ell\\, \\nabla^2_\\theta f_c`."""

    kind = "functional"
