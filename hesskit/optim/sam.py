r"""Sharpness-Aware Minimization (SAM) and its adaptive variant (ASAM).

SAM (Foret, Kleiner, Mobahi and Neyshabur, "Sharpness-Aware Minimization for
Efficiently Improving Generalization", ICLR 2021) minimizes
:math:`\max_{\|\epsilon\| \le \rho} L(w + \epsilon)` with one ascent step:

.. math::

    g = \nabla L(w), \qquad
    e = \rho \, \frac{T_w^2\, g}{\|T_w\, g\|_2}, \qquad
    w \leftarrow \mathrm{BaseStep}\bigl(w, \nabla L(w + e)\bigr),

with :math:`T_w = I` for SAM and :math:`T_w = \operatorname{diag}(|w|)` for
ASAM (Kwon, Kim, Park and Choi, "ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks", ICML 2021), as the widely used
reference implementation (davda54/sam) does it: :math:`|w|` on every parameter
and no :math:`\eta` offset. The norm is ONE norm over all parameters of all
groups; ``rho`` may differ per group (it scales the group's share of ``e``).
The base step is any ``torch.optim`` optimizer applied to the gradient taken at
``w + e`` (its weight decay, momentum, ... act there, not in the perturbation).
"""
from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from hesskit.optim._wrapped import WrappedOptimizer

__all__ = ["SAM", "disable_running_stats"]

ExcludeRule = Callable[[Any, torch.Tensor], bool]


def _check_rho(rho: Any, where: str) -> None:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise TypeError(f"{where} must be a real number, got {type(rho).__name__}")
    if not math.isfinite(rho) or rho < 0:
        raise ValueError(f"{where} must be a finite number >= 0, got {rho!r}")


def _exclusion_rule(adaptive_exclude: Any) -> ExcludeRule | None:
    """Turn ``adaptive_exclude`` into a predicate ``(name, param) -> bool`` (or None)."""
    if adaptive_exclude is None or callable(adaptive_exclude):
        return adaptive_exclude
    patterns = (adaptive_exclude,) if isinstance(adaptive_exclude, str) else tuple(adaptive_exclude)
    if not patterns or not all(isinstance(s, str) and s for s in patterns):
        raise TypeError(
            "adaptive_exclude must be None, a callable (name, param) -> bool, or a non-empty "
            f"string or sequence of non-empty strings, got {adaptive_exclude!r}"
        )

    def matches(name: str | None, param: torch.Tensor) -> bool:
        if name is None:
            raise ValueError(
                f"adaptive_exclude={patterns!r} matches parameter names, but the optimizer was given "
                "bare tensors: pass model.named_parameters() (or groups of (name, param) pairs)"
            )
        return any(s in name for s in patterns)

    return matches


