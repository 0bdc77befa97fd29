"""Block Lanczos eigenvalues against exact eigendecompositions (float64)."""
import json
import warnings

import pytest
import torch

import hesskit as hk


def _expected(ev_sorted, k, which):
    if which == "largest":
        return ev_sorted.flip(0)[:k]
    if which == "smallest":
        return ev_sorted[:k]
    return ev_sorted[ev_sorted.abs().argsort(descending=True)][:k]


def _check_pairs(A, result, expected, tol):
    """Values to ``tol`` relative, unit orthogonal vectors, small measured residuals."""
    values, vectors = result.values, result.vectors
    assert result.converged
    torch.testing.assert_close(values, expected, rtol=tol, atol=0.0)
    k = values.numel()
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(k, dtype=A.dtype), atol=1e-8, rtol=0)
    norm = float(torch.linalg.eigvalsh(A).abs().max())
    res = torch.linalg.vector_norm(A @ vectors - vectors * values, dim=0)
    scale = values.abs().clamp_min(torch.finfo(A.dtype).eps ** 0.5 * norm)
    assert float((res / scale).max()) <= 1.01 * tol
    torch.testing.assert_close(result.residuals, res / scale, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("which,k", [("largest", 5), ("smallest", 3), ("magnitude", 4), ("largest", 1)])
def test_lanczos_matches_exact(known_spectrum, which, k):
    A, ev = known_spectrum
    result = hk.eigenvalues(A, k=k, which=which, tol=1e-6, method="lanczos")
    assert 0 < result.n_matvecs < 2000
    _check_pairs(A, result, _expected(ev, k, which), 1e-6)


def test_smallest_of_indefinite_are_most_negative(spectrum_matrix):
    ev = torch.cat([torch.tensor([-7.0, -6.0, -5.0]), torch.linspace(0.0, 1.0, 197)]).double()
    result = hk.eigenvalues(spectrum_matrix(ev), k=3, which="smallest", method="lanczos")
    torch.testing.assert_close(result.values, torch.tensor([-7.0, -6.0, -5.0]).double(), rtol=1e-6, atol=0)


def test_exact_multiplicity_is_resolved(spectrum_matrix):
    """A triple top eigenvalue: a block of width >= 3 finds the whole eigenspace."""
    ev = torch.cat([torch.full((3,), 4.0), torch.tensor([3.0]), torch.rand(296, generator=torch.Generator().manual_seed(0))])
    A = spectrum_matrix(ev.double())
    result = hk.eigenvalues(A, k=4, method="lanczos")
    _check_pairs(A, result, torch.tensor([4.0, 4.0, 4.0, 3.0]).double(), 1e-6)


def test_zero_eigenvalues_of_rank_deficient_matrix():
    """Below sqrt(eps)·‖H‖ the residual is relative to sqrt(eps)·‖H‖: zeros converge."""
    g = torch.Generator().manual_seed(4)
    J = torch.randn(30, 200, dtype=torch.float64, generator=g)
    A = J.T @ J  # PSD of rank 30: 170 zero eigenvalues
    result = hk.eigenvalues(A, k=3, which="smallest", method="lanczos")
    assert result.converged
    norm = float(torch.linalg.eigvalsh(A).max())
    assert float(result.values.abs().max()) <= 1e-6 * 1.5e-8 * norm
    assert float(torch.linalg.vector_norm(A @ result.vectors, dim=0).max()) <= 1e-13 * norm


def test_every_iteration_is_one_matmat_of_a_block(spectrum_matrix, counting):
    A = spectrum_matrix(torch.linspace(-1.0, 3.0, 300, dtype=torch.float64) ** 3)
    op = counting(A)
    result = hk.eigenvalues(op, k=5, block_size=4)
    assert result.converged
    # all products are blocks of 4 columns, except the final check of the 5 Ritz vectors
    assert op.calls[:-1] == [4] * (len(op.calls) - 1)
    assert op.calls[-1] == 5
    assert result.n_matvecs == op.n_matvecs == sum(op.calls)


def test_budget_exhausted_is_reported_unconverged(spectrum_matrix, counting):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 400, dtype=torch.float64))
    op = counting(A)
    with pytest.warns(RuntimeWarning, match="not converged"):
        result = hk.eigenvalues(op, k=3, tol=1e-10, max_matvecs=60)
    assert not result.converged
    assert result.n_matvecs <= 60
    # the reported residuals are the true ones and are above tol
    res = torch.linalg.vector_norm(A @ result.vectors - result.vectors * result.values, dim=0)
    torch.testing.assert_close(result.residuals, res / result.values.abs(), rtol=1e-6, atol=0)
    assert float(result.residuals.max()) > 1e-10


