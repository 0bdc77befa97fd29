"""The ``autograd`` engine: products by double backward.

Hessian-vector products use Pearlmutter's (1994) trick
:math:`Hv = \\nabla_\\theta (\\nabla_\\theta \\ell^\\top v)`: one gradient with
``create_graph=True``, then one backward pass through it per vector. When the data
is a single chunk, the gradient graph is built once and reused across products
until the parameters change (their version counters move). GGN products use the
double-vjp trick for :math:`Jv` and one vjp for :math:`J^\\top u`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hesskit.engines.base import Engine
from hesskit.engines.output_hessian import output_hessian_matmat

__all__ = ["AutogradEngine"]


class AutogradEngine(Engine):
    """Double-backward products; works for every differentiable model."""

    name = "autograd"
    priority = 10

    def batches_columns(self, k: int) -> bool:
        """False: the columns are differentiated one after another."""
        return False

    def __init__(self, objective):
        super().__init__(objective)
        self._graph_key = None
        self._graph = None

    def _gradient_graph(self, chunk):
        obj = self.objective
        key = None
        if obj.single_chunk:  # the graph is valid while the data and parameters are unchanged
            key = (chunk.index, chunk.inputs.data_ptr(), tuple(chunk.inputs.shape),
                   tuple(p._version for p in obj.params))
        if key is not None and key == self._graph_key:
            return self._graph
        params = [p.detach().requires_grad_(True) for p in obj.params]
        with self.evaluation(chunk):
            loss = obj.chunk_loss(params, chunk)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        graph = (params, grads)
        if key is not None:
            self._graph_key, self._graph = key, graph
        return graph

    def hessian(self, chunk, V: Tensor) -> Tensor:
        obj = self.objective
        params, grads = self._gradient_graph(chunk)
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        out = torch.zeros_like(V)
        if not live:
            return out
        columns = obj.unflatten(V)
        for j in range(V.shape[1]):
            hv = torch.autograd.grad([grads[i] for i in live], params,
                                     grad_outputs=[columns[i][j] for i in live],
                                     retain_graph=True, allow_unused=True)
            out[:, j] = obj.flatten(hv)
        return out

    def ggn(self, chunk, V: Tensor) -> Tensor:
        obj = self.objective
        params = [p.detach().requires_grad_(True) for p in obj.params]
        with self.evaluation(chunk):
            outputs = obj.forward(params, chunk.inputs)
        columns = obj.unflatten(V)
        # J v through two vjps: g(u) = J^T u is linear in u, and d<g(u), v>/du = J v.
        dummy = torch.zeros_like(outputs, requires_grad=True)
        jt_dummy = torch.autograd.grad(outputs, params, dummy, create_graph=True,
                                       allow_unused=True)
        live = [i for i, g in enumerate(jt_dummy) if g is not None]
        JV = torch.stack([
            torch.autograd.grad([jt_dummy[i] for i in live], dummy,
                                [columns[i][j] for i in live], retain_graph=True)[0]
            for j in range(V.shape[1])])
        HJV = output_hessian_matmat(obj.loss_fn, outputs.detach(), chunk.targets, JV,
                                    obj.reduction)
        out = torch.empty_like(V)
        for j in range(V.shape[1]):
            out[:, j] = obj.flatten(torch.autograd.grad(outputs, params, HJV[j],
                                                        retain_graph=True, allow_unused=True))
        return out
