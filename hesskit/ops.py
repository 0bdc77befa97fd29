"""``hk.ops``: the compiled extension ``hesskit._C``, loaded, and one wrapper per op.

``hesskit._C`` registers the ``torch.ops.hesskit.*`` operators (``TORCH_LIBRARY``)
and a small pybind11 module with build information. When it is missing or fails
to load, every op falls back to its pure-PyTorch twin in :mod:`hesskit._reference`
and a single warning says why; :func:`native_available` then returns ``False``.

One thin wrapper per op, in the shape of ``pytorch/extension-cpp``: it picks the
native kernel when ``hesskit._C`` has one for the inputs' device, else the
reference. The arguments are checked once, in C++ (``csrc/kron_block.h``,
``csrc/sequential.h``; ``TypeError``/``ValueError`` naming the argument, for direct
``torch.ops.hesskit.*`` calls too); the reference path assumes valid arguments.
Beside each op: its fake (meta) implementation for ``torch.compile``/``opcheck``
and its autograd registration (``kron_block``: the formula; the ``sequential_*``
ops, which have none: outputs marked non-differentiable, so a gradient raises).
"""
from __future__ import annotations

import warnings

import torch

from hesskit import _reference

__all__ = ["native_available", "load_error", "build_info", "kron_block", "kron_block_with_bias"]

_C = None
_LOAD_ERROR: str | None = None

try:  # pragma: no cover - which branch runs depends on the build
    # torch is imported above: it loads libc10/libtorch, which _C links against.
    from hesskit import _C  # noqa: F811  (registers torch.ops.hesskit)
except Exception as exc:  # ImportError, OSError (undefined symbol), ...
    _C = None
    _LOAD_ERROR = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "hesskit: the native extension hesskit._C could not be loaded "
        f"({_LOAD_ERROR}); using the pure-PyTorch reference implementations. "
        "Rebuild with `pip install --no-build-isolation -e .` to get the kernels.",
        RuntimeWarning,
        stacklevel=2,
    )


def native_available() -> bool:
    """Return ``True`` when the compiled kernels (``hesskit._C``) are loaded.

    Example:
        >>> import hesskit as hk
        >>> hk.native_available() in (True, False)
        True
    """
    return _C is not None


def load_error() -> str | None:
    """Why ``hesskit._C`` could not be loaded, or ``None`` when it was."""
    return _LOAD_ERROR


def build_info() -> dict:
    """How ``hesskit._C`` was built and how it runs.

    Returns:
        ``{"version", "torch_version", "cuda", "cuda_runtime_version", "openmp",
        "num_threads", "compiler"}``: the hesskit and torch versions it was
        compiled against, whether the CUDA kernels are in it (and the CUDA
        runtime version, else ``None``), the OpenMP specification date
        (``yyyymm``, else ``None``), the current intra-op thread count and the
        C++ compiler.

    Raises:
        RuntimeError: when the extension is not loaded (see :func:`load_error`).
    """
    if _C is None:
        raise RuntimeError(f"hesskit._C is not loaded: {_LOAD_ERROR}")
    return _C.build_info()


_FLOAT_DTYPES = (torch.float32, torch.float64)
_NATIVE_DEVICE_TYPES = () if _C is None else ("cpu", "cuda") if _C.build_info()["cuda"] else ("cpu",)
_warned_fallback: set[str] = set()


