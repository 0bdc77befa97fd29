"""Pure-PyTorch twins of the native ops: the test oracle and the fallback path.

Every function here computes exactly what the kernel of the same name in
``csrc/`` computes, written for clarity rather than speed. Inputs are assumed
valid: the arguments are checked once, in the C++ ops (:mod:`hesskit.ops` routes
here only when ``hesskit._C`` has no kernel for the inputs' device).
"""
from __future__ import annotations

import functools

import torch

__all__ = ["kron_block", "kron_block_vjp"]


# --- kron_block -----------------------------------------------------------------


def kron_block(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    r"""Exact Hessian block of a Linear layer's weight, by ``einsum``.

    .. math::

        H = \sum_{k=1}^{N} (a_k a_k^\top) \otimes M_k, \qquad
        H[i n + a,\; j n + b] = \sum_k M_k[i, j]\, A[k, a]\, A[k, b].

    Args:
        A: ``(N, n)`` layer inputs :math:`a_k`.
        M: ``(N, m, m)`` Hessians of the loss w.r.t. the layer outputs.

    Returns:
        ``(m*n, m*n)`` matrix in the order of ``W.reshape(-1)`` for ``W`` of
        shape ``(m, n)`` (row ``out * n + in``).
    """
    n, m = A.shape[1], M.shape[1]
    return torch.einsum("kij,ka,kb->iajb", M, A, A).reshape(m * n, m * n)


def kron_block_vjp(
    A: torch.Tensor, M: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Vector-Jacobian product of :func:`kron_block` (its backward).

    With :math:`G` the incoming gradient viewed as ``G[i, a, j, b]`` (the
    ``(m*n, m*n)`` layout of :math:`H`),

    .. math::

        \frac{\partial L}{\partial M[k,i,j]} = \sum_{a,b} G[i,a,j,b]\, A[k,a] A[k,b],

        \frac{\partial L}{\partial A[k,c]}
          = \sum_{i,j,b} M[k,i,j]\, G[i,c,j,b]\, A[k,b]
          + \sum_{i,j,a} M[k,i,j]\, G[i,a,j,c]\, A[k,a].

    The intermediates are ``(N, m, n, m)``; the ``(N, n, n)`` Kronecker rows
    are never formed.

    Args:
        A: ``(N, n)`` layer inputs.
        M: ``(N, m, m)`` output-side Hessians.
        grad: ``(m*n, m*n)`` gradient of the loss w.r.t. ``kron_block(A, M)``.

    Returns:
        ``(grad_A, grad_M)`` with the shapes of ``A`` and ``M``.
    """
    N, n = A.shape
    m = M.shape[1]
    G = grad.reshape(m, n, m, n)
    # T[k, i, a, j] = sum_b G[i, a, j, b] A[k, b]
    T = (A @ G.reshape(m * n * m, n).T).view(N, m, n, m)
    # U[k, j, c, i] = sum_a G[i, a, j, c] A[k, a]
    U = (A @ G.permute(2, 3, 0, 1).reshape(m * n * m, n).T).view(N, m, n, m)
    grad_M = torch.einsum("ka,kiaj->kij", A, T)
    grad_A = torch.einsum("kij,kicj->kc", M, T) + torch.einsum("kij,kjci->kc", M, U)
    return grad_A, grad_M


# --- fused chain path (sequential_hbp, sequential_matmat, sequential_dense) -----
#
# The chain a_0 = X, z_l = a_{l-1} W_l^T + b_l, a_l = s_l(z_l), f = a_L and the
# normalized loss  l = sum_n c_n Phi(f_n) - <T_n, f_n>  (Phi = logsumexp for
# "cross_entropy", |f|^2 / 2 for "mse"), differentiated with torch.func: an oracle
# that shares no code with the kernels' recursions (backward Hessian propagation,
# R-operator, Kronecker factors).

__all__ += ["sequential_hbp", "sequential_matmat", "sequential_dense", "sequential_forward"]

_SEQ_F = torch.nn.functional

#: activation code -> s(x, arg0, arg1) (codes of csrc/sequential_math.h)
_SEQ_ACTIVATIONS = {
    1: lambda x, a0, a1: torch.relu(x),
    2: lambda x, a0, a1: _SEQ_F.leaky_relu(x, a0),
    3: lambda x, a0, a1: torch.tanh(x),
    4: lambda x, a0, a1: torch.sigmoid(x),
    5: lambda x, a0, a1: _SEQ_F.gelu(x),
    6: lambda x, a0, a1: _SEQ_F.gelu(x, approximate="tanh"),
    7: lambda x, a0, a1: _SEQ_F.silu(x),
    8: lambda x, a0, a1: _SEQ_F.softplus(x, beta=a0, threshold=a1),
    9: lambda x, a0, a1: _SEQ_F.elu(x, alpha=a0),
}


def _seq_programs(act_codes, act_args, act_counts):
    programs, pos = [], 0
    for count in act_counts:
        programs.append([(int(act_codes[pos + j]), float(act_args[2 * (pos + j)]),
                          float(act_args[2 * (pos + j) + 1])) for j in range(count)])
        pos += count
    return programs


def _seq_layers(weights, biases, programs, start: int = 0):
    """The layers from ``start`` on: (W, b, program) triples."""
    return list(zip(weights, biases, programs))[start:]


def _seq_affine(a: torch.Tensor, W: torch.Tensor, b) -> torch.Tensor:
    """A Linear layer's output ``a Wᵀ (+ b)``."""
    return a @ W.T if b is None else torch.addmm(b, a, W.T)


def _seq_activate(x: torch.Tensor, program) -> torch.Tensor:
    """A layer's activation program (its pointwise functions in order) applied to ``x``."""
    for code, arg0, arg1 in program:
        x = _SEQ_ACTIVATIONS[code](x, arg0, arg1)
    return x


def _seq_forward(a: torch.Tensor, params, layers) -> torch.Tensor:
    """Chain output from the input ``a`` of ``layers``; ``params`` = [(W, b), ...]."""
    for (W, b), (_, _, program) in zip(params, layers):
        a = _seq_activate(_seq_affine(a, W, b), program)
    return a


def _seq_head(loss: str, f: torch.Tensor, target: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    if loss == "cross_entropy":
        phi = torch.logsumexp(f, dim=-1)
    elif loss == "mse":
        phi = 0.5 * (f * f).sum(-1)
    else:
        raise ValueError(f"loss: expected 'cross_entropy' or 'mse', got {loss!r}")
    return (coef * phi).sum() - (target * f).sum()


def _seq_output_hessian(loss: str, f: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Per-sample Hessian of the normalized loss w.r.t. the outputs, (N, C, C)."""
    if loss == "cross_entropy":
        p = torch.softmax(f, dim=-1)
        H = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    else:
        H = torch.eye(f.shape[1], dtype=f.dtype, device=f.device).expand(f.shape[0], -1, -1)
    return coef.view(-1, 1, 1) * H


def _seq_check_kind(kind: str) -> None:
    if kind not in ("hessian", "ggn", "functional"):
        raise ValueError(f"kind: expected 'hessian', 'ggn' or 'functional', got {kind!r}")


def _seq_flat(weights, biases, layers_idx):
    """Flat vector [W.flatten(), b, ...] of the given layers and its unflattener."""
    pieces = []
    for l in layers_idx:
        pieces.append(weights[l])
        if biases[l] is not None:
            pieces.append(biases[l])
    sizes = [p.numel() for p in pieces]

    def unflatten(flat):
        parts = iter(zip(flat.split(sizes), pieces))
        out = {}
        for l in layers_idx:
            w, ref = next(parts)
            W = w.view_as(ref)
            b = None
            if biases[l] is not None:
                bb, ref_b = next(parts)
                b = bb.view_as(ref_b)
            out[l] = (W, b)
        return out

    return torch.cat([p.detach().reshape(-1) for p in pieces]), unflatten


def _seq_dense_functions(X, weights, biases, programs, loss, target, coef, layers_idx):
    """(flat0, outputs(flat), loss(flat)) with the layers in ``layers_idx`` free."""
    start = layers_idx[0]
    a = _seq_forward(X, list(zip(weights, biases))[:start], _seq_layers(weights, biases, programs)[:start])
    chain = _seq_layers(weights, biases, programs, start)
    flat0, unflatten = _seq_flat(weights, biases, layers_idx)

    def outputs(flat):
        free = unflatten(flat)
        params = [free.get(l, (weights[l], biases[l])) for l in range(start, len(weights))]
        return _seq_forward(a, params, chain)

    return flat0, outputs, lambda flat: _seq_head(loss, outputs(flat), target, coef)


def sequential_dense(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                     layers, kind):
    """Reference of ``hesskit::sequential_dense``: the explicit curvature matrix of the
    normalized loss over the parameters of ``layers`` (order [W_l.flatten(), b_l, ...])."""
    _seq_check_kind(kind)
    layers_idx = [int(l) for l in layers]
    programs = _seq_programs(act_codes, act_args, act_counts)
    flat0, outputs, loss_of = _seq_dense_functions(X, weights, biases, programs, loss, target,
                                                   coef, layers_idx)
    H = torch.func.hessian(loss_of)(flat0) if kind != "ggn" else None
    if kind == "hessian":
        return H
    f = outputs(flat0).detach()
    J = torch.func.jacrev(outputs)(flat0)  # (N, C, P)
    HJ = _seq_output_hessian(loss, f, coef) @ J
    G = J.flatten(0, 1).T @ HJ.flatten(0, 1)
    return G if kind == "ggn" else H - G


def sequential_forward(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                       kind):
    """Reference of ``hesskit::sequential_forward``: the forward-pass tensors, feature-major,
    ``[a~_l]*L + [s'_l]*L + [p] (+ [s''_l . g_a,l]*L + [g_z,l]*L unless kind == "ggn")``,
    with the derivatives of the activations by ``torch.func.grad`` per entry and the
    gradients w.r.t. the layer outputs by autograd."""
    _seq_check_kind(kind)
    programs = _seq_programs(act_codes, act_args, act_counts)

    inputs, d1, d2, outs = [], [], [], []
    a = X.detach().requires_grad_()  # a graph from the inputs, whatever W requires
    for W, b, program in zip(weights, biases, programs):
        a_in = a.detach()
        inputs.append(a_in if b is None else torch.cat([a_in, torch.ones_like(a_in[:, :1])], 1))
        z = _seq_affine(a, W, b)
        s = functools.partial(_seq_activate, program=program)
        entries = z.detach().reshape(-1)
        d1.append(torch.func.vmap(torch.func.grad(s))(entries).view_as(z))
        d2.append(torch.func.vmap(torch.func.grad(torch.func.grad(s)))(entries).view_as(z))
        a = s(z)
        outs.append((z, a))
    f = a
    p = torch.softmax(f, dim=-1) if loss == "cross_entropy" else f
    state = [t.T.contiguous() for t in inputs] + [t.T.contiguous() for t in d1] + [p.detach()]
    if kind != "ggn":
        head = _seq_head(loss, f, target, coef)
        tensors = [z for z, _ in outs] + [a for _, a in outs]
        grads = torch.autograd.grad(head, tensors)
        g_z, g_a = grads[:len(outs)], grads[len(outs):]
        state += [(s2 * g).T.contiguous() for s2, g in zip(d2, g_a)]
        state += [g.T.contiguous() for g in g_z]
    return [t.detach() for t in state]


def sequential_matmat(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                      V, kind, state=None):
    """Reference of ``hesskit::sequential_matmat``: curvature times ``V`` (P, k) over all
    layers, vectorized over the k columns with ``torch.func``. ``state`` (the kernels'
    cached forward pass) is not used: the reference always differentiates from scratch."""
    _seq_check_kind(kind)
    programs = _seq_programs(act_codes, act_args, act_counts)
    layers_idx = list(range(len(weights)))
    flat0, outputs, loss_of = _seq_dense_functions(X, weights, biases, programs, loss, target,
                                                   coef, layers_idx)
    if V.shape[1] == 0:
        return V.clone()
    columns = V.T

    def hvp(v):
        return torch.func.jvp(torch.func.grad(loss_of), (flat0,), (v,))[1]

    def gvp(v):
        f, Jv = torch.func.jvp(outputs, (flat0,), (v,))
        HJv = torch.einsum("nij,nj->ni", _seq_output_hessian(loss, f.detach(), coef), Jv)
        return torch.func.vjp(outputs, flat0)[1](HJv)[0]

    if kind == "hessian":
        return torch.func.vmap(hvp)(columns).T.contiguous()
    if kind == "ggn":
        return torch.func.vmap(gvp)(columns).T.contiguous()
    return (torch.func.vmap(hvp)(columns) - torch.func.vmap(gvp)(columns)).T.contiguous()


def sequential_hbp(X, weights, biases, act_codes, act_args, act_counts, loss, target, coef,
                   layers, kind):
    """Reference of ``hesskit::sequential_hbp``: for each selected layer its input
    a_{l-1} (N, n_l) and the per-sample Hessian of the loss w.r.t. its outputs z_l,
    (N, m_l, m_l), from ``torch.func.hessian`` of the network above z_l."""
    _seq_check_kind(kind)
    programs = _seq_programs(act_codes, act_args, act_counts)
    chain = _seq_layers(weights, biases, programs)
    params = list(zip(weights, biases))
    inputs, hessians = [], []
    for l in [int(i) for i in layers]:
        a = _seq_forward(X, params[:l], chain[:l])
        W, b = params[l]
        z = _seq_affine(a, W, b)
        upper = [(torch.eye(W.shape[0], dtype=W.dtype, device=W.device), None)] + params[l + 1:]
        upper_chain = [(None, None, programs[l])] + chain[l + 1:]

        def sample_outputs(zn):
            return _seq_forward(zn.unsqueeze(0), upper, upper_chain).squeeze(0)

        def sample_loss(zn, tn, cn):
            return _seq_head(loss, sample_outputs(zn).unsqueeze(0), tn.unsqueeze(0), cn.view(1))

        H = torch.func.vmap(torch.func.hessian(sample_loss))(z, target, coef) \
            if kind != "ggn" else None
        if kind != "hessian":
            J = torch.func.vmap(torch.func.jacrev(sample_outputs))(z)  # (N, C, m)
            f = _seq_forward(z, upper, upper_chain)
            G = J.transpose(1, 2) @ _seq_output_hessian(loss, f, coef) @ J
            H = G if kind == "ggn" else H - G
        inputs.append(a.clone())
        hessians.append(H)
    return inputs, hessians
