"""Exact layer blocks, diagonal and dense matrix of the graph path, from basis tangents.

Every node :math:`l` with parameters computes :math:`z_l = f_l(x_l; \\theta_l)`,
affine in its own parameters :math:`\\theta_l` (Linear, Conv, BatchNorm in eval), and
:math:`x_l` does not depend on them, so the layer's diagonal block of the curvature
matrix is

.. math::

    B_l = \\sum_n J_{l,n}^\\top M_{l,n} J_{l,n}, \\qquad
    J_{l,n} = \\partial z_{l,n} / \\partial \\theta_l, \\qquad
    M_{l,n} = \\nabla^2_{z_{l,n}} \\ell_n

with :math:`M_{l,n}` the Hessian of the loss with respect to the layer's output
(:math:`J_{f \\leftarrow z}^\\top \\nabla^2_f \\ell\\, J_{f \\leftarrow z}` for the GGN,
the difference for the functional part). Two exact ways, chosen per layer:

* **basis tangents** of :math:`\\theta_l`: the tangent of :math:`z_l` along a basis
  direction :math:`e_j` is the layer applied to its cached input with a one-hot
  parameter tangent, so the R-forward pass starts at :math:`l` (nothing upstream
  moves) and the R-backward pass stops there: :math:`P_l` columns
  :math:`B_l e_j` at the cost of the downstream part of a product, k at a time
  (tangents stacked along the batch, column blocks within the engine's memory).
  Convolutions, BatchNorm, a bias alone, Linear layers on more than one row per
  sample.
* **Kronecker factors** for a Linear layer :math:`z_n = W a_n + b` with one row per
  sample: seeds :math:`e_i` at :math:`z_l` (for every sample at once: samples do not
  interact) give :math:`M_{l,n} e_i` in one pass, so the m columns of every
  :math:`M_{l,n}` cost m tangents instead of :math:`m (n + 1)`, and
  :math:`B_l = \\sum_n M_{l,n} \\otimes \\tilde a_n \\tilde a_n^\\top` with
  :math:`\\tilde a_n = [a_n; 1]` (``kron_block``; Botev, Ritter & Barber 2017, Dangel,
  Harmeling & Hennig 2020).

* **per-sample Jacobians** for the GGN, and for the Hessian when no node downstream of
  the layer has a second-order term in its inputs alone (piecewise-linear activations,
  pooling, BatchNorm in eval, reshapes, additions, and Linear/Conv layers, whose
  input-weight terms vanish without weight tangents: then :math:`M_{l,n}` is
  :math:`J_{f \\leftarrow z}^\\top \\nabla^2_f \\ell_n J_{f \\leftarrow z}` and
  the functional part of the block is exactly zero): C backward passes from the
  outputs (C classes, k at a time) give :math:`K_n = J_{f \\leftarrow \\theta_l, n}`
  (C × :math:`P_l` per sample, :meth:`Rule.sample_jacobians`) and
  :math:`B_l = \\sum_n K_n^\\top \\nabla^2_f \\ell_n K_n`, one GEMM of inner size
  N C (BackPACK's exact square-root GGN, Dangel, Kunstner & Hennig 2020). On a
  convolution this costs C backward passes instead of :math:`P_l` R-passes.

The diagonal keeps only the diagonal entries of the same passes
(:math:`\\sum_n \\operatorname{diag}(M_{l,n}) \\otimes (\\tilde a_n \\odot \\tilde a_n)`
for the Kronecker layers). The dense matrix takes the basis columns of each layer in
the graph's (topological) order: their R-backward pass visits every node from that
layer on, so they give the rows of the layer and of every later one; the rows of
earlier layers are, by symmetry, the transposes of those layers' own columns. No
column moves through the nodes upstream of its layer, forward or backward.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hesskit import ops
from hesskit.engines.native.reader import Step
from hesskit.engines.native.rules.linear import LinearRule

if TYPE_CHECKING:
    from hesskit.engines.native.graph import GraphPath

__all__ = ["layer_blocks", "diagonal", "dense"]


@dataclass
class _Layer:
    """A node with selected parameters: its position in ``graph.steps``, the step and
    the selected parameters' names in the objective's flattening order."""

    index: int
    step: Step
    names: list[str]

    @property
    def node(self) -> str:
        return self.step.node.name

    def kronecker(self, state) -> bool:
        """Whether the Kronecker factors give the block: a Linear layer whose weight
        is selected and whose input has one row per sample."""
        rule = self.step.rule
        return (isinstance(rule, LinearRule) and rule.weight_name in self.names
                and state.ctxs[self.node].ndim == 2)


def _first_order_downstream(engine: "GraphPath", layer: _Layer) -> bool:
    """Whether no node downstream of ``layer`` has a second-order term in its input
    tangents alone (none of them reads its input tangents when no parameter of theirs
    is differentiated): then the layer's Hessian block is its GGN block and its
    functional block is zero, exactly."""
    forward = engine.flow(set(layer.names), set()).forward
    return not any(step.rule.keeps_input_tangents(set()) for step in engine.graph.steps
                   if step.rule is not None and step.node.name in forward
                   and step is not layer.step)


def _method(engine: "GraphPath", kind: str, layer: _Layer, state) -> str:
    """How the layer's block is computed: ``"kronecker"``, ``"zero"``, ``"jacobians"``
    or ``"basis"`` (see the module docstring)."""
    first_order = kind != "ggn" and _first_order_downstream(engine, layer)
    if kind == "functional" and first_order:
        return "zero"
    if layer.kronecker(state):
        return "kronecker"
    return "jacobians" if kind == "ggn" or first_order else "basis"


def _layers(engine: "GraphPath") -> list[_Layer]:
    """The nodes with selected parameters, in graph order."""
    order = engine.objective.param_names
    layers = []
    for index, step in enumerate(engine.graph.steps):
        if step.rule is not None:
            names = [n for n in order if n in step.rule.param_names]
            if names:
                layers.append(_Layer(index, step, names))
    return layers


def _passes(engine: "GraphPath", kind: str):
    """``(chunk weight, forward state)`` of every chunk of one pass over the data."""
    for chunk in engine.objective.chunks():
        yield chunk.weight, engine.chunk_state(kind, chunk)


def _sizes(engine: "GraphPath", names: list[str]) -> list[int]:
    size = dict(zip(engine.objective.param_names, engine.objective.param_sizes))
    return [size[n] for n in names]


def _basis_columns(engine: "GraphPath", kind: str, state, layer: _Layer, flow,
                   rows: list[str], lo: int, hi: int) -> Tensor:
    """Columns ``lo:hi`` of the curvature matrix over ``layer.names`` (the layer's
    selected parameters, concatenated), on the rows of the parameters ``rows``:
    ``(sum of their sizes, hi - lo)``, from basis tangents started at the layer."""
    obj, k = engine.objective, hi - lo
    shapes = dict(zip(obj.param_names, obj.param_shapes))
    dparams, offset = {}, 0
    for name, size in zip(layer.names, _sizes(engine, layer.names)):
        a, b = max(lo, offset), min(hi, offset + size)
        if a < b:
            t = torch.zeros(k, size, dtype=obj.dtype, device=obj.device)
            t[torch.arange(a - lo, b - lo), torch.arange(a - offset, b - offset)] = 1
            dparams[name] = t.view(k, *shapes[name])
        offset += size
    grads, _ = engine.tangent_pass(kind, state, k, flow, dparams)
    return torch.cat([grads[n].reshape(k, s) if n in grads else
                      torch.zeros(k, s, dtype=obj.dtype, device=obj.device)
                      for n, s in zip(rows, _sizes(engine, rows))], dim=1).T


def _column_ranges(engine: "GraphPath", state, n_columns: int):
    step = engine.columns_per_pass(state, torch.empty((), dtype=engine.objective.dtype)
                                   .element_size())
    return [(lo, min(lo + step, n_columns)) for lo in range(0, n_columns, step)]


def _output_hessians(engine: "GraphPath", kind: str, state, layer: _Layer) -> Tensor:
    """:math:`M_{l,n}` (N, m, m) of a Kronecker layer (exactly symmetric): seeds
    :math:`e_i` at the layer's output for every sample, i in column blocks."""
    rule = layer.step.rule
    A = state.ctxs[layer.node]
    n, m = A.shape[0], rule.module.out_features
    flow = engine.flow({rule.weight_name}, set())
    M = A.new_zeros(n, m, m)
    for lo, hi in _column_ranges(engine, state, m):
        k = hi - lo
        seed = A.new_zeros(k, n, m)
        seed[torch.arange(k), :, torch.arange(lo, hi)] = 1
        _, U = engine.tangent_pass(kind, state, k, flow, {}, seed=(layer.node,
                                                                     seed.view(k * n, m)))
        if U is not None:  # M[n, j, i] = (M_n e_i)_j
            M[:, :, lo:hi] = U.view(k, n, m).permute(1, 2, 0)
    return (M + M.mT) / 2


