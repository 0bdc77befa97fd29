"""``hk.ops``: the compiled extension ``hesskit._C``, loaded, and one wrapper per op.

``hesskit._C`` registers the ``torch.ops.hesskit.*`` operators (``TORCH_LIBRARY``)
and a small pybind11 module with build information. When it is missing or fails
to load, every op falls back to its pure-PyTorch twin in :mod:`hesskit._reference`
and a single warning says why; :func:`native_available` then returns ``False``.

The wrappers here validate their arguments (``TypeError``/``ValueError`` naming
the argument) and pick the native kernel when one exists for the inputs' device,
else the reference. For the native ops this module also registers the fake
(meta) implementation used by ``torch.compile``/``opcheck`` and the autograd
formula, so both paths are differentiable.
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
    """Return ``True`` when the compiled kernels (``hesskit._C``) are loaded."""
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


def _check_kron_block_args(A: object, M: object) -> None:
    for name, t in (("A", A), ("M", M)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if A.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"A: expected dtype float32 or float64, got {A.dtype}")
    if M.dtype != A.dtype:
        raise TypeError(f"M: expected the dtype of A ({A.dtype}), got {M.dtype}")
    if M.device != A.device:
        raise ValueError(f"M: expected the device of A ({A.device}), got {M.device}")
    if A.dim() != 2:
        raise ValueError(f"A: expected a 2-D tensor (N, n), got shape {tuple(A.shape)}")
    if M.dim() != 3 or M.shape[1] != M.shape[2]:
        raise ValueError(f"M: expected a 3-D tensor (N, m, m) of square matrices, "
                         f"got shape {tuple(M.shape)}")
    if M.shape[0] != A.shape[0]:
        raise ValueError(f"M: expected N = {A.shape[0]} rows (the rows of A), got {M.shape[0]}")


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
        ValueError: wrong ranks, non-square ``M``, different ``N`` or devices.

    Example:
        >>> A = torch.randn(100, 3, dtype=torch.float64)
        >>> M = torch.eye(2, dtype=torch.float64).expand(100, 2, 2)
        >>> kron_block(A, M).shape  # for MSE-like M = I: H = I (x) A^T A
        torch.Size([6, 6])
    """
    _check_kron_block_args(A, M)
    if _native_kernel_for(A.device):
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
    _check_kron_block_args(A, M)
    N, n = A.shape
    m = M.shape[1]
    augmented = kron_block(torch.cat([A, A.new_ones(N, 1)], dim=1), M)
    outs = torch.arange(m, device=A.device)
    weight_rows = (outs[:, None] * (n + 1) + torch.arange(n, device=A.device)[None, :]).reshape(-1)
    order = torch.cat([weight_rows, outs * (n + 1) + n])
    return augmented.index_select(0, order).index_select(1, order)


if _C is not None:

    @torch.library.register_fake("hesskit::kron_block")
    def _kron_block_fake(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        torch._check(A.dim() == 2, lambda: "kron_block: A must be 2-D")
        torch._check(M.dim() == 3 and M.shape[1] == M.shape[2],
                     lambda: "kron_block: M must be (N, m, m)")
        torch._check(M.shape[0] == A.shape[0], lambda: "kron_block: A and M need the same N")
        torch._check(A.dtype in _FLOAT_DTYPES and M.dtype == A.dtype,
                     lambda: "kron_block: A and M must share a float32/float64 dtype")
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


# --- sequential engine (sequential_hbp, sequential_matmat, sequential_dense) -----
#
# Chains a_0 = X, z_l = a_{l-1} W_l^T + b_l, a_l = s_l(z_l), f = a_L with the
# activations s_l given as codes (hesskit.engines.chain.ACTIVATION_CODES), and the
# normalized loss  l = sum_n coef_n Phi(f_n) - <target_n, f_n>  with Phi = logsumexp
# ("cross_entropy") or |f|^2 / 2 ("mse"); hesskit.engines.chain.loss_terms builds
# (target, coef) from nn.CrossEntropyLoss / nn.MSELoss. The native engine
# (hesskit/engines/native.py) is the user-facing interface of these ops.

__all__ += ["sequential_hbp", "sequential_matmat", "sequential_dense", "sequential_forward"]

_SEQ_KINDS = ("hessian", "ggn", "functional")
_SEQ_LOSSES = ("cross_entropy", "mse")
_SEQ_CODES = range(1, 10)
_SEQ_MAX_ACTIVATIONS = 8


def _check_tensor(name: str, t: object, like: torch.Tensor, shape: tuple) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name}: expected the dtype of X ({like.dtype}), got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name}: expected the device of X ({like.device}), got {t.device}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")


