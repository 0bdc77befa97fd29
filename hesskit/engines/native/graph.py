"""The native engine's graph path: exact curvature products for CNNs and ResNets, one
rule per layer.

The model is read as a graph (:func:`~hesskit.engines.native.reader.read_graph`); a
product with k vectors is

1. the forward pass, each rule keeping what it needs, and for Hessian and
   functional products the first-order backward pass :math:`g = \\partial\\ell/
   \\partial y` at every node (both kept between products at unchanged parameters,
   buffers and data);
2. the R-forward pass: every node's k tangents :math:`\\dot y = J V`, stacked along
   the batch;
3. the R-backward pass from :math:`U = \\nabla^2_f \\ell\\, \\dot f` at the outputs,
   each rule adding its second-order terms (Pearlmutter 1994).

The GGN :math:`J^\\top \\nabla^2_f\\ell\\, J` drops the second-order terms; the
functional part :math:`H - G` keeps only them (it starts the R-backward pass from
:math:`U = 0`), so it costs one product, not two. Only the nodes downstream of a
selected parameter carry tangents. Parameters are laid out by name, in the
objective's flattening (``model.named_parameters()`` order).

Exact layer blocks, the diagonal and the dense matrix come from the same passes
started at each layer, without P full products
(:mod:`~hesskit.engines.native.explicit`).

Supported: see :mod:`hesskit.engines.native.rules`; losses ``nn.CrossEntropyLoss``
(without class weights) and ``nn.MSELoss`` (and their functional forms) on
``(N, C)`` outputs, mean or sum.

Example:
    >>> import torch, hesskit as hk
    >>> from torch import nn
    >>> model = hk.models.lenet(10, 3)
    >>> obj = hk.Objective(model, nn.CrossEntropyLoss(), (torch.randn(8, 3, 32, 32),
    ...                    torch.randint(0, 10, (8,))))
    >>> engine = GraphPath(obj)
    >>> chunk = next(obj.chunks())
    >>> engine.hessian(chunk, torch.randn(obj.n_params, 4)).shape
    torch.Size([62006, 4])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hesskit.engines.native import explicit
from hesskit.engines.native.chain import UnsupportedModelError, loss_problem, loss_terms
from hesskit.engines.native.engine import NativeEngine, check_kind
from hesskit.engines.native.loss import OutputLoss
from hesskit.engines.native.reader import ModelGraph, read_graph, structure
from hesskit.engines.native.rules.base import add

__all__ = ["GraphPath"]


class _State:
    """A chunk's forward pass (rules' contexts, the loss at the outputs), its
    first-order gradients once computed, and what it was computed from."""

    def __init__(self, ctxs, sizes, loss: OutputLoss, inputs: Tensor, targets: Tensor):
        self.ctxs, self.sizes, self.loss = ctxs, sizes, loss
        self.inputs, self.targets = inputs, targets
        self.grads: dict[str, Tensor] | None = None
        self.sample_numel = sum(s for s in sizes.values())
        self.largest_numel = max(sizes.values(), default=0)

    @property
    def nbytes(self) -> int:
        tensors = [self.inputs, self.targets]
        for ctx in self.ctxs.values():
            tensors.extend(t for t in _tensors_in(ctx))
        tensors.extend((self.grads or {}).values())
        return sum(t.numel() * t.element_size() for t in tensors)


def _tensors_in(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors_in(item)


class GraphPath(NativeEngine):
    """Hessian, GGN and functional-part products through per-layer rules.

    Attributes:
        max_workspace_bytes: memory for one pass of tangents; larger blocks of
            vectors are processed in column blocks (the product is linear in ``V``).
        max_tangent_bytes: the largest single tangent tensor of a column block. Above
            glibc's largest mmap threshold (32 MiB) every such tensor is fresh memory
            whose pages the kernel zero-fills at first touch: on LeNet-5 (N=256, 1
            thread) a block of 32 columns cost 1.8 gradients per vector against 1.0
            for blocks of 2-6.
        max_state_bytes: memory for kept forward passes; chunks beyond it are
            recomputed on every product.
    """

    path = "graph"
    max_workspace_bytes = 1024 * 2**20
    max_tangent_bytes = 32 * 2**20
    max_state_bytes = 256 * 2**20

    def batches_columns(self, k: int) -> bool:
        """False on a CPU, where the k tangents stacked along the batch run at the
        GFLOP/s of one: on LeNet-5 (N=256, 1 thread) a product costs 0.89 gradients per
        vector at k=1 and 0.96 at k=16, on the ResNet 2.18 and 2.41 (bench_graph.py).
        True on a GPU, where one launch over k N samples fills the device."""
        return self.objective.device.type != "cpu"

    # ------------------------------------------------------------------ set-up
    @classmethod
    def unsupported_reason(cls, objective) -> str | None:
        try:
            cls._analyse(objective)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    @classmethod
    def _analyse(cls, objective) -> ModelGraph:
        reason = loss_problem(objective.loss_fn)
        if reason is not None:
            raise UnsupportedModelError(reason)
        graph = read_graph(objective.model, objective.mode)
        owners = graph.owners
        for name in objective.param_names:
            if name not in owners:
                raise UnsupportedModelError(f"parameter {name!r} is not used by a node with a "
                                            "rule in the graph path")
        for name, p in objective.model.named_parameters():
            if name in owners and (p.dtype != objective.dtype or p.device != objective.device):
                raise UnsupportedModelError(
                    f"parameter {name!r} is {p.dtype} on {p.device}; the graph path needs "
                    f"one dtype and device ({objective.dtype} on {objective.device})")
        if not objective.plain_batches:
            raise UnsupportedModelError("data: the batches reach the model through batch=/output= "
                                        "as more than model(inputs) -> outputs; the graph path "
                                        "needs (inputs, targets) pairs of tensors")
        chunk = next(iter(objective.chunks()))
        if chunk.inputs.dtype != objective.dtype:
            raise UnsupportedModelError(f"data: inputs are {getattr(chunk.inputs, 'dtype', None)}"
                                        f", the parameters {objective.dtype}")
        try:
            cls._run_forward(graph, objective, chunk.inputs[:2], chunk.targets[:2])
        except ValueError as exc:
            raise UnsupportedModelError(str(exc)) from None
        return graph

    def __init__(self, objective):
        super().__init__(objective)
        self._build()

    def _build(self) -> None:
        """Read the model (again) and drop every kept forward pass."""
        objective = self.objective
        self.graph = self._analyse(objective)
        self._structure = structure(objective.model)  # only once the model is accepted
        self.selected = set(objective.param_names)
        #: the nodes and parameters a product visits; ``_live``: the nodes downstream of
        #: a selected parameter, which carry tangents and first-order gradients
        self._full = self.flow(self.selected, self.selected)
        self._live = self._full.forward
        self._states: dict[int, _State] = {}
        self._state_params: list[Tensor] | None = None

    def flow(self, sources: set[str], want: set[str], backward_from: int | None = None
             ) -> "Flow":
        """The nodes a pass of tangents visits (see :class:`Flow`).

        Args:
            sources: parameters with nonzero tangents; the nodes downstream of them
                carry tangents.
            want: parameters whose R-gradients the pass returns.
            backward_from: ``None``: the R-backward pass visits the nodes that carry
                tangents; an index into ``graph.steps``: it visits every node
                downstream of a selected parameter from that step on (the rows of
                the columns' matrix that belong to later parameters).
        """
        steps = [s for s in self.graph.steps if s.rule is not None]
        forward: set[str] = set()
        for step in steps:
            if sources.intersection(step.rule.param_names) or any(
                    n.name in forward for n in step.inputs):
                forward.add(step.node.name)
        if backward_from is None:
            backward = set(forward)
        else:
            backward = {s.node.name for s in self.graph.steps[backward_from:]
                        if s.rule is not None and s.node.name in self._live}
        kept = {n.name for step in steps if step.node.name in backward
                and step.rule.keeps_input_tangents(want) for n in step.inputs}
        readers: dict[str, int] = {}
        for step in steps:
            if step.node.name in forward:
                for n in step.inputs:
                    readers[n.name] = readers.get(n.name, 0) + 1
        return Flow(forward, backward, set(want), kept, readers)

    # ------------------------------------------------------------ forward pass
    @staticmethod
    def _run_forward(graph: ModelGraph, objective, inputs: Tensor, targets: Tensor):
        """``(contexts, per-sample sizes, OutputLoss)`` of one chunk."""
        values: dict[str, Any] = {graph.placeholder.name: inputs}
        ctxs, sizes = {}, {}
        with torch.no_grad():
            for step in graph.steps:
                node = step.node
                args = torch.fx.node.map_arg(node.args, lambda n: values[n.name])
                kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: values[n.name])
                if step.rule is None:
                    if node.op == "call_method":
                        values[node.name] = getattr(args[0], node.target)(*args[1:], **kwargs)
                    else:
                        values[node.name] = node.target(*args, **kwargs)
                    continue
                out, ctxs[node.name] = step.rule.forward(*args, **kwargs)
                values[node.name] = out
                sizes[node.name] = out[0].numel() if out.shape[0] else 0
        f = values[graph.output.name]
        if f.ndim != 2:
            raise UnsupportedModelError(f"the model's outputs have shape {tuple(f.shape)}; the "
                                        "graph path needs (samples, classes)")
        loss, T, c = loss_terms(objective.loss_fn, objective.reduction, tuple(f.shape), targets,
                                objective.dtype)
        return ctxs, sizes, OutputLoss(loss, f, T, c)

    def _state(self, chunk, grads: bool) -> _State:
        """The kept forward pass of ``chunk`` (checked against its data), with the
        first-order gradients when ``grads``; computed and kept (within
        ``max_state_bytes``) when there is none."""
        self._check_state_params()
        state = self._states.get(chunk.index)
        if state is None or not (_equal(state.inputs, chunk.inputs)
                                 and _equal(state.targets, chunk.targets)):
            self._states.pop(chunk.index, None)
            ctxs, sizes, loss = self._run_forward(self.graph, self.objective, chunk.inputs,
                                                  chunk.targets)
            state = _State(ctxs, sizes, loss, chunk.inputs.clone(), chunk.targets.clone())
        if grads and state.grads is None:
            state.grads = self._first_order(state)
        used = sum(s.nbytes for i, s in self._states.items() if i != chunk.index)
        if used + state.nbytes <= self.max_state_bytes:
            self._states[chunk.index] = state
        return state

    def _watched(self) -> list[Tensor]:
        """Every parameter and buffer of the modules the rules read."""
        modules = [getattr(step.rule, "module", None) for step in self.graph.steps
                   if step.rule is not None]
        return [t.detach() for m in modules if m is not None
                for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))]

    def _check_state_params(self) -> None:
        """Drops every kept forward pass when a parameter or buffer changed (in place
        or through ``.data`` included)."""
        current = self._watched()
        kept = self._state_params
        if kept is not None and len(kept) == len(current) and all(
                _equal(a, b) for a, b in zip(kept, current)):
            return
        self._states.clear()
        self._state_params = [t.clone() for t in current]

    def _first_order(self, state: _State) -> dict[str, Tensor]:
        """:math:`\\partial\\ell/\\partial y` at every live node."""
        grads: dict[str, Tensor] = {}
        pending = {self.graph.output.name: state.loss.gradient()}
        for step in reversed(self.graph.steps):
            name = step.node.name
            g = pending.pop(name, None)
            if step.rule is None or name not in self._live or g is None:
                continue
            grads[name] = g
            need = [n.name in self._live for n in step.inputs]
            ins, _ = step.rule.backward(state.ctxs[name], 1, g, None, [None] * len(need), {},
                                        need, set())
            for n, gi in zip(step.inputs, ins):
                if gi is not None:
                    pending[n.name] = add(pending.get(n.name), gi)
        return grads

    # ---------------------------------------------------------------- products
    def hessian(self, chunk, V: Tensor) -> Tensor:
        return self.product("hessian", chunk, V)

    def ggn(self, chunk, V: Tensor) -> Tensor:
        return self.product("ggn", chunk, V)

    def product(self, kind: str, chunk, V: Tensor) -> Tensor:
        """``kind`` in ``{"hessian", "ggn", "functional"}`` times ``V`` (P, k) on one
        chunk (its own reduction, unweighted), in column blocks that fit
        ``max_workspace_bytes``. A model whose structure changed since the last
        product (a module replaced, a hook registered) is read again, and refused
        with :class:`UnsupportedModelError` if it is no longer supported."""
        check_kind(kind)
        if V.shape[1] == 0:
            return V.new_zeros(V.shape)
        state = self.chunk_state(kind, chunk)
        step = self.columns_per_pass(state, V.element_size())
        parts = [self._product(kind, state, V[:, a:a + step]) for a in range(0, V.shape[1], step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def chunk_state(self, kind: str, chunk) -> _State:
        """The forward pass of ``chunk`` that products of ``kind`` need (kept or
        computed), after reading the model again if its structure changed."""
        if structure(self.objective.model) != self._structure:
            self._build()  # modules swapped, hooks added, ...: refused or read again
        return self._state(chunk, grads=kind != "ggn")

    def columns_per_pass(self, state: _State, itemsize: int) -> int:
        """How many tangents one pass carries within ``max_workspace_bytes`` and
        ``max_tangent_bytes``."""
        n = state.inputs.shape[0]
        per_column = 2 * n * state.sample_numel * itemsize
        largest = n * state.largest_numel * itemsize
        return max(1, min(self.max_workspace_bytes // max(per_column, 1),
                          self.max_tangent_bytes // max(largest, 1)))

    def _product(self, kind: str, state: _State, V: Tensor) -> Tensor:
        obj, k = self.objective, V.shape[1]
        dparams = dict(zip(obj.param_names, obj.unflatten(V)))
        grads, _ = self.tangent_pass(kind, state, k, self._full, dparams)
        columns = [grads.get(name) for name in obj.param_names]
        return torch.cat([V.new_zeros(k, size) if t is None else t.reshape(k, size)
                          for t, size in zip(columns, obj.param_sizes)], dim=1).T.contiguous()

    def tangent_pass(self, kind: str, state: _State, k: int, flow: "Flow",
                     dparams: dict[str, Tensor], seed: tuple[str, Tensor] | None = None,
                     stop: str | None = None, cotangents: Tensor | None = None
                     ) -> tuple[dict[str, Tensor], Tensor | None]:
        """One R-forward and R-backward pass of k tangents over the nodes of ``flow``.

        Args:
            kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.
            state: the chunk's forward pass (:meth:`chunk_state`).
            k: the number of tangents.
            flow: the nodes visited and the parameters wanted (:meth:`flow`).
            dparams: ``{parameter name: (k, *shape) tangents}``; missing is zero.
            seed: ``(node name, (k N, *sample shape) tangents)``: the tangents of that
                node's output, given instead of computed; the R-backward pass stops
                there.
            stop: a node where the R-backward pass stops (the seed's node by default).
            cotangents: ``(k N, C)``: the R-gradient at the outputs, given instead of
                the loss's Hessian times the outputs' tangents (with ``kind="ggn"`` and
                no tangents: the plain backward pass of k vectors).

        Returns:
            ``({wanted parameter: (k, *shape) R-gradient}, R-gradient (k N, ...) at the
            seed node or None)``. With a seed at node :math:`z` and ``dparams`` empty,
            the R-gradient at the seed is :math:`\\nabla^2_z \\ell\\, \\dot z` (of
            ``kind``): the loss's curvature with respect to that node's output.
        """
        second = kind != "ggn"
        seed_name = None if seed is None else seed[0]
        stop = seed_name if stop is None else stop
        tangents: dict[str, Tensor | None] = {} if seed is None else {seed[0]: seed[1]}
        remaining = dict(flow.readers)
        out = self.graph.output.name
        for step in self.graph.steps:
            name = step.node.name
            if step.rule is None or name not in flow.forward or name == seed_name:
                continue
            dins = [tangents.get(n.name) for n in step.inputs]
            tangents[name] = step.rule.rforward(state.ctxs[name], k, dins, dparams)
            for n in step.inputs:
                remaining[n.name] -= 1
                if remaining[n.name] == 0 and not (second and n.name in flow.kept) \
                        and n.name != out:
                    tangents.pop(n.name, None)
        pending: dict[str, Tensor | None] = {}
        if cotangents is not None:
            pending[out] = cotangents
        elif kind != "functional" and tangents.get(out) is not None:
            pending[out] = state.loss.hessian_matmat(tangents[out], k)
        grads: dict[str, Tensor] = {}
        for step in reversed(self.graph.steps):
            name = step.node.name
            if step.rule is None or name not in flow.backward:
                continue
            U = pending.pop(name, None)
            if name == stop:
                return grads, U
            g = state.grads.get(name) if second else None
            if U is None and g is None:
                continue
            need = [n.name in flow.backward for n in step.inputs]
            want = flow.want.intersection(step.rule.param_names)
            dins = [tangents.get(n.name) for n in step.inputs]
            ins, pgrads = step.rule.backward(state.ctxs[name], k, U, g, dins, dparams, need, want)
            for n, gi in zip(step.inputs, ins):
                if gi is not None:
                    pending[n.name] = add(pending.get(n.name), gi)
            for pname, gp in pgrads.items():
                grads[pname] = add(grads.get(pname), gp)
        return grads, None

    # --------------------------------------------------------- explicit forms
    def layer_blocks(self, kind: str = "hessian") -> dict[str, Tensor]:
        """The exact diagonal block of every module with selected parameters:
        :math:`\\sum_n J_{l,n}^\\top M_{l,n} J_{l,n}` from basis tangents started at the
        layer, or Kronecker factors for Linear layers
        (:mod:`~hesskit.engines.native.explicit`).

        Args:
            kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.

        Returns:
            ``{module name: block}`` in graph order, each square over the module's
            selected parameters in the objective's flattening order; the chunks
            weighted and summed.
        """
        check_kind(kind)
        return explicit.layer_blocks(self, kind)

    def diagonal(self, kind: str = "hessian") -> Tensor:
        """The exact diagonal (P,) from the passes of :meth:`layer_blocks`."""
        check_kind(kind)
        return explicit.diagonal(self, kind)

    def dense(self, kind: str = "hessian") -> Tensor:
        """The exact (P, P) matrix: every layer's basis columns started at the layer,
        on the rows of that layer and the later ones; the rest by symmetry."""
        check_kind(kind)
        return explicit.dense(self, kind)


@dataclass(frozen=True)
class Flow:
    """Which nodes a pass of tangents visits (:meth:`GraphPath.flow`).

    Attributes:
        forward: nodes that carry tangents in the R-forward pass.
        backward: nodes the R-backward pass visits.
        want: parameters whose R-gradients the pass returns.
        kept: nodes whose tangents the R-backward pass reads (second-order terms).
        readers: ``{node: how many input slots of the forward nodes read it}``, to
            free each tangent after its last reader.
    """

    forward: set[str]
    backward: set[str]
    want: set[str]
    kept: set[str]
    readers: dict[str, int]


def _equal(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are equal in shape, dtype and values."""
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
