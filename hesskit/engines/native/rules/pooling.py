"""Pooling: ``nn.MaxPool1d/2d``, ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``.

All three are linear maps of their input once the forward pass is known (max
pooling routes each output to the input position the forward pass picked, kept as
its indices), so :math:`\\dot y = A \\dot x` and :math:`\\dot g_x = A^\\top U`
with no second-order term. Max pooling's transpose adds into the routed positions
(overlapping windows may pick one input twice), as autograd does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from hesskit.engines.native.chain import UnsupportedModelError
from hesskit.engines.native.rules.base import LinearMapRule, describe, shape_only

__all__ = ["MaxPoolRule", "AvgPool2dRule", "AdaptiveAvgPool2dRule"]


class MaxPoolRule(LinearMapRule):
    """``nn.MaxPool1d`` / ``nn.MaxPool2d``: gather at the forward pass's indices."""

    def __init__(self, name: str, module: nn.MaxPool1d | nn.MaxPool2d):
        super().__init__(name)
        if module.return_indices:
            raise UnsupportedModelError(f"{describe(name, module)} returns indices; the graph "
                                        "engine needs a tensor output")
        self.module = module
        self.pool = F.max_pool1d if isinstance(module, nn.MaxPool1d) else F.max_pool2d

    def forward(self, x: Tensor):
        m = self.module
        y, idx = self.pool(x, m.kernel_size, m.stride, m.padding, m.dilation,
                           ceil_mode=m.ceil_mode, return_indices=True)
        return y, (idx.flatten(2), x.shape[1:], y.shape[1:])

    def apply(self, ctx, t):
        idx, in_shape, out_shape = ctx
        n = idx.shape[0]
        src = t.reshape(-1, n, in_shape[0], math.prod(in_shape[1:]))
        out = src.gather(3, idx.unsqueeze(0).expand(src.shape[0], *idx.shape))
        return out.reshape(-1, *out_shape)

    def transpose(self, ctx, U):
        idx, in_shape, _ = ctx
        n = idx.shape[0]
        U = U.reshape(-1, n, *idx.shape[1:])
        out = U.new_zeros(U.shape[0], n, in_shape[0], math.prod(in_shape[1:]))
        out.scatter_add_(3, idx.unsqueeze(0).expand_as(U), U)
        return out.reshape(-1, *in_shape)


class _AveragingRule(LinearMapRule):
    """An averaging pool module: a linear map of its input, applied by the module itself;
    subclasses give the transpose (the pooling's backward)."""

    def __init__(self, name: str, module: nn.Module):
        super().__init__(name)
        self.module = module

    def forward(self, x: Tensor):
        return self.module(x), x.shape[1:]

    def apply(self, ctx, t):
        return self.module(t)


class AvgPool2dRule(_AveragingRule):
    """``nn.AvgPool2d`` (any padding, ``ceil_mode``, ``count_include_pad``,
    ``divisor_override``)."""

    def __init__(self, name: str, module: nn.AvgPool2d):
        super().__init__(name, module)
        m = module
        self.args = (list(_pair(m.kernel_size)), list(_pair(m.stride)), list(_pair(m.padding)),
                     m.ceil_mode, m.count_include_pad, m.divisor_override)

    def transpose(self, ctx, U):
        shape = shape_only((U.shape[0], *ctx), U)
        return torch.ops.aten.avg_pool2d_backward(U, shape, *self.args)


class AdaptiveAvgPool2dRule(_AveragingRule):
    """``nn.AdaptiveAvgPool2d``."""

    def transpose(self, ctx, U):
        shape = shape_only((U.shape[0], *ctx), U)
        return torch.ops.aten._adaptive_avg_pool2d_backward(U.contiguous(), shape)
