"""Residual addition :math:`y = a + b` of two tensors of one shape (``operator.add``,
``torch.add`` without ``alpha``, ``Tensor.add``): :math:`\\dot y = \\dot a + \\dot b`,
:math:`\\dot g_a = \\dot g_b = U`. Broadcasting additions are refused (their
transpose sums over the broadcast dimensions, which no model here needs)."""
from __future__ import annotations

from torch import Tensor

from hesskit.engines.native.chain import UnsupportedModelError
from hesskit.engines.native.rules.base import Rule, add, describe

__all__ = ["AddRule"]


class AddRule(Rule):
    """Products through the sum of two node values."""

    def __init__(self, name: str, what):
        super().__init__(name)
        self.what = what

    def forward(self, a: Tensor, b: Tensor):
        if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
            shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                      for t in (a, b)]
            raise UnsupportedModelError(f"{describe(self.name, self.what)} adds {shapes[0]} and "
                                        f"{shapes[1]}; the graph path needs two tensors of "
                                        "one shape")
        return a + b, None

    def rforward(self, ctx, k, dins, dparams):
        return add(dins[0], dins[1])

    def backward(self, ctx, k, U, g, dins, dparams, need_inputs, want):
        return [U if need else None for need in need_inputs], {}