def test_seed_reproducibility(spectrum_matrix):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 300, dtype=torch.float64) ** 2)
    a = hk.eigenvalues(A, k=2, method="lanczos", seed=5)
    b = hk.eigenvalues(A, k=2, method="lanczos", seed=torch.Generator().manual_seed(5))
    c = hk.eigenvalues(A, k=2, method="lanczos", seed=6)
    assert a.n_matvecs == b.n_matvecs
    torch.testing.assert_close(a.vectors, b.vectors, rtol=0, atol=0)
    assert not torch.equal(a.vectors, c.vectors)


def test_exact_path_for_tensors(known_spectrum):
    A, ev = known_spectrum
    result = hk.eigenvalues(A, k=3, which="magnitude")
    assert result.n_matvecs == 0 and result.converged
    _check_pairs(A, result, _expected(ev, 3, "magnitude"), 1e-12)


def test_small_operator_is_formed_densely(spectrum_matrix, counting):
    """For P <= max_basis + block_size one product with the identity beats iterating."""
    op = counting(spectrum_matrix(torch.arange(20.0, dtype=torch.float64)))
    result = hk.eigenvalues(op, k=2)
    assert op.calls == [20] and result.n_matvecs == 20
    torch.testing.assert_close(result.values, torch.tensor([19.0, 18.0]).double())


def test_mlp_hessian_matches_torch_func(mlp_hessian):
    H, E = mlp_hessian
    ev = torch.linalg.eigvalsh(E)
    top = hk.eigenvalues(H, k=5, which="largest")
    bottom = hk.eigenvalues(H, k=3, which="smallest")
    _check_pairs(E, top, ev.flip(0)[:5], 1e-6)
    _check_pairs(E, bottom, ev[:3], 1e-6)
    assert top.n_matvecs < H.shape[0]  # cheaper than forming the matrix


def test_json_round_trip(spectrum_matrix):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64))
    result = hk.eigenvalues(A, k=2)
    data = json.loads(result.to_json())
    assert set(data) == {"values", "vectors", "residuals", "n_matvecs", "converged"}
    back = hk.EigenResult.from_json(result.to_json())
    torch.testing.assert_close(back.values, result.values)
    torch.testing.assert_close(back.vectors, result.vectors)
    assert back.converged is True and back.n_matvecs == result.n_matvecs
    with pytest.raises(Exception):
        result.values = None  # frozen


def test_float32(spectrum_matrix):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 200, dtype=torch.float64) ** 3).float()
    result = hk.eigenvalues(A, k=2, tol=1e-5, method="lanczos")
    assert result.converged and result.values.dtype == torch.float32
    torch.testing.assert_close(result.values, torch.linalg.eigvalsh(A).flip(0)[:2], rtol=1e-5, atol=0)
    with pytest.warns(RuntimeWarning, match="below the machine epsilon of torch.float32"), \
            pytest.warns(RuntimeWarning, match="not converged"):
        hk.eigenvalues(A, k=1, tol=1e-8, max_matvecs=100, method="lanczos")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(k=0), ValueError, "k:"),
        (dict(k=101), ValueError, "k:"),
        (dict(k=2.0), TypeError, "k:"),
        (dict(which="top"), ValueError, "which:"),
        (dict(tol=0.0), ValueError, "tol:"),
        (dict(tol="1e-6"), TypeError, "tol:"),
        (dict(method="arpack"), ValueError, "method:"),
        (dict(max_matvecs=3), ValueError, "max_matvecs:"),
        (dict(max_basis=3), ValueError, "max_basis:"),
        (dict(block_size=0), ValueError, "block_size:"),
        (dict(seed=1.5), TypeError, "seed:"),
        (dict(progress="yes"), TypeError, "progress:"),
    ],
)
def test_bad_arguments(kwargs, error, match, spectrum_matrix):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64))
    with pytest.raises(error, match=match):
        hk.eigenvalues(A, **{"k": 2, **kwargs})


