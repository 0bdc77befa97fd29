"""Operators: float64 parity with explicit torch.func matrices, properties, errors."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import hesskit as hk
from helpers import SmallCNN, explicit_ggn, explicit_hessian, mlp

ENGINES = ["autograd", "func"]


def _case(name, reduction):
    g = torch.Generator().manual_seed(7)
    if name == "cnn":
        torch.manual_seed(2)
        model = SmallCNN(batchnorm=True)
        model.train()
        X = torch.randn(20, 1, 8, 8, generator=g)
        model(X)  # non-trivial running statistics, then evaluated in eval mode
    else:
        model = mlp(act=nn.Tanh if name == "tanh" else nn.ReLU, sizes=(4, 7, 5, 3))
        X = torch.randn(21, 4, generator=g)
    y = torch.randint(0, 3, (X.shape[0],), generator=g)
    return model, X, y


def _losses(reduction, X, y):
    ce = nn.CrossEntropyLoss(reduction=reduction)
    mse = nn.MSELoss(reduction=reduction)
    targets = torch.randn(X.shape[0], 3, generator=torch.Generator().manual_seed(1))
    return [(ce, y), (mse, targets)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("arch", ["tanh", "relu", "cnn"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_hessian_ggn_functional_match_explicit(float64, engine, arch, reduction):
    model, X, y = _case(arch, reduction)
    for loss, targets in _losses(reduction, X, y):
        data = [(X[:13], targets[:13]), (X[13:], targets[13:])]  # uneven batches
        obj = hk.Objective(model, loss, data, batch_size=6)
        was = model.training
        model.eval()
        H = explicit_hessian(model, loss, X, targets)
        G = explicit_ggn(model, loss, X, targets)
        model.train(was)
        tol = dict(rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(hk.HessianOperator(obj, engine=engine).dense(), H, **tol)
        torch.testing.assert_close(hk.GGNOperator(obj, engine=engine).dense(), G, **tol)
        torch.testing.assert_close(
            hk.FunctionalHessianOperator(obj, engine=engine).dense(), H - G, **tol)


@pytest.mark.parametrize("engine", ENGINES)
def test_parameter_subset_and_generic_loss(float64, engine):
    model = mlp(sizes=(3, 5, 2))
    X = torch.randn(11, 3)
    y = torch.rand(11, 2)

    def loss(out, t):  # no closed form: GGN goes through torch.func
        return (torch.nn.functional.softplus(out) * t).mean()

    names = ["0.weight", "2.bias"]
    obj = hk.Objective(model, loss, (X, y), params=names)
    torch.testing.assert_close(hk.HessianOperator(obj, engine=engine).dense(),
                               explicit_hessian(model, loss, X, y, names))
    torch.testing.assert_close(hk.GGNOperator(obj, engine=engine).dense(),
                               explicit_ggn(model, loss, X, y, names))


def test_diagonal_scipy_and_counter(float64):
    model = mlp()
    X, y = torch.randn(9, 4), torch.randint(0, 3, (9,))
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)), engine="func",
                           column_block=10)
    D = explicit_hessian(model, nn.CrossEntropyLoss(), X, y)
    torch.testing.assert_close(H.diagonal(), torch.diagonal(D))
    assert H.n_matvecs == H.shape[0]
    V = np.random.default_rng(0).standard_normal((H.shape[0], 3))
    S = H.to_scipy()
    np.testing.assert_allclose(S @ V, D.numpy() @ V, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(S.matvec(V[:, 0]), D.numpy() @ V[:, 0], rtol=1e-10, atol=1e-12)
    assert H.n_matvecs == H.shape[0] + 4


def test_matmat_makes_one_pass_over_the_data(float64):
    class CountingLoader(list):
        passes = 0

        def __iter__(self):
            CountingLoader.passes += 1
            return super().__iter__()

    model = mlp()
    X, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    loader = CountingLoader([(X[:10], y[:10]), (X[10:], y[10:])])
    for engine in ENGINES:
        H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), loader), engine=engine)
        before = CountingLoader.passes
        H.matmat(torch.randn(H.shape[0], 16))  # + two single-vector determinism check passes
        assert CountingLoader.passes - before == 3
        H.matmat(torch.randn(H.shape[0], 16))
        assert CountingLoader.passes - before == 4
        assert H.n_matvecs == 32


def test_autograd_graph_reuse_sees_parameter_updates(float64):
    model = mlp()
    X, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    H = hk.HessianOperator(obj, engine="autograd")
    v = torch.randn(H.shape[0])
    first = H @ v
    torch.testing.assert_close(H @ v, first, rtol=0, atol=0)
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    torch.testing.assert_close(H @ v, explicit_hessian(model, nn.CrossEntropyLoss(), X, y) @ v)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 4))
def test_symmetry_and_linearity(seed, k):
    torch.manual_seed(seed)
    model = mlp(sizes=(3, 4, 2), seed=seed).double()
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    for op in (hk.HessianOperator(obj), hk.GGNOperator(obj), hk.FunctionalHessianOperator(obj)):
        V, W = torch.randn(op.shape[0], k, dtype=torch.float64), torch.randn(op.shape[0], k, dtype=torch.float64)
        HV, HW = op @ V, op @ W
        torch.testing.assert_close(W.T @ HV, HW.T @ V, rtol=1e-9, atol=1e-11)  # v'Hw = w'Hv
        a, b = 0.7, -1.3
        torch.testing.assert_close(op @ (a * V + b * W), a * HV + b * HW, rtol=1e-9, atol=1e-11)


def test_float32_products_close_to_float64():
    model = mlp(sizes=(4, 8, 3))
    X, y = torch.randn(25, 4), torch.randint(0, 3, (25,))
    H32 = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y))).dense()
    model64 = mlp(sizes=(4, 8, 3)).double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    H64 = explicit_hessian(model64, nn.CrossEntropyLoss(), X.double(), y)
    assert H32.dtype == torch.float32
    torch.testing.assert_close(H32.double(), H64, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- bad input
def test_bad_vectors_and_dense_limit(float64):
    model = mlp()
    X, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)))
    P = H.shape[0]
    with pytest.raises(ValueError, match=r"v: expected shape"):
        H.matvec(torch.zeros(P + 1))
    with pytest.raises(ValueError, match=r"V: expected shape"):
        H.matmat(torch.zeros(P + 1, 2))
    with pytest.raises(TypeError, match="V: expected dtype"):
        H.matmat(torch.zeros(P, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match="V: expected device"):
        H.matmat(torch.zeros(P, 2, device="meta"))
    with pytest.raises(TypeError, match="V: expected a torch.Tensor"):
        H.matmat(np.zeros((P, 2)))
    with pytest.raises(ValueError, match="V: contains non-finite"):
        H.matmat(torch.full((P, 1), float("nan")))
    with pytest.raises(ValueError, match=rf"{P}×{P}.*max_bytes"):
        H.dense(max_bytes=100)
    with pytest.raises(ValueError, match="engine"):
        hk.HessianOperator(H.objective, engine="magic")
    with pytest.raises(TypeError, match="objective"):
        hk.HessianOperator(model)


def test_non_finite_product_names_the_parameter(float64):
    model = mlp()
    with torch.no_grad():
        model[2].bias[0] = float("inf")
    X, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)))
    with pytest.raises(FloatingPointError, match="parameter '0.weight'"):
        H @ torch.ones(H.shape[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_is_exact_where_the_sum_overflows(dtype):
    """The check behind every product: a sum that overflows (finite entries) is not
    mistaken for a non-finite entry; inf, -inf and NaN anywhere are caught."""
    from hesskit._validation import all_finite

    big = torch.full((4, 3), torch.finfo(dtype).max, dtype=dtype)
    assert not torch.isfinite(big.sum()) and all_finite(big)
    assert all_finite(torch.zeros(0, 2, dtype=dtype))
    for bad in (float("inf"), -float("inf"), float("nan")):
        for where in ((0, 0), (3, 2)):
            for base in (torch.zeros(4, 3, dtype=dtype), big, -big):
                t = base.clone()
                t[where] = bad
                assert not all_finite(t), (bad, where)


@pytest.mark.parametrize("method", ["dense", "diagonal"])
def test_progress_bar_of_basis_columns_follows_the_argument(float64, capsys, method):
    model = mlp(sizes=(3, 4, 2))
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)), engine="autograd",
                           column_block=1)  # P = 26 blocks of one column
    expected = getattr(H, method)()
    capsys.readouterr()
    assert torch.equal(getattr(H, method)(progress=False), expected)
    assert method not in capsys.readouterr().err
    getattr(H, method)(progress=True)
    assert method in capsys.readouterr().err
