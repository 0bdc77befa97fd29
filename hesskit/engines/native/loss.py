"""The loss at the model outputs in the normalized form of
:func:`hesskit.engines.native.chain.loss_terms`:
:math:`\\ell = \\sum_n c_n \\Phi(f_n) - \\langle T_n, f_n \\rangle` with
:math:`\\Phi = \\operatorname{logsumexp}` (cross-entropy) or
:math:`\\tfrac12 \\lVert\\cdot\\rVert^2` (MSE), so that

.. math::

    \\nabla_f \\ell_n = c_n \\nabla\\Phi(f_n) - T_n, \\qquad
    \\nabla^2_f \\ell_n = c_n \\nabla^2\\Phi(f_n), \\qquad
    \\nabla^2 \\operatorname{logsumexp}(f)\\, u = p \\odot u - p\\, (p^\\top u),
    \\; p = \\operatorname{softmax}(f).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["OutputLoss"]


@dataclass
class OutputLoss:
    """The loss of one chunk at its outputs ``f`` (N, C)."""

    loss: str
    f: Tensor
    T: Tensor
    c: Tensor

    def __post_init__(self):
        self.p = torch.softmax(self.f, dim=1) if self.loss == "cross_entropy" else None

    def gradient(self) -> Tensor:
        """:math:`\\nabla_f \\ell`, (N, C)."""
        phi = self.p if self.p is not None else self.f
        return self.c.unsqueeze(1) * phi - self.T

    def hessian_matmat(self, U: Tensor, k: int) -> Tensor:
        """:math:`\\nabla^2_f \\ell` applied to k tangents stacked as ``(k N, C)``."""
        U = U.view(k, *self.f.shape)
        if self.p is not None:
            HU = self.p * U - self.p * (self.p * U).sum(2, keepdim=True)
        else:
            HU = U
        return (HU * self.c.unsqueeze(1)).view(k * self.f.shape[0], -1)
