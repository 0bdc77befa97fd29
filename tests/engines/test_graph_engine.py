"""The graph engine (CNNs, ResNets): float64 parity with explicit Hessians and GGNs
from ``torch.autograd.functional`` on hypothesis-drawn CNNs (every rule; stride,
padding, dilation, groups; both losses and reductions; parameter subsets; uneven
chunks), ResNet blocks with BatchNorm in eval, LeNet; float32 agreement; the cache of
forward passes; and the models it refuses, by name. The ResNet, LeNet and study-CNN
parity tests run on CUDA too where a GPU is present (``benchmarks/gpu_session.sh``)."""
import operator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn
from torch.func import functional_call

import hesskit as hk
from hesskit.engines.native.chain import UnsupportedModelError
from hesskit.engines.native import GraphPath

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, lambda: nn.LeakyReLU(0.1),
               lambda: nn.ELU(0.7), lambda: nn.Softplus(2.0)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


# --- explicit references ------------------------------------------------------------

def _flat(obj):
    names, shapes, sizes = obj.param_names, obj.param_shapes, obj.param_sizes

    def as_dict(flat):
        return {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
    return obj.parameters_vector().detach().clone(), as_dict


def explicit_hessian(obj):
    """Dense Hessian of the dataset loss, torch.autograd.functional.hessian (eval mode)."""
    flat0, as_dict = _flat(obj)
    X, y = obj._data
    obj.model.eval()
    return torch.autograd.functional.hessian(
        lambda flat: obj.loss_fn(functional_call(obj.model, as_dict(flat), (X,)), y), flat0)


def explicit_ggn(obj):
    """J^T H_out J with J = d outputs / d params and H_out = d^2 loss / d outputs^2."""
    flat0, as_dict = _flat(obj)
    X, y = obj._data
    obj.model.eval()
    out = functional_call(obj.model, as_dict(flat0), (X,)).detach()
    J = torch.autograd.functional.jacobian(
        lambda flat: functional_call(obj.model, as_dict(flat), (X,)), flat0)
    J = J.reshape(out.numel(), -1)
    Hout = torch.autograd.functional.hessian(lambda z: obj.loss_fn(z, y), out)
    return J.T @ Hout.reshape(out.numel(), out.numel()) @ J


def product(engine, kind, V):
    return sum(c.weight * engine.product(kind, c, V) for c in engine.objective.chunks())


def rel_err(a, b, scale=None):
    """Largest error relative to the largest entry of ``b`` (or of ``scale``)."""
    scale = b if scale is None else scale
    return float((a - b).abs().max() / scale.abs().max().clamp_min(1e-30))


def randomize_batchnorm(model, generator=None):
    """Running statistics and affine parameters away from their defaults."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                if m.affine:
                    m.weight.normal_(1, 0.3, generator=generator)
                    m.bias.normal_(0, 0.3, generator=generator)
    return model


def check_all_kinds(obj, k=3, tol=1e-10, seed=0):
    """Hessian, GGN and functional products against the explicit matrices."""
    engine = GraphPath(obj)
    V = torch.randn(obj.n_params, k, dtype=obj.dtype,
                    generator=torch.Generator().manual_seed(seed)).to(obj.device)
    H, G = explicit_hessian(obj), explicit_ggn(obj)
    assert rel_err(product(engine, "hessian", V), H @ V) < tol
    assert rel_err(product(engine, "ggn", V), G @ V) < tol
    # H - G can vanish (a linear model under MSE): measured against H's scale
    assert rel_err(product(engine, "functional", V), (H - G) @ V, scale=H @ V) < tol
    return engine, H


# --- hypothesis-drawn CNNs -----------------------------------------------------------

@st.composite
def cnns(draw):
    """A small CNN (conv 1d or 2d with drawn stride/padding/dilation/groups/bias, an
    activation, optional BatchNorm, a pooling, Flatten, Linear) and its objective."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    dim = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_mid = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 1, "same", "valid"]))
    stride = 1 if padding == "same" else draw(st.integers(1, 2))
    side = 7
    Conv = nn.Conv1d if dim == 1 else nn.Conv2d
    layers = [Conv(c_in, c_mid, kernel, stride=stride, padding=padding, dilation=dilation,
                   groups=groups, bias=draw(st.booleans()))]
    if draw(st.booleans()):
        layers.append((nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d)(c_mid))
    layers.append(draw(st.sampled_from(ACTIVATIONS))())
    pool = draw(st.sampled_from(["max", "avg", "adaptive", "none"] if dim == 2 else
                                ["max", "none"]))
    if pool == "max":
        layers.append((nn.MaxPool1d if dim == 1 else nn.MaxPool2d)(2, stride=draw(
            st.sampled_from([1, 2]))))
    elif pool == "avg":
        layers.append(nn.AvgPool2d(2, padding=draw(st.sampled_from([0, 1])),
                                   count_include_pad=draw(st.booleans())))
    elif pool == "adaptive":
        layers.append(nn.AdaptiveAvgPool2d(2))
    layers += [nn.Conv2d(c_mid, 2, 1) if dim == 2 and draw(st.booleans()) else nn.Identity(),
               nn.Flatten()]
    n = draw(st.integers(2, 7))
    shape = (n, c_in) + (side,) * dim
    X = torch.randn(shape, dtype=torch.float64)
    features = nn.Sequential(*layers).double().eval()(X).shape[1]
    C = draw(st.integers(2, 4))
    model = randomize_batchnorm(nn.Sequential(*layers, nn.Dropout(0.3),
                                              nn.Linear(features, C)).double())
    reduction = draw(st.sampled_from(["mean", "sum"]))
    if draw(st.booleans()):
        loss_fn, y = nn.CrossEntropyLoss(reduction=reduction), torch.randint(0, C, (n,))
    else:
        loss_fn, y = nn.MSELoss(reduction=reduction), torch.randn(n, C, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]
    params = None
    if draw(st.booleans()):
        params = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names),
                               unique=True))
    batch_size = draw(st.sampled_from([None, 2, 3]))
    return hk.Objective(model, loss_fn, (X, y), params=params, batch_size=batch_size)


