"""Pointwise activations :math:`y = \\sigma(z)`, as modules, functions or methods.

.. math::

    \\dot y = \\sigma'(z) \\odot \\dot z, \\qquad
    \\dot g_z = \\sigma'(z) \\odot U + \\sigma''(z) \\odot g \\odot \\dot z .

:math:`\\sigma'` and :math:`\\sigma''` are taken at the forward pass by automatic
differentiation of :math:`\\sigma` itself (for a pointwise map, the gradient of
:math:`\\sum_i \\sigma(z_i)` is :math:`\\sigma'(z)`), so they are exactly the
derivatives autograd uses for the model, kinks included. ReLU and LeakyReLU are
piecewise linear: their :math:`\\sigma''` term is zero and skipped.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesskit._reference import _SEQ_ACTIVATIONS
from hesskit.engines.native.chain import ACTIVATION_CODES, UnsupportedModelError, _activation_of
from hesskit.engines.native.rules.base import Rule, describe

__all__ = ["ActivationRule", "ACTIVATION_FUNCTIONS", "ACTIVATION_METHODS"]

_PIECEWISE_LINEAR = {ACTIVATION_CODES["relu"], ACTIVATION_CODES["leaky_relu"]}

#: functions accepted as activations: target -> whether piecewise linear
ACTIVATION_FUNCTIONS: dict[Callable, bool] = {
    F.relu: True, torch.relu: True, F.leaky_relu: True, torch.tanh: False, F.tanh: False,
    torch.sigmoid: False, F.sigmoid: False, F.gelu: False, F.silu: False, F.elu: False,
    F.softplus: False,
}
#: tensor methods accepted as activations: name -> whether piecewise linear
ACTIVATION_METHODS: dict[str, bool] = {"relu": True, "tanh": False, "sigmoid": False}


class ActivationRule(Rule):
    """Products through a pointwise activation.

    Args:
        name: the node's name.
        sigma: the activation as a pure function of one tensor.
        piecewise_linear: whether :math:`\\sigma'' = 0` wherever it is defined.
    """

    def __init__(self, name: str, sigma: Callable[[Tensor], Tensor], piecewise_linear: bool):
        super().__init__(name)
        self.sigma, self.piecewise_linear = sigma, piecewise_linear

    @classmethod
    def from_module(cls, name: str, module: nn.Module) -> "ActivationRule":
        act = _activation_of(module)
        if act is None:
            raise UnsupportedModelError(f"{describe(name, module)} is not a supported activation")
        fn = _SEQ_ACTIVATIONS[act.code]
        return cls(name, lambda z: fn(z, act.arg0, act.arg1), act.code in _PIECEWISE_LINEAR)

    @classmethod
    def from_function(cls, name: str, target: Callable, args: tuple, kwargs: dict
                      ) -> "ActivationRule":
        """An activation called as ``target(x, *args, **kwargs)`` with constant extra
        arguments (``inplace`` is dropped: the engine never writes into its inputs)."""
        extra = dict(kwargs)
        try:
            bound = inspect.signature(target).bind(None, *args, **kwargs)
            extra = {k: v for k, v in list(bound.arguments.items())[1:]}
        except (TypeError, ValueError):
            if args:
                raise UnsupportedModelError(f"{describe(name, target)} is called with "
                                            f"positional arguments {args}") from None
        extra.pop("inplace", None)
        return cls(name, lambda z: target(z, **extra), ACTIVATION_FUNCTIONS[target])

    @classmethod
    def from_method(cls, name: str, method: str) -> "ActivationRule":
        return cls(name, lambda z: getattr(z, method)(), ACTIVATION_METHODS[method])

    def forward(self, z: Tensor, *_, **__):
        with torch.enable_grad():
            zr = z.detach().requires_grad_(True)
            y = self.sigma(zr)
            d1, = torch.autograd.grad(y.sum(), zr, create_graph=not self.piecewise_linear)
            d2 = None
            if not self.piecewise_linear:
                d2 = torch.autograd.grad(d1.sum(), zr, allow_unused=True)[0]
        return y.detach(), (d1.detach(), d2)

    def rforward(self, ctx, k, dins, dparams):
        dz = dins[0]
        if dz is None:
            return None
        return (dz.view(k, *ctx[0].shape) * ctx[0]).view(dz.shape)

    def backward(self, ctx, k, U, g, dins, dparams, need_inputs, want):
        d1, d2 = ctx
        if not need_inputs[0]:
            return [None], {}
        out = None
        if U is not None:
            out = (U.view(-1, *d1.shape) * d1).view(U.shape)
        if g is not None and d2 is not None and dins[0] is not None:
            dz = dins[0]
            term = (dz.view(-1, *d1.shape) * (d2 * g)).view(dz.shape)
            out = term if out is None else out.add_(term)
        return [out], {}

    def keeps_input_tangents(self, selected):
        return not self.piecewise_linear
