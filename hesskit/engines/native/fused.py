"""The native engine's fused chain path: compiled kernels for chains of Linear layers.

For models that are chains of ``nn.Linear`` layers and pointwise activations (see
:func:`hesskit.engines.native.chain.parse_chain`) ending in cross-entropy or MSE, the
``hesskit::sequential_*`` kernels compute

* products with the Hessian, the GGN or the functional Hessian for k vectors at
  once: forward, R-forward (Pearlmutter 1994, "Fast exact multiplication by the
  Hessian"), backward and R-backward, the k tangents carried together so that
  every step is one GEMM plus fused pointwise kernels; the forward pass of each chunk
  (``sequential_forward``) is kept between products at unchanged parameters and data,
  so that repeated products (eigensolvers, trace estimators) pay only their tangents;
* every Linear layer's exact block in one backward pass: backward Hessian
  propagation (Dangel, Harmeling & Hennig 2020, "Modular block-diagonal curvature
  approximations for feedforward architectures") gives the per-sample Hessian
  :math:`M_{l,n}` of the loss w.r.t. the layer outputs, *with* the residual terms
  :math:`\\operatorname{diag}(\\sigma'' \\odot W^\\top g)` of the activations, and
  the block is :math:`\\sum_n (\\tilde a_n \\tilde a_n^\\top) \\otimes M_{l,n}`
  (``kron_block``);
* the full dense matrix from per-sample Kronecker factors (diagonal and cross-layer
  blocks, about :math:`4NP^2` flops instead of :math:`P` products).

The engine accepts ``nn.Sequential`` models (nested ones flattened) or a single
``nn.Linear``; any subset of the Linear parameters (products and blocks are
computed for the layers from the lowest selected one on, and the selected rows
returned); ``mode="eval"``, or ``mode="train"`` when no dropout is active;
``nn.CrossEntropyLoss`` without class weights (class indices with
``ignore_index``/``label_smoothing``, or probabilities) and ``nn.MSELoss``
(and ``F.cross_entropy``/``F.mse_loss``), mean or sum. Inputs must reach the
first Linear layer as ``(N, features)`` (an ``nn.Flatten`` in front is fine).

Example:
    >>> import torch, hesskit as hk
    >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
    >>> H = hk.HessianOperator(obj, engine="native")
    >>> H.engine.path
    'fused chain'
    >>> blocks = H.engine.layer_blocks("hessian")
    >>> {name: tuple(b.shape) for name, b in blocks.items()}
    {'0': (40, 40), '2': (27, 27)}
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hesskit import ops
from hesskit.engines.module_hooks import hook_problem
from hesskit.engines.native.chain import (Chain, UnsupportedModelError, loss_problem,
                                          loss_terms, parse_chain)
from hesskit.engines.native.engine import NativeEngine, check_kind

__all__ = ["FusedChain"]


def _layout(layers) -> dict[str, tuple[int, int]]:
    """``{parameter name: (offset, size)}`` in the kernels' flat order ``[W_1, b_1, W_2,
    ...]``, by name: a Linear layer may register its bias before its weight (after
    ``prune.remove`` or ``remove_parametrizations``)."""
    layout, offset = {}, 0
    for layer in layers:
        sizes = [layer.module.weight.numel()] + ([] if layer.module.bias is None
                                                 else [layer.module.bias.numel()])
        for name, size in zip(layer.param_names, sizes):
            layout[name] = (offset, size)
            offset += size
    return layout


class FusedChain(NativeEngine):
    """Curvature of Linear/activation chains through the ``hesskit::sequential_*`` ops.

    Attributes:
        max_workspace_bytes: the kernels' working memory per call; a chunk with more
            samples than fit is processed in sub-chunks of samples (the results are
            sums over samples, so they do not change).
    """

    path = "fused chain"
    max_workspace_bytes = 256 * 2**20
    #: memory for cached forward passes (:meth:`product`); chunks beyond it are
    #: recomputed on every product.
    max_state_bytes = 256 * 2**20

    # ------------------------------------------------------------------ set-up
    @classmethod
    def unsupported_reason(cls, objective) -> str | None:
        if not ops.native_available():
            return f"the compiled extension hesskit._C is not loaded ({ops.load_error()})"
        try:
            cls._analyse(objective)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    @staticmethod
    def _analyse(objective) -> tuple[Chain, int]:
        """The chain and the index of its lowest layer with a selected parameter."""
        chain = parse_chain(objective.model, objective.mode)
        reason = loss_problem(objective.loss_fn)
        if reason is not None:
            raise UnsupportedModelError(reason)
        owner = {name: i for i, layer in enumerate(chain.layers) for name in layer.param_names}
        for name in objective.param_names:
            if name not in owner:
                raise UnsupportedModelError(f"parameter {name!r} is not a Linear parameter of "
                                            "the chain")
        for layer in chain.layers:
            for p in layer.module.parameters(recurse=False):
                if p.dtype != objective.dtype or p.device != objective.device:
                    raise UnsupportedModelError(
                        f"module {layer.name!r} (Linear) has parameters of dtype {p.dtype} on "
                        f"{p.device}; the engine needs one dtype and device "
                        f"({objective.dtype} on {objective.device})")
        start = min(owner[name] for name in objective.param_names)
        if not objective.plain_batches:
            raise UnsupportedModelError("data: the batches reach the model through batch=/output= "
                                        "as more than model(inputs) -> outputs; the fused chain "
                                        "path needs (inputs, targets) pairs of tensors")
        chunk = next(iter(objective.chunks()))
        first = chain.layers[0]
        x = chain.run_prefix(chunk.inputs)
        if x.ndim != 2 or x.shape[1] != first.module.in_features:
            raise UnsupportedModelError(
                f"inputs reach module {first.name!r} (Linear) with shape {tuple(x.shape)}; the "
                f"fused chain path needs (samples, {first.module.in_features})")
        try:
            loss_terms(objective.loss_fn, objective.reduction,
                       (x.shape[0], chain.layers[-1].module.out_features), chunk.targets,
                       objective.dtype)
        except ValueError as exc:
            raise UnsupportedModelError(str(exc)) from None
        return chain, start

    def __init__(self, objective):
        super().__init__(objective)
        self.chain, self.start = self._analyse(objective)
        layers = self.chain.layers[self.start:]
        selected = set(objective.param_names)
        #: indices (relative to ``start``) of the layers with a selected parameter
        self._layers = [i for i, layer in enumerate(layers)
                        if selected.intersection(layer.param_names)]
        # The kernels' layouts: every parameter of the layers from ``start`` on (products),
        # and every parameter of the selected layers (dense matrix); the objective's
        # parameters are rows of these.
        full = _layout(layers)
        self._size = sum(size for _, size in full.values())
        self._rows = self._rows_in(full)
        used = _layout([layers[i] for i in self._layers])
        self._used_size = sum(size for _, size in used.values())
        self._used_rows = self._rows_in(used)
        self._last_loss_terms = None
        #: (chunk index, slice start, slice stop) -> forward state of that sub-chunk
        self._states: dict[tuple[int, int, int], _CachedState] = {}
        #: (activation spec, copies of the parameters) the kept states were computed from
        self._state_params: tuple[tuple, list[Tensor]] | None = None

    def _rows_in(self, layout: dict[str, tuple[int, int]]) -> Tensor | None:
        """Positions of the objective's parameters in ``layout``; ``None`` when they fill
        it in order."""
        names = self.objective.param_names
        rows = torch.cat([torch.arange(layout[n][0], layout[n][0] + layout[n][1]) for n in names])
        total = sum(size for _, size in layout.values())
        if rows.numel() == total and bool((rows == torch.arange(total)).all()):
            return None
        return rows.to(self.objective.device)

    # --------------------------------------------------------------- per chunk
    def _kernel_args(self, chunk):
        """``(x, static args, loss, T, c)`` of one chunk for the ``sequential_*`` ops:
        ``x`` is the input of layer ``start``. Hooks added to the model or the loss
        since the engine was chosen are refused here (the kernels would skip them)."""
        obj = self.objective
        problem = hook_problem(obj.model) or (hook_problem(obj.loss_fn, "loss_fn")
                                               if isinstance(obj.loss_fn, nn.Module) else None)
        if problem is not None:
            raise ValueError(f"model: {problem}; it was added after the fused chain path was "
                             "chosen (build the operator again to get an engine that follows it)")
        x = self.chain.run_prefix(chunk.inputs, self.start)
        layer = self.chain.layers[self.start]
        if x.ndim != 2 or x.shape[1] != layer.module.in_features:
            raise ValueError(f"data: inputs reach module {layer.name!r} (Linear) with shape "
                             f"{tuple(x.shape)}; the fused chain path needs (samples, "
                             f"{layer.module.in_features})")
        if x.dtype != obj.dtype:
            raise TypeError(f"data: inputs reach module {layer.name!r} (Linear) as {x.dtype}, "
                            f"the parameters are {obj.dtype}")
        loss, T, c = self._loss_terms(chunk.targets, x.shape[0])
        static = (self.chain.weights(self.start), self.chain.biases(self.start),
                  *self.chain.activation_spec(self.start))
        return x.contiguous(), static, loss, T, c

    def _loss_terms(self, targets: Tensor, n: int):
        """:func:`loss_terms` of a chunk, kept for the next call with the same targets
        (repeated products over one batch). The cache holds the targets tensor, so a
        tensor at the same address shares its storage (and its version counter)."""
        loss_fn = self.objective.loss_fn
        key = (targets.data_ptr(), targets._version, tuple(targets.shape), targets.stride(),
               targets.dtype, n, getattr(loss_fn, "reduction", None),
               getattr(loss_fn, "ignore_index", None), getattr(loss_fn, "label_smoothing", None))
        cached = self._last_loss_terms
        if cached is None or cached[1] != key:
            terms = loss_terms(loss_fn, self.objective.reduction,
                               (n, self.chain.layers[-1].module.out_features), targets,
                               self.objective.dtype)
            cached = self._last_loss_terms = (targets, key, terms)
        return cached[2]

    def _sample_slices(self, n: int, per_sample: int):
        """Slices of at most as many samples as fit in ``max_workspace_bytes``."""
        itemsize = torch.empty((), dtype=self.objective.dtype).element_size()
        step = max(1, self.max_workspace_bytes // max(1, per_sample * itemsize))
        return [slice(s, min(s + step, n)) for s in range(0, n, step)]

    def _widths(self) -> list[int]:
        layers = self.chain.layers[self.start:]
        return [layers[0].module.in_features] + [layer.module.out_features for layer in layers]

    def _calls(self, op, per_sample: int, *tail):
        """Yield ``(chunk weight, op(x_s, ..., T_s, c_s, *tail))`` for every sub-chunk."""
        for chunk in self.objective.chunks():
            x, static, loss, T, c = self._kernel_args(chunk)
            for s in self._sample_slices(x.shape[0], per_sample):
                yield chunk.weight, op(x[s], *static, loss, T[s], c[s], *tail)

    # ---------------------------------------------------------------- products
    def hessian(self, chunk, V: Tensor) -> Tensor:
        return self.product("hessian", chunk, V)

    def ggn(self, chunk, V: Tensor) -> Tensor:
        return self.product("ggn", chunk, V)

    def product(self, kind: str, chunk, V: Tensor) -> Tensor:
        """``kind`` in ``{"hessian", "ggn", "functional"}`` times ``V`` (P, k) on one chunk
        (its own reduction, unweighted), in one kernel call per sub-chunk.

        The forward pass of each (sub-)chunk (``hesskit::sequential_forward``, about a
        third of a single-vector product on a CPU) is kept for the next product, up to
        ``max_state_bytes``, and reused while the parameters, the chunk's inputs and
        targets are equal, value for value, to those it was computed from: changes made
        in place, through ``.data`` included, are caught (the engine keeps a copy of
        the parameters to compare with).
        """
        check_kind(kind)
        k = V.shape[1]
        if self._rows is None:
            full = V.contiguous()
        else:
            full = V.new_zeros(self._size, k).index_copy_(0, self._rows, V)
        x, static, loss, T, c = self._kernel_args(chunk)
        self._check_state_params(static)
        widths = self._widths()
        per_sample = 4 * k * sum(widths) + 4 * sum(widths)
        out = None
        for s in self._sample_slices(x.shape[0], per_sample):
            state = self._forward_state(kind, chunk.index, s, x[s], static, loss, T[s], c[s])
            part = ops.sequential_matmat(x[s], *static, loss, T[s], c[s], full, kind, state)
            out = part if out is None else out.add_(part)
        return out if self._rows is None else out.index_select(0, self._rows)

    def _check_state_params(self, static) -> None:
        """Drops every kept forward state when a parameter or activation argument changed."""
        params = [t for t in (*static[0], *static[1]) if t is not None]
        spec = tuple(tuple(part) for part in static[2:])
        kept = self._state_params
        if kept is not None and kept[0] == spec and len(kept[1]) == len(params) \
                and _all_equal(zip(kept[1], params)):
            return
        self._states.clear()
        self._state_params = (spec, [p.clone() for p in params])

    def _forward_state(self, kind, index, s, x, static, loss, T, c) -> list[Tensor]:
        """The kept forward state of sub-chunk ``s`` of chunk ``index``, checked against
        its inputs and targets; computed (and kept, within ``max_state_bytes``) if there
        is none. A GGN product can use a Hessian's state, not the reverse."""
        residual = kind != "ggn"
        key = (index, s.start, s.stop)
        entry = self._states.get(key)
        if entry is not None and (entry.residual or not residual) and entry.matches(x, T, c):
            return entry.state
        self._states.pop(key, None)
        state = ops.sequential_forward(x, *static, loss, T, c, "hessian" if residual else "ggn")
        entry = _CachedState(state, residual, T.clone(), c.clone())
        used = sum(e.nbytes for e in self._states.values())
        if used + entry.nbytes <= self.max_state_bytes:
            self._states[key] = entry
        return state

    # --------------------------------------------------------- explicit forms
    def _hbp_per_sample(self) -> int:
        widths = self._widths()
        return 3 * sum(w * w for w in widths[1:]) + 2 * max(widths) ** 2

    def layer_blocks(self, kind: str = "hessian") -> dict[str, Tensor]:
        """The exact diagonal block of every Linear layer with selected parameters.

        One backward Hessian propagation per (sub-)chunk gives every layer's
        per-sample output Hessians :math:`M_{l,n}`; the block over ``[W.flatten(), b]``
        is :math:`\\sum_n (\\tilde a_n \\tilde a_n^\\top) \\otimes M_{l,n}`
        (``kron_block_with_bias``), weighted and summed over the chunks.

        Args:
            kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.

        Returns:
            ``{module name: block}`` in model order: the square block over the
            module's selected parameters, ordered as in the objective's flattening
            (the weight's entries row-major, then the bias); equal to the
            corresponding diagonal block of ``dense(kind)``.
        """
        check_kind(kind)
        layers = [self.chain.layers[self.start + i] for i in self._layers]
        blocks: dict[str, Tensor] = {}
        for weight, (inputs, hessians) in self._calls(ops.sequential_hbp,
                                                      self._hbp_per_sample(), self._layers, kind):
            for layer, A, M in zip(layers, inputs, hessians):
                block = (ops.kron_block(A, M) if layer.module.bias is None
                         else ops.kron_block_with_bias(A, M))
                if layer.name in blocks:
                    blocks[layer.name].add_(block, alpha=weight)
                else:
                    blocks[layer.name] = block.mul_(weight)
        selected = self.objective.param_names  # flattening order
        for layer in layers:
            layout = _layout([layer])
            names = [n for n in selected if n in layout]
            if names != layer.param_names:
                rows = torch.cat([torch.arange(layout[n][0], layout[n][0] + layout[n][1])
                                  for n in names]).to(self.objective.device)
                blocks[layer.name] = blocks[layer.name][rows][:, rows]
        return blocks

    def diagonal(self, kind: str = "hessian") -> Tensor:
        """The exact diagonal (P,): :math:`\\sum_n \\operatorname{diag}(M_{l,n})
        (\\tilde a_n \\odot \\tilde a_n)^\\top` per layer, from one backward Hessian
        propagation (no block is formed)."""
        check_kind(kind)
        layers = [self.chain.layers[self.start + i] for i in self._layers]
        diag = torch.zeros(self._used_size, dtype=self.objective.dtype,
                           device=self.objective.device)
        for weight, (inputs, hessians) in self._calls(ops.sequential_hbp,
                                                      self._hbp_per_sample(), self._layers, kind):
            offset = 0
            for layer, A, M in zip(layers, inputs, hessians):
                d = M.diagonal(dim1=1, dim2=2)  # (N, m)
                m, n = layer.module.out_features, layer.module.in_features
                diag[offset:offset + m * n].add_((d.T @ (A * A)).reshape(-1), alpha=weight)
                offset += m * n
                if layer.module.bias is not None:
                    diag[offset:offset + m].add_(d.sum(0), alpha=weight)
                    offset += m
        return diag if self._used_rows is None else diag[self._used_rows]

    def dense(self, kind: str = "hessian") -> Tensor:
        """The explicit (P, P) matrix from per-sample Kronecker factors: diagonal blocks
        :math:`\\sum_n M_{l,n} \\otimes \\tilde a \\tilde a^\\top`, cross-layer blocks
        :math:`\\sum_n J_{l\\leftarrow m} M_{m,n} \\otimes \\tilde a_{l} \\tilde a_{m}^\\top`
        plus the residual terms of the activations (``hesskit::sequential_dense``),
        weighted and summed over the chunks."""
        check_kind(kind)
        widths = self._widths()
        per_sample = self._hbp_per_sample() + 6 * (max(widths) + 1) ** 2
        H = None
        for weight, part in self._calls(ops.sequential_dense, per_sample, self._layers, kind):
            H = part.mul_(weight) if H is None else H.add_(part, alpha=weight)
        if self._used_rows is None:
            return H
        return H.index_select(0, self._used_rows).index_select(1, self._used_rows)


def _all_equal(pairs) -> bool:
    """Whether every pair of tensors is equal in shape and values (one device sync)."""
    pairs = list(pairs)
    if not pairs:
        return True
    if any(a.shape != b.shape for a, b in pairs):
        return False
    if pairs[0][0].device.type == "cpu":
        return all(torch.equal(a, b) for a, b in pairs)
    return not bool(torch.stack([torch.ne(a, b).any() for a, b in pairs]).any())


class _CachedState:
    """A sub-chunk's ``sequential_forward`` with what it was computed from.

    The inputs need no copy: the state's first tensor is ``[x^T; 1]`` (or ``x^T``).
    """

    def __init__(self, state: list[Tensor], residual: bool, T: Tensor, c: Tensor):
        self.state, self.residual, self.T, self.c = state, residual, T, c
        self.nbytes = sum(t.numel() * t.element_size() for t in (*state, T, c))

    def matches(self, x: Tensor, T: Tensor, c: Tensor) -> bool:
        inputs = self.state[0][: x.shape[1]].T
        return _all_equal([(inputs, x), (self.T, T), (self.c, c)])
