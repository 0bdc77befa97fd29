"""Models the native engine cannot follow are refused by name and ``auto`` falls back
to the right numbers; models it can follow after a change of registration order give
the right numbers; non-finite data raises on every native fast path.

References: float64 ``torch.autograd.functional.hessian`` of the whole loss as a
function of the flat parameters (in ``model.named_parameters()`` order), through
``functional_call`` so that hooks, parametrizations and tied weights act as in
``model(x)``.
"""
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize, prune

import hesskit as hk
from hesskit import ops
from hesskit.engines import make_engine
from hesskit.engines.native import FusedChain, NativeEngine

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="hesskit._C is not built")


def reference_hessian(model, loss_fn, X, y):
    """Dense float64 Hessian of ``loss_fn(model(X), y)`` over ``model.named_parameters()``."""
    named = dict(model.named_parameters())
    names = list(named)
    shapes = [named[n].shape for n in names]
    sizes = [named[n].numel() for n in names]
    flat0 = torch.cat([named[n].detach().reshape(-1) for n in names])

    def loss(flat):
        params = {n: t.reshape(s) for n, t, s in zip(names, flat.split(sizes), shapes)}
        return loss_fn(functional_call(model, params, (X,)), y)

    return torch.autograd.functional.hessian(loss, flat0)


def data(n=20, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, c, (n,),
                                                                               generator=g)


def square_mlp(d=5, c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d), nn.Tanh(),
                         nn.Linear(d, c)).double().eval()


def tied():
    model = square_mlp()
    model[2].weight = model[0].weight
    return model


def forward_hook():
    model = square_mlp()
    model[2].register_forward_hook(lambda module, args, out: 2 * out)
    return model


def forward_pre_hook():
    model = square_mlp()
    model[2].register_forward_pre_hook(lambda module, args: (args[0] ** 2,))
    return model


def pruned():
    model = square_mlp()
    prune.l1_unstructured(model[2], "weight", amount=0.4)
    return model


class Symmetric(nn.Module):
    def forward(self, W):
        return W.triu() + W.triu(1).T


def parametrized():
    model = square_mlp()
    parametrize.register_parametrization(model[2], "weight", Symmetric())
    return model


REFUSED = [
    (tied, r"module '2' \(Linear\) shares its parameter 'weight' with module '0'"),
    (forward_hook, r"module '2' \(Linear\) has a forward hook"),
    (forward_pre_hook, r"module '2' \(Linear\) has a forward pre-hook"),
    (pruned, r"module '2' \(Linear\) has a forward pre-hook"),
    (parametrized, r"module '2' \(ParametrizedLinear\) .*parametriz"),
]


@pytest.mark.parametrize("build, match", REFUSED, ids=[b.__name__ for b, _ in REFUSED])
def test_refused_by_name_and_auto_falls_back_to_the_exact_hessian(build, match):
    model = build()
    X, y = data()
    loss_fn = nn.CrossEntropyLoss()
    obj = hk.Objective(model, loss_fn, (X, y))
    assert NativeEngine.unsupported_reason(obj) is not None
    with pytest.raises(ValueError, match=match):
        hk.HessianOperator(obj, engine="native")
    H = hk.HessianOperator(obj, engine="auto")
    assert not isinstance(H.engine, NativeEngine)
    ref = reference_hessian(model, loss_fn, X, y)
    torch.testing.assert_close(H.dense(), ref, rtol=1e-10, atol=1e-12)
    v = torch.randn(ref.shape[0], dtype=torch.float64)
    torch.testing.assert_close(H @ v, ref @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hook", ["forward", "forward_pre"])
def test_global_module_hooks_are_refused(hook):
    model = square_mlp()
    X, y = data()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    register = getattr(torch.nn.modules.module, f"register_module_{hook}_hook")
    if hook == "forward":
        handle = register(lambda module, args, out: out * 1.5 if isinstance(module, nn.Tanh)
                          else out)
    else:
        handle = register(lambda module, args: args)
    try:
        assert "global" in NativeEngine.unsupported_reason(obj)
        assert not isinstance(make_engine("auto", obj), NativeEngine)
    finally:
        handle.remove()
    assert NativeEngine.unsupported_reason(obj) is None


def test_hooks_on_the_loss_module_are_refused():
    model = square_mlp()
    X, y = data()
    loss_fn = nn.CrossEntropyLoss()
    loss_fn.register_forward_hook(lambda module, args, out: 3 * out)
    obj = hk.Objective(model, loss_fn, (X, y))
    assert "loss_fn (CrossEntropyLoss) has a forward hook" in NativeEngine.unsupported_reason(obj)
    H = hk.HessianOperator(obj, engine="auto")
    assert not isinstance(H.engine, NativeEngine)
    torch.testing.assert_close(H.dense(), reference_hessian(model, loss_fn, X, y),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["autograd", "func"])
def test_closed_form_output_hessians_follow_hooks_on_the_loss_module(engine):
    """The GGN (and last_layer_hessian) use closed forms of the cross-entropy Hessian
    only for a loss module without hooks."""
    model = square_mlp()
    X, y = data()
    hooked = nn.CrossEntropyLoss()
    hooked.register_forward_hook(lambda module, args, out: 3 * out)
    plain = nn.CrossEntropyLoss()
    G = hk.GGNOperator(hk.Objective(model, hooked, (X, y)), engine=engine).dense()
    G_plain = hk.GGNOperator(hk.Objective(model, plain, (X, y)), engine=engine).dense()
    torch.testing.assert_close(G, 3 * G_plain, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hk.last_layer_hessian(hk.Objective(model, hooked, (X, y))),
                               3 * hk.last_layer_hessian(hk.Objective(model, plain, (X, y))),
                               rtol=1e-10, atol=1e-12)


def test_hooks_added_after_the_engine_was_chosen_raise():
    model = square_mlp()
    X, y = data()
    loss_fn = nn.CrossEntropyLoss()
    H = hk.HessianOperator(hk.Objective(model, loss_fn, (X, y)), engine="native")
    v = torch.ones(H.shape[0], dtype=torch.float64)
    H @ v
    handle = model[2].register_forward_hook(lambda module, args, out: 2 * out)
    for compute in (lambda: H @ v, H.dense, H.diagonal, lambda: H.engine.layer_blocks()):
        with pytest.raises(ValueError, match=r"module '2' \(Linear\) has a forward hook"):
            compute()
    handle.remove()
    loss_fn.register_forward_pre_hook(lambda module, args: args)
    with pytest.raises(ValueError, match=r"loss_fn \(CrossEntropyLoss\) has a forward pre-hook"):
        H @ v


def _bias_first():
    """square_mlp whose Linear '2' registers ``bias`` before ``weight`` (as after
    ``prune.remove``)."""
    model = square_mlp()
    prune.l1_unstructured(model[2], "weight", amount=0.4)
    prune.remove(model[2], "weight")
    return model


def _bias_first_parametrize():
    model = square_mlp()
    parametrize.register_parametrization(model[2], "weight", Symmetric())
    parametrize.remove_parametrizations(model[2], "weight")
    return model


@pytest.mark.parametrize("build", [_bias_first, _bias_first_parametrize])
def test_registration_order_bias_before_weight(build):
    model = build()
    names = [n for n, _ in model.named_parameters()]
    assert names.index("2.bias") < names.index("2.weight")  # the case under test
    X, y = data()
    loss_fn = nn.CrossEntropyLoss()
    obj = hk.Objective(model, loss_fn, (X, y))
    ref = reference_hessian(model, loss_fn, X, y)
    H = hk.HessianOperator(obj, engine="native")
    V = torch.randn(ref.shape[0], 3, dtype=torch.float64)
    torch.testing.assert_close(H @ V, ref @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H.dense(), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H.diagonal(), ref.diagonal(), rtol=1e-10, atol=1e-12)
    blocks = hk.layer_blocks(obj)
    sl = obj.slices()
    rows = torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in names if n.startswith("2.")])
    torch.testing.assert_close(blocks["2"], ref[rows][:, rows], rtol=1e-10, atol=1e-12)
    sub = hk.Objective(model, loss_fn, (X, y), params=["2.bias", "2.weight"])
    torch.testing.assert_close(hk.HessianOperator(sub, engine="native").dense(),
                               ref[rows][:, rows], rtol=1e-10, atol=1e-12)