class SAM(WrappedOptimizer):
    r"""Sharpness-Aware Minimization around any ``torch.optim`` optimizer; ``adaptive=True`` is ASAM.

    Each step takes two gradients: at :math:`w`, to build the perturbation
    :math:`e = \rho\, T_w^2 g / \|T_w g\|` (one norm over all groups, ``rho``
    per group), and at :math:`w + e`; then :math:`w` is restored and the base
    optimizer steps with the second gradient (Foret et al., ICLR 2021; Kwon et
    al., ICML 2021 for ASAM, :math:`T_w = \mathrm{diag}(|w|)`). Where the
    gradient at :math:`w` is zero, :math:`e = 0`.

    The base optimizer is built here as ``base_optimizer(self.param_groups,
    **base_kwargs)`` and shares SAM's ``param_groups`` (the same dicts) and
    ``state``: an LR scheduler attached to the SAM object drives the base
    optimizer, ``state_dict()`` holds the base optimizer's state and SAM's
    per-group ``rho``/``adaptive``.

    Three ways to drive it, all with two forward/backward passes per step:

    * ``step(closure)``: the closure zeroes the gradients, computes the loss,
      calls ``backward()`` and returns the loss. It is evaluated at ``w`` and at
      ``w + e``; the loss at ``w`` is returned.
    * davda54/sam's loop: ``loss_fn(model(x), y).backward()`` first, then
      ``step(closure)``. When ``.grad`` holds a gradient written since the last
      SAM step (not the one that step left there, and not all zeros), it is
      taken as the gradient at ``w``: the closure runs once, at ``w + e``, and
      ``step`` returns ``None`` (the caller holds the loss at ``w``), as in
      davda54/sam. A ``backward()`` before ``step`` must therefore be of the
      closure's loss at the current ``w``.
    * ``first_step()`` / ``second_step()`` for hand-written loops (and AMP)::

          loss_fn(model(x), y).backward()
          opt.first_step(zero_grad=True)               # w -> w + e
          loss_fn(model(x), y).backward()
          opt.second_step(zero_grad=True)              # back to w, base step

    In every style the step is a real ``step()``: ``second_step()`` calls it,
    so LR schedulers on the SAM object see it (no "``lr_scheduler.step()``
    before ``optimizer.step()``" warning) and step hooks
    (``register_step_post_hook``, :class:`~hesskit.hooks.HessianMonitor`) fire
    once per completed SAM step, back at ``w``.

    BatchNorm counts each batch once, in every style: while the parameters hold
    ``w + e`` (from :meth:`first_step` to :meth:`restore`), every normalization
    layer that runs a forward pass leaves its running statistics as they were
    (as :func:`disable_running_stats` does, through a global module forward
    pre-hook that lives only for that window), so the statistics are those of
    the pass at ``w``.

    Mixed precision with ``torch.amp.GradScaler``: unscale before the
    perturbation (its norm needs the true gradient) and skip the step on
    inf/nan. The scaler allows one ``unscale_`` per optimizer per iteration, so
    the first pass is unscaled through the SAM object and the second through
    its base optimizer; one ``update()`` then sees both inf checks::

          with torch.autocast(device):
              loss = loss_fn(model(x), y)
          scaler.scale(loss).backward()
          scaler.unscale_(opt)                 # true gradient at w, inf check recorded
          if not opt.grads_finite():           # overflow at w: skip this step
              opt.zero_grad()
              scaler.update()                  # backs the scale off
              continue
          opt.first_step(zero_grad=True)
          with torch.autocast(device):
              scaler.scale(loss_fn(model(x), y)).backward()
          opt.restore()                        # back to w, keeping the gradient at w + e
          scaler.step(opt.base_optimizer)      # unscales it; skips the update on inf/nan
          scaler.update()
          opt.zero_grad()

      This path steps the base optimizer itself: attach LR schedulers and step
      hooks to ``opt.base_optimizer`` here.

    Under ``DistributedDataParallel``: give SAM the DDP model's parameters
    (``ddp_model.parameters()``, the wrapped module's tensors) and run BOTH
    forward/backward passes through the DDP model (the closure calls
    ``ddp_model``; in the two-step loop, both backward passes). DDP averages the
    gradient in every ``backward()``, so with R ranks and shard losses
    :math:`L_r` every rank computes

    .. math::

        g = \frac{1}{R}\sum_r \nabla L_r(w), \qquad
        e = \rho\, \frac{T_w^2\, g}{\|T_w\, g\|}, \qquad
        \frac{1}{R}\sum_r \nabla L_r(w + e):

    the perturbation uses the globally averaged gradient, is the same on every
    rank (the norm needs no further communication), and so is the base step.
    With equal shard sizes and mean losses this is SAM on the full batch (DDP
    weights ranks, not samples). Running the first pass under
    ``ddp_model.no_sync()`` instead perturbs each rank with its own gradient
    (:math:`e_r`, the per-device "m-sharpness" of Foret et al.); the gradients at
    :math:`w + e_r` are still averaged. ``step()`` returns this rank's loss.
    BatchNorm uses per-rank batch statistics unless converted to
    ``SyncBatchNorm``.

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer
            (``model.named_parameters()`` gives the names ``adaptive_exclude`` matches).
            Groups may set their own ``rho`` and ``adaptive``.
        base_optimizer: a ``torch.optim.Optimizer`` subclass (the class, not an instance).
        rho: perturbation radius :math:`\rho \ge 0` (default group value).
        adaptive: ASAM scaling :math:`T_w = |w|` (default group value).
        adaptive_exclude: parameters left unscaled (:math:`T_w = I`) by ASAM, for
            example biases and normalization parameters. ``None`` (default): none,
            as in the reference implementation. A string or sequence of strings:
            parameters whose name contains one of them, e.g. ``("bias", "norm", "bn")``
            (needs named parameters). A callable ``(name, param) -> bool``: ``name``
            is ``None`` for bare tensors, so ``lambda name, p: p.ndim <= 1``
            excludes every bias and every normalization weight of the standard
            layers without names.
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``momentum``, ...).

    Raises:
        ValueError: ``rho < 0`` or not finite; ``base_optimizer`` not an
            ``Optimizer`` subclass (e.g. an instance); name patterns without names.
        TypeError: ``rho``, ``adaptive`` or ``adaptive_exclude`` of the wrong type.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        adaptive: bool = False,
        *,
        adaptive_exclude: str | Iterable[str] | ExcludeRule | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise ValueError(
                "base_optimizer must be a torch.optim.Optimizer subclass such as torch.optim.SGD "
                f"(the class, not an instance), got {base_optimizer!r}"
            )
        _check_rho(rho, "rho")
        self._exclude = _exclusion_rule(adaptive_exclude)
        self._backup: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._frozen_stats: list[tuple[nn.Module, str, Any]] = []
        self._stats_hook: torch.utils.hooks.RemovableHandle | None = None
        self._spent_grads: dict[torch.Tensor, tuple[weakref.ref, int]] = {}
        super().__init__(params, {"rho": rho, "adaptive": adaptive})
        self._adopt(base_optimizer(self.param_groups, **base_kwargs))
        list(self._perturbed_params())  # fail now, not at the first step, if name patterns lack names

    @property
    def base_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer that applies the update (it shares ``param_groups`` and ``state``)."""
        return self.inner

    def _check_group(self, param_group: dict[str, Any]) -> None:
        _check_rho(param_group["rho"], "rho")
        if not isinstance(param_group["adaptive"], bool):
            raise TypeError(f"adaptive must be a bool, got {param_group['adaptive']!r}")

    def _perturbed_params(self) -> Iterator[tuple[torch.Tensor, float, bool]]:
        """Yield ``(param, rho, scaled)`` for every parameter that has a gradient."""
        for group in self.param_groups:
            names = group.get("param_names", [None] * len(group["params"]))
            for name, p in zip(names, group["params"]):
                scaled = group["adaptive"] and not (self._exclude is not None and self._exclude(name, p))
                if p.grad is not None:
                    yield p, group["rho"], scaled

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        r"""Move to :math:`w + e`, :math:`e = \rho\, T_w^2 g / \|T_w g\|`, with ``g`` the current ``.grad``.

        Saves :math:`w` for :meth:`restore` / :meth:`second_step`. Until then,
        normalization layers run in a forward pass keep their running statistics.

        Args:
            zero_grad: clear the gradients afterwards (ready for the second backward).

        Raises:
            RuntimeError: called twice without :meth:`second_step` or :meth:`restore` between.
        """
        if self._backup is not None:
            raise RuntimeError("first_step() was called twice without second_step() or restore() in between")
        entries = list(self._perturbed_params())
        self._backup = [(p, p.detach().clone()) for p, _, _ in entries]
        self._stats_hook = nn.modules.module.register_module_forward_pre_hook(self._freeze_stats_hook)
        if entries:
            # T g per parameter, then ONE norm over all of them (accumulated in a common dtype/device).
            scaled_grads = [p.grad * p.abs() if scaled else p.grad for p, _, scaled in entries]
            device = entries[0][0].device
            dtype = torch.float32
            for p, _, _ in entries:
                dtype = torch.promote_types(dtype, p.dtype)
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(t, dtype=dtype).to(device) for t in scaled_grads])
            )
            inv_norm = torch.where(norm > 0, norm.reciprocal(), torch.zeros_like(norm))
            for (p, rho, scaled), tg in zip(entries, scaled_grads):
                factor = inv_norm.to(device=p.device, dtype=p.dtype) * rho
                p.add_((tg * p.abs() if scaled else tg) * factor)  # rho T^2 g / ||T g||
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the parameters saved by :meth:`first_step`, leaving ``.grad`` untouched.

        :meth:`second_step` is ``restore()`` followed by the base optimizer's step; call
        ``restore()`` alone to drop a perturbation (e.g. when the second gradient
        overflowed) or before ``scaler.step(opt.base_optimizer)``.

        Raises:
            RuntimeError: no :meth:`first_step` is pending.
        """
        self._require_pending()
        for p, saved in self._backup:
            p.copy_(saved)
        self._backup = None
        self._stats_hook.remove()
        self._stats_hook = None
        _restore_attributes(self._frozen_stats)

    def _require_pending(self) -> None:
        if self._backup is None:
            raise RuntimeError("restore()/second_step() called without a preceding first_step()")

    def _freeze_stats_hook(self, module: nn.Module, args: Any) -> None:
        """Global forward pre-hook while the parameters hold ``w + e``: keep running statistics."""
        _freeze_running_stats(module, self._frozen_stats)

    def second_step(self, zero_grad: bool = False) -> None:
        """Return to :math:`w` and let the base optimizer step with the gradient taken at :math:`w + e`.

        It calls :meth:`step` (without a closure), so that LR schedulers and step
        hooks registered on this optimizer see the step.

        Args:
            zero_grad: clear the gradients afterwards.

        Raises:
            RuntimeError: no :meth:`first_step` is pending.
        """
        self._require_pending()
        self.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SAM step driven by ``closure`` (zero grads, loss, ``backward()``, return the loss).

        The closure is evaluated at :math:`w` and at :math:`w + e`; if the second
        evaluation raises, the parameters are restored to :math:`w` first. When
        ``.grad`` already holds a gradient computed since the last SAM step (the
        davda54/sam loop: ``backward()`` before ``step(closure)``), that gradient is
        the one at :math:`w` and the closure runs only at :math:`w + e`.

        Without a closure, after :meth:`first_step`, it completes the step
        (:meth:`second_step` calls it this way).

        Returns:
            The loss returned by the closure at :math:`w`; ``None`` when the
            gradient at :math:`w` was given or no closure was passed.

        Raises:
            ValueError: no closure and no pending :meth:`first_step`.
        """
        if closure is None:
            if self._backup is None:
                raise ValueError(
                    "SAM.step() needs a closure that zeroes the gradients, computes the loss, calls "
                    "backward() and returns the loss (or call first_step() and second_step() yourself)"
                )
            self._finish()
            return None
        loss = None
        if not self._holds_new_gradient():
            with torch.enable_grad():
                loss = closure()
        self.first_step(zero_grad=True)
        try:
            with torch.enable_grad():
                closure()
        except BaseException:
            self.restore()
            raise
        self._finish()
        return loss

    def _finish(self) -> None:
        """Back to ``w``, base step, and remember the gradients this step leaves in ``.grad``."""
        self.restore()
        self.base_optimizer.step()
        self._spent_grads = {
            p: (weakref.ref(p.grad), p.grad._version)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        }

    @torch.no_grad()
    def _holds_new_gradient(self) -> bool:
        """Whether ``.grad`` holds a gradient computed since the last step (not left over, not all zeros)."""
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                ref, version = self._spent_grads.get(p, (None, None))
                if ref is not None and ref() is p.grad and p.grad._version == version:
                    return False  # the gradient at w + e that the last step left behind
                grads.append(p.grad)
        if not grads:
            return False
        device = grads[0].device
        return bool(torch.stack([g.ne(0).any().to(device) for g in grads]).any())

    @torch.no_grad()
    def grads_finite(self) -> bool:
        """Whether every ``.grad`` of the optimized parameters is finite (no inf/nan).

        Use it after ``scaler.unscale_(opt)`` to skip a step whose gradient overflowed.
        """
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return True
        device = grads[0].device
        return bool(torch.stack([torch.isfinite(g).all().to(device) for g in grads]).all())

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict()`` (with SAM's per-group ``rho`` and ``adaptive``).

        Raises:
            RuntimeError: between :meth:`first_step` and :meth:`second_step`, where the
                parameters hold :math:`w + e` and a checkpoint would be inconsistent.
        """
        if self._backup is not None:
            raise RuntimeError(
                "state_dict() between first_step() and second_step(): the parameters hold w + e; "
                "checkpoint after second_step()"
            )
        return super().state_dict()


@contextlib.contextmanager
def disable_running_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which forward passes leave the normalization running statistics unchanged.

    :class:`SAM` applies the same rule by itself while the parameters hold
    :math:`w + e`; this context is for other loops with an extra forward pass
    that should not count its batch. Training-mode layers still normalize with the batch
    statistics; nothing else about the forward or backward pass changes, and
    ``backward()`` may run inside or after the block. Inside the block:

    * BatchNorm layers (``_BatchNorm``: ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
      lazy variants) with ``track_running_stats=True`` have it set to ``False``:
      they neither update ``running_mean``/``running_var`` nor count
      ``num_batches_tracked``, whatever the ``momentum`` (``None`` included);
    * InstanceNorm layers with ``track_running_stats=True`` get ``momentum=0``
      (their running statistics are blended with weight 0).

    The flags and momenta are restored on exit, also when the block raises.

    Args:
        model: the module whose normalization layers are protected.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        >>> before = model[1].running_mean.clone()
        >>> with disable_running_stats(model):
        ...     loss = model(torch.randn(8, 3)).square().mean()
        >>> loss.backward()
        >>> torch.equal(model[1].running_mean, before)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    changed: list[tuple[nn.Module, str, Any]] = []
    for m in model.modules():
        _freeze_running_stats(m, changed)
    try:
        yield model
    finally:
        _restore_attributes(changed)


def _freeze_running_stats(module: nn.Module, changed: list[tuple[nn.Module, str, Any]]) -> None:
    """Stop one normalization layer from updating its running statistics; record the change in ``changed``."""
    if isinstance(module, _BatchNorm) and module.track_running_stats:
        changed.append((module, "track_running_stats", True))
        module.track_running_stats = False
    elif isinstance(module, _InstanceNorm) and module.track_running_stats and module.momentum != 0.0:
        changed.append((module, "momentum", module.momentum))
        module.momentum = 0.0


def _restore_attributes(changed: list[tuple[nn.Module, str, Any]]) -> None:
    """Undo :func:`_freeze_running_stats` (last change first) and empty ``changed``."""
    while changed:
        module, attribute, value = changed.pop()
        setattr(module, attribute, value)
