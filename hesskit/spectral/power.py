"""Power iteration with deflation, the classic baseline (PyHessian).

Yao, Gholami, Keutzer & Mahoney, "PyHessian: Neural networks through the lens
of the Hessian" (IEEE BigData 2020) compute the top Hessian eigenvalues by
power iteration: ``v ← H v / ‖H v‖`` converges to the eigenvector of the
largest ``|λ|`` at the rate ``|λ₂ / λ₁|`` per product; further eigenpairs are
found one after the other, each iterate kept orthogonal to the eigenvectors
already found (projection deflation). It spends one single-vector product per
iteration and is kept as the reference point that :func:`eigenvalues`
(block Lanczos) is measured against.
"""
from __future__ import annotations

import warnings
from typing import Optional, Union

import torch

from hesskit.spectral._common import (
    check_int,
    check_positive_float,
    check_progress,
    make_generator,
    progress_bar,
    random_block,
    residual_scale,
    show_residual,
)
from hesskit.spectral._linop import as_operator
from hesskit.spectral.results import EigenResult

__all__ = ["power_iteration"]


def power_iteration(
    op,
    k: int = 1,
    tol: float = 1e-6,
    max_iter: int = 1000,
    seed: Union[int, torch.Generator] = 0,
    progress: Optional[bool] = None,
) -> EigenResult:
    """Computes the ``k`` eigenpairs of largest ``|λ|`` by deflated power iteration.

    For eigenpair ``j``: draw ``v ⟂ u₁…u_{j−1}``, then repeat
    ``w = (I − U Uᵀ) H v``, ``θ = vᵀ w``, stop when
    ``‖w − θ v‖ / max(|θ|, √ε ‖H‖) ≤ tol`` (the criterion of
    :func:`eigenvalues`, here for the deflated operator; the residual comes
    with the product), else ``v ← w / ‖w‖``. A last Rayleigh–Ritz step on
    ``U = [u₁ … u_k]`` (one product of the ``k`` vectors) removes the coupling
    that the inexact deflation leaves between the pairs and measures the
    residuals of the result with ``H`` itself.

    Args:
        op: a ``CurvatureOperator`` or a dense symmetric ``(P, P)`` tensor.
        k: how many eigenpairs, ``1 <= k <= P``.
        tol: the relative residual to reach.
        max_iter: the most products spent on each eigenpair (``k`` more are
            spent on the final Rayleigh–Ritz step).
        seed: an int or a ``torch.Generator`` for the starting vectors.
        progress: show a tqdm bar of the products spent and of the current pair's
            relative residual against ``tol``: True, False, or None (after 2 seconds).

    Returns:
        An :class:`EigenResult` with ``values`` by descending ``|λ|``;
        ``converged`` is False (with a :class:`RuntimeWarning`) when a measured
        residual exceeds ``tol``, typically because ``max_iter`` was too small.

    Example:
        >>> import torch, hesskit as hk
        >>> A = torch.diag(torch.tensor([5.0, -3.0, 1.0, 0.5], dtype=torch.float64))
        >>> [round(v, 6) for v in hk.spectral.power_iteration(A, k=2).values.tolist()]
        [5.0, -3.0]
    """
    lin = as_operator(op)
    size = lin.size
    check_int(k, "k", 1, size)
    tol = check_positive_float(tol, "tol")
    check_int(max_iter, "max_iter", 1)
    check_progress(progress)
    generator = make_generator(seed)
    dtype, device = lin.dtype, lin.device
    U = torch.zeros(size, 0, dtype=dtype, device=device)
    norm_est = 0.0
    with progress_bar(progress, None, "power iteration") as bar:
        for _ in range(k):
            v = _project_out(random_block(generator, size, 1, dtype, device), U)
            v = v / torch.linalg.vector_norm(v)
            for _ in range(max_iter):
                w = _project_out(lin.matmat(v), U)
                bar.update(1)
                theta = float(v.mT @ w)
                norm_est = max(norm_est, abs(theta))
                scale = float(residual_scale(torch.tensor(theta, dtype=dtype), norm_est, lin.eps))
                residual = float(torch.linalg.vector_norm(w - theta * v))
                show_residual(bar, residual / scale, tol)
                if residual <= tol * scale:
                    break
                w_norm = torch.linalg.vector_norm(w)
                if float(w_norm) == 0.0:  # H v lies in span(U): go on from a fresh direction
                    w = _project_out(random_block(generator, size, 1, dtype, device), U)
                    w_norm = torch.linalg.vector_norm(w)
                v = w / w_norm
            U = torch.cat([U, v], dim=1)
        # Rayleigh–Ritz on span(U): removes what the inexact deflation leaves
        # between the pairs, and measures the true residuals (k products).
        HU = lin.matmat(U)
        bar.update(k)
    theta, Y = torch.linalg.eigh(0.5 * (U.mT @ HU + HU.mT @ U))
    order = torch.argsort(theta.abs(), descending=True)
    theta, Y = theta[order], Y[:, order]
    vectors, HX = U @ Y, HU @ Y
    res = torch.linalg.vector_norm(HX - vectors * theta, dim=0)
    residuals = res / residual_scale(theta, max(norm_est, float(theta.abs().max())), lin.eps)
    converged = bool((residuals <= tol).all())
    if not converged:
        warnings.warn(
            f"power_iteration: not converged to tol={tol:g} within max_iter={max_iter} "
            f"products per eigenpair (largest relative residual {float(residuals.max()):.2e})",
            RuntimeWarning,
            stacklevel=2,
        )
    return EigenResult(
        values=theta,
        vectors=vectors,
        residuals=residuals,
        n_matvecs=lin.n_matvecs,
        converged=converged,
    )


def _project_out(w: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """Returns ``(I − U Uᵀ) w`` (twice, for orthogonality to working precision)."""
    for _ in range(2):
        w = w - U @ (U.mT @ w)
    return w
