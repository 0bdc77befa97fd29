"""``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in eval mode: an affine map per channel.

With running statistics :math:`\\mu, \\sigma^2`, :math:`s = 1/\\sqrt{\\sigma^2 +
\\epsilon}` and :math:`\\hat x = (x - \\mu) s`, the layer computes
:math:`y = \\gamma \\hat x + \\beta` (Ioffe & Szegedy 2015), so

.. math::

    \\dot y = \\gamma s \\dot x + \\dot\\gamma \\hat x + \\dot\\beta, \\qquad
    \\dot g_x = \\gamma s U + \\dot\\gamma s g, \\qquad
    \\dot g_\\gamma = \\textstyle\\sum \\hat x U + \\sum s\\, g \\dot x, \\qquad
    \\dot g_\\beta = \\textstyle\\sum U,

sums over samples and positions per channel. In train mode the layer normalizes
with batch statistics, which couple the samples: that is refused, not approximated.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hesskit.engines.native.chain import UnsupportedModelError
from hesskit.engines.native.rules.base import Rule, add, describe

__all__ = ["BatchNormRule"]


class BatchNormRule(Rule):
    """Products through ``nn.BatchNorm1d/2d`` with running statistics (eval mode)."""

    def __init__(self, name: str, module: nn.BatchNorm1d | nn.BatchNorm2d):
        super().__init__(name)
        if module.running_mean is None or module.running_var is None:
            raise UnsupportedModelError(
                f"{describe(name, module)} has track_running_stats=False: it normalizes with "
                "batch statistics even in eval mode, which the graph path does not follow")
        self.module = module
        prefix = f"{name}." if name else ""
        self.weight_name = prefix + "weight" if module.affine else None
        self.bias_name = prefix + "bias" if module.affine else None
        self.param_names = tuple(n for n in (self.weight_name, self.bias_name) if n)

    def check_mode(self, mode):
        if mode == "train":
            return (f"{describe(self.name, self.module)} uses batch statistics in train mode "
                    "(use mode='eval')")
        return None

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, x.shape[1]) + (1,) * (x.ndim - 2)

    def forward(self, x: Tensor):
        m = self.module
        shape = self._shape(x)
        s = torch.rsqrt(m.running_var.detach() + m.eps).to(x.dtype)
        mu = m.running_mean.detach().to(x.dtype)
        gamma = None if m.weight is None else m.weight.detach()
        scale = s if gamma is None else s * gamma
        xhat = (x - mu.view(shape)) * s.view(shape)
        y = xhat if gamma is None else xhat * gamma.view(shape)
        if m.bias is not None:
            y = y + m.bias.detach().view(shape)
        return y, (xhat, scale.view(shape), s.view(shape))

    def _channel_sum(self, t: Tensor, k: int) -> Tensor:
        """``(k N, C, ...)`` summed over samples and positions: ``(k, C)``."""
        return t.reshape(k, -1, t.shape[1], t[0, 0].numel()).sum((1, 3))

    def rforward(self, ctx, k, dins, dparams):
        xhat, scale, _ = ctx
        per_tangent = (k, *self._shape(xhat))
        dg = dparams.get(self.weight_name) if self.weight_name else None
        db = dparams.get(self.bias_name) if self.bias_name else None
        out = None  # (k, N, C, ...), each term added in one pass into a fresh tensor
        if dg is not None:
            base = xhat.new_zeros(()) if db is None else db.view(per_tangent)
            out, db = torch.addcmul(base, xhat, dg.view(per_tangent)), None
        if dins[0] is not None:
            dx = dins[0].view(k, *xhat.shape)
            if out is not None:
                out.addcmul_(dx, scale)
            else:
                out = dx * scale if db is None else torch.addcmul(db.view(per_tangent), dx, scale)
        elif out is None and db is not None:
            out = db.view(per_tangent).expand(k, *xhat.shape)
        return None if out is None else out.reshape(-1, *xhat.shape[1:])

    def backward(self, ctx, k, U, g, dins, dparams, need_inputs, want):
        xhat, scale, s = ctx
        per_tangent = (k, *self._shape(xhat))
        dg = dparams.get(self.weight_name) if self.weight_name else None
        second = g is not None and ((need_inputs[0] and dg is not None)
                                    or (self.weight_name in want and dins[0] is not None))
        gs = g * s if second else None  # the first-order gradient at x-hat
        grad_x = None
        if need_inputs[0]:
            if U is not None:
                grad_x = U * scale
            if gs is not None and dg is not None:
                if grad_x is None:
                    grad_x = (gs * dg.view(per_tangent)).reshape(-1, *xhat.shape[1:])
                else:
                    grad_x.view(k, *xhat.shape).addcmul_(gs, dg.view(per_tangent))
        grads = {}
        if self.weight_name in want:
            gg = None
            if U is not None:
                gg = self._channel_sum((U.view(k, *xhat.shape) * xhat).view(U.shape), k)
            if gs is not None and dins[0] is not None:
                dx = dins[0]
                gg = add(gg, self._channel_sum((dx.view(k, *xhat.shape) * gs).view(dx.shape), k))
            if gg is not None:
                grads[self.weight_name] = gg
        if self.bias_name in want and U is not None:
            grads[self.bias_name] = self._channel_sum(U, k)
        return [grad_x], grads

    def sample_jacobians(self, ctx, k, U, names):
        """:math:`(\\sum U \\hat x, \\sum U)` per sample and channel."""
        xhat = ctx[0]
        n, c = xhat.shape[:2]
        Uk = U.reshape(k, n, c, -1)
        parts = {self.weight_name: (Uk * xhat.reshape(1, n, c, -1)).sum(3),
                 self.bias_name: Uk.sum(3)}
        return torch.cat([parts[name] for name in names], dim=2)

    def keeps_input_tangents(self, selected):
        return self.weight_name in selected