def _sequential_chain(X, weights, biases, act_codes, act_args, act_counts, loss, target,
                      coef, kind) -> tuple:
    """Check a chain's arguments; return them normalized (lists of ints and floats)
    in the ops' order, without ``kind`` and the op-specific tail."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X: expected a torch.Tensor, got {type(X).__name__}")
    if X.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"X: expected dtype float32 or float64, got {X.dtype}")
    if X.dim() != 2:
        raise ValueError(f"X: expected a 2-D tensor (N, features), got shape {tuple(X.shape)}")
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights: expected a non-empty list of (m, n) tensors")
    if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
        raise ValueError(f"biases: expected a list of {len(weights)} tensors or None (one per "
                         "weight)")
    width = X.shape[1]
    for l, (W, b) in enumerate(zip(weights, biases)):
        if not isinstance(W, torch.Tensor) or W.dim() != 2:
            raise ValueError(f"weights[{l}]: expected a 2-D tensor (m, {width})")
        _check_tensor(f"weights[{l}]", W, X, (W.shape[0], width))
        if b is not None:
            _check_tensor(f"biases[{l}]", b, X, (W.shape[0],))
        width = W.shape[0]
    counts = list(act_counts)
    if len(counts) != len(weights) or any(not 0 <= c <= _SEQ_MAX_ACTIVATIONS for c in counts):
        raise ValueError(f"act_counts: expected {len(weights)} counts in [0, "
                         f"{_SEQ_MAX_ACTIVATIONS}], got {counts}")
    if sum(counts) != len(act_codes) or any(int(c) not in _SEQ_CODES for c in act_codes):
        raise ValueError(f"act_codes: expected {sum(counts)} codes in 1..9, got {list(act_codes)}")
    if len(act_args) != 2 * len(act_codes):
        raise ValueError(f"act_args: expected {2 * len(act_codes)} numbers (two per code), got "
                         f"{len(act_args)}")
    if loss not in _SEQ_LOSSES:
        raise ValueError(f"loss: expected one of {_SEQ_LOSSES}, got {loss!r}")
    _check_tensor("target", target, X, (X.shape[0], width))
    _check_tensor("coef", coef, X, (X.shape[0],))
    if kind not in _SEQ_KINDS:
        raise ValueError(f"kind: expected one of {_SEQ_KINDS}, got {kind!r}")
    return (X, list(weights), list(biases), [int(c) for c in act_codes],
            [float(a) for a in act_args], [int(c) for c in act_counts], loss, target, coef)


def _check_layers(layers, n_layers: int) -> list[int]:
    layers = [int(l) for l in layers]
    if not layers or any(not 0 <= l < n_layers for l in layers) \
            or any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers: expected strictly increasing layer indices in [0, "
                         f"{n_layers}), got {layers}")
    return layers


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
            (``hesskit.engines.chain.ACTIVATION_CODES``), two arguments per code,
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
    chain = _sequential_chain(X, weights, biases, act_codes, act_args, act_counts, loss,
                              target, coef, kind)
    args = (*chain, _check_layers(layers, len(weights)), kind)
    if _native_kernel_for(X.device):
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
    chain = _sequential_chain(X, weights, biases, act_codes, act_args, act_counts, loss,
                              target, coef, kind)
    if _native_kernel_for(X.device):
        return list(torch.ops.hesskit.sequential_forward(*chain, kind))
    return _reference.sequential_forward(*chain, kind)


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
    chain = _sequential_chain(X, weights, biases, act_codes, act_args, act_counts, loss,
                              target, coef, kind)
    P = sum(W.numel() + (0 if b is None else b.numel()) for W, b in zip(weights, biases))
    if not isinstance(V, torch.Tensor) or V.dim() != 2:
        raise ValueError(f"V: expected a 2-D tensor ({P}, k)")
    _check_tensor("V", V, X, (P, V.shape[1]))
    if state is not None and (not isinstance(state, (list, tuple))
                              or not all(isinstance(t, torch.Tensor) for t in state)):
        raise TypeError("state: expected None or the list of tensors of sequential_forward")
    args = (*chain, V, kind, None if state is None else list(state))
    if _native_kernel_for(X.device):
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
    chain = _sequential_chain(X, weights, biases, act_codes, act_args, act_counts, loss,
                              target, coef, kind)
    args = (*chain, _check_layers(layers, len(weights)), kind)
    if _native_kernel_for(X.device):
        return torch.ops.hesskit.sequential_dense(*args)
    return _reference.sequential_dense(*args)


def _sequential_size(weights, biases, layers) -> int:
    return sum(weights[l].numel() + (0 if biases[l] is None else biases[l].numel())
               for l in layers)


if _C is not None:

    @torch.library.register_fake("hesskit::sequential_hbp")
    def _sequential_hbp_fake(X, weights, biases, act_codes, act_args, act_counts, loss, target,
                             coef, layers, kind):
        N = X.shape[0]
        inputs = [X.new_empty((N, weights[l].shape[1])) for l in layers]
        hessians = [X.new_empty((N, weights[l].shape[0], weights[l].shape[0])) for l in layers]
        return inputs, hessians

    @torch.library.register_fake("hesskit::sequential_matmat")
    def _sequential_matmat_fake(X, weights, biases, act_codes, act_args, act_counts, loss, target,
                                coef, V, kind, state=None):
        torch._check(V.shape[0] == _sequential_size(weights, biases, range(len(weights))),
                     lambda: "sequential_matmat: V must have one row per parameter")
        return V.new_empty(V.shape)

    @torch.library.register_fake("hesskit::sequential_forward")
    def _sequential_forward_fake(X, weights, biases, act_codes, act_args, act_counts, loss,
                                 target, coef, kind):
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
        size = _sequential_size(weights, biases, layers)
        return X.new_empty((size, size))

    def _not_differentiable(op: str):
        """An autograd formula that refuses: the sequential ops compute curvature at
        fixed parameters and data, and have no derivative formula. Registered so that
        a gradient through them raises instead of silently treating their outputs as
        constants (which is what an op without an autograd kernel does)."""
        def backward(ctx, *grads):
            raise RuntimeError(f"hesskit::{op} is not differentiable; detach its inputs "
                               "(curvature products are computed at fixed parameters)")
        return backward

    def _no_context(ctx, inputs, output) -> None:
        pass

    for _op in ("sequential_hbp", "sequential_matmat", "sequential_forward", "sequential_dense"):
        torch.library.register_autograd(f"hesskit::{_op}", _not_differentiable(_op),
                                        setup_context=_no_context)
    del _op
