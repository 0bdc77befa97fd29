"""HessianMonitor: schedule, exact values, logs, untouched training, between iterates."""
import copy
import json
import sys
import types

import pytest
import torch
from torch import nn

from hesskit.hooks.monitor import HessianMonitor, measure_metrics, parameters_at, scalars
from hesskit.objective import Objective
from helpers import explicit_hessian


def _problem(seed=0, dropout=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 4), nn.Tanh()] + ([nn.Dropout(0.3)] if dropout else []) \
        + [nn.Linear(4, 2)]
    model = nn.Sequential(*layers).double()
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (16,), generator=g)
    return model, nn.CrossEntropyLoss(), X, y


def _train(model, loss_fn, X, y, n_steps, optimizer, snapshots=None):
    for _ in range(n_steps):
        optimizer.zero_grad()
        loss_fn(model(X), y).backward()
        optimizer.step()
        if snapshots is not None:
            snapshots.append(copy.deepcopy(model))


def _lambda_max(model, loss_fn, X, y):
    model = copy.deepcopy(model).eval()
    return float(torch.linalg.eigvalsh(explicit_hessian(model, loss_fn, X, y))[-1])


def test_records_on_schedule_with_exact_lambda_max(tmp_path):
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    monitor = HessianMonitor(obj, every=3, metrics=("lambda_max", "top_k"), k=2,
                             log_dir=tmp_path / "logs")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor.attach(opt)
    snapshots = []
    _train(model, loss_fn, X, y, 10, opt, snapshots)
    assert [r["step"] for r in monitor.history] == [3, 6, 9] and monitor.steps == 10
    for record in monitor.history:
        at = snapshots[record["step"] - 1]
        H = explicit_hessian(at, loss_fn, X, y)
        lam = torch.linalg.eigvalsh(H).flip(0)
        assert record["lambda_max"] == pytest.approx(float(lam[0]), rel=1e-9)
        assert record["top_k"] == pytest.approx(lam[:2].tolist(), rel=1e-8)
    lines = (tmp_path / "logs" / "hessian_monitor.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == monitor.history


def test_training_is_unchanged_by_the_monitor():
    # dropout in training and a train-mode objective (seeded dropout masks) stress the RNG
    def run(with_monitor):
        model, loss_fn, X, y = _problem(seed=1, dropout=True)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
        if with_monitor:
            obj = Objective(model, loss_fn, (X, y), mode="train")
            monitor = HessianMonitor(obj, every=2, metrics=("lambda_max", "trace", "density"),
                                     n_probes=5, n_runs=2, n_steps=5, between_iterates=3)
            monitor.attach(opt)
        torch.manual_seed(123)
        _train(model, loss_fn, X, y, 5, opt)
        return model, torch.get_rng_state()

    plain, rng_plain = run(False)
    monitored, rng_monitored = run(True)
    assert monitored.training
    assert torch.equal(rng_plain, rng_monitored)
    for p, q in zip(plain.parameters(), monitored.parameters()):
        assert torch.equal(p, q) and torch.equal(p.grad, q.grad)


def test_measure_restores_mode_params_grads_and_rng():
    model, loss_fn, X, y = _problem(dropout=True)
    obj = Objective(model, loss_fn, (X, y))
    loss_fn(model(X), y).backward()
    model.train()
    params = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    previous = obj.parameters_vector() + 0.1
    monitor = HessianMonitor(obj, every=1, metrics=("lambda_max", "trace", "layerwise"),
                             n_probes=3, between_iterates=3)
    with torch.no_grad():  # measuring works from no_grad code too
        record = monitor.measure(step=7, previous=previous)
    assert record["step"] == 7 and isinstance(record["lambda_max_between"], float)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    for p, q, g in zip(model.parameters(), params, grads):
        assert torch.equal(p, q) and torch.equal(p.grad, g)


def test_handle_removal_stops_the_monitor():
    model, loss_fn, X, y = _problem()
    monitor = HessianMonitor(Objective(model, loss_fn, (X, y)), every=2, metrics="lambda_max")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = monitor.attach(opt)
    _train(model, loss_fn, X, y, 4, opt)
    handle.remove()
    _train(model, loss_fn, X, y, 4, opt)
    assert [r["step"] for r in monitor.history] == [2, 4] and monitor.steps == 4


def test_between_iterates_is_the_max_over_the_segment():
    model, loss_fn, X, y = _problem(seed=2)
    obj = Objective(model, loss_fn, (X, y))
    n = 4
    monitor = HessianMonitor(obj, every=2, metrics=("lambda_max",), between_iterates=n)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)  # large steps: the segment matters
    monitor.attach(opt)
    snapshots = [copy.deepcopy(model)]
    _train(model, loss_fn, X, y, 4, opt, snapshots)
    assert [r["step"] for r in monitor.history] == [2, 4]
    for record in monitor.history:
        s = record["step"]
        before, after = snapshots[s - 1], snapshots[s]
        a = torch.cat([p.detach().reshape(-1) for p in before.parameters()])
        b = torch.cat([p.detach().reshape(-1) for p in after.parameters()])
        values = []
        for t in torch.linspace(0, 1, n, dtype=torch.float64):
            point = copy.deepcopy(after)
            torch.nn.utils.vector_to_parameters(a + t * (b - a), point.parameters())
            values.append(_lambda_max(point, loss_fn, X, y))
        assert record["lambda_max"] == pytest.approx(values[-1], rel=1e-9)
        assert record["lambda_max_between"] >= max(values[0], values[-1]) - 1e-9
        assert record["lambda_max_between"] == pytest.approx(max(values), rel=1e-9)