def _device_of(**tensors: object) -> torch.device:
    """The device of the first of ``tensors``, after the one check made in Python: each
    is a tensor (``TypeError`` naming it, where the op's schema would raise a
    ``RuntimeError``). Everything else is checked once, in C++."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return next(iter(tensors.values())).device


def _native_kernel_for(device: torch.device) -> bool:
    """Whether ``hesskit._C`` has kernels for ``device`` (warns once when it has not)."""
    if _C is None:
        return False  # the load warning has said so already
    if device.type in _NATIVE_DEVICE_TYPES:
        return True
    if device.type not in _warned_fallback:
        _warned_fallback.add(device.type)
        warnings.warn(
            f"hesskit: hesskit._C has no kernels for device type {device.type!r}; "
            "using the pure-PyTorch reference implementations there.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


# --- kron_block -----------------------------------------------------------------


def kron_block(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    r"""Exact Hessian block of a Linear layer's weight from its inputs and output Hessians.

    For a layer :math:`z_k = W a_k (+ b)` with ``W`` of shape ``(m, n)`` and a loss
    :math:`\mathcal{L} = \sum_k \ell_k(z_k)`, the layer is linear in ``W``, so

    .. math::

        \nabla^2_W \mathcal{L} = \sum_{k=1}^{N} (a_k a_k^\top) \otimes M_k,
        \qquad M_k = \frac{\partial^2 \ell_k}{\partial z_k^2},

    which, in the order of ``W.reshape(-1)`` (index ``out * n + in``), reads

    .. math::

        H[i n + a,\; j n + b] = \sum_k M[k, i, j]\, A[k, a]\, A[k, b].

    (Dangel, Harmeling & Hennig, "Modular Block-diagonal Curvature Approximations
    for Feedforward Architectures", AISTATS 2020; Botev, Ritter & Barber,
    "Practical Gauss-Newton Optimisation for Deep Learning", ICML 2017.)

    For a mean-reduced loss, scale ``M`` by ``1/N``. To include the bias, use
    :func:`kron_block_with_bias`.

    The CPU kernel computes row-blocks of ``H`` with BLAS GEMMs and never forms the
    ``N x n^2`` Kronecker rows. When every ``M[k]`` is exactly symmetric (checked),
    it computes only the blocks on and above the diagonal and mirrors them: the
    result is then exactly symmetric and costs half. A Hessian computed by autograd
    can be asymmetric in the last bits; symmetrize it (``(M + M.mT) / 2``) to get the
    fast path. Differentiable in ``A`` and ``M``.

    Args:
        A: ``(N, n)`` inputs :math:`a_k` of the layer, float32 or float64.
        M: ``(N, m, m)`` per-sample Hessians of the loss w.r.t. the layer outputs,
            same dtype and device as ``A``.

    Returns:
        ``(m*n, m*n)`` tensor ``H``.

    Raises:
        TypeError: ``A`` or ``M`` is not a tensor, or has the wrong dtype.
        ValueError: wrong ranks, non-square ``M``, different ``N`` or devices, or an
            ``m*n`` whose square overflows int64 (checked in C++).

    Example:
        >>> A = torch.randn(100, 3, dtype=torch.float64)
        >>> M = torch.eye(2, dtype=torch.float64).expand(100, 2, 2)
        >>> kron_block(A, M).shape  # for MSE-like M = I: H = I (x) A^T A
        torch.Size([6, 6])
    """
    if _native_kernel_for(_device_of(A=A, M=M)):
        return torch.ops.hesskit.kron_block(A, M)
    return _reference.kron_block(A, M)


def kron_block_with_bias(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    r"""Exact Hessian block of a Linear layer over ``[W.reshape(-1), b]``.

    The bias is a weight on a constant input 1, so ``kron_block([A, 1], M)`` is
    the block of the augmented weight ``[W | b]`` of shape ``(m, n+1)``, indexed
    ``out * (n+1) + in`` where ``in == n`` is the bias. This function reorders it
    to the flattening order of ``nn.Linear.named_parameters()``: position
    ``out * n + in`` for ``W[out, in]``, then ``m * n + out`` for ``b[out]``.

    Args:
        A: ``(N, n)`` inputs of the layer (without the ones column).
        M: ``(N, m, m)`` per-sample Hessians of the loss w.r.t. the layer outputs.

    Returns:
        ``(m*(n+1), m*(n+1))`` tensor, rows/columns ordered ``[W.reshape(-1), b]``.

    Raises:
        TypeError, ValueError: as :func:`kron_block`.

    Example:
        >>> A = torch.randn(100, 3, dtype=torch.float64)
        >>> M = torch.eye(2, dtype=torch.float64).expand(100, 2, 2)
        >>> kron_block_with_bias(A, M)[-2:, -2:]  # the bias block: sum_k M_k
        tensor([[100.,   0.],
                [  0., 100.]], dtype=torch.float64)
    """
    _device_of(A=A, M=M)
    augmented = kron_block(_with_ones_column(A), M)  # checks the rest
    n, m = A.shape[1], M.shape[1]
    outs = torch.arange(m, device=A.device)
    weight_rows = (outs[:, None] * (n + 1) + torch.arange(n, device=A.device)[None, :]).reshape(-1)
    order = torch.cat([weight_rows, outs * (n + 1) + n])
    return augmented.index_select(0, order).index_select(1, order)


def _with_ones_column(A: torch.Tensor) -> torch.Tensor:
    """``[A, 1]`` for a 2-D ``A``; any other ``A`` unchanged, for the op to reject."""
    if A.dim() != 2:
        return A
    return torch.cat([A, A.new_ones(A.shape[0], 1)], dim=1)


def _check_fake_devices(op: str, **tensors) -> None:
    """The device check of the C++ kernels, in the fake implementations: the dispatcher
    sends a meta tensor mixed with tensors of another device there, not to a kernel.
    ``tensors`` holds tensors, ``None`` or lists of them; the first one sets the device."""
    flat = [(name if not isinstance(t, (list, tuple)) else f"{name}[{i}]", x)
            for name, t in tensors.items()
            for i, x in enumerate(t if isinstance(t, (list, tuple)) else [t]) if x is not None]
    device = flat[0][1].device
    for name, t in flat[1:]:
        torch._check(t.device == device, lambda: f"{op}: {name} must be on the device of "
                     f"{flat[0][0]} ({device}), got {t.device}")


if _C is not None:

    @torch.library.register_fake("hesskit::kron_block")
    def _kron_block_fake(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        torch._check(A.dim() == 2, lambda: "kron_block: A must be 2-D")
        torch._check(M.dim() == 3 and M.shape[1] == M.shape[2],
                     lambda: "kron_block: M must be (N, m, m)")
        torch._check(M.shape[0] == A.shape[0], lambda: "kron_block: A and M need the same N")
        torch._check(A.dtype in _FLOAT_DTYPES and M.dtype == A.dtype,
                     lambda: "kron_block: A and M must share a float32/float64 dtype")
        _check_fake_devices("kron_block", A=A, M=M)
        size = M.shape[1] * A.shape[1]
        return A.new_empty((size, size))

    def _kron_block_setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    def _kron_block_backward(ctx, grad: torch.Tensor):
        A, M = ctx.saved_tensors
        return _reference.kron_block_vjp(A, M, grad)

    torch.library.register_autograd(
        "hesskit::kron_block", _kron_block_backward, setup_context=_kron_block_setup_context
    )


# --- fused chain path (sequential_hbp, sequential_matmat, sequential_dense) -----
#
# Chains a_0 = X, z_l = a_{l-1} W_l^T + b_l, a_l = s_l(z_l), f = a_L with the
# activations s_l given as codes (hesskit.engines.native.chain.ACTIVATION_CODES), and the
# normalized loss  l = sum_n coef_n Phi(f_n) - <target_n, f_n>  with Phi = logsumexp
# ("cross_entropy") or |f|^2 / 2 ("mse"); hesskit.engines.native.chain.loss_terms builds
# (target, coef) from nn.CrossEntropyLoss / nn.MSELoss. The native engine
# (hesskit/engines/native/fused.py) is the user-facing interface of these ops.

__all__ += ["sequential_hbp", "sequential_matmat", "sequential_dense", "sequential_forward"]

def sequential_hbp(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                   layers, kind="hessian"):
    r"""Backward Hessian propagation through a chain of Linear layers and activations.

    For every sample :math:`n` and layer :math:`l` the Hessian of the loss w.r.t. the
    layer outputs :math:`z_l`, from

    .. math::

        M_L = D_L H_f D_L + \operatorname{diag}(\sigma_L'' \odot g_f), \qquad
        M_{l-1} = D_{l-1} W_l^\top M_l W_l D_{l-1}
                  + \operatorname{diag}(\sigma_{l-1}'' \odot W_l^\top g_l),

    :math:`D = \operatorname{diag}(\sigma')`, :math:`g_l = \partial\ell/\partial z_l`,
    :math:`H_f` the output Hessian (Dangel, Harmeling & Hennig 2020, "Modular
    block-diagonal curvature approximations for feedforward architectures"). The
    GGN drops the :math:`\operatorname{diag}(\sigma''\odot\cdot)` terms, the
    functional part (``"functional"``, Hessian minus GGN) sets :math:`H_f = 0`.
    The layer's exact block is ``kron_block_with_bias(inputs[i], hessians[i])``.

    Args:
        X: ``(N, n_1)`` inputs of the first layer, float32 or float64.
        weights: ``[W_l]`` of shapes ``(m_l, n_l)`` with ``n_{l+1} = m_l``.
        biases: ``[b_l or None]``.
        act_codes, act_args, act_counts: the activations after each layer: codes
            (``hesskit.engines.native.chain.ACTIVATION_CODES``), two arguments per code,
            how many follow each layer.
        loss: ``"cross_entropy"`` or ``"mse"``.
        target: ``(N, C)`` :math:`T_n` of the normalized loss.
        coef: ``(N,)`` :math:`c_n`.
        layers: strictly increasing indices of the layers wanted.
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.

    Returns:
        ``(inputs, hessians)``: lists over ``layers`` of ``(N, n_l)`` layer inputs and
        ``(N, m_l, m_l)`` exactly symmetric Hessians.

    Example:
        >>> X, W = torch.randn(5, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
        >>> T, c = torch.zeros(5, 2, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
        >>> inputs, M = sequential_hbp(X, [W], [None], [], [], [0], "mse", T, c, [0])
        >>> M[0][0]   # MSE in this form: H_f = c I
        tensor([[1., 0.],
                [0., 1.]], dtype=torch.float64)
    """
    args = (X, weights, biases, act_codes, act_args, act_counts, loss, target, coef, layers,
            kind)
    if _native_kernel_for(_device_of(X=X, target=target, coef=coef)):
        inputs, hessians = torch.ops.hesskit.sequential_hbp(*args)
        return list(inputs), list(hessians)
    return _reference.sequential_hbp(*args)


def sequential_forward(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                       kind="hessian"):
    r"""The forward pass of a chain, as :func:`sequential_matmat` uses it.

    Everything a product needs that does not depend on the vectors: the augmented
    layer inputs :math:`\tilde a_{l-1} = [a_{l-1}; 1]`, the activation derivatives
    :math:`\sigma_l'`, the softmax (or the outputs, for MSE) and, for the Hessian and
    the functional part, :math:`\sigma_l'' \odot g_{a_l}` and :math:`g_{z_l}`. At fixed
    parameters and data (the iterations of an eigensolver) it is computed once and
    passed to every product as ``state``, which skips about a third of a
    single-vector product on a CPU.

    Args:
        X, weights, biases, act_codes, act_args, act_counts, loss, target, coef, kind:
            as in :func:`sequential_matmat`.

    Returns:
        A list of tensors, feature-major (rows are features, columns samples):
        ``[ã_l (n_l [+1], N)] * L + [σ'_l (m_l, N)] * L + [p (N, C)]``, followed
        for ``kind != "ggn"`` by ``[σ''_l ⊙ g_a (m_l, N)] * L + [g_z (m_l, N)] * L``.
    """
    args = (X, weights, biases, act_codes, act_args, act_counts, loss, target, coef, kind)
    if _native_kernel_for(_device_of(X=X, target=target, coef=coef)):
        return list(torch.ops.hesskit.sequential_forward(*args))
    return _reference.sequential_forward(*args)


def sequential_matmat(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                      V, kind="hessian", state=None):
    r"""Curvature of a Linear/activation chain times k vectors at once.

    Forward, R-forward (Pearlmutter 1994, "Fast exact multiplication by the
    Hessian"), backward and R-backward with the k tangents carried together: with
    :math:`\mathcal{R}\{\cdot\}` the directional derivative along a column of ``V``,

    .. math::

        \mathcal{R}z_l = V_{W_l} a_{l-1} + W_l \mathcal{R}a_{l-1} + V_{b_l}, \quad
        \mathcal{R}a_l = \sigma_l' \odot \mathcal{R}z_l, \quad
        \mathcal{R}g_f = H_f \mathcal{R}f,

        \mathcal{R}g_{z_l} = \sigma_l' \odot \mathcal{R}g_{a_l}
            + \sigma_l'' \odot g_{a_l} \odot \mathcal{R}z_l, \quad
        \mathcal{R}g_{a_{l-1}} = W_l^\top \mathcal{R}g_{z_l} + V_{W_l}^\top g_{z_l},

        (Hv)_{W_l} = \textstyle\sum_n \mathcal{R}g_{z_l} a_{l-1}^\top
            + g_{z_l} \mathcal{R}a_{l-1}^\top, \quad
        (Hv)_{b_l} = \textstyle\sum_n \mathcal{R}g_{z_l}.

    The GGN keeps only the terms through :math:`H_f`; ``"functional"`` only the others.

    Args:
        X, weights, biases, act_codes, act_args, act_counts, loss, target, coef: the
            chain and loss, as in :func:`sequential_hbp`.
        V: ``(P, k)`` vectors over all layers' parameters, in the order
            ``[W_1.reshape(-1), b_1, W_2.reshape(-1), ...]``.
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.
        state: ``None``, or :func:`sequential_forward` of the same arguments (and kind,
            or a residual kind's state for ``"ggn"``): the forward pass is then not
            recomputed. Its shapes are checked, its values cannot be: a state of other
            parameters or data gives wrong products.

    Returns:
        ``(P, k)`` products.
    """
    args = (X, weights, biases, act_codes, act_args, act_counts, loss, target, coef, V, kind,
            state)
    if _native_kernel_for(_device_of(X=X, target=target, coef=coef, V=V)):
        return torch.ops.hesskit.sequential_matmat(*args)
    return _reference.sequential_matmat(*args)


def sequential_dense(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                     layers, kind="hessian"):
    r"""The explicit curvature matrix of a Linear/activation chain over some layers.

    From per-sample Kronecker factors instead of P products: with
    :math:`\tilde a = [a; 1]`, :math:`M_m` from :func:`sequential_hbp`,
    :math:`P_{lm} = (\partial a_{m-1}/\partial z_l)^\top` and
    :math:`J_{l\leftarrow m} = P_{lm} W_m^\top`, the block of layers :math:`l \le m` is

    .. math::

        H_{lm} = \sum_n (J_{l\leftarrow m} M_m) \otimes \tilde a_{l-1}\tilde a_{m-1}^\top
        \;+\; \Big[\sum_n \tilde a_{l-1}[q]\, g_{z_m}[i]\, P_{lm}[p, j]\Big]_{(p,q),(i,j)}
        \quad (l < m,\ \text{weight columns of } m),

    each term one GEMM over the samples (about :math:`4NP^2` flops for the whole
    matrix); the lower triangle is the transpose. The GGN drops the second term and
    uses the GGN :math:`M_m`.

    Args:
        X, weights, biases, act_codes, act_args, act_counts, loss, target, coef: the
            chain and loss, as in :func:`sequential_hbp`.
        layers: strictly increasing indices of the layers whose parameters are the
            rows and columns, in the order ``[W_l.reshape(-1), b_l, ...]``.
        kind: ``"hessian"``, ``"ggn"`` or ``"functional"``.

    Returns:
        ``(P_sel, P_sel)`` symmetric matrix.
    """
    args = (X, weights, biases, act_codes, act_args, act_counts, loss, target, coef, layers,
            kind)
    if _native_kernel_for(_device_of(X=X, target=target, coef=coef)):
        return torch.ops.hesskit.sequential_dense(*args)
    return _reference.sequential_dense(*args)


def _sequential_size(weights, biases, layers) -> int:
    return sum(weights[l].numel() + (0 if biases[l] is None else biases[l].numel())
               for l in layers)


if _C is not None:

    @torch.library.register_fake("hesskit::sequential_hbp")
    def _sequential_hbp_fake(X, weights, biases, act_codes, act_args, act_counts, loss, target,
                             coef, layers, kind):
        _check_fake_devices("sequential_hbp", X=X, weights=weights, biases=biases,
                            target=target, coef=coef)
        N = X.shape[0]
        inputs = [X.new_empty((N, weights[l].shape[1])) for l in layers]
        hessians = [X.new_empty((N, weights[l].shape[0], weights[l].shape[0])) for l in layers]
        return inputs, hessians

    @torch.library.register_fake("hesskit::sequential_matmat")
    def _sequential_matmat_fake(X, weights, biases, act_codes, act_args, act_counts, loss, target,
                                coef, V, kind, state=None):
        _check_fake_devices("sequential_matmat", X=X, weights=weights, biases=biases,
                            target=target, coef=coef, V=V, state=state)
        torch._check(V.shape[0] == _sequential_size(weights, biases, range(len(weights))),
                     lambda: "sequential_matmat: V must have one row per parameter")
        return V.new_empty(V.shape)

    @torch.library.register_fake("hesskit::sequential_forward")
    def _sequential_forward_fake(X, weights, biases, act_codes, act_args, act_counts, loss,
                                 target, coef, kind):
        _check_fake_devices("sequential_forward", X=X, weights=weights, biases=biases,
                            target=target, coef=coef)
        N = X.shape[0]
        inputs = [X.new_empty((W.shape[1] + (b is not None), N)) for W, b in zip(weights, biases)]
        per_output = [X.new_empty((W.shape[0], N)) for W in weights]
        state = inputs + per_output + [X.new_empty(target.shape)]
        if kind != "ggn":
            state += [X.new_empty((W.shape[0], N)) for _ in range(2) for W in weights]
        return state

    @torch.library.register_fake("hesskit::sequential_dense")
    def _sequential_dense_fake(X, weights, biases, act_codes, act_args, act_counts, loss, target,
                               coef, layers, kind):
        _check_fake_devices("sequential_dense", X=X, weights=weights, biases=biases,
                            target=target, coef=coef)
        size = _sequential_size(weights, biases, layers)
        return X.new_empty((size, size))

    def _mark_non_differentiable(ctx, inputs, output) -> None:
        """The sequential ops compute curvature at fixed parameters and data and have no
        derivative formula: their outputs are marked non-differentiable, so that a
        gradient asked of them raises (``does not require grad``), as for
        ``torch.argmax``. Without this registration autograd ran the kernels with
        inputs that require grad and gave outputs with no gradient path, silently."""
        flat = output if isinstance(output, (list, tuple)) else [output]
        flat = [t for part in flat for t in (part if isinstance(part, (list, tuple)) else [part])]
        ctx.mark_non_differentiable(*flat)

    def _no_gradient(ctx, *grads):
        # register_autograd needs a backward; with every output non-differentiable,
        # autograd never calls it.
        raise RuntimeError("hesskit: the sequential ops are not differentiable")

    for _op in ("sequential_hbp", "sequential_matmat", "sequential_forward", "sequential_dense"):
        torch.library.register_autograd(f"hesskit::{_op}", _no_gradient,
                                        setup_context=_mark_non_differentiable)
    del _op
