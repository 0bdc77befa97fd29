"""Exact diagonal blocks of the Hessian (or GGN): one per layer, and the last layer's.

The block of a parameter group is the Hessian of the objective restricted to that
group, so ``layer_blocks`` computes each as the dense curvature matrix of a
restricted :class:`~hesskit.objective.Objective`, unless the engine computes every
block at once (``supports("blocks")``): the native engine, on its fused chain path
(chains of Linear layers and pointwise activations: one backward Hessian propagation)
and on its graph path (CNNs and ResNets: per-sample Jacobians, Kronecker factors or
basis tangents started at each layer, see :class:`~hesskit.engines.native.GraphPath`).

``last_layer_hessian`` uses the structure of a Linear layer :math:`z = Wa + b`:
with :math:`M_n = \\partial^2 \\mathcal{L}/\\partial z_n^2` the per-sample Hessian
of the loss with respect to the layer's outputs,

.. math::

    \\nabla^2_W \\mathcal{L} = \\sum_n M_n \\otimes a_n a_n^\\top

exactly (the layer is linear in its parameters), computed by the ``kron_block``
kernel; the bias enters as an extra input fixed to one.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hesskit import ops
from hesskit.engines import make_engine
from hesskit.engines.output_hessian import output_hessian_matmat
from hesskit.objective import Objective
from hesskit.operators import GGNOperator, HessianOperator, check_finite, check_matrix_bytes

__all__ = ["layer_blocks", "last_layer_hessian", "parameterized_modules"]

_KINDS = {"hessian": HessianOperator, "ggn": GGNOperator}


def parameterized_modules(obj: Objective) -> dict[str, list[str]]:
    """Module name → names of its own selected parameters, in flattening order."""
    groups: dict[str, list[str]] = {}
    for name in obj.param_names:
        module, _, _ = name.rpartition(".")
        groups.setdefault(module, []).append(name)
    return groups


def layer_blocks(obj: Objective, kind: str = "hessian", engine: str = "auto",
                 max_bytes: int | None = None) -> dict[str, Tensor]:
    """The exact diagonal block of every parameterized module.

    Args:
        obj: the objective.
        kind: ``"hessian"`` or ``"ggn"``.
        engine: engine of the products; one that can compute every layer's block at
            once (``supports("blocks")``: the native engine, for Linear chains and
            for CNNs and ResNets) does.
        max_bytes: refuse (``ValueError``, before computing anything) when the blocks
            together would need more bytes; default
            :data:`~hesskit.operators.DEFAULT_MAX_BYTES` (4 GiB), as ``dense()``.

    Returns:
        ``{module_name: block}`` where ``block`` is square over the module's own
        selected parameters (e.g. ``[W.reshape(-1), b]`` of a Linear layer), in the
        objective's flattening order.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> blocks = layer_blocks(obj)
        >>> {name: b.shape for name, b in blocks.items()}
        {'0': torch.Size([40, 40]), '2': torch.Size([27, 27])}
    """
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {sorted(_KINDS)}, got {kind!r}")
    groups = parameterized_modules(obj)
    sizes = {name: p.numel() for name, p in zip(obj.param_names, obj.params)}
    check_matrix_bytes("layer_blocks()", [sum(sizes[n] for n in names)
                                          for names in groups.values()], obj.dtype, max_bytes)
    chosen = make_engine(engine, obj)
    if chosen.supports("blocks"):
        blocks = {name: obj.all_reduce(block) for name, block in chosen.layer_blocks(kind).items()}
        for name, block in blocks.items():
            check_finite(block, _row_names(obj, groups[name]), f"layer_blocks: block {name!r}")
        return blocks
    return {module: _KINDS[kind](obj.restricted(names), engine=engine).dense(max_bytes=max_bytes)
            for module, names in groups.items()}


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` of ``model``, refused when it shares a parameter: then the
    loss depends on that tensor through other modules too, and the layer's block (its
    inputs and output Hessians alone) is not the Hessian's block."""
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("model: it has no nn.Linear layer")
    name, layer = linear[-1]
    own = {id(p): attr for attr, p in layer.named_parameters(recurse=False)}
    prefix = f"{name}." if name else ""
    for other, p in model.named_parameters(remove_duplicate=False):
        if id(p) in own and other != prefix + own[id(p)]:
            raise ValueError(f"model: the last nn.Linear layer {name!r} shares its parameter "
                             f"{own[id(p)]!r} with {other!r}; last_layer_hessian needs a "
                             "layer whose parameters are its own (use layer_blocks or "
                             "HessianOperator(...).dense() instead)")
    return name, layer


