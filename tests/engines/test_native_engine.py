"""The native engine's fused chain path: float64 parity with explicit torch.func matrices on
hypothesis-drawn chains, agreement with the func engine through the operators over
multi-batch data, blocks/diagonal/dense, parameter subsets, losses, and the models
it refuses (naming the module)."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import hesskit as hk
from hesskit import ops
from hesskit.engines import ENGINES, make_engine
from hesskit.engines.native import FusedChain, NativeEngine
from hesskit.engines.native.chain import UnsupportedModelError, parse_chain
from helpers import explicit_ggn, explicit_hessian

pytestmark = pytest.mark.skipif(not ops.native_available(),
                                reason="hesskit._C is not built")

ACTIVATIONS = [nn.ReLU, lambda: nn.LeakyReLU(0.2), nn.Tanh, nn.Sigmoid, nn.GELU,
               lambda: nn.GELU(approximate="tanh"), nn.SiLU, lambda: nn.Softplus(2.0, 1.0),
               lambda: nn.ELU(0.7), nn.Identity, lambda: nn.Dropout(0.5)]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@st.composite
def models(draw, max_width=12):
    """An nn.Sequential of Linear layers (depth 1-4) with 0-2 activations after each,
    some of it nested, and its data."""
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    modules = []
    for a, b in zip(widths, widths[1:]):
        modules.append(nn.Linear(a, b, bias=draw(st.booleans())))
        for _ in range(draw(st.integers(0, 2))):
            modules.append(draw(st.sampled_from(ACTIVATIONS))())
    if len(modules) > 2 and draw(st.booleans()):
        modules = [modules[0], nn.Sequential(*modules[1:3]), *modules[3:]]
    model = nn.Sequential(*modules).double()
    n = draw(st.integers(1, 300))
    X = torch.randn(n, widths[0], dtype=torch.float64)
    if draw(st.booleans()):
        loss_fn = nn.CrossEntropyLoss(reduction=draw(st.sampled_from(["mean", "sum"])))
        y = torch.randint(0, widths[-1], (n,))
    else:
        loss_fn = nn.MSELoss(reduction=draw(st.sampled_from(["mean", "sum"])))
        y = torch.randn(n, widths[-1], dtype=torch.float64)
    return model, loss_fn, X, y


@settings(max_examples=15, **SETTINGS)
@given(case=models())
def test_dense_blocks_diagonal_and_products_match_explicit(case):
    model, loss_fn, X, y = case
    obj = hk.Objective(model, loss_fn, (X, y))
    H_ref = explicit_hessian(model.eval(), loss_fn, X, y)
    G_ref = explicit_ggn(model, loss_fn, X, y)
    # one scale for H, G and H - G (which can vanish up to the rounding of H and G)
    scale = max(float(H_ref.abs().max()), float(G_ref.abs().max()), 1e-12)
    V = torch.randn(H_ref.shape[0], 3, dtype=torch.float64)
    product_scale = max(float(((H_ref.abs() + G_ref.abs()) @ V.abs()).max()), 1e-12)

    def close(a, b, s=scale):
        return float((a - b).abs().max()) <= 1e-10 * s

    for op, ref in [(hk.HessianOperator, H_ref), (hk.GGNOperator, G_ref),
                    (hk.FunctionalHessianOperator, H_ref - G_ref)]:
        H = op(obj, engine="native")
        assert H.engine.name == "native"
        assert close(H.dense(), ref)
        assert close(H @ V, ref @ V, product_scale)
        assert close(H.diagonal(), ref.diagonal())
        slices = obj.slices()
        for module, block in H.engine.layer_blocks(op.kind).items():
            names = [n for n in obj.param_names if n.rpartition(".")[0] == module]
            rows = slice(slices[names[0]].start, slices[names[-1]].stop)
            assert close(block, ref[rows, rows])


def _mlp(act=nn.Tanh, sizes=(6, 9, 7, 4), bias=True, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double()


def _batches(n=53, d=6, classes=4, sizes=(20, 13, 20), seed=1, targets="classes"):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    if targets == "classes":
        y = torch.randint(0, classes, (n,), generator=g)
    else:
        y = torch.randn(n, classes, generator=g, dtype=torch.float64)
    batches, start = [], 0
    for s in sizes:
        batches.append((X[start:start + s], y[start:start + s]))
        start += s
    return X, y, batches


@pytest.mark.parametrize("kind", ["hessian", "ggn", "functional"])
@pytest.mark.parametrize("loss_fn, targets", [
    (nn.CrossEntropyLoss(), "classes"), (nn.CrossEntropyLoss(reduction="sum"), "classes"),
    (nn.MSELoss(), "values"), (nn.MSELoss(reduction="sum"), "values")])
def test_matches_func_engine_over_uneven_batches(kind, loss_fn, targets):
    model = _mlp(nn.SiLU)
    _, _, batches = _batches(targets=targets)
    op = {"hessian": hk.HessianOperator, "ggn": hk.GGNOperator,
          "functional": hk.FunctionalHessianOperator}[kind]
    native = op(hk.Objective(model, loss_fn, batches, batch_size=8), engine="native")
    func = op(hk.Objective(model, loss_fn, batches), engine="func")
    V = torch.randn(native.shape[0], 5, dtype=torch.float64)
    assert rel_err(native @ V, func @ V) < 1e-10
    assert rel_err(native.dense(), func.dense()) < 1e-10


@pytest.mark.parametrize("params", [["2.weight"], ["0"], ["0.bias", "4.weight"], ["2.bias", "4"]])
def test_parameter_subsets(params):
    model = _mlp(nn.ELU)
    X, y, batches = _batches()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), batches, params=params)
    ref = explicit_hessian(model, nn.CrossEntropyLoss(), X, y, names=obj.param_names)
    H = hk.HessianOperator(obj, engine="native")
    assert rel_err(H.dense(), ref) < 1e-10
    V = torch.randn(ref.shape[0], 2, dtype=torch.float64)
    assert rel_err(H @ V, ref @ V) < 1e-10
    assert rel_err(H.diagonal(), ref.diagonal()) < 1e-10
    offset = 0
    for module, block in H.engine.layer_blocks().items():
        size = block.shape[0]
        assert rel_err(block, ref[offset:offset + size, offset:offset + size]) < 1e-10
        offset += size
    assert offset == ref.shape[0]


@pytest.mark.parametrize("loss_fn, targets", [
    (nn.CrossEntropyLoss(ignore_index=2), "classes"),
    (nn.CrossEntropyLoss(label_smoothing=0.2), "classes"),
    (nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=0, reduction="sum"), "classes"),
    (nn.CrossEntropyLoss(), "probabilities"),
    (F.cross_entropy, "classes"),
    (F.mse_loss, "values")])
def test_loss_variants(loss_fn, targets):
    model = _mlp(nn.GELU, sizes=(5, 8, 3))
    g = torch.Generator().manual_seed(3)
    X = torch.randn(30, 5, generator=g, dtype=torch.float64)
    if targets == "classes":
        y = torch.randint(0, 3, (30,), generator=g)
    elif targets == "probabilities":
        y = torch.softmax(torch.randn(30, 3, generator=g, dtype=torch.float64), 1)
    else:
        y = torch.randn(30, 3, generator=g, dtype=torch.float64)
    obj = hk.Objective(model, loss_fn, (X, y))
    assert rel_err(hk.HessianOperator(obj, engine="native").dense(),
                   explicit_hessian(model, loss_fn, X, y)) < 1e-10
    assert rel_err(hk.GGNOperator(obj, engine="native").dense(),
                   explicit_ggn(model, loss_fn, X, y)) < 1e-10


def test_float32_matches_float64_func_engine():
    model64 = _mlp(nn.Tanh, sizes=(6, 32, 32, 4))
    model = copy.deepcopy(model64).float()
    g = torch.Generator().manual_seed(4)
    X, y = torch.randn(200, 6, generator=g), torch.randint(0, 4, (200,), generator=g)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 8, generator=g)
    ref = hk.HessianOperator(hk.Objective(model64, nn.CrossEntropyLoss(), (X.double(), y)),
                             engine="func") @ V.double()
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)), engine="native")
    assert rel_err((H @ V).double(), ref) < 1e-5


def test_flatten_prefix_train_mode_without_dropout_and_bare_linear():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Sigmoid(), nn.Linear(12, 5), nn.Softplus(),
                          nn.Linear(5, 3, bias=False)).double()
    X = torch.randn(17, 3, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (17,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), mode="train")
    assert rel_err(hk.HessianOperator(obj, engine="native").dense(),
                   explicit_hessian(model, nn.CrossEntropyLoss(), X, y)) < 1e-10
    linear = nn.Linear(4, 2).double()
    X, y = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    obj = hk.Objective(linear, nn.MSELoss(), (X, y))
    assert set(NativeEngine(obj).layer_blocks()) == {""}
    assert rel_err(hk.HessianOperator(obj, engine="native").dense(),
                   explicit_hessian(linear, nn.MSELoss(), X, y)) < 1e-10


def _tanh_objective(n, batch_size=None):
    """A tanh MLP with cross-entropy on n samples: ``(model, X, y, objective)``."""
    model = _mlp(nn.Tanh)
    X, y, _ = _batches(n=n, sizes=(n,))
    return model, X, y, hk.Objective(model, nn.CrossEntropyLoss(), (X, y),
                                     batch_size=batch_size)


def test_sub_chunks_give_the_same_numbers(monkeypatch):
    *_, obj = _tanh_objective(40)
    engine = NativeEngine(obj)
    V = torch.randn(obj.n_params, 3, dtype=torch.float64)
    chunk = next(obj.chunks())
    whole = (engine.product("hessian", chunk, V), engine.dense(), engine.diagonal(),
             engine.layer_blocks())
    monkeypatch.setattr(FusedChain, "max_workspace_bytes", 4096)
    assert len(engine._sample_slices(40, 100)) > 1
    split = (engine.product("hessian", chunk, V), engine.dense(), engine.diagonal(),
             engine.layer_blocks())
    for a, b in zip(whole[:3], split[:3]):
        assert rel_err(b, a) < 1e-12
    for name in whole[3]:
        assert rel_err(split[3][name], whole[3][name]) < 1e-12


def test_auto_prefers_native_and_falls_back():
    X, y, _ = _batches(n=10, sizes=(10,))
    obj = hk.Objective(_mlp(), nn.CrossEntropyLoss(), (X, y))
    assert make_engine("auto", obj).name == "native"
    conv = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Flatten(),
                         nn.Linear(8, 4)).double()
    assert not isinstance(make_engine("auto", hk.Objective(conv, nn.CrossEntropyLoss(), (X, y))),
                          NativeEngine)


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(x)


def _shared():
    layer = nn.Linear(6, 6)
    return nn.Sequential(layer, nn.Tanh(), layer, nn.Linear(6, 4))


@pytest.mark.parametrize("model, loss_fn, mode, match", [
    (lambda: nn.Sequential(nn.Linear(6, 5), nn.Sequential(nn.Tanh(), nn.LayerNorm(5)),
                           nn.Linear(5, 4)), nn.CrossEntropyLoss(), "eval",
     r"module '1\.1' \(LayerNorm\) is not supported"),
    (lambda: nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3)),
     nn.CrossEntropyLoss(), "eval", r"module '0' \(Unflatten\)"),
    (lambda: nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.1)), nn.CrossEntropyLoss(), "train",
     r"module '1' \(Dropout\) draws random masks"),
    (_shared, nn.CrossEntropyLoss(), "eval", "module '2' \\(Linear\\) appears twice"),
    (lambda: nn.Sequential(nn.Flatten(0), nn.Linear(6, 4)), nn.CrossEntropyLoss(), "eval",
     "start_dim=0"),
    (lambda: nn.Sequential(nn.Linear(6, 4)), nn.CrossEntropyLoss(weight=torch.ones(4)), "eval",
     "without class weights"),
    (lambda: nn.Sequential(nn.Linear(6, 4)), nn.NLLLoss(), "eval", r"loss_fn \(NLLLoss\)"),
    (lambda: nn.Sequential(nn.Linear(6, 1)), nn.MSELoss(), "eval", r"targets: MSE"),
])
def test_unsupported_models_raise_naming_the_module(model, loss_fn, mode, match):
    X, y, _ = _batches(n=10, sizes=(10,))
    obj = hk.Objective(model().double(), loss_fn, (X, y.float() if "MSE" in match else y),
                       mode=mode)
    assert re.search(match, FusedChain.unsupported_reason(obj))
    with pytest.raises(ValueError, match=match):  # the graph path refuses it too
        hk.HessianOperator(obj, engine="native")


def test_a_custom_module_is_refused_by_the_fused_chain_path_and_read_by_the_graph_path():
    X, y, _ = _batches(n=10, sizes=(10,))
    model = Custom().double()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    assert re.search(r"model \(Custom", FusedChain.unsupported_reason(obj))
    H = hk.HessianOperator(obj, engine="native")
    assert H.engine.path == "graph"
    assert rel_err(H.dense(), explicit_hessian(model, nn.CrossEntropyLoss(), X, y)) < 1e-10


def test_chain_without_linear_layer_is_refused():
    with pytest.raises(UnsupportedModelError, match="no nn.Linear"):
        parse_chain(nn.Sequential(nn.Tanh(), nn.Flatten()))


def test_three_dimensional_inputs_are_refused():
    model = nn.Sequential(nn.Linear(6, 4)).double()
    obj = hk.Objective(model, nn.MSELoss(), (torch.randn(5, 2, 6, dtype=torch.float64),
                                             torch.randn(5, 2, 4, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"inputs reach module '0' \(Linear\) with shape"):
        make_engine("native", obj)


def test_kind_is_checked():
    X, y, _ = _batches(n=10, sizes=(10,))
    engine = NativeEngine(hk.Objective(_mlp(), nn.CrossEntropyLoss(), (X, y)))
    for method in (engine.layer_blocks, engine.dense, engine.diagonal):
        with pytest.raises(ValueError, match="kind"):
            method("fisher")


def test_targets_changed_in_place_are_seen():
    """Repeated products reuse the loss terms of a batch only while its targets are
    unchanged."""
    model = _mlp(nn.Tanh)
    X, y, _ = _batches(n=20, sizes=(20,), targets="values")
    obj = hk.Objective(model, nn.MSELoss(), (X, y))
    H = hk.HessianOperator(obj, engine="native")
    V = torch.randn(obj.n_params, 2, dtype=torch.float64)
    first = H @ V
    assert torch.equal(H @ V, first)
    y.mul_(3.0)
    ref = explicit_hessian(model, nn.MSELoss(), X, y) @ V
    assert rel_err(H @ V, ref) < 1e-10


def test_modules_left_in_train_mode_do_not_drop_out():
    """An eval-mode objective ignores the dropout of a model left in train mode, also
    before the first Linear layer and in layers below the selected parameters."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(6, 5), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(5, 4)).double().train()
    X, y, _ = _batches(n=15, sizes=(15,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), params=["4.weight"])
    H = hk.HessianOperator(obj, engine="native").dense()
    ref = explicit_hessian(copy.deepcopy(model).eval(), nn.CrossEntropyLoss(), X, y,
                           names=["4.weight"])
    assert rel_err(H, ref) < 1e-10
    assert model.training


