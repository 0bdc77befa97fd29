"""alignment against a per-input loop with autograd; the margin search and estimate."""
import importlib

import pytest
import torch
from torch import nn

from hesskit.analysis.alignment import align_inputs, alignment, margin_estimate
from hesskit.objective import Objective
from helpers import SmallCNN, mlp


def _loop_alignment(model, loss_fn, inputs, labels, V):
    params = [p for p in model.parameters()]
    rows = []
    for x, y in zip(inputs, labels):
        loss = loss_fn(model(x.unsqueeze(0)), y.unsqueeze(0))
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
        rows.append(g @ V / g.norm())
    return torch.stack(rows)


def _setup(model, X, y, k=4):
    """The objective and k orthonormal directions (any unit vectors stand in for
    eigenvectors: the alignment is a cosine with each column)."""
    loss_fn = nn.CrossEntropyLoss()
    obj = Objective(model, loss_fn, (X, y))
    g = torch.Generator().manual_seed(k)
    V = torch.linalg.qr(torch.randn(obj.n_params, k, generator=g, dtype=torch.float64)).Q
    return obj, loss_fn, V


def test_mlp_predicted_label_matches_loop():
    model = mlp(nn.Tanh, (2, 6, 3)).double()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    obj, loss_fn, V = _setup(model, X, y)
    grid = torch.randn(17, 2, generator=g, dtype=torch.float64)
    A = alignment(obj, V, grid)
    with torch.no_grad():
        predicted = model(grid).argmax(dim=1)
    expected = _loop_alignment(model, loss_fn, grid, predicted, V)
    assert A.shape == (17, 4)
    torch.testing.assert_close(A, expected, rtol=1e-10, atol=1e-12)
    assert float(A.abs().max()) <= 1.0 + 1e-12


def test_cnn_true_and_given_labels_and_chunking():
    torch.manual_seed(1)
    model = SmallCNN(n_classes=3).double()
    X = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    obj, loss_fn, V = _setup(model, X, y, k=3)
    A_true = alignment(obj, V, X, label="true", targets=y, batch_size=5)
    torch.testing.assert_close(A_true, _loop_alignment(model, loss_fn, X, y, V),
                               rtol=1e-10, atol=1e-12)
    fixed = torch.tensor(2)
    A_fixed = alignment(obj, V, X, label=fixed)
    torch.testing.assert_close(A_fixed, _loop_alignment(model, loss_fn, X, fixed.expand(12), V),
                               rtol=1e-10, atol=1e-12)


def test_subset_of_parameters_and_single_vector_and_sign():
    model = mlp(nn.ReLU, (2, 5, 2)).double()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(10, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (10,), generator=g)
    obj = Objective(model, nn.CrossEntropyLoss(), (X, y), params=model[2])
    v = torch.randn(obj.n_params, generator=g, dtype=torch.float64)
    v = v / v.norm()
    a = alignment(obj, v, X, label="true", targets=y)
    assert a.shape == (10, 1)
    torch.testing.assert_close(alignment(obj, -v, X, label="true", targets=y), -a)
    last = [model[2].weight, model[2].bias]
    rows = []
    for x, t in zip(X, y):
        loss = nn.functional.cross_entropy(model(x[None]), t[None])
        grad = torch.cat([q.reshape(-1) for q in torch.autograd.grad(loss, last)])
        rows.append(grad @ v / grad.norm())
    torch.testing.assert_close(a[:, 0], torch.stack(rows), rtol=1e-10, atol=1e-12)


def test_model_state_untouched():
    model = mlp(nn.Tanh, (2, 4, 2)).double()
    X = torch.randn(6, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    obj = Objective(model, nn.CrossEntropyLoss(), (X, y))
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    V = torch.eye(obj.n_params, dtype=torch.float64)[:, :2]
    alignment(obj, V, X)
    assert model.training
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), before))


