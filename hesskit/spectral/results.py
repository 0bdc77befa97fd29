"""Result records of the spectral toolkit.

Every public function of :mod:`hesskit.spectral` returns one of these small
frozen dataclasses. They hold torch tensors (on the device of the operator)
and serialize to plain JSON: tensors become nested lists of floats, and
:meth:`from_dict` / :meth:`from_json` turn such a record back into tensors
(on the CPU, float64).

    >>> import torch, hesskit as hk
    >>> r = hk.eigenvalues(torch.diag(torch.arange(1.0, 6.0)), k=2)
    >>> type(r).from_json(r.to_json()).values.tolist()
    [5.0, 4.0]
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Dict

import torch

__all__ = ["EigenResult", "TraceResult", "Density"]


class _Record:
    """JSON round trip shared by the result dataclasses.

    Subclasses list the names of their tensor fields in ``_tensor_fields``;
    every other field must already be a JSON value (int, float, bool, list).
    """

    _tensor_fields: ClassVar[tuple] = ()

    def to_dict(self) -> Dict[str, Any]:
        """Returns the fields as a dict of JSON values (tensors as nested lists)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().tolist()
            out[field.name] = value
        return out

    def to_json(self, **kwargs) -> str:
        """Returns :meth:`to_dict` as a JSON string; ``kwargs`` go to :func:`json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]):
        """Rebuilds a record from :meth:`to_dict` output (tensors as CPU float64)."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(
                f"data: unknown fields {sorted(unknown)} for {cls.__name__}; "
                f"expected {sorted(names)}"
            )
        kwargs = {
            key: torch.tensor(value, dtype=torch.float64)
            if key in cls._tensor_fields
            else value
            for key, value in data.items()
        }
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str):
        """Rebuilds a record from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class EigenResult(_Record):
    """Eigenpairs of a symmetric curvature operator.

    Attributes:
        values: ``(k,)`` eigenvalues in the order that was asked for
            (``"largest"``: descending; ``"smallest"``: ascending;
            ``"magnitude"``: descending ``|λ|``).
        vectors: ``(P, k)`` orthonormal eigenvectors, column ``i`` belongs to
            ``values[i]``.
        residuals: ``(k,)`` relative residuals
            ``‖H v − λ v‖ / max(|λ|, √ε · ‖H‖)`` measured with a final product
            (not a recurrence estimate); ``ε`` is the machine epsilon of the dtype.
        n_matvecs: Hessian-vector products spent (a block of ``k`` columns counts ``k``).
        converged: True when every residual is at most the requested ``tol``.

    Example:
        >>> import torch, hesskit as hk
        >>> r = hk.eigenvalues(torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64)), k=2)
        >>> r.values.tolist(), r.vectors.shape, r.converged
        ([100.0, 99.0], torch.Size([100, 2]), True)
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    n_matvecs: int
    converged: bool

    _tensor_fields: ClassVar[tuple] = ("values", "vectors", "residuals")


@dataclasses.dataclass(frozen=True)
class TraceResult(_Record):
    """A trace estimate with its standard error.

    Attributes:
        value: the estimate of ``tr(H)``.
        stderr: the standard error of the estimate (0 for an exact trace).
        n_matvecs: Hessian-vector products spent.

    Example:
        >>> import torch, hesskit as hk
        >>> r = hk.trace(torch.eye(10, dtype=torch.float64), method="exact")
        >>> r.value, r.stderr
        (10.0, 0.0)
    """

    value: float
    stderr: float
    n_matvecs: int


@dataclasses.dataclass(frozen=True)
class Density(_Record):
    """A spectral density from stochastic Lanczos quadrature.

    The quadrature of run ``r`` is the discrete measure
    ``Σᵢ weights[r, i] δ(t − nodes[r, i])``; the average over the runs
    estimates the empirical eigenvalue distribution ``(1/P) Σⱼ δ(t − λⱼ)``,
    and ``density`` is that average convolved with a Gaussian of width ``sigma``.

    Attributes:
        grid: ``(n_points,)`` points where the density is evaluated.
        density: ``(n_points,)`` smoothed density (it integrates to about 1).
        nodes: ``(n_runs, n_steps)`` Ritz values of every run (Gauss nodes).
        weights: ``(n_runs, n_steps)`` squared first components of the Ritz
            vectors; each run's weights sum to 1.
        sigma: the width of the Gaussian broadening.
        n_matvecs: Hessian-vector products spent.

    Example:
        >>> import torch, hesskit as hk
        >>> A = torch.diag(torch.linspace(0.0, 1.0, 200, dtype=torch.float64))
        >>> d = hk.spectral_density(A, n_runs=4, n_steps=30, seed=0)
        >>> d.nodes.shape, round(d.moment(1), 2)        # the mean eigenvalue
        (torch.Size([4, 30]), 0.5)
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float = 0.0
    n_matvecs: int = 0

    _tensor_fields: ClassVar[tuple] = ("grid", "density", "nodes", "weights")

    def moment(self, order: int) -> float:
        """Returns the quadrature estimate of ``(1/P) tr(H^order) = (1/P) Σⱼ λⱼ^order``.

        Args:
            order: a non-negative integer power.
        """
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order: expected a non-negative int, got {order!r}")
        per_run = (self.weights * self.nodes**order).sum(dim=1)
        return float(per_run.mean())