def _count_forward_passes(monkeypatch):
    calls = []
    original = ops.sequential_forward

    def counted(*args, **kwargs):
        calls.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "sequential_forward", counted)
    return calls


@pytest.mark.parametrize("change", ["parameter", "parameter via .data", "inputs via .data"])
def test_forward_passes_are_kept_until_anything_they_depend_on_changes(monkeypatch, change):
    """Repeated products over several chunks compute each chunk's forward pass once;
    a parameter or an input changed in place (through ``.data`` too, which bumps no
    version counter) is seen, and the products stay exact."""
    model, X, y, obj = _tanh_objective(30, batch_size=12)
    H = hk.HessianOperator(obj, engine="native")
    calls = _count_forward_passes(monkeypatch)
    V = torch.randn(obj.n_params, 2, dtype=torch.float64)
    first = H @ V
    assert len(calls) == 3                       # chunks of 12, 12, 6
    assert torch.equal(H @ V, first)
    assert len(calls) == 3
    weight = model[0].weight
    if change == "parameter":
        with torch.no_grad():
            weight.mul_(1.5)
    elif change == "parameter via .data":
        weight.data.mul_(1.5)
    else:
        X.data[:5].mul_(2.0)
    after = H @ V
    assert len(calls) == (6 if "parameter" in change else 4)  # inputs: only chunk 0 changed
    assert rel_err(after, explicit_hessian(model, nn.CrossEntropyLoss(), X, y) @ V) < 1e-10