def _jacobians(engine: "GraphPath", state, layer: _Layer) -> tuple[Tensor, Tensor]:
    """``(K, HK)``: the per-sample Jacobians :math:`K_n` of the outputs with respect to
    the layer's selected parameters and :math:`\\nabla^2_f \\ell_n K_n`, both
    ``(C, N, P_l)``; from C backward passes seeded with :math:`e_c` at the outputs
    (every sample at once), stopped at the layer."""
    rule, f = layer.step.rule, state.loss.f
    n, classes = f.shape
    flow = replace(engine.flow(set(layer.names), set()), forward=set())
    K = None
    for lo, hi in _column_ranges(engine, state, classes):
        k = hi - lo
        seed = f.new_zeros(k, n, classes)
        seed[torch.arange(k), :, torch.arange(lo, hi)] = 1
        _, U = engine.tangent_pass("ggn", state, k, flow, {}, stop=layer.node,
                                   cotangents=seed.view(k * n, classes))
        part = rule.sample_jacobians(state.ctxs[layer.node], k, U, layer.names)
        if K is None:
            K = part.new_empty(classes, n, part.shape[2])
        K[lo:hi] = part
    eye = torch.eye(classes, dtype=f.dtype, device=f.device)
    H = state.loss.hessian_matmat(eye.unsqueeze(1).expand(classes, n, classes)
                                  .reshape(classes * n, classes), classes)
    HK = torch.einsum("dnc,dnj->cnj", H.view(classes, n, classes), K)  # H[d, n, c] = H_n[c, d]
    return K, HK


