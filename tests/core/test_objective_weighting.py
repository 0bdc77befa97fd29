"""Objective weighting: the dataset objective is the loss of one batch holding all data.

A mean-reducing loss divides by its own denominator (counted targets, summed class
weights, token positions), not by the sample count; the chunks are weighted by it.
References: float64 ``torch.autograd.functional.hessian`` of the whole-data loss.
"""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hesskit as hk
from helpers import mlp

ENGINES = ["func", "autograd", "native"]


def _flat_hessian(model, loss_fn, X, y):
    """Dense Hessian of ``loss_fn(model(X), y)`` in the flat convention (autograd)."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    sizes = [p.numel() for p in params]

    def loss(flat):
        ps = [t.view_as(p) for t, p in zip(flat.split(sizes), params)]
        out = torch.func.functional_call(model, dict(zip(names, ps)), (X,))
        return loss_fn(out, y)

    return torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))


def _operator(obj, engine):
    reason = hk.engines.ENGINES[engine].unsupported_reason(obj)
    if reason is not None:
        pytest.skip(f"engine {engine!r}: {reason}")
    return hk.HessianOperator(obj, engine=engine)


def _padded_targets(n=10, c=3, seed=2, pad=-100):
    """Inputs and class targets; samples 0, 1, 2 and 7 get ``pad`` (left out of the mean),
    so that the first chunks are mostly padding."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    y[[0, 1, 2, 7]] = pad
    return X, y


LOSSES = ("ignore_index", "class_weights", "weights_and_ignore", "nll_ignore")


def _loss(name):
    """The loss, the head the model needs for it (log-softmax for NLL), and the
    target value left out of the mean (``None``: every target counts)."""
    weights = torch.tensor([0.2, 1.0, 3.0])
    if name == "nll_ignore":
        return nn.NLLLoss(ignore_index=-100), nn.LogSoftmax(dim=1), -100
    if name == "class_weights":
        return nn.CrossEntropyLoss(weight=weights), None, None
    if name == "weights_and_ignore":
        return nn.CrossEntropyLoss(weight=weights, ignore_index=1), None, 1
    return nn.CrossEntropyLoss(), None, -100


def _model(head):
    model = mlp(sizes=(4, 5, 3))
    return model if head is None else nn.Sequential(*model, head)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("batching", ["batch_size=3", "two_batches", "loader"])
def test_mean_loss_with_own_denominator_equals_one_batch(float64, engine, name, batching):
    loss_fn, head, pad = _loss(name)
    model = _model(head)
    X, y = _padded_targets(pad=0 if pad is None else pad)  # class 0 counts like any other
    if batching == "batch_size=3":
        obj = hk.Objective(model, loss_fn, (X, y), batch_size=3)
    elif batching == "two_batches":
        obj = hk.Objective(model, loss_fn, [(X[:4], y[:4]), (X[4:], y[4:])])
    else:
        obj = hk.Objective(model, loss_fn, DataLoader(TensorDataset(X, y), batch_size=4))
    with torch.no_grad():
        whole = loss_fn(model(X), y)
    torch.testing.assert_close(obj.loss(), whole, rtol=1e-12, atol=0)
    H = _operator(obj, engine).dense()
    torch.testing.assert_close(H, _flat_hessian(model, loss_fn, X, y), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ["func", "autograd"])
def test_padded_token_cross_entropy_equals_one_batch(float64, engine):
    """(N, C, T) logits with -100 padding: the mean is over the counted tokens of all data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 1), nn.Tanh(), nn.Conv1d(3, 4, 1))
    X = torch.randn(6, 2, 5)
    y = torch.randint(0, 4, (6, 5))
    lengths = torch.tensor([5, 1, 2, 5, 3, 4])
    y[torch.arange(5) >= lengths[:, None]] = -100
    loss_fn = nn.CrossEntropyLoss()
    with torch.no_grad():
        whole = loss_fn(model(X), y)
    reference = _flat_hessian(model, loss_fn, X, y)
    for obj in (hk.Objective(model, loss_fn, (X, y), batch_size=3),
                hk.Objective(model, loss_fn, [(X[:2], y[:2]), (X[2:], y[2:])])):
        torch.testing.assert_close(obj.loss(), whole, rtol=1e-12, atol=0)
        torch.testing.assert_close(_operator(obj, engine).dense(), reference,
                                   rtol=1e-9, atol=1e-12)


def test_probability_targets_count_positions(float64):
    """Probability targets (N, C, T) of varying length T: positions, not samples, count."""
    torch.manual_seed(0)
    model = nn.Conv1d(2, 3, 1)
    Xa, Xb = torch.randn(2, 2, 6), torch.randn(3, 2, 2)
    ya, yb = torch.softmax(torch.randn(2, 3, 6), 1), torch.softmax(torch.randn(3, 3, 2), 1)
    loss_fn = nn.CrossEntropyLoss()
    obj = hk.Objective(model, loss_fn, [(Xa, ya), (Xb, yb)])
    with torch.no_grad():
        total = (loss_fn(model(Xa), ya) * 12 + loss_fn(model(Xb), yb) * 6) / 18
    torch.testing.assert_close(obj.loss(), total, rtol=1e-12, atol=0)


def test_elementwise_mean_counts_elements(float64):
    """MSE over targets of varying width: the mean is over all elements of all data."""
    torch.manual_seed(0)
    model = nn.Conv1d(2, 1, 1)
    Xa, Xb = torch.randn(2, 2, 6), torch.randn(3, 2, 2)
    ya, yb = torch.randn(2, 1, 6), torch.randn(3, 1, 2)
    loss_fn = nn.MSELoss()
    obj = hk.Objective(model, loss_fn, [(Xa, ya), (Xb, yb)])
    with torch.no_grad():
        total = ((model(Xa) - ya).pow(2).sum() + (model(Xb) - yb).pow(2).sum()) / 18
    torch.testing.assert_close(obj.loss(), total, rtol=1e-12, atol=0)


def test_chunk_of_only_ignored_targets_contributes_nothing(float64):
    """A chunk whose every target is ignored has a 0/0 loss; it is skipped, not NaN."""
    model = mlp(sizes=(4, 5, 3))
    X, y = _padded_targets()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), batch_size=3)  # chunk 0 all -100
    with torch.no_grad():
        whole = nn.CrossEntropyLoss()(model(X), y)
    torch.testing.assert_close(obj.loss(), whole, rtol=1e-12, atol=0)
    assert torch.isfinite(obj.gradient()).all()


def test_all_targets_ignored_is_refused(float64):
    X, y = _padded_targets()
    with pytest.raises(ValueError, match="data: every target"):
        hk.Objective(mlp(sizes=(4, 5, 3)), nn.CrossEntropyLoss(), (X, torch.full_like(y, -100)))