def test_batches_that_are_not_tensor_pairs_are_refused():
    """Inputs passed as keyword arguments (``batch=``) or outputs picked by ``output=``
    are more than ``model(inputs)``: refused by name, and ``auto`` falls back."""
    model = square_mlp()
    X, y = data()
    keyword = hk.Objective(model, nn.CrossEntropyLoss(), [{"input": X, "y": y}],
                           batch=lambda b: ({"input": b["input"]}, b["y"]))
    picked = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), output=lambda out: out)
    for obj in (keyword, picked):
        assert "batch=/output=" in NativeEngine.unsupported_reason(obj)
        assert hk.HessianOperator(obj).engine.name != "native"


# --------------------------------------------------------------- non-finite data

def _nan_objective():
    model = square_mlp()
    X, y = data()
    X[3, 1] = float("nan")
    return hk.Objective(model, nn.CrossEntropyLoss(), (X, y))


NAN_PATHS = {
    "matvec": lambda H: H @ torch.ones(H.shape[0], dtype=torch.float64),
    "dense": lambda H: H.dense(),
    "diagonal": lambda H: H.diagonal(),
    "trace_exact": lambda H: hk.trace(H, method="exact"),
    "eigenvalues_exact": lambda H: hk.eigenvalues(H, k=2, method="exact"),
    "layer_blocks": lambda H: hk.layer_blocks(H.objective),
    "last_layer_hessian": lambda H: hk.last_layer_hessian(H.objective),
}


@pytest.mark.parametrize("path", list(NAN_PATHS))
def test_non_finite_data_raises_on_every_fast_path(path):
    H = hk.HessianOperator(_nan_objective(), engine="native")
    with pytest.raises(FloatingPointError, match=r"non-finite .*parameter '\d\.(weight|bias)'"):
        NAN_PATHS[path](H)


# ------------------------------------------------------------- memory refusal

def test_layer_blocks_refuses_before_allocating_more_than_max_bytes(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.Tanh(), nn.Linear(200, 3))  # 60 200 params
    X, y = torch.randn(8, 300), torch.randint(0, 3, (8,))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))

    def compute(*args, **kwargs):
        raise AssertionError("the blocks were computed")

    monkeypatch.setattr(FusedChain, "layer_blocks", compute)
    with pytest.raises(ValueError, match=r"layer_blocks\(\): .*60200.* need 13\.5 GiB.*"
                                         r"max_bytes=4\.0 GiB"):
        hk.layer_blocks(obj)
    monkeypatch.undo()
    small = hk.Objective(square_mlp(), nn.CrossEntropyLoss(), data())
    with pytest.raises(ValueError, match="max_bytes=1.0 KiB"):
        hk.layer_blocks(small, max_bytes=1024)
    for engine in ("auto", "autograd"):
        with pytest.raises(ValueError, match="max_bytes"):
            hk.layer_blocks(small, engine=engine, max_bytes=1024)
    blocks = hk.layer_blocks(small, max_bytes=10**6)
    assert set(blocks) == {"0", "2", "4"}