@settings(max_examples=60, **SETTINGS)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
@given(cnns())
def test_drawn_cnns_match_explicit_matrices(obj):
    check_all_kinds(obj)


# --- ResNet blocks, LeNet, user modules ----------------------------------------------

class BlockNet(nn.Module):
    """Stem conv-BN-ReLU, one hk.models.BasicBlock, global pooling, Linear."""

    def __init__(self, channels, stride):
        super().__init__()
        self.stem = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.block = hk.models.BasicBlock(2, channels, stride)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        return self.fc(torch.flatten(self.pool(self.block(x)), 1))


@pytest.mark.parametrize("channels,stride", [(2, 1), (3, 2)], ids=["identity", "projection"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("device", DEVICES)
def test_resnet_block_batchnorm_eval(channels, stride, loss, device):
    torch.manual_seed(1)
    model = randomize_batchnorm(BlockNet(channels, stride).double()).to(device)
    X = torch.randn(5, 2, 6, 6, dtype=torch.float64).to(device)
    if loss == "ce":
        loss_fn, y = nn.CrossEntropyLoss(), torch.randint(0, 3, (5,))
    else:
        loss_fn, y = nn.MSELoss(reduction="sum"), torch.randn(5, 3, dtype=torch.float64)
    y = y.to(device)
    check_all_kinds(hk.Objective(model, loss_fn, (X, y), batch_size=2))
    # a parameter subset inside the block
    check_all_kinds(hk.Objective(model, loss_fn, (X, y), params=["block.conv2", "block.bn1"]))


def test_resnet18_subset():
    torch.manual_seed(2)
    model = randomize_batchnorm(hk.models.resnet18(3, 2, width_mult=1 / 32).double())
    X, y = torch.randn(3, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (3,))
    check_all_kinds(hk.Objective(model, nn.CrossEntropyLoss(), (X, y),
                                 params=["layer3.0.shortcut", "layer4.1.bn2", "fc"]))


@pytest.mark.parametrize("device", DEVICES)
def test_lenet_tiny(device):
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16,
                                seed=0).double().to(device)
    X = torch.randn(4, 1, 16, 16, dtype=torch.float64).to(device)
    y = torch.randint(0, 4, (4,)).to(device)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y),
                       params=["0.weight", "3.bias", "9.bias", "11.weight"])
    check_all_kinds(obj, k=2)


