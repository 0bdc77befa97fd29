"""``nn.Linear``: :math:`y = x W^\\top + b` over the last dimension.

With rows :math:`r` (samples and any middle dimensions), tangents :math:`\\dot x,
\\dot W, \\dot b`, incoming R-gradient :math:`U` and first-order gradient :math:`g`:

.. math::

    \\dot y = \\dot x W^\\top + x \\dot W^\\top + \\dot b, \\qquad
    \\dot g_x = U W + g \\dot W, \\qquad
    \\dot g_W = U^\\top x + g^\\top \\dot x, \\qquad \\dot g_b = \\textstyle\\sum_r U_r .
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hesskit.engines.native.rules.base import Rule, add

__all__ = ["LinearRule"]


class LinearRule(Rule):
    """Products through an ``nn.Linear`` module."""

    def __init__(self, name: str, module: nn.Linear):
        super().__init__(name)
        self.module = module
        prefix = f"{name}." if name else ""
        self.weight_name = prefix + "weight"
        self.bias_name = prefix + "bias" if module.bias is not None else None
        self.param_names = tuple(n for n in (self.weight_name, self.bias_name) if n)

    def forward(self, x: Tensor):
        return self.module(x), x

    def rforward(self, x, k, dins, dparams):
        W = self.module.weight.detach()
        m, n_in = W.shape
        out = None  # (k, R, m)
        if dins[0] is not None:
            out = (dins[0] @ W.T).view(k, -1, m)
        dW = dparams.get(self.weight_name)
        if dW is not None:
            xdW = x.reshape(-1, n_in) @ dW.reshape(k * m, n_in).T  # (R, k m)
            out = add(out, xdW.view(-1, k, m).transpose(0, 1))
        db = dparams.get(self.bias_name) if self.bias_name else None
        if db is not None:
            rows = x.numel() // n_in
            out = db.view(k, 1, m).expand(k, rows, m) if out is None else out + db.view(k, 1, m)
        return None if out is None else out.reshape(k * x.shape[0], *x.shape[1:-1], m)

    def backward(self, x, k, U, g, dins, dparams, need_inputs, want):
        W = self.module.weight.detach()
        n_in, m = W.shape[1], W.shape[0]
        grad_x = None
        if need_inputs[0]:
            if U is not None:
                grad_x = U @ W
            dW = dparams.get(self.weight_name)
            if g is not None and dW is not None:
                gdW = g.reshape(-1, m) @ dW.transpose(0, 1).reshape(m, k * n_in)  # (R, k n)
                gdW = gdW.view(-1, k, n_in).transpose(0, 1).reshape(k * x.shape[0], *x.shape[1:])
                grad_x = add(grad_x, gdW)
        grads = {}
        rows = x.reshape(-1, n_in)
        if self.weight_name in want:
            gW = None
            if U is not None:
                gW = U.reshape(k, -1, m).transpose(1, 2) @ rows
            if g is not None and dins[0] is not None:
                gW = add(gW, g.reshape(-1, m).T @ dins[0].reshape(k, -1, n_in))
            if gW is not None:
                grads[self.weight_name] = gW
        if self.bias_name in want and U is not None:
            grads[self.bias_name] = U.reshape(k, -1, m).sum(1)
        return [grad_x], grads

    def sample_jacobians(self, x, k, U, names):
        """:math:`(U_n^\\top x_n, \\sum_r U_{n,r})` per sample, rows r within a sample."""
        n_in, m, n = x.shape[-1], self.module.out_features, x.shape[0]
        rows, Uk = x.reshape(n, -1, n_in), U.reshape(k, n, -1, m)
        parts = {self.weight_name: torch.einsum("knri,nra->knia", Uk, rows).reshape(k, n, -1),
                 self.bias_name: Uk.sum(2)}
        return torch.cat([parts[name] for name in names], dim=2)

    def keeps_input_tangents(self, selected):
        return self.weight_name in selected
