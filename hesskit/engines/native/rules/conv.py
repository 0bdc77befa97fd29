"""``nn.Conv1d`` / ``nn.Conv2d``: :math:`y = W \\star x + b` (stride, zero padding
including ``"same"``, dilation, groups).

The convolution is linear in :math:`x` and in :math:`W` separately, so

.. math::

    \\dot y = W \\star \\dot x + \\dot W \\star x + \\dot b, \\qquad
    \\dot g_x = W^\\top \\star U + \\dot W^\\top \\star g, \\qquad
    \\dot g_W = \\nabla_W(x, U) + \\nabla_W(\\dot x, g), \\qquad
    \\dot g_b = \\textstyle\\sum U,

with :math:`W^\\top \\star` the input gradient and :math:`\\nabla_W(x, U)` the weight
gradient of the convolution (``aten.convolution_backward``). The k tangents go
through each term in one call: tangents of :math:`x` as a batch of k N samples;
the k weight tangents stacked along the output channels (one convolution of
:math:`x` with k Cout channels, whose weight gradient against the k output-side
tangents stacked the same way is :math:`\\nabla_W(x, U)` for all k); the
second-order terms through a convolution whose input holds the k tangents as
k Cin channels and whose weight stacks the k weight tangents along the input
channels: its input gradient for :math:`g` is :math:`\\dot W^\\top \\star g` and its
weight gradient is :math:`\\nabla_W(\\dot x, g)`, for all k at once. Channels are
regrouped as ``(groups, k, channels/groups)`` so that each group sees its own weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesskit.engines.native.rules.base import Rule, add, describe, shape_only
from hesskit.engines.native.chain import UnsupportedModelError

__all__ = ["ConvRule"]

_convolution_backward = torch.ops.aten.convolution_backward


def _stack(dW: Tensor, g: int) -> Tensor:
    """``(k, Cout, Cin/g, *ks)`` -> ``(g k Cout/g, Cin/g, *ks)``, channels ``(g, k, Cout/g)``."""
    k, c = dW.shape[:2]
    return dW.reshape(k, g, c // g, *dW.shape[2:]).transpose(0, 1).reshape(-1, *dW.shape[2:])


def _unstack(W: Tensor, k: int, g: int) -> Tensor:
    """Inverse of :func:`_stack`."""
    return W.reshape(g, k, -1, *W.shape[1:]).transpose(0, 1).reshape(k, -1, *W.shape[1:])


def _fold(t: Tensor, k: int, g: int) -> Tensor:
    """Tangents ``(k N, C, *sp)`` -> ``(N, g k C/g, *sp)``, channels ``(g, k, C/g)``."""
    c, sp = t.shape[1], t.shape[2:]
    t = t.reshape(k, -1, g, c // g, *sp)
    return t.permute(1, 2, 0, *range(3, t.ndim)).reshape(t.shape[1], -1, *sp)


def _unfold(t: Tensor, k: int, g: int) -> Tensor:
    """Inverse of :func:`_fold`."""
    n, sp = t.shape[0], t.shape[2:]
    t = t.reshape(n, g, k, -1, *sp)
    return t.permute(2, 0, 1, *range(3, t.ndim)).reshape(k * n, -1, *sp)


def _stack_inputs(dW: Tensor) -> Tensor:
    """``(k, Cout, Cin/g, *ks)`` -> ``(Cout, k Cin/g, *ks)``: the k weight tangents side by
    side along the input channels (ordered ``(k, Cin/g)`` within each group)."""
    return dW.transpose(0, 1).reshape(dW.shape[1], -1, *dW.shape[3:])


class ConvRule(Rule):
    """Products through ``nn.Conv1d`` / ``nn.Conv2d`` with zero padding."""

    def __init__(self, name: str, module: nn.Conv1d | nn.Conv2d):
        super().__init__(name)
        if module.padding_mode != "zeros":
            raise UnsupportedModelError(
                f"{describe(name, module)} has padding_mode={module.padding_mode!r}; the graph "
                "engine supports only 'zeros'")
        self.module = module
        prefix = f"{name}." if name else ""
        self.weight_name = prefix + "weight"
        self.bias_name = prefix + "bias" if module.bias is not None else None
        self.param_names = tuple(n for n in (self.weight_name, self.bias_name) if n)
        d = len(module.kernel_size)
        self.stride, self.dilation = list(module.stride), list(module.dilation)
        self.groups = module.groups
        self.pre_pad = None  # F.pad widths for "same" with uneven padding
        if module.padding == "valid":
            self.padding = [0] * d
        elif module.padding == "same":
            total = [dil * (ks - 1) for dil, ks in zip(module.dilation, module.kernel_size)]
            if all(t % 2 == 0 for t in total):
                self.padding = [t // 2 for t in total]
            else:
                self.padding = [0] * d
                self.pre_pad = [w for t in reversed(total) for w in (t // 2, t - t // 2)]
        else:
            self.padding = list(module.padding)
        self.zeros = [0] * d

    def _pad(self, x: Tensor) -> Tensor:
        return x if self.pre_pad is None else F.pad(x, self.pre_pad)

    def _crop(self, x: Tensor) -> Tensor:
        if self.pre_pad is None:
            return x
        for dim, (left, right) in enumerate(zip(self.pre_pad[::2], self.pre_pad[1::2])):
            axis = x.ndim - 1 - dim
            x = x.narrow(axis, left, x.shape[axis] - left - right)
        return x

    def _conv(self, x: Tensor, W: Tensor, b: Tensor | None, groups: int) -> Tensor:
        return torch.convolution(x, W, b, self.stride, self.padding, self.dilation, False,
                                 self.zeros, groups)

    def _grad_input(self, U: Tensor, shape, W: Tensor, groups: int) -> Tensor:
        return _convolution_backward(U, shape_only(shape, U), W, None, self.stride, self.padding,
                                     self.dilation, False, self.zeros, groups,
                                     [True, False, False])[0]

    def _grad_weight(self, U: Tensor, x: Tensor, shape, groups: int) -> Tensor:
        return _convolution_backward(U, x, shape_only(shape, x), None, self.stride, self.padding,
                                     self.dilation, False, self.zeros, groups,
                                     [False, True, False])[1]

    def forward(self, x: Tensor):
        xp = self._pad(x)
        bias = None if self.module.bias is None else self.module.bias.detach()
        y = self._conv(xp, self.module.weight.detach(), bias, self.groups)
        return y, (xp, y.shape)

    def rforward(self, ctx, k, dins, dparams):
        xp, shape = ctx
        W, g = self.module.weight.detach(), self.groups
        out = None
        if dins[0] is not None:
            out = self._conv(self._pad(dins[0]), W, None, g)
        dW = dparams.get(self.weight_name)
        db = dparams.get(self.bias_name) if self.bias_name else None
        if dW is not None:  # with the bias tangents as the stacked convolution's bias
            bias = None if db is None else _stack(db, g)
            y = _unfold(self._conv(xp, _stack(dW, g), bias, g), k, g)
            return y if out is None else out.add_(y)  # out: this call's own tensor
        if db is not None:
            db = db.reshape(k, 1, -1, *[1] * (len(shape) - 2))
            if out is None:
                out = db.expand(k, *shape).reshape(k * shape[0], *shape[1:])
            else:
                out = (out.view(k, *shape) + db).view(out.shape)
        return out

    def backward(self, ctx, k, U, g_out, dins, dparams, need_inputs, want):
        xp = ctx[0]
        W, g = self.module.weight.detach(), self.groups
        n = xp.shape[0]
        grad_x, gW = None, None
        if need_inputs[0] and U is not None:
            grad_x = self._grad_input(U, (k * n, *xp.shape[1:]), W, g)
        if self.weight_name in want and U is not None:
            gW = _unstack(self._grad_weight(_fold(U, k, g), xp, (k * W.shape[0], *W.shape[1:]),
                                            g), k, g)
        second_x, second_w = self._second_order(k, g_out, dins[0],
                                                dparams.get(self.weight_name), xp,
                                                need_inputs[0], self.weight_name in want)
        grad_x, gW = add(grad_x, second_x), add(gW, second_w)
        grads = {} if gW is None else {self.weight_name: gW}
        if self.bias_name in want and U is not None:
            grads[self.bias_name] = U.reshape(k, n, U.shape[1], -1).sum((1, 3))
        return [None if grad_x is None else self._crop(grad_x)], grads

    def _second_order(self, k, g_out, dx, dW, xp, need_input: bool, need_weight: bool):
        """``(W'^T * g, grad_W(x', g))`` for the k tangents, both from one convolution
        whose input is the tangents ``x'`` as k Cin channels and whose weight is the
        weight tangents side by side (the input and weight gradients of that
        convolution for the output gradient ``g``); ``None`` where not needed."""
        need_input = need_input and g_out is not None and dW is not None
        need_weight = need_weight and g_out is not None and dx is not None
        if not (need_input or need_weight):
            return None, None
        W, g = self.module.weight, self.groups
        wide = (W.shape[0], k * W.shape[1], *W.shape[2:])
        inputs = _fold(self._pad(dx), k, g) if dx is not None else \
            shape_only((xp.shape[0], k * xp.shape[1], *xp.shape[2:]), g_out)
        weights = _stack_inputs(dW) if dW is not None else shape_only(wide, g_out)
        gx, gw, _ = _convolution_backward(g_out, inputs, weights, None, self.stride,
                                          self.padding, self.dilation, False, self.zeros, g,
                                          [need_input, need_weight, False])
        gx = _unfold(gx, k, g) if need_input else None
        gw = gw.view(W.shape[0], k, *W.shape[1:]).transpose(0, 1) if need_weight else None
        return gx, gw

    def sample_jacobians(self, ctx, k, U, names):
        """Per sample, the weight gradient :math:`U_n \\star x_n` as a product with the
        input's patches (``unfold``; a Conv1d as a Conv2d of height 1), group by group,
        and :math:`\\sum_p U_{n,p}` for the bias."""
        xp = ctx[0]
        n, g = xp.shape[0], self.groups
        cout = self.module.out_channels
        parts = {self.bias_name: U.reshape(k, n, cout, -1).sum(3)}
        if self.weight_name in names:
            square = xp.ndim == 4
            patches = F.unfold(xp if square else xp.unsqueeze(2),
                               tuple(self.module.kernel_size) if square
                               else (1, self.module.kernel_size[0]),
                               dilation=self.dilation if square else [1, *self.dilation],
                               padding=self.padding if square else [0, *self.padding],
                               stride=self.stride if square else [1, *self.stride])
            patches = patches.view(n, g, -1, patches.shape[-1])  # (N, g, Cin/g ks, L)
            Ug = U.reshape(k, n, g, cout // g, patches.shape[-1])
            parts[self.weight_name] = torch.einsum("kngol,ngil->kngoi", Ug,
                                                   patches).reshape(k, n, -1)
        return torch.cat([parts[name] for name in names], dim=2)

    def keeps_input_tangents(self, selected):
        return self.weight_name in selected