STUDY_CNNS = {  # the models of the studies, small, on parameter subsets of a few hundred
    "vgg11_bn": (dict(width_mult=1 / 16, batch_norm=True), (3, 32, 32),
                 ["features.0.bias", "features.1", "features.26", "classifier"]),
    "yao_cnn": (dict(width_mult=1 / 16, input_size=20), (3, 20, 20),
                ["0.bias", "2.weight", "11.bias", "13"]),
    "small_cnn": (dict(n_classes=3, input_size=8, padding=1), (1, 8, 8), ["0", "7.bias"]),
}


@pytest.mark.parametrize("name", sorted(STUDY_CNNS))
@pytest.mark.parametrize("device", DEVICES)
def test_study_cnns(name, device):
    kwargs, shape, params = STUDY_CNNS[name]
    model = randomize_batchnorm(hk.models.get_model(name, seed=0, **kwargs).double(),
                                torch.Generator().manual_seed(0)).to(device)
    X = torch.randn(3, *shape, dtype=torch.float64).to(device)
    y = torch.randint(0, model(X).shape[1], (3,)).to(device)
    check_all_kinds(hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=params,
                                 batch_size=2), k=2)


class FunctionalNet(nn.Module):
    """Activations, flatten and residual additions written as functions and methods."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        h = torch.add(F.leaky_relu(self.conv2(h), 0.2), h).sigmoid()
        return self.fc(h.view(h.size(0), -1) + h.reshape(x.shape[0], 32))


def test_functions_methods_and_size_queries():
    torch.manual_seed(3)
    model = FunctionalNet().double()
    X, y = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    check_all_kinds(hk.Objective(model, nn.MSELoss(), (X, y)))


# --- float32, blocks of columns, the kept forward pass --------------------------------

def test_float32_matches_float64():
    model = hk.models.get_model("lenet", n_classes=3, in_channels=1, input_size=16, seed=0)
    X, y = torch.randn(6, 1, 16, 16), torch.randint(0, 3, (6,))
    V = torch.randn(sum(p.numel() for p in model.parameters()), 4)
    obj32 = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    out32 = product(GraphPath(obj32), "hessian", V)
    model64 = model.double()
    obj64 = hk.Objective(model64, nn.CrossEntropyLoss(), (X.double(), y))
    out64 = product(GraphPath(obj64), "hessian", V.double())
    assert rel_err(out32.double(), out64) < 1e-5


def test_column_blocks_and_kept_state_follow_changes():
    torch.manual_seed(4)
    model = randomize_batchnorm(BlockNet(3, 2).double())
    X, y = torch.randn(4, 2, 6, 6, dtype=torch.float64), torch.randint(0, 3, (4,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    engine = GraphPath(obj)
    V = torch.randn(obj.n_params, 5, dtype=torch.float64)
    full = product(engine, "hessian", V)
    assert engine.hessian(next(obj.chunks()), V[:, :0]).shape == (obj.n_params, 0)
    engine.max_workspace_bytes = 1  # one column per block
    assert rel_err(product(engine, "hessian", V), full) < 1e-12
    with torch.no_grad():  # a parameter and a running statistic changed in place
        model.block.conv1.weight.data.mul_(1.5)
        model.block.bn2.running_var.add_(0.5)
    assert rel_err(product(engine, "hessian", V), explicit_hessian(obj) @ V) < 1e-10


# --- refusals --------------------------------------------------------------------------

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, scale):
        return self.fc(x) * scale


class DirectParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 4))

    def forward(self, x):
        return x @ self.weight.T


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


class Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.cat([x, x], 1))


class InplaceShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        return self.out(self.act(h) + h)


class MyConv(nn.Conv2d):
    pass


def _shared():
    a = nn.Linear(4, 4)
    b = nn.Linear(4, 2)
    model = nn.Sequential(a, nn.ReLU(), b)
    model.extra = nn.Linear(4, 4)
    model.extra.weight = a.weight
    return model


def _hooked():
    model = nn.Sequential(nn.Linear(4, 2))
    model[0].register_forward_hook(lambda m, i, o: o * 2)
    return model


def _parametrized():
    model = nn.Sequential(nn.Linear(4, 2))
    torch.nn.utils.parametrize.register_parametrization(model[0], "weight", _Double())
    return model


class _Double(nn.Module):
    def forward(self, w):
        return 2 * w


REFUSED = {
    "two inputs": (TwoInputs, "takes 2 inputs", {}),
    "parameter read directly": (DirectParameter, "weight", {}),
    "module called twice": (Twice, "'fc'", {}),
    "unsupported function": (Cat, "cat", {}),
    "in place on a shared value": (InplaceShared, "in place", {}),
    "subclass": (lambda: nn.Sequential(MyConv(1, 1, 1), nn.Flatten(), nn.Linear(16, 2)),
                 "MyConv", {}),
    "unsupported module": (lambda: nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4),
                                                 nn.Linear(4, 2)), "LayerNorm", {}),
    "shared parameter": (_shared, "same tensor", {}),
    "forward hook": (_hooked, "has a forward hook", {}),
    "parametrization": (_parametrized, "parametrizations", {}),
    "train-mode BatchNorm": (lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4),
                                                   nn.Linear(4, 2)), "'1' (BatchNorm1d)",
                             {"mode": "train"}),
    "train-mode dropout": (lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5),
                                                 nn.Linear(4, 2)), "'1' (Dropout)",
                           {"mode": "train"}),
    "batch statistics in eval": (lambda: nn.Sequential(
        nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 2)),
        "track_running_stats=False", {}),
    "reflect padding": (lambda: nn.Sequential(nn.Conv2d(1, 1, 3, padding=1,
                                                        padding_mode="reflect"),
                                              nn.Flatten(), nn.Linear(16, 2)), "reflect", {}),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_models_are_named(case):
    make, needle, kwargs = REFUSED[case]
    torch.manual_seed(0)
    model = make()
    X = torch.randn(3, 1, 4, 4) if "padding" in case or case == "subclass" else torch.randn(3, 4)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, torch.randint(0, 2, (3,))),
                       reduction="mean", **kwargs) if case != "two inputs" else None
    if obj is None:  # the Objective itself cannot call a two-input model
        obj = hk.Objective(nn.Linear(4, 2), nn.CrossEntropyLoss(), (X, torch.randint(0, 2, (3,))))
        obj.model = model
    reason = GraphPath.unsupported_reason(obj)
    assert reason is not None and needle in reason, reason
    with pytest.raises(UnsupportedModelError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        GraphPath(obj)


def test_global_hooks_and_losses_are_refused():
    model = nn.Sequential(nn.Linear(4, 2))
    data = (torch.randn(3, 4), torch.randint(0, 2, (3,)))
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        reason = GraphPath.unsupported_reason(hk.Objective(model, nn.CrossEntropyLoss(), data))
    finally:
        handle.remove()
    assert "global forward hook" in reason
    reason = GraphPath.unsupported_reason(hk.Objective(model, nn.NLLLoss(), data))
    assert "NLLLoss" in reason
    reason = GraphPath.unsupported_reason(
        hk.Objective(model, nn.CrossEntropyLoss(weight=torch.ones(2)), data))
    assert reason is not None


def test_operator_add_is_a_rule_and_broadcasting_is_refused():
    class Broadcast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pool = nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 2)

        def forward(self, x):
            h = self.conv(x)
            return self.fc(torch.flatten(h + self.pool(h), 1))

    obj = hk.Objective(Broadcast(), nn.CrossEntropyLoss(),
                       (torch.randn(3, 1, 4, 4), torch.randint(0, 2, (3,))))
    reason = GraphPath.unsupported_reason(obj)
    assert reason is not None and "1, 1)" in reason and "one shape" in reason, reason
    assert operator.add in __import__("hesskit.engines.native.rules",
                                      fromlist=["FUNCTION_RULES"]).FUNCTION_RULES


def test_train_mode_without_batchnorm_or_dropout_is_exact():
    """mode='train' changes nothing in a CNN without BatchNorm and active dropout."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ELU(), nn.MaxPool2d(2), nn.Dropout(0.0),
                          nn.Flatten(), nn.Linear(2, 3)).double()
    X, y = torch.randn(4, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (4,))
    check_all_kinds(hk.Objective(model, nn.CrossEntropyLoss(), (X, y), mode="train"))


