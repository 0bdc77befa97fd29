"""``engine="auto"``: a cheap, deterministic choice (same inputs, same engine, same
bits, whatever the clock says), the engine registry with priorities, and the
capability seam through which operators and blocks use an engine."""
import time

import pytest
import torch
from torch import nn

import hesskit as hk
from hesskit.engines import (ENGINES, AutogradEngine, Engine, FuncEngine,
                             engines_by_priority, make_engine, register_engine)
from helpers import explicit_hessian, mlp


def _cnn_problem(n=24):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(12, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))
    X, y = torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    return model, X, y


class _Clock:
    """A ``time.perf_counter`` whose intervals alternate between long and short, so
    that whichever engine a race times first looks slower (``first_slow``) or faster."""

    def __init__(self, first_slow: bool):
        self.now, self.calls, self.first_slow = 0.0, 0, first_slow

    def __call__(self):
        self.calls += 1
        if self.calls % 2 == 0:  # the end of an interval
            long = (self.calls % 4 == 2) == self.first_slow
            self.now += 10.0 if long else 1.0
        return self.now


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_gives_the_same_bits_whatever_the_clock_says(monkeypatch, dtype):
    model, X, y = _cnn_problem()
    model, X = model.to(dtype), X.to(dtype)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 4, dtype=dtype,
                    generator=torch.Generator().manual_seed(5))
    results, names = [], []
    for first_slow in (True, False):
        monkeypatch.setattr(time, "perf_counter", _Clock(first_slow))
        H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)))
        results.append(H @ V)
        names.append(H.engine.name)
        monkeypatch.undo()
    assert names[0] == names[1]
    assert torch.equal(results[0], results[1])


def _layer_norm_problem(n=24):
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3))
    X, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
    return model, X, y


@pytest.mark.parametrize("problem, engine", [(_cnn_problem, "autograd"),
                                             (_layer_norm_problem, "func/autograd")])
def test_two_fresh_operators_give_identical_bits_and_traces(problem, engine):
    model, X, y = problem()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 7,
                    generator=torch.Generator().manual_seed(6))
    runs = []
    for _ in range(2):
        obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
        H, G = hk.HessianOperator(obj), hk.GGNOperator(obj)
        runs.append((H @ V, G @ V, hk.trace(H, n_probes=12, seed=0).value, H.engine.name))
    (h1, g1, t1, e1), (h2, g2, t2, e2) = runs
    assert e1 == e2 == engine
    assert torch.equal(h1, h2) and torch.equal(g1, g2)
    assert t1 == t2


def test_the_choice_costs_a_two_sample_trial_not_the_callers_block(monkeypatch):
    """Every product ``auto`` runs, as (engine, samples, columns): a trial of each kind
    on two samples and one column, then the caller's block once."""
    calls = []
    for cls in (FuncEngine, AutogradEngine):
        original = cls.product

        def recording(self, kind, chunk, V, original=original):
            calls.append((self.name, kind, chunk.size, V.shape[1]))
            return original(self, kind, chunk, V)

        monkeypatch.setattr(cls, "product", recording)
    model, X, y = _cnn_problem(n=24)
    # the determinism check's one extra column is its own, documented cost (test_determinism)
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)),
                           check_deterministic=False)
    H @ torch.randn(H.shape[0], 9)
    chosen = H.engine.name
    assert calls[-1] == (chosen, "hessian", 24, 9)
    assert all(size <= 2 and k == 1 for _, _, size, k in calls[:-1])
    assert len(calls) <= 3


def test_auto_walks_the_registry_in_priority_order():
    order = [cls.name for cls in engines_by_priority()]
    assert order.index("func") < order.index("autograd")
    if "native" in ENGINES:
        assert order.index("native") < order.index("func")
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
    obj = hk.Objective(model, nn.CrossEntropyLoss(),
                       (torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)))
    engine = make_engine("auto", obj)
    assert engine.name == "func/autograd"  # func for wide blocks, autograd for narrow ones
    assert engine.choice["func"] == f"chosen for k >= {FuncEngine.min_columns}"
    assert engine.choice["autograd"] == f"chosen for k < {FuncEngine.min_columns}"
    if "native" in ENGINES:  # passed over, with its reason (LayerNorm has no rule)
        assert "LayerNorm" in engine.choice["native"]
    assert make_engine("autograd", obj).choice == {"autograd": "requested"}


def test_auto_sends_narrow_blocks_to_the_next_engine():
    model, X, y = _layer_norm_problem()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    chunk = next(iter(obj.chunks()))
    engine = make_engine("auto", obj)
    wide = FuncEngine.min_columns
    for k, expected in ((1, AutogradEngine), (wide - 1, AutogradEngine), (wide, FuncEngine)):
        V = torch.randn(obj.n_params, k, generator=torch.Generator().manual_seed(k))
        assert torch.equal(engine.product("hessian", chunk, V),
                           expected(obj).product("hessian", chunk, V)), k


def test_auto_prefers_double_backward_on_convolutional_models():
    model, X, y = _cnn_problem()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    order = [cls.name for cls in engines_by_priority(obj)]
    assert order.index("autograd") < order.index("func")
    assert make_engine("auto", obj).name == "autograd"
    assert make_engine("func", obj).name == "func"  # still available by name


