"""Curvature of the models users bring, on every engine that accepts them (and ``auto``).

Each case is a model family (CNN with eval BatchNorm and pooling, ResNet basic blocks,
an attention block with tied embeddings, a tied-weight MLP) with a way of feeding it
(class-weighted CE over ``batch_size=3`` chunks, padded targets with ``ignore_index``
over DataLoader batches of unequal padding, a parameter subset). The reference is the
float64 ``torch.autograd.functional.hessian`` of the loss of all data in one batch as a
function of the flat parameters; the GGN reference is the explicit
:math:`J^\\top \\nabla^2_f \\ell\\, J`; the functional part is their difference.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import hesskit as hk

WEIGHTS = (0.2, 1.0, 3.0)


class CNN(nn.Module):
    """Conv, eval BatchNorm, MaxPool, Conv, AvgPool, AdaptiveAvgPool, Dropout, Linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(2, 3, 3, padding=1)
        self.pool, self.avg, self.adapt = nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.drop, self.fc = nn.Dropout(0.3), nn.Linear(3, 3)
        with torch.no_grad():  # running statistics that are not the identity
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x):
        x = self.pool(torch.tanh(self.bn(self.conv1(x))))
        x = self.adapt(self.avg(torch.tanh(self.conv2(x))))
        return self.fc(self.drop(torch.flatten(x, 1)))


class ResBlock(nn.Module):
    """A ResNet basic block (eval BatchNorm) with an identity or 1x1 shortcut, and a head."""

    def __init__(self, projection):
        super().__init__()
        cout, stride = (3, 2) if projection else (2, 1)
        self.conv1, self.bn1 = nn.Conv2d(2, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(2, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout)) if projection else nn.Identity())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cout, 3))
        with torch.no_grad():
            for bn in (m for m in self.modules() if isinstance(m, nn.BatchNorm2d)):
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.head(F.relu(y + self.short(x)))


class Attention(nn.Module):
    """Tied embeddings, LayerNorm, causal nn.MultiheadAttention, causal SDPA, GELU MLP;
    token logits laid out (N, C, T) for cross-entropy."""

    def __init__(self, vocab=5, d=4, length=4):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(0.1 * torch.randn(length, d))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mha = nn.MultiheadAttention(d, 2, batch_first=True)
        self.qkv = nn.Linear(d, 3 * d)
        self.mlp = nn.Sequential(nn.Linear(d, 6), nn.GELU(), nn.Linear(6, d))
        self.register_buffer("mask", torch.triu(torch.ones(length, length, dtype=torch.bool), 1))

    def forward(self, tokens):
        h = self.emb(tokens) + self.pos
        a = self.ln1(h)
        h = h + self.mha(a, a, a, attn_mask=self.mask, need_weights=False)[0]
        q, k, v = self.qkv(h).unflatten(-1, (2, -1)).transpose(1, 2).chunk(3, dim=-1)
        h = h + F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(2)
        h = h + self.mlp(self.ln2(h))
        return (h @ self.emb.weight.T).transpose(1, 2)


def tied_mlp():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    model[2].weight = model[0].weight
    return model


def _images(n, channels, side, g):
    return torch.randn(n, channels, side, side, generator=g)


