"""Extreme eigenpairs by thick-restart block Lanczos.

The Krylov basis grows by one block of ``b`` vectors per iteration, and the
only contact with the Hessian is ONE ``matmat`` of that block: over a dataset
this is one pass for ``b`` vectors instead of ``b`` passes.

Algorithm (block Lanczos with full reorthogonalization, Golub & Underwood
1977; thick restart, Wu & Simon 2000 / Stewart's Krylov–Schur 2001). With an
orthonormal basis ``V`` of the multiplied blocks and the pending block
``Q``, the invariant is

    H V = V T + Q C,        T = Vᵀ H V,

where ``T`` is the projected matrix and ``C`` the coupling to ``Q``. An
iteration multiplies ``Q`` (one ``matmat``), computes its projections onto
every basis vector and orthonormalizes the remainder into the next pending
block (reorthogonalized block Gram–Schmidt, BCGS2: two passes over the basis,
which keep it orthogonal to working precision; see :func:`_extend`), and
solves the small eigenproblem ``T = Y Θ Yᵀ``. The Ritz pair ``(θᵢ, V yᵢ)``
has residual ``‖H V yᵢ − θᵢ V yᵢ‖ = ‖C yᵢ‖``, free of charge. When the
basis is full it is restarted with the most wanted Ritz vectors (``T``
becomes diagonal, ``C ← C Y``), which keeps memory at ``max_basis`` vectors
while the Krylov space keeps its best directions.

Convergence is declared on the relative residual
``‖H v − λ v‖ / max(|λ|, √ε ‖H‖) ≤ tol`` and then confirmed with one more
product of the ``k`` Ritz vectors, so the reported residuals are measured,
not extrapolated from the recurrence.

The basis, the projected matrix and the Ritz vectors are kept in float64 when
the operator computes in a lower precision (float32, float16, bfloat16); only
the products run in the operator's dtype (:func:`basis_dtype`). In float32 the
basis itself would limit the accuracy: its inner products over ``P`` entries
lose orthogonality (to ``1e-5`` at ``P = 62 006``, LeNet-5), and the Ritz
vectors of such a basis stall at relative residuals of ``2e-5`` to ``3e-5``,
above the float32 default ``tol`` of ``1.5e-5``, although the products
themselves agree with float64 ones to ``4e-7``. With a float64 basis the
residuals reach what the products allow (``5e-7`` to ``7e-6`` there).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple, Union

import torch

from hesskit.spectral._common import (
    WHICH,
    check_choice,
    check_int,
    check_positive_float,
    check_progress,
    make_generator,
    progress_bar,
    random_block,
    residual_scale,
    show_residual,
    wanted_order,
)
from hesskit.spectral._linop import LinearOperator, as_operator
from hesskit.spectral.exact import exact_eigenpairs
from hesskit.spectral.results import EigenResult

__all__ = ["eigenvalues"]

_METHODS = ("lanczos", "exact")


#: The default ``tol``, raised to this many machine epsilons of the operator's
#: dtype where that is larger: a margin above the relative accuracy of products
#: accumulated over a dataset.
_DEFAULT_TOL = 1e-6
_PRECISION_FLOOR = 128


def eigenvalues(
    op,
    k: int = 5,
    which: str = "largest",
    tol: Optional[float] = None,
    max_matvecs: Optional[int] = None,
    seed: Union[int, torch.Generator] = 0,
    progress: Optional[bool] = None,
    *,
    method: Optional[str] = None,
    block_size: Optional[int] = None,
    max_basis: Optional[int] = None,
) -> EigenResult:
    """Computes ``k`` extreme eigenpairs of a symmetric curvature operator.

    ``method="lanczos"`` runs thick-restart block Lanczos with full
    reorthogonalization (see the module docstring): every iteration is one
    ``matmat`` of ``block_size`` columns. A pair is converged when::

        ‖H v − λ v‖ / max(|λ|, √ε ‖H‖) ≤ tol,

    with ``ε`` the machine epsilon of the dtype and ``‖H‖`` estimated by the
    largest Ritz value seen; eigenvalues much smaller than ``‖H‖`` (the zeros
    of a rank-deficient Hessian) are thereby resolved to the absolute accuracy
    ``tol · √ε · ‖H‖`` that finite precision allows. The default
    ``tol`` is ``1e-6``, or ``128 ε`` where that is larger (1.5e-5 for float32),
    a margin above the rounding of products accumulated over a dataset (LeNet-5's
    float32 products agree with float64 ones to 4e-7). An explicit ``tol`` is
    used as given. The iteration itself runs in float64 for a float32 (or
    half-precision) operator, only the products in the operator's dtype: a
    float32 basis of ``P`` vectors loses orthogonality, which stalled the
    residuals at a few 1e-6 on the digits MLP of the README and at 3e-5 on
    LeNet-5's top 5 (P = 62 006), above the default ``tol``, so that the call
    spent its whole budget; with the float64 basis the LeNet call converges (in
    105–115 products with a block of 5) and the digits MLP reaches 1e-7. This costs twice the basis memory,
    ``8 (max_basis + block_size) P`` bytes. The residuals of the result are
    measured with a final product of the ``k`` returned Ritz vectors (rounded
    to the operator's dtype, as returned), and ``converged`` says whether every
    one of them met ``tol``.

    ``method="exact"`` forms the dense matrix and calls
    :func:`torch.linalg.eigh`; it is the default for a tensor input and is also
    used when ``P <= max_basis + block_size`` (forming the matrix is then
    cheaper than iterating).

    Args:
        op: a ``CurvatureOperator`` (anything with ``shape``, ``dtype``,
            ``device`` and ``matmat``) or a dense symmetric ``(P, P)`` tensor.
        k: how many eigenpairs, ``1 <= k <= P``.
        which: ``"largest"`` (algebraically largest, descending), ``"smallest"``
            (algebraically smallest, ascending: the most negative eigenvalues of
            an indefinite Hessian) or ``"magnitude"`` (largest ``|λ|``).
        tol: the relative residual to reach; default ``max(1e-6, 128 ε)``.
        max_matvecs: the budget of Hessian-vector products, the final check
            included; default ``max(1000, 50 * max_basis)``. When it is spent
            before convergence the best pairs are returned with
            ``converged=False`` and a :class:`RuntimeWarning`.
        seed: an int or a ``torch.Generator`` for the starting block.
        progress: show a tqdm bar of the products spent and of the largest
            relative residual against ``tol``: True, False, or None (shown when the
            computation runs longer than 2 seconds).
        method: ``"lanczos"``, ``"exact"``, or None (``"exact"`` for a tensor,
            ``"lanczos"`` otherwise).
        block_size: columns per ``matmat``. A block finds ``k`` eigenpairs
            (clusters and multiplicities included) in fewer passes over the data but
            spends more products in all (about 2x for ``k=5``: 105 against 55 on
            LeNet-5); ``block_size=1`` spends the fewest products, but like every
            single-vector method (ARPACK's included) it may find only one copy of an
            eigenvalue of exact multiplicity: a block of ``b`` columns finds up to
            ``b`` copies. Default: ``k`` when the operator's products batch their
            columns (``op.batches_columns(k)``: the fused chain kernels, ``func``, a
            GPU; and any operator without that method), else 1 (``autograd``, which
            differentiates column by column, and CNNs on the native engine's graph
            path on a CPU, where a product of k columns costs k of one: there
            ``block_size=1`` takes LeNet-5's top 5 in 2.4 s against 4.3 s).
        max_basis: the number of basis vectors kept before a restart; default
            ``max(20, 10 * block_size, 2 * k + block_size)``.

    Returns:
        An :class:`EigenResult`: ``values`` in the order of ``which``, unit
        ``vectors`` as columns, measured relative ``residuals``, the products
        spent and whether every pair met ``tol``.

    Raises:
        TypeError: ``op`` is not an operator or tensor, or an argument has a wrong type.
        ValueError: an argument is out of range (named in the message).

    Example:
        >>> import torch, hesskit as hk
        >>> A = torch.diag(torch.linspace(-1.0, 10.0, 500, dtype=torch.float64))
        >>> r = hk.eigenvalues(A, k=3, method="lanczos")
        >>> [round(v, 6) for v in r.values.tolist()], r.converged
        ([10.0, 9.977956, 9.955912], True)
    """
    lin = as_operator(op)
    size = lin.size
    check_int(k, "k", 1, size)
    check_choice(which, "which", WHICH)
    if tol is None:
        tol = max(_DEFAULT_TOL, _PRECISION_FLOOR * torch.finfo(lin.dtype).eps)
    tol = check_positive_float(tol, "tol")
    if method is None:
        method = "exact" if lin.is_dense else "lanczos"
    check_choice(method, "method", _METHODS)
    b = _default_block(op, k) if block_size is None else check_int(block_size, "block_size", 1,
                                                                   size)
    n_max = (max(20, 10 * b, 2 * k + b) if max_basis is None
             else check_int(max_basis, "max_basis", 1))
    if n_max < k + b:
        raise ValueError(
            f"max_basis: expected at least k + block_size = {k + b} to restart, got {n_max}"
        )
    if max_matvecs is None:
        max_matvecs = max(1000, 50 * n_max)
    check_int(max_matvecs, "max_matvecs", b + k)
    generator = make_generator(seed)
    check_progress(progress)
    if method == "exact" or size <= n_max + b:
        return exact_eigenpairs(lin, k, which)
    if tol < lin.eps:
        warnings.warn(
            f"tol={tol:g} is below the machine epsilon of {lin.dtype} ({lin.eps:.1e}); "
            "convergence will not be reached",
            RuntimeWarning,
            stacklevel=2,
        )
    return _block_lanczos(lin, k, which, tol, max_matvecs, generator, progress, b, n_max)


def _default_block(op, k: int) -> int:
    """``k`` when ``op``'s products batch their columns (or it does not say), else 1."""
    batches = getattr(op, "batches_columns", None)
    return k if batches is None or batches(k) else 1


def _block_lanczos(
    lin: LinearOperator,
    k: int,
    which: str,
    tol: float,
    max_matvecs: int,
    generator: torch.Generator,
    progress: Optional[bool],
    b: int,
    n_max: int,
) -> EigenResult:
    """Thick-restart block Lanczos; see :func:`eigenvalues` for the arguments."""
    size, device, eps = lin.size, lin.device, lin.eps
    dtype = basis_dtype(lin.dtype)
    # rows[i] is basis vector i: the first m rows are one contiguous (m, P) slab, so that
    # the projections onto the basis are plain GEMMs over contiguous memory.
    rows = torch.empty(n_max + b, size, dtype=dtype, device=device)
    T = torch.zeros(n_max, n_max, dtype=dtype, device=device)
    start_block = random_block(generator, size, b, dtype, device)
    rows[:b] = _extend(start_block, rows[:0], 0.0, generator)[0].mT
    n_kept = min(n_max - b, max(k + b, n_max // 2))
    m = 0  # multiplied basis vectors; rows[m:m+b] is the pending block
    norm_est = 0.0
    start = lin.n_matvecs
    with progress_bar(progress, None, "eigenvalues") as bar:
        while True:
            W = lin.matmat(rows[m : m + b].mT.to(lin.dtype)).to(dtype)
            bar.update(b)
            norm_est = max(norm_est, float(torch.linalg.matrix_norm(W, ord=2)))
            pending, R, coeffs = _extend(W, rows[: m + b], 64 * eps * norm_est, generator)
            T[:m, m : m + b] = coeffs[:m]
            T[m : m + b, :m] = coeffs[:m].mT
            T[m : m + b, m : m + b] = 0.5 * (coeffs[m:] + coeffs[m:].mT)
            m += b
            theta, Y = torch.linalg.eigh(T[:m, :m])
            norm_est = max(norm_est, float(theta.abs().max()))
            order = wanted_order(theta, which)
            # ‖H V y − θ V y‖ = ‖R y_last‖: only the last block couples to `pending`.
            est = torch.linalg.vector_norm(R @ Y[m - b : m, order[:k]], dim=0)
            scale = residual_scale(theta[order[:k]], norm_est, eps)
            show_residual(bar, (est / scale).max(), tol)
            budget_left = max_matvecs - (lin.n_matvecs - start)
            if bool((est <= tol * scale).all()) or budget_left < b + k:
                values, vectors, residuals = _ritz_check(
                    lin, rows[:m].mT, theta[order[:k]], Y[:, order[:k]], norm_est
                )
                bar.update(k)
                converged = bool((residuals <= tol).all())
                show_residual(bar, residuals.max(), tol)
                if converged or budget_left - k < b + k:
                    break
            if m + b > n_max:
                keep = order[:n_kept]
                rows[:n_kept] = Y[:, keep].mT @ rows[:m]
                T.zero_()
                T[:n_kept, :n_kept] = torch.diag(theta[keep])
                m = n_kept
            rows[m : m + b] = pending.mT
    if not converged:
        warnings.warn(
            f"eigenvalues: not converged to tol={tol:g} within max_matvecs={max_matvecs} "
            f"(largest relative residual {float(residuals.max()):.2e}); returning the "
            "current Ritz pairs with converged=False",
            RuntimeWarning,
            stacklevel=3,
        )
    return EigenResult(
        values=values,
        vectors=vectors,
        residuals=residuals,
        n_matvecs=lin.n_matvecs - start,
        converged=converged,
    )


def basis_dtype(dtype: torch.dtype) -> torch.dtype:
    """Returns the dtype the Lanczos basis is kept in for an operator of ``dtype``.

    float64 for float32, float16 and bfloat16 (a basis in those loses
    orthogonality over ``P`` entries, a residual floor above the products' own
    rounding), else ``dtype`` itself.
    """
    return torch.float64 if dtype in (torch.float32, torch.float16, torch.bfloat16) else dtype


def _ritz_check(
    lin: LinearOperator,
    V: torch.Tensor,
    theta: torch.Tensor,
    Y: torch.Tensor,
    norm_est: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forms the Ritz vectors ``V Y`` and measures their relative residuals with one product.

    The vectors are rounded to the operator's dtype first, so the residuals are
    those of the vectors returned; the Rayleigh quotients and residuals are
    formed in the basis' dtype. Returns ``(values, vectors, residuals)`` in the
    operator's dtype.
    """
    vectors = V @ Y
    vectors = (vectors / torch.linalg.vector_norm(vectors, dim=0)).to(lin.dtype)
    HX = lin.matmat(vectors).to(V.dtype)
    X = vectors.to(V.dtype)
    values = (X * HX).sum(dim=0)  # Rayleigh quotients of the normalized vectors
    res = torch.linalg.vector_norm(HX - X * values, dim=0)
    scale = residual_scale(values, max(norm_est, float(theta.abs().max())), lin.eps)
    return values.to(lin.dtype), vectors, (res / scale).to(lin.dtype)


def _extend(
    W: torch.Tensor, V: torch.Tensor, threshold: float, generator: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthonormalizes a block ``W`` (P, b) against the basis rows ``V`` (m, P).

    Block classical Gram–Schmidt with reorthogonalization after the intra-block
    step (BCGS2; Barlow & Smoktunowicz, "Reorthogonalized block classical
    Gram–Schmidt", Numer. Math. 2013): project once, ``W₁ = W − Vᵀ C₁``;
    orthonormalize ``W₁ = U R₁`` (an SVD); project ``U`` again,
    ``U₂ = U − Vᵀ C₂``, and once more if a column of ``U₂`` lost more than
    ``1 − 1/√2`` of its norm (Daniel, Gragg, Kaufman & Stewart 1976); ``U₂ = Q R₂``.
    Then ``W = Vᵀ (C₁ + C₂ R₁) + Q R₂ R₁`` and ``Q`` is orthogonal to ``V`` and
    orthonormal to working precision, with two passes over ``V`` in the common
    case (classical Gram–Schmidt twice, and then again after the normalization,
    would take four).

    Directions of ``W₁`` whose singular value is at most ``threshold`` are a
    breakdown (``V`` spans an invariant subspace there): they are replaced by
    random directions with a zero row in ``R``, so the iteration continues in the
    rest of the space.

    Returns:
        ``(Q, R, C)``: ``Q`` (P, b) orthonormal and orthogonal to ``V``, ``R`` (b, b)
        and the projections ``C = V W`` (m, b), with ``W ≈ Vᵀ C + Q R``.
    """
    C = V @ W
    U, S, Vh = torch.linalg.svd(W - V.mT @ C, full_matrices=False)
    R = S[:, None] * Vh
    broken = S <= threshold
    if bool(broken.any()):
        n_broken = int(broken.sum())
        fresh = random_block(generator, W.shape[0], n_broken, W.dtype, W.device)
        U = U.clone()
        U[:, broken] = fresh / torch.linalg.vector_norm(fresh, dim=0)
        R[broken] = 0.0
    for _ in range(2):
        C2 = V @ U
        U = U - V.mT @ C2
        C = C + C2 @ R
        if bool((torch.linalg.vector_norm(U, dim=0) > 0.5**0.5).all()):
            break
    Q, R2 = torch.linalg.qr(U)
    return Q, R2 @ R, C