def test_bad_operators():
    with pytest.raises(TypeError, match="op: expected a CurvatureOperator"):
        hk.eigenvalues([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="op: expected a square"):
        hk.eigenvalues(torch.ones(3, 4))
    with pytest.raises(ValueError, match="op: expected a symmetric"):
        hk.eigenvalues(torch.triu(torch.ones(4, 4)))
    with pytest.raises(TypeError, match="op: expected a floating-point"):
        hk.eigenvalues(torch.eye(4, dtype=torch.int64))


def test_float32_operators_get_a_tolerance_they_can_reach():
    """On float32 data the default tol=1e-6 is raised to 128 eps (a margin above the
    products' rounding), and every seed converges within a modest budget."""
    from torch import nn
    import hesskit as hk

    X, y = hk.data.load_digits()
    for seed in range(3):
        torch.manual_seed(seed)
        model = hk.models.mlp(64, hidden=(16,), n_classes=10, activation="tanh")
        H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y), batch_size=500))
        r = hk.eigenvalues(H, k=3, max_matvecs=400, progress=False)
        assert r.converged and float(r.residuals.max()) <= 128 * torch.finfo(torch.float32).eps
        exact = torch.linalg.eigvalsh(H.dense().double())[-3:].flip(0)
        torch.testing.assert_close(r.values.double(), exact, rtol=1e-4, atol=0)


def _basis_rows(P, m, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(P, m, dtype=torch.float64, generator=g))[0].T.contiguous()


@pytest.mark.parametrize("offset", [1.0, 1e-6, 1e-11])
def test_extend_orthonormalizes_against_the_basis(offset):
    """BCGS2 (lanczos._extend): Q orthonormal and orthogonal to V to working precision,
    and W = Vᵀ C + Q R, also for blocks that lie almost in span(V) (offset: their
    component outside it), where one Gram–Schmidt pass alone loses orthogonality."""
    from hesskit.spectral.lanczos import _extend

    P, m, b = 300, 40, 4
    V = _basis_rows(P, m, 0)
    g = torch.Generator().manual_seed(1)
    W = V.T @ torch.randn(m, b, dtype=torch.float64, generator=g) \
        + offset * torch.randn(P, b, dtype=torch.float64, generator=g)
    Q, R, C = _extend(W, V, 0.0, torch.Generator().manual_seed(2))
    eps = torch.finfo(torch.float64).eps
    assert float((Q.T @ Q - torch.eye(b, dtype=torch.float64)).abs().max()) <= 20 * eps
    assert float((V @ Q).abs().max()) <= 20 * eps
    assert float((V.T @ C + Q @ R - W).abs().max()) <= 100 * eps * float(W.abs().max())
    torch.testing.assert_close(C, V @ W, rtol=0, atol=100 * eps * float(W.abs().max()))