def test_ggn_products_use_a_hessian_forward_pass_not_the_reverse(monkeypatch):
    *_, obj = _tanh_objective(20)
    calls = _count_forward_passes(monkeypatch)
    V = torch.randn(obj.n_params, 2, dtype=torch.float64)
    G = hk.GGNOperator(obj, engine="native")
    H = hk.HessianOperator(obj, engine="native")
    engine = NativeEngine(obj)
    chunk = next(obj.chunks())
    ggn = engine.product("ggn", chunk, V)
    hessian = engine.product("hessian", chunk, V)
    assert calls == ["ggn", "hessian"]
    assert torch.equal(engine.product("ggn", chunk, V), ggn)
    assert calls == ["ggn", "hessian"]
    assert rel_err(ggn, G @ V) < 1e-12 and rel_err(hessian, H @ V) < 1e-12


def test_forward_passes_beyond_the_memory_budget_are_recomputed(monkeypatch):
    *_, obj = _tanh_objective(30, batch_size=10)
    H = hk.HessianOperator(obj, engine="native", check_deterministic=False)  # its own passes only
    monkeypatch.setattr(FusedChain, "max_state_bytes", 0)
    calls = _count_forward_passes(monkeypatch)
    V = torch.randn(obj.n_params, 1, dtype=torch.float64)
    assert torch.equal(H @ V, H @ V)
    assert len(calls) == 6 and not H.engine._states