def _problem(family):
    """The model (eval), all inputs, class targets, and a parameter subset."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if family == "cnn":
        model, X = CNN(), _images(8, 1, 10, g)
        subset = ["conv2.weight", "bn.weight", "fc.bias"]
    elif family in ("resnet_identity", "resnet_projection"):
        model, X = ResBlock(family == "resnet_projection"), _images(8, 2, 4, g)
        subset = ["conv2.weight", "head.2.weight"]
    elif family == "attention":
        model, X = Attention(), torch.randint(0, 5, (8, 4), generator=g)
        subset = ["emb.weight", "ln2.weight", "qkv.weight"]
    else:
        model, X = tied_mlp(), torch.randn(8, 3, generator=g)
        subset = ["0.weight"]
    y = torch.randint(0, 3, X.shape[:1] + X.shape[1:2] * (family == "attention"), generator=g)
    return model.eval(), X, y, subset


def _feed(feeding, X, y):
    """The loss, the data as the objective gets it, and the targets of all data."""
    if feeding == "weighted_batch_size=3":
        return nn.CrossEntropyLoss(weight=torch.tensor(WEIGHTS)), dict(data=(X, y), batch_size=3), y
    if feeding == "ignore_index_loader":  # padding: batch 0 mostly, batch 1 none, batch 2 some
        y = y.clone()
        pad = torch.zeros_like(y, dtype=torch.bool)
        if y.dim() == 2:  # tokens: right padding of unequal length
            pad |= torch.arange(y.shape[1]) >= torch.tensor([1, 2, 4, 4, 4, 4, 3, 2])[:, None]
        else:
            pad[[0, 1, 2, 7]] = True
        y[pad] = -100
        loader = DataLoader(TensorDataset(X, y), batch_size=3)
        return nn.CrossEntropyLoss(ignore_index=-100), dict(data=loader), y
    if feeding == "batch_size=3":  # chunks of 3, 3 and 2 samples
        return nn.CrossEntropyLoss(), dict(data=(X, y), batch_size=3), y
    return nn.CrossEntropyLoss(), dict(data=(X, y)), y


def _reference(model, loss_fn, X, y, names):
    """Dense Hessian, GGN and functional part of ``loss_fn(model(X), y)`` (flat order)."""
    named = dict(model.named_parameters())
    params = [named[n].detach() for n in names]
    sizes = [p.numel() for p in params]

    def outputs(flat):
        ps = {n: t.view_as(p) for n, t, p in zip(names, flat.split(sizes), params)}
        return torch.func.functional_call(model, ps, (X,))

    flat = torch.cat([p.reshape(-1) for p in params])
    with hk.engines.differentiable_attention():  # the math backend: twice differentiable
        H = torch.autograd.functional.hessian(lambda w: loss_fn(outputs(w), y), flat)
        f = outputs(flat).detach()
        J = torch.autograd.functional.jacobian(outputs, flat).reshape(f.numel(), -1)
    H_out = torch.autograd.functional.hessian(lambda z: loss_fn(z, y), f).reshape(f.numel(), -1)
    G = J.T @ H_out @ J
    return {"hessian": H, "ggn": G, "functional": H - G}


OPERATORS = {"hessian": hk.HessianOperator, "ggn": hk.GGNOperator,
             "functional": hk.FunctionalHessianOperator}
CASES = [("cnn", "plain"), ("cnn", "weighted_batch_size=3"), ("cnn", "ignore_index_loader"),
         ("cnn", "subset"), ("resnet_identity", "weighted_batch_size=3"),
         ("resnet_identity", "batch_size=3"),
         ("resnet_projection", "ignore_index_loader"), ("attention", "ignore_index_loader"),
         ("attention", "subset"), ("tied_mlp", "plain"), ("tied_mlp", "weighted_batch_size=3")]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(c) for c in CASES])
def case(request):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        family, feeding = request.param
        model, X, y, subset = _problem(family)
        loss_fn, kwargs, y_all = _feed(feeding, X, y)
        names = [n for n, _ in model.named_parameters() if feeding != "subset" or n in subset]
        obj = hk.Objective(model, loss_fn, params=subset if feeding == "subset" else None, **kwargs)
        yield family, obj, _reference(model, loss_fn, X, y_all, names)
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("engine", sorted(hk.engines.ENGINES) + ["auto"])
def test_dense_and_products_match_the_whole_data_reference(case, engine, float64):
    family, obj, reference = case
    if engine != "auto":
        reason = hk.engines.ENGINES[engine].unsupported_reason(obj)
        if reason is not None:
            pytest.skip(f"{engine} refuses: {reason}")
    # dense() of the attention block through plain double backward is P one-column
    # passes (20 s); its products run the same code
    whole = not (family == "attention" and engine == "autograd")
    V = torch.randn(obj.n_params, 3, generator=torch.Generator().manual_seed(3))
    for kind, op in OPERATORS.items():
        A = op(obj, engine=engine)
        torch.testing.assert_close(A @ V, reference[kind] @ V, rtol=1e-8, atol=1e-11,
                                   msg=lambda m: f"{kind} via {A.engine.name}: {m}")
        if whole:
            torch.testing.assert_close(A.dense(), reference[kind], rtol=1e-8, atol=1e-11,
                                       msg=lambda m: f"{kind} via {A.engine.name}: {m}")
            torch.testing.assert_close(A.diagonal(), reference[kind].diagonal(),
                                       rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("engine", sorted(hk.engines.ENGINES) + ["auto"])
def test_shuffled_loader_with_drop_last_fires_the_determinism_check(engine, float64):
    model, X, y, _ = _problem("cnn")
    loader = DataLoader(TensorDataset(X, y), batch_size=3, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), loader)
    assert any("shuffle=True" in c for c in obj.variability_causes())
    if engine != "auto" and hk.engines.ENGINES[engine].unsupported_reason(obj) is not None:
        pytest.skip(f"{engine} refuses the CNN")
    H = hk.HessianOperator(obj, engine=engine)
    with pytest.raises(ValueError, match=r"(?s)differ.*shuffle=True.*drop_last=True"):
        H @ torch.randn(obj.n_params)


@pytest.mark.parametrize("engine", sorted(hk.engines.ENGINES) + ["auto"])
def test_shuffled_loader_without_drop_last_gives_the_whole_data_hessian(engine, float64):
    """Kept forward passes must follow the batches, which change on every pass."""
    model, X, y, _ = _problem("cnn")
    loader = DataLoader(TensorDataset(X, y), batch_size=3, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), loader)
    if engine != "auto" and hk.engines.ENGINES[engine].unsupported_reason(obj) is not None:
        pytest.skip(f"{engine} refuses the CNN")
    reference = _reference(model, nn.CrossEntropyLoss(), X, y,
                           [n for n, _ in model.named_parameters()])["hessian"]
    H = hk.HessianOperator(obj, engine=engine)
    V = torch.randn(obj.n_params, 2, generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        torch.testing.assert_close(H @ V, reference @ V, rtol=1e-8, atol=1e-11)


def test_graph_engine_refuses_train_mode_cnn_and_auto_stays_exact(float64):
    model, X, y, _ = _problem("cnn")
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), mode="train", batch_size=4)
    reason = hk.engines.ENGINES["native"].unsupported_reason(obj)
    assert reason is not None and "BatchNorm2d" in reason, reason
    H = hk.HessianOperator(obj)
    assert H.engine.name != "native"
    H_twice = [H @ torch.eye(obj.n_params)[:, :4] for _ in range(2)]
    torch.testing.assert_close(H_twice[0], H_twice[1], rtol=0, atol=0)


def _slice(obj, names):
    slices = obj.slices()
    return torch.cat([torch.arange(slices[n].start, slices[n].stop) for n in names])


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_layer_blocks_are_the_diagonal_blocks_of_the_reference(case, kind, float64):
    _, obj, reference = case
    groups = hk.blocks.parameterized_modules(obj)
    for module, block in hk.layer_blocks(obj, kind=kind).items():
        idx = _slice(obj, groups[module])
        torch.testing.assert_close(block, reference[kind][idx][:, idx], rtol=1e-8, atol=1e-11,
                                   msg=lambda m: f"block {module!r}: {m}")


def test_last_layer_hessian_is_the_block_of_the_reference(case, float64):
    family, obj, reference = case
    if family == "tied_mlp":  # its weight is also layer 0's: the layer's own block is not H's
        with pytest.raises(ValueError, match=r"'2'.*shares its parameter 'weight'.*'0.weight'"):
            hk.last_layer_hessian(obj)
        return
    if family == "attention":  # the last Linear gives one row per token, not per sample
        with pytest.raises(ValueError, match="one output row per sample"):
            hk.last_layer_hessian(obj)
        return
    name = [n for n, m in obj.model.named_modules() if isinstance(m, nn.Linear)][-1]
    names = [f"{name}.weight", f"{name}.bias"]
    if any(n not in obj.param_names for n in names):  # the subset: last_layer_hessian ignores it
        return
    idx = _slice(obj, names)
    torch.testing.assert_close(hk.last_layer_hessian(obj), reference["hessian"][idx][:, idx],
                               rtol=1e-8, atol=1e-11)


class _Twice(nn.Module):
    """One Linear applied twice: its block has terms from both calls."""

    def __init__(self):
        super().__init__()
        self.inp, self.fc = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.fc(self.inp(x))))


def test_last_layer_hessian_refuses_a_layer_called_twice(float64):
    torch.manual_seed(0)
    X, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    obj = hk.Objective(_Twice(), nn.CrossEntropyLoss(), (X, y))
    with pytest.raises(ValueError, match=r"'fc'.*called 2 times"):
        hk.last_layer_hessian(obj)


def _pruned(model):
    torch.nn.utils.prune.l1_unstructured(model.conv2, "weight", amount=0.3)
    return "'conv2' (Conv2d) has a forward pre-hook"


def _pre_hook(model):
    model.conv2.register_forward_pre_hook(lambda module, args: (2 * args[0],))
    return "'conv2' (Conv2d) has a forward pre-hook"


@pytest.mark.parametrize("change", [_pruned, _pre_hook], ids=["prune", "pre_hook"])
def test_graph_engine_refuses_hooks_and_parametrizations_and_auto_is_exact(change, float64):
    import torch.nn.utils.prune  # noqa: F401 (registers the submodule used by _pruned)
    model, X, y, _ = _problem("cnn")
    needle = change(model)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    assert needle in hk.engines.ENGINES["native"].unsupported_reason(obj)
    H = hk.HessianOperator(obj)
    reference = _reference(model, nn.CrossEntropyLoss(), X, y, obj.param_names)["hessian"]
    torch.testing.assert_close(H.dense(), reference, rtol=1e-8, atol=1e-11,
                               msg=lambda m: f"auto ({H.engine.name}): {m}")


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*deprecated")
@pytest.mark.parametrize("old_api", [False, True], ids=["parametrization", "hook"])
def test_fused_weight_norm_is_refused_by_every_engine(old_api, float64):
    """torch's second derivative of the fused ``torch._weight_norm`` (``dim`` not None) is
    wrong: double backward gave an asymmetric Hessian 0.33 off finite differences of the
    gradient on this model. ``dim=None`` (plain ops) stays exact."""
    apply = torch.nn.utils.weight_norm if old_api else torch.nn.utils.parametrizations.weight_norm
    for dim in (0, None):
        model, X, y, _ = _problem("cnn")
        apply(model.fc, dim=dim)
        obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
        if dim is None:
            H = hk.HessianOperator(obj).dense()
            torch.testing.assert_close(H, H.T, rtol=1e-8, atol=1e-11)
            continue
        for name, engine in hk.engines.ENGINES.items():
            assert engine.unsupported_reason(obj) is not None, name
        with pytest.raises(ValueError, match=r"'fc'.*weight_norm"):
            hk.HessianOperator(obj)
