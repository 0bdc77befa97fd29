"""Lightning adapters: a callback for :class:`~hesskit.hooks.monitor.HessianMonitor` and a SAM mixin.

Lightning is optional. It is imported only when :class:`HessianMonitorCallback`
is first looked up (``lightning.pytorch``, else ``pytorch_lightning``); without
either, that lookup raises an ``ImportError`` saying what to install. The mixin
needs no Lightning import (it only calls ``LightningModule`` methods).

* ``HessianMonitorCallback(monitor)``: calls ``monitor.measure(trainer.global_step)``
  after a training batch whenever ``global_step`` is a multiple of
  ``monitor.every`` (once per optimizer step, also under gradient
  accumulation), and logs the numbers that ``measure`` returns.
* ``SAMLightningMixin``: ``class Net(SAMLightningMixin, L.LightningModule)`` with a
  ``training_loss(batch, batch_idx)`` method and ``configure_optimizers`` returning a
  :class:`~hesskit.optim.SAM` trains with SAM through manual optimization: both
  forward passes, BatchNorm statistics counted once, Lightning's step counting kept.

Example (with Lightning installed)::

    import lightning.pytorch as L
    from hesskit.hooks.lightning import HessianMonitorCallback, SAMLightningMixin

    class Net(SAMLightningMixin, L.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))

        def training_loss(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.body(x), y)

        def configure_optimizers(self):
            return hk.optim.SAM(self.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    monitor = hk.hooks.HessianMonitor(obj, every=100)
    L.Trainer(max_epochs=5, callbacks=[HessianMonitorCallback(monitor)]).fit(Net(), loader)
"""
from __future__ import annotations

import importlib
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from hesskit.optim.sam import SAM

__all__ = ["HessianMonitorCallback", "SAMLightningMixin", "lightning_module"]

_LIGHTNING_MODULES = ("lightning.pytorch", "pytorch_lightning")


def lightning_module() -> Any:
    """The installed Lightning package: ``lightning.pytorch``, else ``pytorch_lightning``.

    Raises:
        ImportError: neither is installed.
    """
    for name in _LIGHTNING_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "hesskit.hooks.lightning.HessianMonitorCallback needs PyTorch Lightning, which is not installed: "
        "`pip install lightning` (or `pip install pytorch-lightning`). The rest of hesskit works without it."
    )


def _build_monitor_callback() -> type:
    callback_base = lightning_module().Callback

    class HessianMonitorCallback(callback_base):
        """Run ``monitor.measure(step)`` on the monitor's schedule during ``Trainer.fit``.

        After a training batch, with ``step = trainer.global_step`` (optimizer
        steps done so far), measures when ``step % monitor.every == 0`` and this
        step was not measured yet (gradient accumulation repeats a step over
        several batches). If ``measure`` returns a mapping, its real-valued
        entries are logged with ``pl_module.log_dict`` under ``prefix``.

        Args:
            monitor: a :class:`~hesskit.hooks.monitor.HessianMonitor` (anything with
                ``measure(step)`` and ``every``).
            log: log the returned numbers to the Trainer's logger.
            prefix: prefix of the logged names.
        """

        def __init__(self, monitor: Any, *, log: bool = True, prefix: str = "hessian/") -> None:
            super().__init__()
            if not callable(getattr(monitor, "measure", None)):
                raise TypeError(f"monitor must have a measure(step) method, got {type(monitor).__name__}")
            every = getattr(monitor, "every", 1)
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ValueError(f"monitor.every must be an int >= 1, got {every!r}")
            self.monitor = monitor
            self.log_metrics = log
            self.prefix = prefix
            self._last_step: int | None = None

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            step = int(trainer.global_step)
            if step == self._last_step or step % self.monitor.every != 0:
                return
            self._last_step = step
            result = self.monitor.measure(step)
            if self.log_metrics and isinstance(result, Mapping):
                numbers_only = {
                    f"{self.prefix}{key}": float(value)
                    for key, value in result.items()
                    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1)
                }
                if numbers_only:
                    pl_module.log_dict(numbers_only, on_step=True, on_epoch=False)

    HessianMonitorCallback.__module__ = __name__
    HessianMonitorCallback.__qualname__ = "HessianMonitorCallback"
    return HessianMonitorCallback


def __getattr__(name: str) -> Any:
    # PEP 562: build the Lightning subclass on first use, so importing this module needs no Lightning.
    if name == "HessianMonitorCallback":
        cls = _build_monitor_callback()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SAMLightningMixin:
    """Mixin for a ``LightningModule`` trained with :class:`~hesskit.optim.SAM` (manual optimization).

    Put it before ``LightningModule`` in the bases and define
    ``training_loss(batch, batch_idx) -> loss``; ``configure_optimizers`` must
    return a SAM optimizer. Each ``training_step`` calls the Lightning
    optimizer's ``step(closure=...)``, which runs :meth:`SAM.step <hesskit.optim.SAM.step>`:
    the closure evaluates ``training_loss`` at ``w`` and then at ``w + e``, and
    SAM keeps the BatchNorm statistics of the first pass only. Going through the Lightning
    optimizer keeps ``trainer.global_step`` and the precision plugin in the
    loop. ``training_step`` returns the loss at ``w`` (detached).

    Notes:
        * Works with ``precision="32-true"``, ``"64-true"`` and ``"bf16-mixed"``. Lightning's
          float16 AMP (``"16-mixed"``) calls ``scaler.step(optimizer)`` without a closure,
          which SAM cannot serve; use the GradScaler recipe of :class:`~hesskit.optim.SAM`
          in a plain loop instead.
        * ``training_loss`` runs twice per step: log from it only what is meant twice,
          or log the returned loss in ``on_train_batch_end``.
        * With manual optimization Lightning does not step LR schedulers: call
          ``self.lr_schedulers().step()`` where the schedule needs it.
        * Returning SAM from ``configure_optimizers`` without this mixin (automatic
          optimization) also works in 32-bit: Lightning passes its closure to
          ``SAM.step``, which runs ``training_step`` twice; BatchNorm counts each
          batch once there too.
    """

    automatic_optimization = False

    def training_loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The scalar training loss of ``batch`` (to be defined by the LightningModule)."""
        raise NotImplementedError(f"{type(self).__name__} must define training_loss(batch, batch_idx)")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One SAM step on ``batch``; returns the loss at ``w``."""
        optimizer = self.optimizers()
        sam = getattr(optimizer, "optimizer", optimizer)  # unwrap the LightningOptimizer
        if not isinstance(sam, SAM):
            raise TypeError(
                f"{type(self).__name__} uses SAMLightningMixin, so configure_optimizers must return a "
                f"hesskit.optim.SAM, got {type(sam).__name__}"
            )

        def closure() -> torch.Tensor:
            loss = self.training_loss(batch, batch_idx)
            optimizer.zero_grad()
            self.manual_backward(loss)
            return loss

        return optimizer.step(closure=closure).detach()