def test_bad_arguments():
    model = mlp(nn.Tanh, (2, 4, 2)).double()
    X = torch.randn(6, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    obj = Objective(model, nn.CrossEntropyLoss(), (X, y))
    V = torch.eye(obj.n_params, dtype=torch.float64)[:, :2]
    with pytest.raises(ValueError, match="eigenvectors: expected unit-norm"):
        alignment(obj, 2 * V, X)
    with pytest.raises(ValueError, match="eigenvectors: expected shape"):
        alignment(obj, V[:-1], X)
    with pytest.raises(TypeError, match="eigenvectors"):
        alignment(obj, V.numpy(), X)
    with pytest.raises(ValueError, match="targets"):
        alignment(obj, V, X, label="true")
    with pytest.raises(ValueError, match="label"):
        alignment(obj, V, X, label="random")
    with pytest.raises(ValueError, match="label"):
        alignment(obj, V, X, label=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="inputs"):
        alignment(obj, V, X[:0])
    with pytest.raises(ValueError, match="batch_size"):
        alignment(obj, V, X, batch_size=0)
    train_obj = Objective(model, nn.CrossEntropyLoss(), (X, y), mode="train")
    with pytest.raises(ValueError, match="mode='eval'"):
        alignment(train_obj, V, X)


def test_default_chunks_follow_the_memory_budget(monkeypatch):
    # the package attribute `alignment` is the function, so fetch the module itself
    module = importlib.import_module("hesskit.analysis.alignment")

    model = mlp(nn.Tanh, (2, 4, 3)).double()
    X = torch.randn(10, 2, dtype=torch.float64)
    obj, _, V = _setup(model, X, torch.zeros(10, dtype=torch.long), k=2)
    whole = alignment(obj, V, X)
    monkeypatch.setattr(module, "GRADIENT_BYTES", obj.n_params * 8 * 3)  # 3 inputs a pass
    torch.testing.assert_close(alignment(obj, V, X), whole, rtol=1e-12, atol=1e-14)


def _logistic(seed=0):
    """A 2-class linear softmax model: g(x) at either label is +-p (e_1 - e_0) x [x, 1],
    so |cos(g(x), v)| = 1 exactly at the x* that v is built from."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 2)).double()
    X = torch.randn(12, 2, dtype=torch.float64)
    obj = Objective(model, nn.CrossEntropyLoss(), (X, (X[:, 0] > 0).long()))
    x_star = torch.tensor([0.7, -1.3], dtype=torch.float64)
    u = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    v = torch.cat([torch.outer(u, x_star).reshape(-1), u])   # weight rows, then bias
    return obj, X, x_star, v / v.norm()


def test_align_inputs_finds_the_parallel_input():
    obj, X, x_star, v = _logistic()
    start = X[:5].clone()
    x, a = align_inputs(obj, v, start, steps=400, lr=0.05)
    assert x.shape == (5, 2) and a.shape == (5,)
    torch.testing.assert_close(x, x_star.expand(5, 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(a.abs(), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(a, alignment(obj, v, x)[:, 0])       # signed, predicted label
    torch.testing.assert_close(start, X[:5])                         # the starts untouched


def _random_direction_problem(activation, widths, n, seed):
    """A float64 MLP objective on n standard-normal inputs (all labelled 0) and a random
    unit direction v in parameter space."""
    model = mlp(activation, widths).double()
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    obj = Objective(model, nn.CrossEntropyLoss(), (X, torch.zeros(n, dtype=torch.long)))
    v = torch.randn(obj.n_params, generator=g, dtype=torch.float64)
    return model, obj, X, v / v.norm()


def test_align_inputs_climbs_on_an_mlp_and_leaves_the_model_alone():
    model, obj, X, v = _random_direction_problem(nn.Tanh, (2, 8, 3), 10, seed=3)
    before = [p.detach().clone() for p in model.parameters()]
    a0 = alignment(obj, v, X)[:, 0].abs()
    x, a = align_inputs(obj, v, X, steps=100, lr=0.05, label=torch.tensor(1))
    assert bool((a.abs() >= a0 - 1e-9).all()) and float(a.abs().mean()) > float(a0.mean())
    torch.testing.assert_close(a, alignment(obj, v, x, label=torch.tensor(1))[:, 0])
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), before))


def _squared_cosine_and_input_gradient(model, x, v):
    """c(x) = <g, v>^2 / |g|^2 at the predicted label and dc/dx, by double backward."""
    x = x.clone().requires_grad_(True)
    out = model(x.unsqueeze(0))
    loss = nn.functional.cross_entropy(out, out.argmax(1))
    g = torch.cat([t.reshape(-1) for t in
                   torch.autograd.grad(loss, list(model.parameters()), create_graph=True)])
    c = (g @ v) ** 2 / (g @ g)
    return c.detach(), torch.autograd.grad(c, x)[0]


def test_align_inputs_sgd_steps_are_the_authors_descent_on_the_squared_gap():
    # x <- x - lr_t (2 (c(x) - 1) dc/dx + wd x), lr_t = lr until the milestone, lr/10 after
    model, obj, X, v = _random_direction_problem(nn.Tanh, (2, 5, 3), 4, seed=5)
    lr, wd = 0.3, 0.05
    expected = []
    for x in X[:2]:
        for lr_t in (lr, lr, 0.1 * lr):       # milestone at step 2
            c, dc = _squared_cosine_and_input_gradient(model, x, v)
            x = x - lr_t * (2 * (c - 1) * dc + wd * x)
        expected.append(x)
    x, a = align_inputs(obj, v, X[:2], steps=3, lr=lr, method="sgd", weight_decay=wd,
                        milestones=(2,))
    torch.testing.assert_close(x, torch.stack(expected), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a, alignment(obj, v, x)[:, 0])
    # one start (the authors' search) takes its own path: the same steps
    x1, a1 = align_inputs(obj, v, X[1:2], steps=3, lr=lr, method="sgd", weight_decay=wd,
                          milestones=(2,))
    torch.testing.assert_close(x1, x[1:2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a1, a[1:2])
    assert all(p.grad is None for p in model.parameters())


def test_align_inputs_sgd_reaches_the_parallel_input():
    obj, X, x_star, v = _logistic()
    a0 = alignment(obj, v, X[:3])[:, 0].abs()                 # 0.96, 0.30, 0.59
    x, a = align_inputs(obj, v, X[1:2], steps=800, lr=1.0, method="sgd", milestones=(600,))
    # the gradient of (c - 1)^2 fades as c -> 1: close, not exact
    assert float(a0[1]) < 0.5
    torch.testing.assert_close(a.abs(), torch.ones(1, dtype=torch.float64), rtol=0, atol=1e-3)
    torch.testing.assert_close(x, x_star[None], rtol=0, atol=0.1)


def test_margin_estimate_uses_the_extreme_training_points():
    model, obj, X, v = _random_direction_problem(nn.ReLU, (2, 6, 2), 15, seed=4)
    with torch.no_grad():
        predicted = model(X).argmax(1)
    a = _loop_alignment(model, nn.CrossEntropyLoss(), X, predicted, v[:, None])[:, 0]
    x_b = torch.tensor([0.1, -0.2], dtype=torch.float64)
    est = margin_estimate(obj, v, x_b, X)
    i, j = int(a.argmax()), int(a.argmin())
    assert (est.index_max, est.index_min) == (i, j)
    assert est.alignment_max == pytest.approx(float(a[i])) and est.alignment_min == pytest.approx(
        float(a[j]))
    assert est.distance_max == pytest.approx(float((X[i] - x_b).norm()))
    assert est.distance_min == pytest.approx(float((X[j] - x_b).norm()))
    assert est.margin == min(est.distance_max, est.distance_min)
    assert set(est.to_dict()) == {"margin", "index_max", "index_min", "distance_max",
                                  "distance_min", "alignment_max", "alignment_min"}


def test_align_inputs_and_margin_estimate_bad_arguments():
    obj, X, _, v = _logistic()
    with pytest.raises(ValueError, match="one direction"):
        align_inputs(obj, torch.stack([v, v], 1), X)
    with pytest.raises(ValueError, match="unit-norm"):
        align_inputs(obj, 2 * v, X)
    with pytest.raises(ValueError, match="steps"):
        align_inputs(obj, v, X, steps=0)
    with pytest.raises(ValueError, match="lr"):
        align_inputs(obj, v, X, lr=-1.0)
    with pytest.raises(ValueError, match="start"):
        align_inputs(obj, v, X[:0])
    with pytest.raises(TypeError, match="start"):
        align_inputs(obj, v, X.numpy())
    with pytest.raises(ValueError, match="method"):
        align_inputs(obj, v, X, method="lbfgs")
    with pytest.raises(ValueError, match="weight_decay"):
        align_inputs(obj, v, X, method="sgd", weight_decay=-1.0)
    with pytest.raises(ValueError, match="milestones"):
        align_inputs(obj, v, X, method="sgd", milestones=(0,))
    with pytest.raises(ValueError, match="only method='sgd'"):
        align_inputs(obj, v, X, weight_decay=1e-3)          # Adam: refused, not ignored
    train_obj = Objective(obj.model, nn.CrossEntropyLoss(), (X, (X[:, 0] > 0).long()), mode="train")
    with pytest.raises(ValueError, match="mode='eval'"):
        align_inputs(train_obj, v, X)
    with pytest.raises(ValueError, match="boundary_input"):
        margin_estimate(obj, v, torch.zeros(3, dtype=torch.float64), X)
    with pytest.raises(ValueError, match="one direction"):
        margin_estimate(obj, torch.stack([v, v], 1), X[0], X)