def test_extend_replaces_a_breakdown_by_a_fresh_direction():
    """A block column inside span(V) (singular value under the threshold) is replaced
    by a random unit direction orthogonal to V, with a zero row in R."""
    from hesskit.spectral.lanczos import _extend

    P, m = 200, 10
    V = _basis_rows(P, m, 3)
    g = torch.Generator().manual_seed(4)
    W = torch.stack([V.T @ torch.randn(m, dtype=torch.float64, generator=g),
                     torch.randn(P, dtype=torch.float64, generator=g)], dim=1)
    Q, R, C = _extend(W, V, 1e-8, torch.Generator().manual_seed(5))
    eps = torch.finfo(torch.float64).eps
    assert float((Q.T @ Q - torch.eye(2, dtype=torch.float64)).abs().max()) <= 20 * eps
    assert float((V @ Q).abs().max()) <= 20 * eps
    assert int((torch.linalg.vector_norm(R, dim=1) == 0).sum()) == 1
    torch.testing.assert_close(V.T @ C + Q @ R, W, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block_size", [3, 4])
def test_invariant_krylov_space_continues_in_fresh_directions(spectrum_matrix, block_size):
    """Four distinct eigenvalues: the Krylov space of a start block is invariant after
    four blocks (a breakdown: the next block is replaced by random directions); a
    block at least as wide as the multiplicity finds the whole top eigenspace.
    (A single vector finds one copy of each eigenvalue, as documented.)"""
    ev = torch.tensor([9.0] * 3 + [4.0] * 100 + [1.0] * 100 + [-2.0] * 97, dtype=torch.float64)
    A = spectrum_matrix(ev)
    result = hk.eigenvalues(A, k=4, block_size=block_size, method="lanczos")
    _check_pairs(A, result, torch.tensor([9.0, 9.0, 9.0, 4.0]).double(), 1e-6)


def test_float32_cnn_converges_at_the_default_tolerance():
    """A float32 LeNet-5 (P = 62 006): with a float32 Lanczos basis the residuals of
    its top 5 stalled at 2e-5 to 3e-5, above the default tol (128 eps = 1.5e-5), and
    the call spent its whole budget. The returned pairs must meet the default tol
    within a modest budget, and be as good when measured with float64 products."""
    import copy
    from torch import nn

    g = torch.Generator().manual_seed(0)
    model = hk.models.get_model("lenet", n_classes=10, in_channels=3, seed=0).eval()
    X, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)))
    r = hk.eigenvalues(H, k=5, max_matvecs=300, progress=False)
    tol = 128 * torch.finfo(torch.float32).eps
    assert r.converged and r.n_matvecs < 200
    assert r.values.dtype == r.vectors.dtype == torch.float32
    assert float(r.residuals.max()) <= tol
    H64 = hk.HessianOperator(hk.Objective(copy.deepcopy(model).double(), nn.CrossEntropyLoss(),
                                          (X.double(), y)))
    V = r.vectors.double()
    HV = H64 @ V
    lam = (V * HV).sum(0) / (V * V).sum(0)
    residuals = torch.linalg.vector_norm(HV - V * lam, dim=0) / lam.abs() / torch.linalg.vector_norm(V, dim=0)
    assert float(residuals.max()) <= 2 * tol
    torch.testing.assert_close(r.values.double(), lam, rtol=1e-6, atol=0)


def test_the_default_block_follows_whether_the_operator_batches_columns():
    """Block Lanczos spends about twice the products of single-vector Lanczos for k=5,
    which pays only where a product of k columns costs less than k products of one.
    A CNN on the native engine's graph path on a CPU does not batch its columns, so its
    default block is 1: the products of ``block_size=1``, fewer than a block of k, and
    the same pairs. The fused chain kernels do, and keep the block of k."""
    from torch import nn

    g = torch.Generator().manual_seed(0)
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16,
                                seed=0).double().eval()
    X, y = torch.randn(16, 1, 16, 16, dtype=torch.float64, generator=g), torch.randint(0, 4, (16,), generator=g)
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)))
    assert H.engine.path == "graph" and not H.batches_columns(5)
    default, single, block = (hk.eigenvalues(H, k=5, block_size=b, progress=False)
                              for b in (None, 1, 5))
    assert default.converged and block.converged
    assert default.n_matvecs == single.n_matvecs < block.n_matvecs
    torch.testing.assert_close(default.values, block.values, rtol=1e-9, atol=0)

    mlp = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    H = hk.HessianOperator(hk.Objective(mlp, nn.CrossEntropyLoss(),
                                        (torch.randn(32, 6, dtype=torch.float64, generator=g),
                                         torch.randint(0, 4, (32,), generator=g))))
    assert H.engine.path == "fused chain" and H.batches_columns(5)
    default, block = (hk.eigenvalues(H, k=5, block_size=b, progress=False) for b in (None, 5))
    assert default.n_matvecs == block.n_matvecs
    torch.testing.assert_close(default.values, block.values, rtol=0, atol=0)


class _SingleColumnDiagonal:
    """A diagonal operator that says its products do not batch their columns."""

    def __init__(self, d):
        self.d, self.shape, self.dtype, self.device = d, (len(d), len(d)), d.dtype, d.device

    def matmat(self, V):
        return self.d[:, None] * V

    def batches_columns(self, k):
        return False


def test_single_vector_default_keeps_a_basis_large_enough_for_many_pairs():
    """With a block of 1 the default basis must still hold k + 1 vectors: 2k + 1 for
    k = 25 (the old default of 20 would refuse it)."""
    d = torch.linspace(1.0, 100.0, 400, dtype=torch.float64)
    r = hk.eigenvalues(_SingleColumnDiagonal(d), k=25, progress=False)
    assert r.converged
    torch.testing.assert_close(r.values, d.flip(0)[:25], rtol=1e-8, atol=0)
