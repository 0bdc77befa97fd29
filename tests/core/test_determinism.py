"""The operator's first product checks that the operator is the same on every pass."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hesskit as hk
from helpers import mlp


def _data(n=30, d=4, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def test_shuffle_with_drop_last_is_refused_by_name(float64):
    X, y = _data()
    loader = DataLoader(TensorDataset(X, y), batch_size=7, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    H = hk.HessianOperator(hk.Objective(mlp(), nn.CrossEntropyLoss(), loader))
    cause = r"(?s)differ.*shuffle=True.*drop_last=True.*check_deterministic=False"
    with pytest.raises(ValueError, match=cause):
        H @ torch.randn(H.shape[0])


def test_train_mode_batchnorm_with_shuffled_batches_is_refused(float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))
    X, y = _data()
    loader = DataLoader(TensorDataset(X, y), batch_size=10, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    H = hk.GGNOperator(hk.Objective(model, nn.CrossEntropyLoss(), loader, mode="train"))
    with pytest.raises(ValueError, match=r"(?s)differ.*mode='train'.*BatchNorm1d"):
        H.matmat(torch.randn(H.shape[0], 2))


def test_opt_out_and_the_check_runs_once(float64):
    X, y = _data()
    loader = DataLoader(TensorDataset(X, y), batch_size=7, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    H = hk.HessianOperator(hk.Objective(mlp(), nn.CrossEntropyLoss(), loader),
                           check_deterministic=False)
    v = torch.randn(H.shape[0])
    assert not torch.allclose(H @ v, H @ v)  # the operator really changes between passes
    assert H.n_matvecs == 2


def test_deterministic_data_passes_and_is_counted_once(float64):
    """Shuffling without drop_last in eval mode sums the same samples: accepted. The
    check products are not counted in ``n_matvecs`` and run on the first product only."""
    X, y = _data()
    loader = DataLoader(TensorDataset(X, y), batch_size=7, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    obj = hk.Objective(mlp(), nn.CrossEntropyLoss(), loader)
    H = hk.HessianOperator(obj)
    calls = []
    product = H.engine.product
    H.engine.product = lambda *a: calls.append(a[2].shape[1]) or product(*a)
    H.matmat(torch.randn(H.shape[0], 3))
    H.matmat(torch.randn(H.shape[0], 3))
    assert H.n_matvecs == 6
    assert sum(calls) == 5 * (3 + 2) + 5 * 3  # two extra single-column passes, once


def test_bad_check_flag():
    X, y = _data()
    with pytest.raises(TypeError, match="check_deterministic: expected a bool"):
        hk.HessianOperator(hk.Objective(mlp(), nn.CrossEntropyLoss(), (X, y)),
                           check_deterministic="yes")


def test_near_zero_operator_is_not_taken_for_a_changing_one():
    """H - G of the last layer under cross-entropy is zero: the products are rounding
    noise. With ``auto`` routing a 9-column block to ``func`` and single columns to
    ``autograd``, the check compared the noise of two engines (relative difference 1)
    and refused a deterministic operator; it must compare like with like."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))
    X, y = _data()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=["3.weight", "3.bias"])
    F = hk.FunctionalHessianOperator(obj)
    assert F.engine.name == "func/autograd"
    out = F @ torch.randn(F.shape[0], 9)
    assert float(out.abs().max()) < 1e-5
