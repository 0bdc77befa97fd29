"""Objective data formats: one-shot streams, reduction probing, batches that are not
``(inputs, targets)`` pairs (the ``batch=`` and ``output=`` adapters)."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import hesskit as hk
from helpers import mlp


def _data(n=12, d=4, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _hessian(loss_of_flat, params):
    """float64 dense Hessian of ``loss_of_flat`` at the flattened ``params``."""
    return torch.autograd.functional.hessian(
        loss_of_flat, torch.cat([p.detach().reshape(-1) for p in params]))


def _unflat(flat, params):
    return [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in params]), params)]


def _model_hessian(model, loss_fn, X, y):
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())

    def loss(flat):
        out = torch.func.functional_call(model, dict(zip(names, _unflat(flat, params))), (X,))
        return loss_fn(out, y)

    return _hessian(loss, params)


class _Stream(IterableDataset):
    """A streaming dataset that can be read once (like a socket or a file stream)."""

    def __init__(self, X, y):
        self.items = iter(list(zip(X, y)))

    def __iter__(self):
        return self.items


# ------------------------------------------------------------------ one-shot data
@pytest.mark.parametrize("engine", ["func", "autograd", "native"])
def test_streaming_dataloader_is_read_once_into_memory(float64, engine):
    model = mlp()
    X, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    obj = hk.Objective(model, loss_fn, DataLoader(_Stream(X, y), batch_size=5))
    assert (obj.n_samples, obj.n_batches) == (12, 3)
    H = hk.HessianOperator(obj, engine=engine)
    v = torch.randn(H.shape[0])
    first, second = H @ v, H @ v
    expected = _model_hessian(model, loss_fn, X, y) @ v
    torch.testing.assert_close(first, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(second, expected, rtol=1e-10, atol=1e-12)


def test_data_that_shrinks_between_passes_is_refused(float64):
    """A custom iterable read once: the second pass is empty and must not give zeros."""

    class OneShot:
        def __init__(self, batches):
            self.batches = iter(batches)

        def __iter__(self):
            return self.batches

    X, y = _data()
    obj = hk.Objective(mlp(), nn.CrossEntropyLoss(), OneShot([(X[:6], y[:6]), (X[6:], y[6:])]))
    with pytest.raises(ValueError, match="data: .*pass .* 0 samples.* 12"):
        obj.loss()


# -------------------------------------------------------------- reduction probing
def test_summing_callable_probed_past_a_one_sample_batch(float64):
    model = mlp()
    X, y = _data()

    def summed(out, t):
        return nn.functional.cross_entropy(out, t, reduction="sum")

    obj = hk.Objective(model, summed, [(X[:1], y[:1]), (X[1:], y[1:])])
    assert obj.reduction == "sum"
    with torch.no_grad():
        torch.testing.assert_close(obj.loss(), summed(model(X), y))


def test_only_one_sample_batches_ask_for_reduction(float64):
    X, y = _data(3)
    batches = [(X[i:i + 1], y[i:i + 1]) for i in range(3)]
    with pytest.raises(ValueError, match="reduction="):
        hk.Objective(mlp(), lambda o, t: nn.functional.cross_entropy(o, t), batches)
    obj = hk.Objective(mlp(), lambda o, t: nn.functional.cross_entropy(o, t), batches[:1])
    assert obj.reduction == "mean"  # one sample in all: mean and sum coincide


# ------------------------------------------------------------------ adapters
def test_triples_are_refused_naming_batch():
    X, y = _data()
    with pytest.raises(TypeError, match=r"batch 0 has 3 elements.*batch="):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), (X, y, torch.arange(12)))
    loader = DataLoader(TensorDataset(X, y, torch.arange(12)), batch_size=5)
    with pytest.raises(TypeError, match=r"batch 0 has 3 elements.*batch="):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), loader)


def test_dict_batches_are_refused_naming_batch():
    X, y = _data()
    with pytest.raises(TypeError, match=r"batch 0 is a dict.*'x', 'y'.*batch="):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), {"x": X, "y": y})


def test_nested_inputs_are_refused_naming_batch():
    X, y = _data()
    with pytest.raises(TypeError, match=r"batch 0.*tuple.*batch="):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), ((X, X), y))


@pytest.mark.parametrize("engine", ["func", "autograd", "auto"])
def test_triples_through_batch_adapter(float64, engine):
    model = mlp()
    X, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TensorDataset(X, y, torch.arange(12)), batch_size=5)
    obj = hk.Objective(model, loss_fn, loader, batch=lambda b: (b[0], b[1]), batch_size=2)
    assert obj.plain_batches and obj.n_samples == 12
    H = hk.HessianOperator(obj, engine=engine).dense()
    torch.testing.assert_close(H, _model_hessian(model, loss_fn, X, y), rtol=1e-10, atol=1e-12)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, x1, x2, scale=1.0):
        return torch.tanh(self.a(x1)) * self.b(x2) * scale


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("engine", ["func", "autograd", "auto"])
def test_multi_input_model_with_kwargs(float64, engine, kind):
    """((x1, x2), y) batches as positional arguments; dict batches as keyword arguments."""
    model = _TwoInputs()
    X1, y = _data(10)
    X2 = torch.randn(10, 2)
    loss_fn = nn.CrossEntropyLoss()
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]

    def outputs(flat):
        return torch.func.functional_call(model, dict(zip(names, _unflat(flat, params))),
                                          (X1, X2), {"scale": 2.0})

    def loss(flat):
        return loss_fn(outputs(flat), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    if kind == "hessian":
        reference = _hessian(loss, params)
    else:  # J^T (d2 loss / d out2) J, all explicit
        out = outputs(flat).detach()
        J = torch.autograd.functional.jacobian(outputs, flat).reshape(out.numel(), -1)
        H_out = torch.autograd.functional.hessian(lambda z: loss_fn(z, y), out)
        reference = J.T @ H_out.reshape(out.numel(), out.numel()) @ J
    pairs = [((X1[:4], X2[:4]), y[:4]), ((X1[4:], X2[4:]), y[4:])]
    positional = hk.Objective(model, loss_fn, pairs,
                              batch=lambda b: ((*b[0], 2.0), b[1]), batch_size=3)
    keyword = hk.Objective(model, loss_fn, {"x1": X1, "x2": X2, "target": y},
                           batch=lambda b: ({"x1": b["x1"], "x2": b["x2"], "scale": 2.0},
                                            b["target"]), batch_size=4)
    for obj in (positional, keyword):
        assert not obj.plain_batches and obj.n_samples == 10
        with torch.no_grad():
            torch.testing.assert_close(obj.loss(), loss(flat))
        op = hk.HessianOperator(obj, engine=engine) if kind == "hessian" else \
            hk.GGNOperator(obj, engine=engine)
        torch.testing.assert_close(op.dense(), reference, rtol=1e-10, atol=1e-12)


def test_output_mapping_picks_the_loss_input(float64):
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return {"logits": self.net(x), "aux": 0}

    model = Wrapped()
    X, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    with pytest.raises(TypeError, match=r"output: .*dict.*output="):
        hk.Objective(model, loss_fn, (X, y)).loss()
    obj = hk.Objective(model, loss_fn, (X, y), output=lambda out: out["logits"])
    assert not obj.plain_batches
    H = hk.HessianOperator(obj, engine="func").dense()
    torch.testing.assert_close(H, _model_hessian(model.net, loss_fn, X, y), rtol=1e-10, atol=1e-12)


def test_bad_adapter_results_name_the_argument():
    X, y = _data()
    with pytest.raises(TypeError, match=r"batch: .*\(model inputs, targets\).*Tensor"):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), (X, y), batch=lambda b: b[0])
    with pytest.raises(ValueError, match=r"batch: .*'x2'.*leading dimension 1.*12"):
        hk.Objective(_TwoInputs(), nn.CrossEntropyLoss(), (X, y),
                     batch=lambda b: ({"x1": b[0], "x2": torch.zeros(1, 2)}, b[1]))
    with pytest.raises(TypeError, match="batch: expected a callable"):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), (X, y), batch=3)
    with pytest.raises(TypeError, match="output: expected a callable"):
        hk.Objective(mlp(), nn.CrossEntropyLoss(), (X, y), output="logits")