class _NoVmapSquare(torch.autograd.Function):
    """x² through a custom Function without a vmap rule: torch.func cannot batch it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _NoVmapNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return _NoVmapSquare.apply(self.lin(x))


class _Square(nn.Module):
    def forward(self, x):
        return x * x


def test_auto_falls_back_when_the_trial_fails(float64):
    torch.manual_seed(0)
    model = _NoVmapNet().double()
    X, y = torch.randn(7, 3), torch.randn(7, 2)
    with pytest.warns(RuntimeWarning, match="'func' cannot run this model"):
        H = hk.HessianOperator(hk.Objective(model, nn.MSELoss(), (X, y)))
    assert H.engine.name == "autograd"
    assert "RuntimeError" in H.engine.choice["func"]
    expected = explicit_hessian(nn.Sequential(model.lin, _Square()), nn.MSELoss(), X, y,
                                ["0.weight", "0.bias"])
    torch.testing.assert_close(H.dense(), expected)


class _ExplicitEngine(AutogradEngine):
    """A test engine: autograd products plus ``dense``/``diagonal``/``layer_blocks``
    that return recognisable matrices, registered above every other engine."""

    name = "explicit-test"
    priority = 1000
    capabilities = frozenset({"products", "dense", "diagonal", "blocks"})

    def dense(self, kind):
        n = self.objective.n_params
        return torch.full((n, n), 7.0, dtype=self.objective.dtype)

    def diagonal(self, kind):
        return torch.full((self.objective.n_params,), 3.0, dtype=self.objective.dtype)

    def layer_blocks(self, kind):
        # the contract: one square block per parameterized module, keyed by its name
        return {name: torch.full((2, 2), 5.0, dtype=self.objective.dtype)
                for name in hk.blocks.parameterized_modules(self.objective)}


def test_a_registered_engine_is_used_through_its_capabilities(monkeypatch, float64):
    monkeypatch.setitem(ENGINES, _ExplicitEngine.name, _ExplicitEngine)
    model = mlp(sizes=(3, 4, 2))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (torch.randn(5, 3), torch.randint(0, 2, (5,))))
    H = hk.HessianOperator(obj)
    assert H.engine.name == "explicit-test"
    P = H.shape[0]
    assert torch.equal(H.dense(), torch.full((P, P), 7.0))
    assert torch.equal(H.diagonal(), torch.full((P,), 3.0))
    blocks = hk.layer_blocks(obj)
    assert list(blocks) == list(hk.blocks.parameterized_modules(obj))
    assert all(torch.equal(b, torch.full((2, 2), 5.0)) for b in blocks.values())
    assert hk.HessianOperator(obj, engine="autograd").engine.supports("dense") is False


def test_capabilities_and_registration_are_checked():
    assert Engine.supports("products") and not Engine.supports("dense")
    with pytest.raises(ValueError, match="capability: expected one of"):
        FuncEngine.supports("gradient")

    class Bad(Engine):
        name = "bad-test"
        capabilities = frozenset({"products", "sparse"})

    with pytest.raises(ValueError, match=r"cls.capabilities.*'sparse'"):
        register_engine(Bad)
    with pytest.raises(TypeError, match="cls: expected a subclass"):
        register_engine(object)
    assert "bad-test" not in ENGINES


def test_layer_blocks_with_auto_on_a_model_split_by_columns(float64):
    """auto's split engine ("func/autograd") has no blocks capability: the blocks
    come from the restricted operators, which choose their engine the same way."""
    model, X, y = _layer_norm_problem(n=9)
    model = model.double()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X.double(), y))
    blocks = hk.layer_blocks(obj)
    # torch.autograd.functional: torch.func.hessian is wrong for affine LayerNorm (2.13)
    chunk = next(iter(obj.chunks()))

    def loss(theta):
        with obj.evaluation():
            return obj.chunk_loss([t.view(s) for t, s in
                                   zip(theta.split(obj.param_sizes), obj.param_shapes)], chunk)

    H = torch.autograd.functional.hessian(loss, obj.parameters_vector())
    slices = obj.slices()
    assert list(blocks) == ["0", "1", "3"]
    for module, block in blocks.items():
        rows = torch.cat([torch.arange(slices[n].start, slices[n].stop)
                          for n in obj.param_names if n.startswith(module + ".")])
        torch.testing.assert_close(block, H[rows][:, rows])


def test_engines_say_whether_a_product_batches_its_columns():
    """``autograd`` differentiates column by column; ``auto``'s func/autograd split
    answers for the engine that takes a block of that width."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
    obj = hk.Objective(model, nn.CrossEntropyLoss(),
                       (torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)))
    assert not make_engine("autograd", obj).batches_columns(5)
    assert make_engine("func", obj).batches_columns(5)
    split = make_engine("auto", obj)
    assert split.name == "func/autograd"
    assert split.batches_columns(FuncEngine.min_columns)
    assert not split.batches_columns(FuncEngine.min_columns - 1)