def _kronecker_order(layer: _Layer, m: int, n_in: int) -> Tensor | None:
    """Rows of ``kron_block(_with_bias)``'s ``[W.reshape(-1), b]`` in the order of
    ``layer.names`` (``None`` when it is that order already)."""
    rule = layer.step.rule
    if layer.names[0] == rule.weight_name:
        return None
    return torch.cat([torch.arange(m * n_in, m * n_in + m), torch.arange(m * n_in)])


def _kronecker_block(layer: _Layer, A: Tensor, M: Tensor) -> Tensor:
    rule = layer.step.rule
    with_bias = rule.bias_name in layer.names
    block = ops.kron_block_with_bias(A, M) if with_bias else ops.kron_block(A, M)
    order = _kronecker_order(layer, M.shape[1], A.shape[1])
    return block if order is None else block[order][:, order]


def layer_blocks(engine: "GraphPath", kind: str) -> dict[str, Tensor]:
    """``{module name: exact block over its selected parameters}`` (see the module
    docstring) in the objective's flattening order, weighted and summed over the
    chunks."""
    blocks: dict[str, Tensor] = {}
    layers = _layers(engine)
    for weight, state in _passes(engine, kind):
        for layer in layers:
            method = _method(engine, kind, layer, state)
            size = sum(_sizes(engine, layer.names))
            if method == "kronecker":
                part = _kronecker_block(layer, state.ctxs[layer.node],
                                        _output_hessians(engine, kind, state, layer) * weight)
            elif method == "zero":
                part = torch.zeros(size, size, dtype=engine.objective.dtype,
                                   device=engine.objective.device)
            elif method == "jacobians":
                K, HK = _jacobians(engine, state, layer)
                part = K.reshape(-1, size).T @ HK.reshape(-1, size)
                part = (part + part.mT).mul_(weight / 2)
            else:
                flow = engine.flow(set(layer.names), set(layer.names))
                part = torch.empty(size, size, dtype=engine.objective.dtype,
                                   device=engine.objective.device)
                for lo, hi in _column_ranges(engine, state, size):
                    part[:, lo:hi] = _basis_columns(engine, kind, state, layer, flow,
                                                    layer.names, lo, hi)
                part = (part + part.mT).mul_(weight / 2)
            name = layer.step.rule.name
            blocks[name] = part if name not in blocks else blocks[name].add_(part)
    # the flattening order of the modules (a forward may call them in another order)
    first = {layer.step.rule.name: engine.objective.param_names.index(layer.names[0])
             for layer in layers}
    return dict(sorted(blocks.items(), key=lambda item: first[item[0]]))


