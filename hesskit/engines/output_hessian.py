"""Products with the Hessian of the loss with respect to the model outputs.

The generalized Gauss-Newton matrix is :math:`G = J^\\top \\nabla^2_f \\ell\\, J`
(Schraudolph 2002; Martens 2020, "New insights and perspectives on the natural
gradient method"), with :math:`J` the Jacobian of the outputs :math:`f` with respect
to the parameters. This module applies :math:`\\nabla^2_f \\ell` to a block of
output-space tangents. Cross-entropy and MSE use their closed forms:

* cross-entropy on logits :math:`z` (class dimension 1):
  :math:`\\nabla^2_z \\ell_n = \\operatorname{diag}(p_n) - p_n p_n^\\top`,
  :math:`p_n = \\operatorname{softmax}(z_n)`, independent of the targets (also with
  label smoothing), divided by the number of counted positions for ``mean``;
* MSE: :math:`2I`, divided by the number of elements for ``mean``.

Any other loss, and a loss module with forward hooks, goes through ``torch.func`` (an exact Hessian-vector product of
``loss_fn(·, targets)`` at the outputs).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesskit.engines.module_hooks import hook_problem

__all__ = ["output_hessian_matmat", "closed_form_kind"]


def closed_form_kind(loss_fn: Callable) -> str | None:
    """``"ce"``/``"mse"`` when ``loss_fn``'s output Hessian has a closed form here: a
    loss module with hooks (:func:`~hesskit.engines.module_hooks.hook_problem`) has
    none, it goes through ``torch.func``, which calls it."""
    if isinstance(loss_fn, nn.Module) and hook_problem(loss_fn, "loss_fn") is not None:
        return None
    if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is None:
        return "ce"
    if isinstance(loss_fn, nn.MSELoss):
        return "mse"
    if loss_fn is F.cross_entropy:
        return "ce"
    if loss_fn is F.mse_loss:
        return "mse"
    return None


def _reduction(loss_fn: Callable, default: str) -> str:
    return getattr(loss_fn, "reduction", default)


def output_hessian_matmat(loss_fn: Callable, outputs: Tensor, targets: Tensor,
                          U: Tensor, reduction: str) -> Tensor:
    """Apply :math:`\\nabla^2_f \\ell` to ``U`` of shape ``(k, *outputs.shape)``.

    Args:
        loss_fn: the objective's loss.
        outputs: model outputs of one chunk (detached).
        targets: the chunk's targets.
        U: k output-space tangents.
        reduction: the loss's reduction over samples (``"mean"`` or ``"sum"``).
    """
    kind = closed_form_kind(loss_fn)
    reduction = _reduction(loss_fn, reduction)
    if kind == "ce":
        p = torch.softmax(outputs, dim=1)
        mask = None
        ignore = getattr(loss_fn, "ignore_index", -100)
        if not targets.is_floating_point():
            mask = (targets != ignore).to(p.dtype).unsqueeze(1)  # (N, 1, ...)
        HU = p * U - p * (p * U).sum(dim=2, keepdim=True)
        if mask is not None:
            HU = HU * mask
        if reduction == "mean":
            count = mask.sum() if mask is not None else torch.tensor(
                float(p.numel() // p.shape[1]), dtype=p.dtype)
            HU = HU / count.clamp_min(1)
        return HU
    if kind == "mse":
        scale = 2.0 / outputs.numel() if reduction == "mean" else 2.0
        return scale * U
    grad_fn = torch.func.grad(lambda z: loss_fn(z, targets))
    return torch.func.vmap(lambda u: torch.func.jvp(grad_fn, (outputs,), (u,))[1])(U)