def test_between_without_previous_is_none_and_parameters_at_restores():
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    monitor = HessianMonitor(obj, every=5, metrics="lambda_max", between_iterates=2)
    assert monitor.measure()["lambda_max_between"] is None
    before = obj.parameters_vector().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with parameters_at(obj, torch.zeros_like(before)):
            assert float(obj.parameters_vector().abs().max()) == 0.0
            raise RuntimeError("boom")
    assert torch.equal(obj.parameters_vector(), before)


def test_measure_metrics_functional_twin():
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    H = explicit_hessian(model, loss_fn, X, y)
    out = measure_metrics(obj, ("trace", "density", "layerwise"), n_probes=2000, n_runs=2,
                          n_steps=10, k=2)
    assert abs(out["trace"] - float(H.trace())) <= 5 * out["trace_stderr"]
    assert set(out["density"]) >= {"grid", "density", "nodes", "weights"}
    assert list(out["layerwise"]) == ["0", "2"]
    json.dumps(out)
    monitor = HessianMonitor(obj, metrics=("lambda_max",), seed=4)
    assert monitor.measure(1)["lambda_max"] == measure_metrics(obj, "lambda_max",
                                                               seed=4)["lambda_max"]


def test_tensorboard_scalars_when_available(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            written.append("closed")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    model, loss_fn, X, y = _problem()
    monitor = HessianMonitor(Objective(model, loss_fn, (X, y)), metrics=("lambda_max", "top_k"),
                             k=2, log_dir=str(tmp_path))
    record = monitor.measure(5)
    monitor.close()
    assert written == [("hessian/lambda_max", record["lambda_max"], 5),
                       ("hessian/top_k/1", record["top_k"][0], 5),
                       ("hessian/top_k/2", record["top_k"][1], 5), "closed"]


def test_tensorboard_missing_is_said_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    model, loss_fn, X, y = _problem()
    monitor = HessianMonitor(Objective(model, loss_fn, (X, y)), metrics="lambda_max",
                             log_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="pip install tensorboard") as caught:
        monitor.measure(1)
        monitor.measure(2)
    assert len([w for w in caught if "tensorboard" in str(w.message)]) == 1
    assert len((tmp_path / "hessian_monitor.jsonl").read_text().splitlines()) == 2


class RecordingWriter:
    """A stand-in for an existing ``SummaryWriter`` of the training run."""

    def __init__(self):
        self.scalars, self.closed = [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        self.closed = True


@pytest.mark.parametrize("with_log_dir", [False, True])
def test_existing_summary_writer_is_used_and_left_open(tmp_path, monkeypatch, with_log_dir):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # never needed with a writer
    model, loss_fn, X, y = _problem()
    writer = RecordingWriter()
    log_dir = str(tmp_path) if with_log_dir else None
    monitor = HessianMonitor(Objective(model, loss_fn, (X, y)), metrics="lambda_max",
                             log_dir=log_dir, writer=writer)
    record = monitor.measure(3)
    monitor.close()
    assert writer.scalars == [("hessian/lambda_max", record["lambda_max"], 3)]
    assert not writer.closed  # the caller's writer: the caller closes it
    assert (tmp_path / "hessian_monitor.jsonl").exists() == with_log_dir
    with pytest.raises(TypeError, match="writer"):
        HessianMonitor(Objective(model, loss_fn, (X, y)), writer="runs/x")


@pytest.mark.parametrize("style", ["closure", "two_step"])
def test_measures_once_per_completed_sam_step(tmp_path, style):
    from hesskit.optim import SAM

    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    monitor = HessianMonitor(obj, every=2, metrics="lambda_max", log_dir=tmp_path)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.5)
    monitor.attach(opt)
    snapshots = []
    for _ in range(5):
        if style == "closure":
            def closure():
                opt.zero_grad()
                loss = loss_fn(model(X), y)
                loss.backward()
                return loss

            opt.step(closure)
        else:
            loss_fn(model(X), y).backward()
            opt.first_step(zero_grad=True)
            loss_fn(model(X), y).backward()
            opt.second_step(zero_grad=True)
        snapshots.append(copy.deepcopy(model))
    assert [r["step"] for r in monitor.history] == [2, 4] and monitor.steps == 5
    for record in monitor.history:  # measured at w after the step, not at w + e
        assert record["lambda_max"] == pytest.approx(
            _lambda_max(snapshots[record["step"] - 1], loss_fn, X, y), rel=1e-9)
    lines = (tmp_path / "hessian_monitor.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == monitor.history


def test_scalars_flattening():
    record = {"step": 3, "lambda_max": 2.0, "trace": 5.0, "lambda_max_between": None,
              "layerwise": {"fc": {"eigenvalues": [1.5, 0.2], "trace": 3.0}},
              "density": {"grid": [0.0]}}
    assert scalars(record) == {"hessian/lambda_max": 2.0, "hessian/trace": 5.0,
                               "hessian/layerwise/fc/lambda_max": 1.5,
                               "hessian/layerwise/fc/trace": 3.0}


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(every=0), ValueError, "every"),
    (dict(every=1.5), TypeError, "every"),
    (dict(metrics=("lambda_max", "sharpness")), ValueError, "metrics"),
    (dict(metrics=()), ValueError, "metrics"),
    (dict(between_iterates=1), ValueError, "between_iterates"),
    (dict(between_iterates=-2), ValueError, "between_iterates"),
    (dict(log_dir=3), TypeError, "log_dir"),
    (dict(k=0), ValueError, "k"),
    (dict(n_probes=1), ValueError, "n_probes"),
    (dict(tol=0.0), ValueError, "tol"),
    (dict(engine="fastest"), ValueError, "engine"),
    (dict(seed=None), TypeError, "seed"),
])
def test_bad_arguments(kwargs, error, match):
    model, loss_fn, X, y = _problem()
    with pytest.raises(error, match=match):
        HessianMonitor(Objective(model, loss_fn, (X, y)), **kwargs)


def test_bad_objects():
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    with pytest.raises(TypeError, match="obj"):
        HessianMonitor(model)
    with pytest.raises(TypeError, match="optimizer"):
        HessianMonitor(obj).attach(model)
    with pytest.raises(ValueError, match="previous"):
        measure_metrics(obj, previous=torch.zeros(3, dtype=torch.float64), between_iterates=2)
