"""Exact layer blocks, diagonal and dense matrix of the graph engine: float64 parity
with explicit Hessians and GGNs (``torch.autograd.functional``) on hypothesis-drawn
CNNs, ResNet blocks with BatchNorm in eval, a LeNet-sized toy; every kind, parameter
subsets, uneven chunks; float32 agreement; ``layer_blocks(engine="auto")`` on LeNet
goes through the graph engine."""
import copy
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from torch import nn

import hesskit as hk
from hesskit.blocks import parameterized_modules
from hesskit.engines.native import GraphPath
from engines.test_graph_engine import (SETTINGS, BlockNet, cnns, explicit_ggn, explicit_hessian,
                               randomize_batchnorm, rel_err)

KINDS = ("hessian", "ggn", "functional")


def _rows(obj, names):
    slices = obj.slices()
    return torch.cat([torch.arange(slices[n].start, slices[n].stop) for n in names])


def check_explicit_forms(obj, tol=1e-10, dense=True):
    """Every kind's blocks, diagonal and dense matrix against the explicit matrices
    (errors relative to the Hessian's scale: H - G can vanish)."""
    engine = GraphPath(obj)
    H, G = explicit_hessian(obj), explicit_ggn(obj)
    groups = parameterized_modules(obj)
    for kind, R in zip(KINDS, (H, G, H - G)):
        blocks = engine.layer_blocks(kind)
        assert list(blocks) == list(groups)
        for module, names in groups.items():
            rows = _rows(obj, names)
            assert torch.equal(blocks[module], blocks[module].mT)
            assert rel_err(blocks[module], R[rows][:, rows], scale=H[rows][:, rows]) < tol, \
                (kind, module)
        assert rel_err(engine.diagonal(kind), R.diagonal(), scale=H.diagonal()) < tol, kind
        if dense:
            D = engine.dense(kind)
            assert torch.equal(D, D.mT)
            assert rel_err(D, R, scale=H) < tol, kind


@settings(max_examples=40, **SETTINGS)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@given(cnns())
def test_drawn_cnns_blocks_diagonal_dense_match_explicit_matrices(obj):
    check_explicit_forms(obj)


@pytest.mark.parametrize("channels,stride", [(2, 1), (3, 2)], ids=["identity", "projection"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_resnet_block_batchnorm_eval(channels, stride, loss):
    torch.manual_seed(1)
    model = randomize_batchnorm(BlockNet(channels, stride).double())
    X = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    if loss == "ce":
        loss_fn, y = nn.CrossEntropyLoss(), torch.randint(0, 3, (5,))
    else:
        loss_fn, y = nn.MSELoss(reduction="sum"), torch.randn(5, 3, dtype=torch.float64)
    check_explicit_forms(hk.Objective(model, loss_fn, (X, y), batch_size=2))
    check_explicit_forms(hk.Objective(model, loss_fn, (X, y), batch_size=3,
                                      params=["block.conv2.weight", "block.bn1", "fc.bias"]))


def test_smooth_activations_and_linear_on_rows():
    """Second-order terms downstream of the layers (tanh, sigmoid), a Linear layer on
    several rows per sample (no Kronecker factors), a bias-only selection."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Linear(4, 3), nn.Sigmoid(),
                          nn.Flatten(), nn.Linear(2 * 4 * 3, 5), nn.Softplus(),
                          nn.Linear(5, 3)).double()
    X, y = torch.randn(5, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (5,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(reduction="sum"), (X, y), batch_size=2)
    check_explicit_forms(obj)
    check_explicit_forms(obj.restricted(["0.bias", "2.weight", "5.bias", "7.weight"]))


def test_lenet_sized_toy():
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16,
                                seed=0).double()
    X, y = torch.randn(7, 1, 16, 16, dtype=torch.float64), torch.randint(0, 4, (7,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), batch_size=3,
                       params=["0.weight", "3.bias", "9.bias", "11"])
    check_explicit_forms(obj)


def test_float32_matches_float64():
    torch.manual_seed(4)
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16, seed=0)
    X, y = torch.randn(6, 1, 16, 16), torch.randint(0, 4, (6,))
    params = ["0.weight", "0.bias", "3.bias", "9.bias", "11.weight"]
    obj32 = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=params)
    obj64 = hk.Objective(copy.deepcopy(model).double(), nn.CrossEntropyLoss(), (X.double(), y), params=params)
    for kind in ("hessian", "ggn"):
        b32 = GraphPath(obj32).layer_blocks(kind)
        b64 = GraphPath(obj64).layer_blocks(kind)
        for name in b64:
            assert b32[name].dtype == torch.float32
            assert rel_err(b32[name].double(), b64[name]) < 1e-5, (kind, name)


def test_layer_blocks_auto_on_lenet_goes_through_the_graph_engine():
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16,
                                seed=0).double()
    X, y = torch.randn(5, 1, 16, 16, dtype=torch.float64), torch.randint(0, 4, (5,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=["0", "3.bias", "11"])
    with mock.patch.object(GraphPath, "layer_blocks", autospec=True,
                           side_effect=GraphPath.layer_blocks) as spy:
        blocks = hk.layer_blocks(obj, kind="ggn")
    assert spy.call_count == 1
    G = explicit_ggn(obj)
    for module, names in parameterized_modules(obj).items():
        rows = _rows(obj, names)
        assert rel_err(blocks[module], G[rows][:, rows]) < 1e-10
    H = hk.HessianOperator(obj)
    assert H.engine.name == "native" and H.engine.path == "graph" and H.engine.supports("dense")
    assert rel_err(H.dense(), explicit_hessian(obj)) < 1e-10
    assert rel_err(H.diagonal(), explicit_hessian(obj).diagonal()) < 1e-10


def test_max_bytes_refuses_before_computing():
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16, seed=0)
    X, y = torch.randn(3, 1, 16, 16), torch.randint(0, 4, (3,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    with mock.patch.object(GraphPath, "layer_blocks", autospec=True) as spy, \
            pytest.raises(ValueError, match="max_bytes"):
        hk.layer_blocks(obj, max_bytes=2**20)
    assert spy.call_count == 0


def test_unknown_kind_is_refused():
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16, seed=0)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (torch.randn(2, 1, 16, 16),
                                                      torch.randint(0, 4, (2,))))
    engine = GraphPath(obj)
    for method in (engine.layer_blocks, engine.diagonal, engine.dense):
        with pytest.raises(ValueError, match="kind"):
            method("fisher")


class Reordered(nn.Module):
    """Modules registered in another order than the forward calls them."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2 * 4 * 4, 3)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def test_blocks_follow_the_flattening_order_not_the_call_order():
    torch.manual_seed(5)
    model = Reordered().double()
    X, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (4,))
    check_explicit_forms(hk.Objective(model, nn.CrossEntropyLoss(), (X, y), batch_size=3))