def test_model_changed_after_construction_is_followed_or_refused():
    """A module swapped after the engine was built is used (the graph is read again); a
    hook registered afterwards is refused by name, not skipped."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
    X, y = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (3,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=["0.weight"])
    engine = GraphPath(obj)
    V = torch.randn(obj.n_params, 2, dtype=torch.float64)
    product(engine, "hessian", V)
    model[1] = nn.Sigmoid()
    assert rel_err(product(engine, "hessian", V), explicit_hessian(obj) @ V) < 1e-10
    model[3].register_forward_pre_hook(lambda m, args: None)
    for _ in range(2):  # and again on the next product
        with pytest.raises(UnsupportedModelError, match="'3' \\(Linear\\) has a forward pre-hook"):
            product(engine, "hessian", V)


@pytest.mark.parametrize("loss_fn,targets", [
    (nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=1), "indices"),
    (nn.CrossEntropyLoss(reduction="sum"), "probabilities"),
    (F.cross_entropy, "indices"),
    (F.mse_loss, "values"),
], ids=["smoothing-ignore", "probabilities", "F.cross_entropy", "F.mse_loss"])
def test_loss_variants(loss_fn, targets):
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softplus(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(2, 3)).double()
    X = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    y = {"indices": torch.tensor([0, 1, 2, 1, 0]),
         "probabilities": torch.softmax(torch.randn(5, 3, dtype=torch.float64), 1) * 1.5,
         "values": torch.randn(5, 3, dtype=torch.float64)}[targets]
    # one chunk: with ignore_index, chunk means weighted by chunk sizes are another objective
    check_all_kinds(hk.Objective(model, loss_fn, (X, y), reduction="mean"))


# --- in the registry: what engine="auto" uses on CNNs ---------------------------------

def test_auto_uses_the_native_graph_path_on_a_cnn_and_matches_the_explicit_hessian():
    """LeNet (no chain, so not the fused kernels): ``auto`` takes the native engine by
    priority, on its graph path, and the operator's products are the explicit Hessian's."""
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16,
                                seed=0).double()
    X, y = torch.randn(6, 1, 16, 16, dtype=torch.float64), torch.randint(0, 4, (6,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=["0.weight", "9.bias"])
    H = hk.HessianOperator(obj)
    assert H.engine.name == "native" and isinstance(H.engine, GraphPath)
    V = torch.randn(obj.n_params, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert rel_err(H @ V, explicit_hessian(obj) @ V) < 1e-10


def test_batches_mapped_by_an_adapter_are_refused():
    """``output=`` (or inputs passed as several arguments) is more than
    ``model(inputs)``: the graph engine, which reads the model alone, refuses it."""
    model = hk.models.get_model("lenet", n_classes=4, in_channels=1, input_size=16,
                                seed=0).double()
    X, y = torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.randint(0, 4, (4,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), output=lambda out: 2 * out)
    assert "batch=/output=" in GraphPath.unsupported_reason(obj)