def last_layer_hessian(obj: Objective) -> Tensor:
    """The exact Hessian of the dataset loss w.r.t. the last ``nn.Linear`` layer.

    Valid for any network in front of the layer (the layer is linear in its
    parameters) and any loss that is a sum or mean of per-sample terms. When the
    layer's output is the model's output and the loss is cross-entropy or MSE,
    :math:`M_n` has a closed form; otherwise it is obtained by differentiating the
    loss through whatever follows the layer. The objective's ``params`` selection is
    not used: the block is always over the layer's weight and bias.

    Returns:
        The block over ``[W.reshape(-1), b]`` (just ``W.reshape(-1)`` without bias):
        shape ``(m(n+1), m(n+1))`` for a layer with n inputs and m outputs.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> B = last_layer_hessian(obj)                   # 3 × (8 + 1) parameters
        >>> H = hk.HessianOperator(obj).dense()
        >>> B.shape, torch.allclose(B, H[40:, 40:], atol=1e-6)
        (torch.Size([27, 27]), True)
    """
    name, layer = _last_linear(obj.model)
    block = None
    for chunk in obj.chunks():
        A, M = _layer_inputs_and_output_hessians(obj, layer, chunk)
        M = M * chunk.weight
        part = ops.kron_block_with_bias(A, M) if layer.bias is not None \
            else ops.kron_block(A, M)
        block = part if block is None else block + part
    block = obj.all_reduce(block)
    prefix = f"{name}." if name else ""
    names = [prefix + "weight"] + ([] if layer.bias is None else [prefix + "bias"])
    sizes = [layer.weight.numel()] + ([] if layer.bias is None else [layer.bias.numel()])
    check_finite(block, lambda row: names[int(row >= sizes[0])], "last_layer_hessian")
    return block


def _row_names(obj: Objective, names: list[str]):
    """``row -> parameter name`` over the concatenation of ``names``' entries."""
    slices = obj.slices()
    ends = torch.tensor([slices[n].stop - slices[n].start for n in names]).cumsum(0)
    return lambda row: names[int(torch.searchsorted(ends, row, right=True))]


def _layer_inputs_and_output_hessians(obj: Objective, layer: nn.Linear, chunk) -> tuple[Tensor, Tensor]:
    """Inputs ``A`` (N, n) of ``layer`` and the per-sample Hessians ``M`` (N, m, m) of
    the chunk loss w.r.t. its outputs."""
    captured = {"calls": 0}

    def hook(module, args, output):
        captured["calls"] += 1
        captured["A"] = args[0].detach().reshape(-1, module.in_features)
        z = output.detach().requires_grad_(True)
        captured["Z"] = z
        return z

    handle = layer.register_forward_hook(hook)
    try:
        with obj.evaluation(chunk.index):
            outputs = obj.forward([p.detach() for p in obj.params], chunk.inputs)
    finally:
        handle.remove()
    if captured["calls"] != 1:
        name = next(n for n, m in obj.model.named_modules() if m is layer)
        raise ValueError(f"model: the last nn.Linear layer {name!r} is called "
                         f"{captured['calls']} times in one forward pass; last_layer_hessian "
                         "needs a layer called once")
    A, Z = captured["A"], captured["Z"]
    if Z.ndim != 2 or Z.shape[0] != chunk.size:
        raise ValueError(f"model: the last Linear layer's output has shape {tuple(Z.shape)}; "
                         "last_layer_hessian needs one output row per sample")
    m = Z.shape[1]
    N = Z.shape[0]
    basis = torch.eye(m, dtype=Z.dtype, device=Z.device).unsqueeze(1).expand(m, N, m)
    if outputs is Z:
        HU = output_hessian_matmat(obj.loss_fn, Z.detach(), chunk.targets, basis,
                                   obj.reduction)
    else:  # layers follow the last Linear: differentiate through them
        loss = obj.loss_fn(outputs, chunk.targets)
        (g,) = torch.autograd.grad(loss, Z, create_graph=True)
        HU = torch.stack([torch.autograd.grad(g, Z, basis[j], retain_graph=True)[0]
                          for j in range(m)])
    # HU[j, n, :] = M_n e_j (samples do not interact), so M[n, :, j] = HU[j, n, :].
    # M_n is symmetric up to rounding; making it exactly so lets kron_block take its
    # symmetric path (half the work, an exactly symmetric block).
    M = HU.permute(1, 2, 0).detach()
    return A, ((M + M.mT) / 2).contiguous()
