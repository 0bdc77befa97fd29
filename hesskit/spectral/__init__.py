"""Spectral toolkit: eigenpairs, traces, densities and ranks of curvature operators.

Every routine takes a ``CurvatureOperator`` (``hk.HessianOperator`` and
friends, or anything with ``shape``, ``dtype``, ``device`` and ``matmat``)
or a dense symmetric ``(P, P)`` tensor, batches its vectors into ``matmat``
blocks (one pass over the data per block), and returns a frozen dataclass from
:mod:`hesskit.spectral.results` that serializes to JSON.

=========================  ==================================================
:func:`eigenvalues`        extreme eigenpairs (thick-restart block Lanczos)
:func:`power_iteration`    top ``|λ|`` eigenpairs by deflated power iteration
:func:`trace`              Hutchinson, Hutch++ or exact trace, with stderr
:func:`spectral_density`   stochastic Lanczos quadrature density
:func:`rank`               numerical rank of the explicit matrix
:func:`count_outliers`     eigenvalues a histogram gap separates from the bulk
:mod:`theory`              predicted Hessian ranks (Singh et al. 2021)
=========================  ==================================================
"""
from hesskit.spectral import theory
from hesskit.spectral.density import spectral_density
from hesskit.spectral.lanczos import eigenvalues
from hesskit.spectral.outliers import count_outliers
from hesskit.spectral.power import power_iteration
from hesskit.spectral.rank import rank
from hesskit.spectral.results import Density, EigenResult, TraceResult
from hesskit.spectral.trace import trace

__all__ = [
    "eigenvalues",
    "power_iteration",
    "trace",
    "spectral_density",
    "rank",
    "count_outliers",
    "theory",
    "EigenResult",
    "TraceResult",
    "Density",
]
