"""Nodes that move values without changing them: reshapes and identities.

``nn.Flatten``, ``torch.flatten`` / ``Tensor.flatten`` (from dimension 1 on),
``Tensor.view`` / ``Tensor.reshape`` that keep the batch dimension, ``nn.Identity``
and ``nn.Dropout`` in eval mode (or with ``p = 0``). Each is a linear map of one
input whose transpose is the inverse reshape.
"""
from __future__ import annotations

from torch import Tensor, nn

from hesskit.engines.native.chain import UnsupportedModelError
from hesskit.engines.native.rules.base import LinearMapRule, describe

__all__ = ["ReshapeRule", "IdentityRule"]


class ReshapeRule(LinearMapRule):
    """A reshape of each sample: ``(N, *a) -> (N, *b)``.

    Args:
        name: the node's name.
        fn: computes the output from the input and the call's other arguments
            (``nn.Flatten``'s forward, ``torch.flatten``, ``Tensor.view``, ...).
        what: the module or function, for messages.
    """

    def __init__(self, name: str, fn, what):
        super().__init__(name)
        self.fn, self.what = fn, what

    @classmethod
    def from_flatten_module(cls, name: str, module: nn.Flatten) -> "ReshapeRule":
        if module.start_dim == 0:
            raise UnsupportedModelError(f"{describe(name, module)} flattens the batch "
                                        "dimension (start_dim=0)")
        return cls(name, lambda x: module(x), module)

    def forward(self, x: Tensor, *args, **kwargs):
        y = self.fn(x, *args, **kwargs)
        if not isinstance(y, Tensor) or y.ndim == 0 or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise UnsupportedModelError(
                f"{describe(self.name, self.what)} maps inputs of shape {tuple(x.shape)} to "
                f"{got}: the graph path needs the batch dimension kept first")
        return y, (x.shape[1:], y.shape[1:])

    def apply(self, ctx, t):
        return t.reshape(-1, *ctx[1])

    def transpose(self, ctx, U):
        return U.reshape(-1, *ctx[0])


class IdentityRule(LinearMapRule):
    """``nn.Identity``, and ``nn.Dropout`` in eval mode (refused in train mode if ``p > 0``)."""

    def __init__(self, name: str, module: nn.Module):
        super().__init__(name)
        self.module = module

    def check_mode(self, mode):
        if isinstance(self.module, nn.Dropout) and mode == "train" and self.module.p > 0:
            return (f"{describe(self.name, self.module)} draws random masks in train mode "
                    "(use mode='eval')")
        return None

    def forward(self, x: Tensor):
        return x, None

    def apply(self, ctx, t):
        return t

    def transpose(self, ctx, U):
        return U