def diagonal(engine: "GraphPath", kind: str) -> Tensor:
    """The exact diagonal (P,) from the passes of :func:`layer_blocks`, without
    forming a block."""
    obj = engine.objective
    diag = torch.zeros(obj.n_params, dtype=obj.dtype, device=obj.device)
    slices = obj.slices()
    layers = _layers(engine)
    for weight, state in _passes(engine, kind):
        for layer in layers:
            method = _method(engine, kind, layer, state)
            if method == "kronecker":
                A = state.ctxs[layer.node]
                d = _output_hessians(engine, kind, state, layer).diagonal(dim1=1, dim2=2)
                parts = {layer.step.rule.weight_name: (d.T @ (A * A)).reshape(-1),
                         layer.step.rule.bias_name: d.sum(0)}
                values = torch.cat([parts[n] for n in layer.names])
            elif method == "zero":
                continue
            elif method == "jacobians":
                K, HK = _jacobians(engine, state, layer)
                values = (K * HK).sum((0, 1))
            else:
                flow = engine.flow(set(layer.names), set(layer.names))
                values = torch.cat([
                    _basis_columns(engine, kind, state, layer, flow, layer.names, lo, hi)
                    [torch.arange(lo, hi), torch.arange(hi - lo)]
                    for lo, hi in _column_ranges(engine, state, sum(_sizes(engine,
                                                                           layer.names)))])
            diag[_positions(slices, layer.names)] += weight * values
    return diag


def _positions(slices: dict[str, slice], names: list[str]) -> Tensor:
    """Indices of ``names``' entries in the flat parameter vector."""
    return torch.cat([torch.arange(slices[n].start, slices[n].stop) for n in names])


def dense(engine: "GraphPath", kind: str) -> Tensor:
    """The exact (P, P) matrix: each layer's basis columns on the rows of that layer
    and the later ones, the rest by symmetry (see the module docstring)."""
    obj = engine.objective
    slices = obj.slices()
    layers = _layers(engine)
    D = torch.zeros(obj.n_params, obj.n_params, dtype=obj.dtype, device=obj.device)
    position = [_positions(slices, layer.names).to(obj.device) for layer in layers]
    plans = []  # per layer: the rows of it and the later layers, and the pass over them
    for i, layer in enumerate(layers):
        later = {n for other in layers[i:] for n in other.names}
        rows = [n for n in obj.param_names if n in later]
        plans.append((rows, _positions(slices, rows).to(obj.device),
                      engine.flow(set(layer.names), later, backward_from=layer.index)))
    for weight, state in _passes(engine, kind):
        for i, (layer, (rows, row_index, flow)) in enumerate(zip(layers, plans)):
            for lo, hi in _column_ranges(engine, state, len(position[i])):
                C = _basis_columns(engine, kind, state, layer, flow, rows, lo, hi)
                D.index_put_((row_index[:, None], position[i][None, lo:hi]), C * weight,
                             accumulate=True)
    for i, cols in enumerate(position):
        own = D[cols[:, None], cols]
        D[cols[:, None], cols] = (own + own.mT) / 2
        for later in position[i + 1:]:
            D[cols[:, None], later] = D[later[:, None], cols].mT
    return D
