"""Lightning adapters: logic with stand-ins (always), a real Trainer run (only if Lightning is installed)."""
import copy
import importlib
import sys
import types

import pytest
import torch
from torch import nn

import hesskit.optim as hko
from hesskit.hooks import lightning as hkl

LIGHTNING_NAMES = ("lightning", "lightning.pytorch", "pytorch_lightning")


@pytest.fixture
def fresh_adapter(monkeypatch):
    """The adapter module with its lazily built class forgotten (restored afterwards by monkeypatch)."""
    monkeypatch.delitem(hkl.__dict__, "HessianMonitorCallback", raising=False)
    yield hkl
    # Forget the class built on a stand-in too, so a later real Lightning gets its own.
    hkl.__dict__.pop("HessianMonitorCallback", None)


@pytest.fixture
def no_lightning(monkeypatch, fresh_adapter):
    for name in LIGHTNING_NAMES:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    return fresh_adapter


@pytest.fixture
def stub_lightning(monkeypatch, fresh_adapter):
    """A minimal `lightning.pytorch` with a Callback base class."""
    pkg, sub = types.ModuleType("lightning"), types.ModuleType("lightning.pytorch")

    class Callback:
        pass

    sub.Callback = Callback
    pkg.pytorch = sub
    monkeypatch.setitem(sys.modules, "lightning", pkg)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", sub)
    return fresh_adapter, Callback


def test_missing_lightning_gives_a_clear_import_error(no_lightning):
    with pytest.raises(ImportError, match="pip install lightning"):
        no_lightning.lightning_module()
    with pytest.raises(ImportError, match="pip install lightning"):
        no_lightning.HessianMonitorCallback  # noqa: B018
    with pytest.raises(AttributeError):
        no_lightning.NoSuchThing  # noqa: B018


class FakeMonitor:
    def __init__(self, every):
        self.every, self.steps = every, []

    def measure(self, step):
        self.steps.append(step)
        return {"lambda_max": torch.tensor(2.0 * step), "trace": 1.5, "eigenvalues": [1.0, 2.0]}


class FakeModule:
    def __init__(self):
        self.logged = []

    def log_dict(self, values, **kwargs):
        self.logged.append(values)


def test_monitor_callback_measures_on_schedule_once_per_step(stub_lightning):
    adapter, callback_base = stub_lightning
    monitor, module = FakeMonitor(every=3), FakeModule()
    callback = adapter.HessianMonitorCallback(monitor)
    assert isinstance(callback, callback_base)
    trainer = types.SimpleNamespace(global_step=0)
    for global_step in [1, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7, 9]:  # repeated: gradient accumulation
        trainer.global_step = global_step
        callback.on_train_batch_end(trainer, module, None, None, 0)
    assert monitor.steps == [3, 6, 9]
    assert module.logged == [{"hessian/lambda_max": 2.0 * s, "hessian/trace": 1.5} for s in (3, 6, 9)]


def test_monitor_callback_checks_the_monitor(stub_lightning):
    adapter, _ = stub_lightning
    with pytest.raises(TypeError, match="measure"):
        adapter.HessianMonitorCallback(object())
    with pytest.raises(ValueError, match="every"):
        adapter.HessianMonitorCallback(FakeMonitor(every=0))


class SAMNet(hkl.SAMLightningMixin, nn.Module):
    """The mixin on a stand-in for LightningModule: optimizers() and manual_backward()."""

    def __init__(self, opt_factory):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
        self.opt = opt_factory(self.parameters())

    def optimizers(self):
        return self.opt  # a LightningOptimizer forwards step(closure=...) to the wrapped optimizer

    def manual_backward(self, loss):
        loss.backward()

    def training_loss(self, batch, batch_idx):
        x, y = batch
        return ((self.body(x) - y) ** 2).mean()


def test_sam_mixin_equals_the_manual_sam_loop():
    factory = lambda params: hko.SAM(params, torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)  # noqa: E731
    net, ref = SAMNet(factory), SAMNet(factory)
    assert net.automatic_optimization is False
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        batch = (torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 1, generator=g, dtype=torch.float64))
        loss = net.training_step(batch, i)
        ref_loss = ref.training_loss(batch, i)
        ref_loss.backward()
        ref.opt.first_step(zero_grad=True)
        with hko.disable_running_stats(ref):
            ref.training_loss(batch, i).backward()
        ref.opt.second_step(zero_grad=True)
        assert torch.equal(loss, ref_loss.detach()) and not loss.requires_grad
    for (name, p), q in zip(net.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(p, q), name
    assert net.body[1].num_batches_tracked.item() == 4  # each batch counted once


def test_sam_mixin_requires_sam():
    net = SAMNet(lambda params: torch.optim.SGD(params, lr=0.1))
    with pytest.raises(TypeError, match="SAM"):
        net.training_step((torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)), 0)


def test_with_real_lightning(fresh_adapter):
    pl = None
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            pl = importlib.import_module(name)
            break
        except ImportError:
            continue
    if pl is None:
        pytest.skip("Lightning is not installed")
    from hesskit.hooks.lightning import HessianMonitorCallback

    class Net(hkl.SAMLightningMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))

        def training_loss(self, batch, batch_idx):
            x, y = batch
            return ((self.body(x) - y) ** 2).mean()

        def configure_optimizers(self):
            return hko.SAM(self.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    monitor = FakeMonitor(every=2)
    trainer = pl.Trainer(max_steps=6, callbacks=[HessianMonitorCallback(monitor, log=False)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=4))
    assert trainer.global_step == 6 and monitor.steps == [2, 4, 6]


def test_automatic_optimization_closure_counts_batchnorm_once():
    # Lightning's automatic optimization hands SAM.step a closure: training step, zero_grad, backward.
    net = SAMNet(lambda params: hko.SAM(params, torch.optim.SGD, rho=0.5, lr=0.1))
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        batch = (torch.randn(8, 3, generator=g, dtype=torch.float64), torch.randn(8, 1, generator=g, dtype=torch.float64))
        reference = copy.deepcopy(net.body)
        reference(batch[0])  # one pass at w: the statistics to keep

        def closure():
            loss = net.training_loss(batch, i)
            net.opt.zero_grad()
            loss.backward()
            return loss

        net.opt.step(closure)
        assert torch.equal(net.body[1].running_mean, reference[1].running_mean)
        assert torch.equal(net.body[1].running_var, reference[1].running_var)
    assert net.body[1].num_batches_tracked.item() == 3
