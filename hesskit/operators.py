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
           "FunctionalHessianOperator", "DEFAULT_MAX_BYTES", "check_finite",
           "check_matrix_bytes"]

#: ``dense()`` refuses to allocate more than this unless ``max_bytes`` says otherwise.
DEFAULT_MAX_BYTES = 4 * 2**30


def check_finite(out: Tensor, name_of_row, what: str) -> None:
    """Raise ``FloatingPointError`` when ``out`` (rows indexed by parameter entries: a
    vector, a block of products or a matrix) has a non-finite entry, naming the
    parameter of the first such row through ``name_of_row(row)``."""
    if not all_finite(out):
        bad = ~torch.isfinite(out)
        if bad.ndim > 1:
            bad = bad.flatten(1).any(dim=1)
        row = int(bad.nonzero()[0])
        raise FloatingPointError(f"{what} has non-finite entries, first in parameter "
                                 f"{name_of_row(row)!r}")


def check_matrix_bytes(what: str, sides: list[int], dtype: torch.dtype,
                       max_bytes: int | None) -> None:
    """Refuse (``ValueError``, before anything is allocated) square matrices of the
    given sides that together need more than ``max_bytes`` (default
    :data:`DEFAULT_MAX_BYTES`)."""
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    need = sum(p * p for p in sides) * torch.empty((), dtype=dtype).element_size()
    if need > limit:
        shapes = " + ".join(f"{p}×{p}" for p in sides)
        noun = "matrix needs" if len(sides) == 1 else "matrices need"
        raise ValueError(f"{what}: the {shapes} {dtype} {noun} {_format_bytes(need)}, "
                         f"more than max_bytes={_format_bytes(limit)}; raise max_bytes to "
                         "allow it")


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
        check_deterministic: on the first product, compute the product with its first
            column twice and raise a ``ValueError`` when the two disagree (relative
            difference above :math:`\\sqrt{\\varepsilon}` of the dtype): the operator
            then changes from pass to pass (a shuffling ``DataLoader`` with
            ``drop_last=True``, ``mode="train"`` with BatchNorm or dropout and batches
            that change), and every spectral estimate built on it would be meaningless.
            As in curvlinops (``check_deterministic``). The repeat takes the same path
            as the product it is compared with: with a single vector, one extra pass;
            with a block of k > 1, two single-vector passes. Once per operator, not
            counted in ``n_matvecs``; ``False`` skips it.

    Attributes:
        n_matvecs: number of matrix-vector products so far (a ``matmat`` of k
            columns counts k).

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> H = hk.HessianOperator(obj)
        >>> HV = H.matmat(torch.randn(H.shape[0], 4))     # 4 products, one pass over the data
        >>> HV.shape, H.n_matvecs
        (torch.Size([67, 4]), 4)
        >>> H.to_scipy().shape
        (67, 67)
    """

    kind = "hessian"

    def __init__(self, objective: Objective, engine: str = "auto", column_block: int = 64,
                 check_deterministic: bool = True):
        if not isinstance(objective, Objective):
            raise TypeError(f"objective: expected a hesskit.Objective, got "
                            f"{type(objective).__name__}")
        if not isinstance(column_block, int) or column_block < 1:
            raise ValueError(f"column_block: expected a positive int, got {column_block!r}")
        if not isinstance(check_deterministic, bool):
            raise TypeError("check_deterministic: expected a bool, got "
                            f"{type(check_deterministic).__name__}")
        self.objective = objective
        self.engine = make_engine(engine, objective)
        self.column_block = column_block
        self._checked = not check_deterministic
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

    def batches_columns(self, k: int) -> bool:
        """Whether a ``matmat`` of ``k`` columns costs markedly less than ``k`` single
        products (the engine's :meth:`~hesskit.engines.Engine.batches_columns`)."""
        return self.engine.batches_columns(k)

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
        if V.shape[1] == 0:
            return torch.zeros_like(V)
        out = self._pass(V)
        self.n_matvecs += V.shape[1]
        self._check_finite(out)
        if not self._checked:
            self._checked = True
            # like with like: a column of a k-block may take another path than a single
            # column (another engine under auto's split, other GEMM blocking), whose
            # rounding differs; on an operator near zero that alone looks like a change
            v = V[:, :1]
            self._check_repeatable(v, out if V.shape[1] == 1 else self._pass(v))
        return out

    def _pass(self, V: Tensor) -> Tensor:
        """One pass over the data: the weighted sum of the chunks' products."""
        out = torch.zeros_like(V)
        for chunk in self.objective.chunks():
            out += chunk.weight * self.engine.product(self.kind, chunk, V)
        return self.objective.all_reduce(out)

    def _check_repeatable(self, v: Tensor, first: Tensor) -> None:
        """Raise when a second pass with ``v`` disagrees with the first one's ``first``."""
        again, first = self._pass(v).detach(), first.detach()
        scale = torch.linalg.norm(first)
        difference = float(torch.linalg.norm(again - first) / scale) if scale > 0 else \
            float(torch.linalg.norm(again) > 0)
        if difference <= torch.finfo(self.dtype).eps ** 0.5:
            return
        causes = self.objective.variability_causes() or [
            "the model or the data is random between calls (a random transform in the "
            "data pipeline, a model that draws noise without a seed)"]
        raise ValueError(
            f"{type(self).__name__}: two products with the same vector differ (relative "
            f"difference {difference:.3g}): the operator changes from pass to pass over the "
            "data. Likely causes: " + "; ".join(causes) + ". Make every pass the same "
            "(shuffle=False or drop_last=False, mode='eval'), or pass "
            "check_deterministic=False to the operator to accept it")

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

    def _check_finite(self, out: Tensor, what: str = "the product") -> None:
        check_finite(out, self.objective.name_of_index, f"{type(self).__name__}: {what}")

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
        check_matrix_bytes("dense()", [P], self.dtype, max_bytes)
        if self.engine.supports("dense"):
            D = self.objective.all_reduce(self.engine.dense(self.kind))
            self.n_matvecs += P
            self._check_finite(D, "the dense matrix")
            return D
        D = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for start, block in self._columns("dense", progress):
            D[:, start:start + block.shape[1]] = block
        return D

    def diagonal(self, progress: bool | None = None) -> Tensor:
        """The diagonal (P,), exact (through blocks of basis columns, or the engine's
        own exact diagonal where it has one); ``progress`` as for :meth:`dense`."""
        if self.engine.supports("diagonal"):
            diag = self.objective.all_reduce(self.engine.diagonal(self.kind))
            self._check_finite(diag, "the diagonal")
            return diag
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
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> H = HessianOperator(obj)
        >>> Hv = H @ torch.randn(H.shape[0])
        >>> H.shape, Hv.shape
        ((67, 67), torch.Size([67]))
    """

    kind = "hessian"


class GGNOperator(CurvatureOperator):
    """The exact generalized Gauss-Newton matrix :math:`\\sum_b w_b J_b^\\top
    \\nabla^2_f\\ell_b\\, J_b` (closed-form output Hessian for cross-entropy and MSE,
    ``torch.func`` for any other loss). Positive semi-definite for convex losses.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> G = hk.GGNOperator(obj).dense()
        >>> bool(torch.linalg.eigvalsh(G).min() > -1e-5)   # cross-entropy is convex
        True
    """

    kind = "ggn"


class FunctionalHessianOperator(CurvatureOperator):
    """The functional Hessian :math:`H - G`: the terms with the network's own second
    derivatives, :math:`\\sum_c \\partial_{f_c}\\ell\\, \\nabla^2_\\theta f_c`.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> H, G = hk.HessianOperator(obj).dense(), hk.GGNOperator(obj).dense()
        >>> F = hk.FunctionalHessianOperator(obj).dense()
        >>> torch.allclose(H, G + F, atol=1e-5)
        True
    """

    kind = "functional"
