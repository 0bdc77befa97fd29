"""Layer blocks and the last layer's Hessian against explicit torch.func Hessians."""
import pytest
import torch
from torch import nn

import hesskit as hk
from helpers import SmallCNN, explicit_hessian, mlp


def _block(H, names, model, wanted):
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    offsets, pos = {}, 0
    for n in names:
        offsets[n] = torch.arange(pos, pos + sizes[n])
        pos += sizes[n]
    idx = torch.cat([offsets[n] for n in wanted])
    return H[idx][:, idx]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("loss_cls", [nn.CrossEntropyLoss, nn.MSELoss])
def test_last_layer_hessian_matches_explicit(float64, reduction, loss_cls):
    model = mlp(act=nn.ReLU, sizes=(5, 9, 7, 4))
    X = torch.randn(31, 5)
    y = torch.randint(0, 4, (31,)) if loss_cls is nn.CrossEntropyLoss else torch.randn(31, 4)
    loss = loss_cls(reduction=reduction)
    obj = hk.Objective(model, loss, [(X[:20], y[:20]), (X[20:], y[20:])], batch_size=8)
    names = ["4.weight", "4.bias"]
    expected = explicit_hessian(model, loss, X, y, names)
    torch.testing.assert_close(hk.last_layer_hessian(obj), expected, rtol=1e-10, atol=1e-12)


def test_last_layer_hessian_through_following_layers_and_without_bias(float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4, bias=False), nn.Tanh())
    X, y = torch.randn(17, 3), torch.randn(17, 4)
    loss = nn.MSELoss()
    obj = hk.Objective(model, loss, (X, y))
    expected = explicit_hessian(model, loss, X, y, ["2.weight"])
    torch.testing.assert_close(hk.last_layer_hessian(obj), expected, rtol=1e-10, atol=1e-12)


def test_last_layer_hessian_generic_loss(float64):
    model = mlp(sizes=(3, 5, 3))
    X, y = torch.randn(9, 3), torch.rand(9, 3)

    def loss(out, t):
        return (torch.nn.functional.softplus(out) * t).sum()

    obj = hk.Objective(model, loss, (X, y))
    torch.testing.assert_close(hk.last_layer_hessian(obj),
                               explicit_hessian(model, loss, X, y, ["2.weight", "2.bias"]))


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_layer_blocks_are_diagonal_blocks(float64, kind):
    torch.manual_seed(1)
    model = SmallCNN()
    X, y = torch.randn(10, 1, 8, 8), torch.randint(0, 3, (10,))
    loss = nn.CrossEntropyLoss()
    obj = hk.Objective(model, loss, (X, y))
    names = obj.param_names
    full = hk.HessianOperator(obj).dense() if kind == "hessian" else hk.GGNOperator(obj).dense()
    H = explicit_hessian(model, loss, X, y)
    if kind == "hessian":
        torch.testing.assert_close(full, H)
    blocks = hk.layer_blocks(obj, kind=kind, engine="func")
    assert list(blocks) == ["conv", "fc"]
    for module, block in blocks.items():
        wanted = [n for n in names if n.startswith(module + ".")]
        torch.testing.assert_close(block, _block(full, names, model, wanted))


def test_layer_blocks_bad_kind():
    obj = hk.Objective(mlp(), nn.CrossEntropyLoss(), (torch.randn(4, 4), torch.randint(0, 3, (4,))))
    with pytest.raises(ValueError, match="kind"):
        hk.layer_blocks(obj, kind="fisher")
    with pytest.raises(ValueError, match="model.*no nn.Linear"):
        cnn = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten())
        hk.last_layer_hessian(hk.Objective(cnn, nn.MSELoss(), (torch.randn(2, 1, 4, 4), torch.randn(2, 4))))


class _TwoInputHead(nn.Module):
    """``head(tanh(a(x1)) * x2)``: a model called with two inputs."""

    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(5, 3), nn.Linear(3, 4)

    def forward(self, x1, x2):
        return self.head(torch.tanh(self.a(x1)) * x2)


def test_last_layer_hessian_and_blocks_through_a_batch_adapter(float64):
    """A model called as ``model(x1, x2)`` through ``batch=``: the blocks feed it as the
    adapter says (they called ``model(inputs)``), and match the explicit Hessian."""
    torch.manual_seed(0)
    model = _TwoInputHead().double()
    X1, X2, y = torch.randn(23, 5), torch.randn(23, 3), torch.randint(0, 4, (23,))
    loss = nn.CrossEntropyLoss()
    obj = hk.Objective(model, loss, [((X1[:12], X2[:12]), y[:12]), ((X1[12:], X2[12:]), y[12:])],
                       batch=lambda b: (b[0], b[1]), batch_size=5)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for p in model.parameters()]
    sizes = [p.numel() for p in params]

    def total(flat):
        ps = [t.view_as(p) for t, p in zip(flat.split(sizes), params)]
        out = torch.func.functional_call(model, dict(zip(names, ps)), (X1, X2))
        return loss(out, y)

    H = torch.autograd.functional.hessian(total, torch.cat([p.reshape(-1) for p in params]))
    torch.testing.assert_close(hk.last_layer_hessian(obj), _block(H, names, model, names[2:]),
                               rtol=1e-10, atol=1e-12)
    blocks = hk.layer_blocks(obj)
    for layer, wanted in (("a", names[:2]), ("head", names[2:])):
        torch.testing.assert_close(blocks[layer], _block(H, names, model, wanted),
                                   rtol=1e-10, atol=1e-12)
