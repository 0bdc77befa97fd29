"""Every engine returns plain tensors: products, ``dense()`` and ``diagonal()`` carry
no autograd graph (``requires_grad`` False, ``grad_fn`` None), whether ``params``
selects every parameter or a subset whose complement still requires grad. A graph
would hold the forward pass's memory and let a user's later ``backward`` flow into
the model's parameters."""
import pytest
import torch
from torch import nn

import hesskit as hk
from hesskit.engines import ENGINES


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(),
                          nn.Linear(5, 3))
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)
    return model, (X, y), [model[2]]


def _layer_norm_mlp():
    """An MLP that ``auto`` sends to the ``func`` engine (the native kernels refuse
    LayerNorm with GELU)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(4)
    X, y = torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)
    return model, (X, y), [model[0]]


def _cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8, 5), nn.Tanh(), nn.Linear(5, 3))
    g = torch.Generator().manual_seed(2)
    X, y = torch.randn(10, 1, 6, 6, generator=g), torch.randint(0, 3, (10,), generator=g)
    return model, (X, y), [model[0]]


OPERATORS = [hk.HessianOperator, hk.GGNOperator, hk.FunctionalHessianOperator]


def _operators(problem, subset, engine):
    """The three operators on ``problem`` with ``engine``, or a skip when the engine
    does not accept the model."""
    model, data, selected = problem()
    obj = hk.Objective(model, nn.CrossEntropyLoss(), data,
                       params=selected if subset else None)
    if engine != "auto":
        reason = ENGINES[engine].unsupported_reason(obj)
        if reason is not None:
            pytest.skip(f"{engine} does not accept the model: {reason}")
    return [op(obj, engine=engine) for op in OPERATORS]


def _assert_plain(t, what):
    assert not t.requires_grad, f"{what} requires grad"
    assert t.grad_fn is None, f"{what} has grad_fn {t.grad_fn}"


@pytest.mark.parametrize("subset", [True, False], ids=["subset", "all"])
@pytest.mark.parametrize("problem", [_mlp, _layer_norm_mlp, _cnn],
                         ids=["mlp", "layernorm", "cnn"])
@pytest.mark.parametrize("engine", ["auto", *sorted(ENGINES)])
def test_results_carry_no_autograd_graph(engine, problem, subset):
    for op in _operators(problem, subset, engine):
        P = op.shape[0]
        V = torch.randn(P, 9, generator=torch.Generator().manual_seed(3))
        name = f"{type(op).__name__}(engine={op.engine.name})"
        _assert_plain(op @ V, f"{name} @ V (k=9)")
        _assert_plain(op @ V[:, :2], f"{name} @ V (k=2)")
        _assert_plain(op @ V[:, 0], f"{name} @ v")
        _assert_plain(op.dense(), f"{name}.dense()")
        _assert_plain(op.diagonal(), f"{name}.diagonal()")
