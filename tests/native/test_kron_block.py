"""kron_block: H[i*n+a, j*n+b] = sum_k M[k,i,j] A[k,a] A[k,b].

Checked against ``torch.func.hessian`` of a Linear layer's loss (independent of any
formula here), the CPU/CUDA kernels against the einsum reference over random
shapes, layouts and dtypes, plus opcheck, autograd and the argument checks.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hesskit import _reference, ops

requires_native = pytest.mark.skipif(
    not ops.native_available(), reason=f"hesskit._C is not loaded ({ops.load_error()})"
)
requires_native_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and ops.native_available() and ops.build_info()["cuda"]),
    reason="no CUDA device, or hesskit._C was built without CUDA",
)

DTYPES = [torch.float32, torch.float64]


def random_inputs(N, n, m, dtype, seed, symmetric=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, n, generator=g, dtype=torch.float64)
    X = torch.randn(N, m, m, generator=g, dtype=torch.float64)
    M = X + X.mT if symmetric else X  # X + X^T is exactly symmetric in floating point
    return A.to(device, dtype), M.to(device, dtype)


def assert_matches_sum(H, A, M):
    """|H - sum| <= 2 (N + 4) eps * sum |M||A||A|, entrywise (a GEMM's error bound).

    The oracle is the float64 einsum of the same inputs, so a float32 kernel is
    held to float32 accuracy and any misplaced or missing term fails by O(1).
    """
    A64, M64 = A.double().cpu(), M.double().cpu()
    # The sum is linear in the samples: chunks of rows bound the einsum's memory.
    exact = sum(_reference.kron_block(a, m) for a, m in zip(A64.split(256), M64.split(256)))
    scale = sum(_reference.kron_block(a.abs(), m.abs())
                for a, m in zip(A64.split(256), M64.split(256)))
    tol = 2 * (A.shape[0] + 4) * torch.finfo(A.dtype).eps
    assert H.shape == exact.shape and H.dtype == A.dtype and H.device == A.device
    err = (H.double().cpu() - exact).abs()
    bad = err > tol * scale
    assert not bad.any(), (
        f"{int(bad.sum())} entries off; worst error {err.max().item():.3e}, "
        f"scale there {scale.flatten()[err.argmax()].item():.3e}"
    )


# --- independent oracle: torch.func.hessian of a Linear layer's loss ------------


def linear_ce_problem(N=23, n_raw=4, n=5, m=3, seed=0, dtype=torch.float64):
    """A Linear layer on tanh features, mean cross-entropy, and its analytic M."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, n_raw, generator=g, dtype=dtype)
    A = torch.tanh(X @ torch.randn(n_raw, n, generator=g, dtype=dtype))
    W = 0.5 * torch.randn(m, n, generator=g, dtype=dtype)
    b = 0.5 * torch.randn(m, generator=g, dtype=dtype)
    y = torch.randint(m, (N,), generator=g)

    def loss(W, b):
        return F.cross_entropy(A @ W.T + b, y)

    p = torch.softmax(A @ W.T + b, dim=1)
    # d^2/dz^2 of CE(z, y) is diag(p) - p p^T; the mean contributes 1/N.
    M = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) / N
    return A, M, W, b, loss


def test_weight_block_equals_func_hessian(path):
    A, M, W, b, loss = linear_ce_problem()
    m, n = W.shape
    expected = torch.func.hessian(lambda W: loss(W, b))(W).reshape(m * n, m * n)
    torch.testing.assert_close(ops.kron_block(A, M), expected, rtol=1e-12, atol=1e-14)


def test_with_bias_equals_func_hessian_over_weight_then_bias(path):
    A, M, W, b, loss = linear_ce_problem(N=31, n=4, m=5, seed=1)
    m, n = W.shape

    def flat_loss(theta):  # theta = [W.reshape(-1), b], nn.Linear's flattening order
        return loss(theta[: m * n].reshape(m, n), theta[m * n:])

    expected = torch.func.hessian(flat_loss)(torch.cat([W.reshape(-1), b]))
    torch.testing.assert_close(ops.kron_block_with_bias(A, M), expected,
                               rtol=1e-12, atol=1e-14)


def test_mse_block_is_identity_kron_gram(path):
    """MSE: M_k = (2/N) I, so H = I (x) (2/N) A^T A (block diagonal, in W.reshape(-1) order)."""
    A, _ = random_inputs(40, 6, 1, torch.float64, seed=3)
    m, N = 3, A.shape[0]
    W = torch.randn(m, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    Y = torch.randn(N, m, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = torch.func.hessian(lambda W: F.mse_loss(A @ W.T, Y, reduction="sum") / N)(W)
    M = (2.0 / N) * torch.eye(m, dtype=torch.float64).expand(N, m, m)
    H = ops.kron_block(A, M)
    torch.testing.assert_close(H, expected.reshape(m * 6, m * 6), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(H, torch.kron(torch.eye(m, dtype=torch.float64), 2.0 / N * A.T @ A))


# --- kernels against the reference over random shapes, layouts and dtypes ------

SIZES = st.one_of(st.integers(1, 8), st.integers(1, 200))
MAX_OUTPUT_SIDE = 1200  # m*n: H has (m n)^2 entries


@st.composite
def problems(draw):
    N, n = draw(SIZES), draw(SIZES)
    m = draw(st.integers(1, max(1, min(200, MAX_OUTPUT_SIDE // n))))
    return dict(N=N, n=n, m=m, seed=draw(st.integers(0, 2**31 - 1)),
                symmetric=draw(st.booleans()),
                layout_A=draw(st.sampled_from(["contiguous", "transposed", "strided"])),
                layout_M=draw(st.sampled_from(["contiguous", "transposed", "strided", "broadcast"])))


def with_layout(t, layout):
    """The same values as ``t`` in another memory layout (a non-contiguous view)."""
    if layout == "contiguous":
        return t
    if layout == "transposed":  # last two dims column-major
        return t.mT.contiguous().mT
    if layout == "strided":  # every other element of a larger buffer
        big = torch.zeros(*(2 * s for s in t.shape), dtype=t.dtype, device=t.device)
        view = big[tuple(slice(None, None, 2) for _ in t.shape)]
        view.copy_(t)
        return view
    if layout == "broadcast":  # one matrix for every sample, batch stride 0
        return t[:1].expand_as(t)
    raise ValueError(layout)


@requires_native
@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_cpu_kernel_matches_reference(dtype, problem):
    A, M = random_inputs(problem["N"], problem["n"], problem["m"], dtype, problem["seed"],
                         problem["symmetric"])
    A, M = with_layout(A, problem["layout_A"]), with_layout(M, problem["layout_M"])
    H = torch.ops.hesskit.kron_block(A, M)
    assert_matches_sum(H, A, M)
    if problem["symmetric"]:  # mirrored from the upper triangle: exactly symmetric
        assert torch.equal(H, H.T)


@requires_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_kernel_accumulates_over_row_chunks(dtype):
    """Each task takes the rows in chunks of at most 2^17 / 64 = 2048 (its workspace
    over its slab width >= 64): with N = 5000 the chunks must add up."""
    A, M = random_inputs(5000, 32, 10, dtype, seed=7)
    assert_matches_sum(torch.ops.hesskit.kron_block(A, M), A, M)


@requires_native
def test_cpu_kernel_nearly_symmetric_M_takes_the_general_path():
    """An M symmetric up to one ulp is not treated as symmetric (the sum is as defined)."""
    A, M = random_inputs(50, 7, 4, torch.float64, seed=8)
    M[:, 0, 1] = torch.nextafter(M[:, 0, 1], torch.tensor(torch.inf, dtype=torch.float64))
    M[:, 2, 3] += 1.0  # and one clearly asymmetric entry
    H = torch.ops.hesskit.kron_block(A, M)
    assert_matches_sum(H, A, M)
    assert not torch.equal(H, H.T)


@pytest.mark.parametrize("N", [0, 1])
def test_empty_and_single_sample(path, N):
    A, M = random_inputs(N, 3, 2, torch.float64, seed=9)
    H = ops.kron_block(A, M)
    expected = torch.zeros(6, 6, dtype=torch.float64) if N == 0 else torch.kron(M[0], torch.outer(A[0], A[0]))
    torch.testing.assert_close(H, expected, rtol=1e-14, atol=0)


def test_float32_wrapper(path):
    A, M = random_inputs(37, 9, 4, torch.float32, seed=10)
    assert_matches_sum(ops.kron_block(A, M), A, M)


# --- opcheck and autograd -----------------------------------------------------------


@requires_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    A, M = random_inputs(13, 5, 3, dtype, seed=11)
    M_general = random_inputs(13, 5, 3, dtype, seed=12, symmetric=False)[1]
    for args in [(A, M), (with_layout(A, "transposed"), with_layout(M, "strided")), (A, M_general)]:
        torch.library.opcheck(torch.ops.hesskit.kron_block.default, args)
    # with gradients: the registered autograd formula and the fake kernel under AOT
    args = (with_layout(A, "transposed").requires_grad_(), M_general.requires_grad_())
    torch.library.opcheck(torch.ops.hesskit.kron_block.default, args)


def test_vjp_matches_autograd_of_einsum():
    A, M = random_inputs(11, 4, 3, torch.float64, seed=13, symmetric=False)
    G = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    A_, M_ = A.clone().requires_grad_(), M.clone().requires_grad_()
    expected = torch.autograd.grad(_reference.kron_block(A_, M_), (A_, M_), G)
    got = _reference.kron_block_vjp(A, M, G)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_gradcheck(path):
    A, M = random_inputs(6, 3, 2, torch.float64, seed=15, symmetric=False)
    assert torch.autograd.gradcheck(ops.kron_block,
                                    (A.requires_grad_(), M.requires_grad_()))


# --- argument checks ----------------------------------------------------------------

_A, _M = random_inputs(4, 3, 2, torch.float64, seed=0)

# Checked once, in C++ (csrc/kron_block.h), for the wrappers and direct op calls alike;
# only "is it a tensor" in the wrappers (the op's schema raises a RuntimeError).
BAD_INPUTS = [
    (_A.numpy(), _M, TypeError, r"^A: expected a torch.Tensor, got ndarray"),
    (_A, [[1.0]], TypeError, r"^M: expected a torch.Tensor, got list"),
    (_A, _M.to("meta"), RuntimeError,
     r"kron_block: M must be on the device of A \(cpu\), got meta"),
    (_A.long(), _M.long(), TypeError, r"kron_block: A must be float32 or float64, got Long"),
    (_A.half(), _M.half(), TypeError, r"kron_block: A must be float32 or float64, got Half"),
    (_A, _M.float(), TypeError, r"kron_block: M must have the dtype of A \(Double\), got Float"),
    (_A[0], _M, ValueError, r"kron_block: A must be 2-D \(N, n\), got 1-D"),
    (_A, _M[0], ValueError, r"kron_block: M must be 3-D \(N, m, m\), got 2-D"),
    (_A, _M[:, :, :1], ValueError, r"kron_block: M must hold square \(m, m\) matrices, got "
                                   r"\[4, 2, 1\]"),
    (_A, _M[:3], ValueError, r"kron_block: A and M must have the same number of rows N, got 4 "
                             r"and 3"),
]


@requires_native
@pytest.mark.parametrize("fn", [ops.kron_block, ops.kron_block_with_bias,
                                lambda A, M: torch.ops.hesskit.kron_block(A, M)],
                         ids=["kron_block", "kron_block_with_bias", "torch.ops"])
@pytest.mark.parametrize("A, M, exc, match", BAD_INPUTS)
def test_bad_inputs_name_the_argument(fn, A, M, exc, match):
    if not isinstance(A, torch.Tensor) or not isinstance(M, torch.Tensor):
        if fn.__name__ == "<lambda>":  # torch.ops: the schema's error
            exc, match = RuntimeError, "argument '" + ("A" if isinstance(M, torch.Tensor)
                                                       else "M") + "'"
    with pytest.raises(exc, match=match):
        fn(A, M)


@requires_native
def test_device_without_kernels_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(ops, "_warned_fallback", set())
    A, M = random_inputs(5, 3, 2, torch.float64, seed=16)
    A, M = A.to("meta"), M.to("meta")
    with pytest.warns(RuntimeWarning, match="no kernels for device type 'meta'"):
        H = ops.kron_block(A, M)
    assert H.shape == (6, 6) and H.device.type == "meta"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per device type
        ops.kron_block(A, M)


# --- CUDA ---------------------------------------------------------------------------


@requires_native_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, n, m", [
    (1, 1, 1), (17, 31, 3), (40, 32, 5), (33, 33, 2), (100, 65, 4), (257, 100, 10),
    (5, 1, 300),  # m^2 = 90 000 block pairs of 1 x 1 blocks
    (2500, 64, 32),  # the weighted copy of A exceeds one chunk (2^25 entries): several GEMMs
])
@pytest.mark.parametrize("symmetric", [True, False])
def test_cuda_kernel_matches_reference(dtype, N, n, m, symmetric):
    A, M = random_inputs(N, n, m, dtype, seed=N + n + m, symmetric=symmetric, device="cuda")
    assert_matches_sum(torch.ops.hesskit.kron_block(A, M), A, M)
    A_s, M_s = with_layout(A, "transposed"), with_layout(M, "strided")
    assert_matches_sum(torch.ops.hesskit.kron_block(A_s, M_s), A_s, M_s)


@requires_native_cuda
@pytest.mark.parametrize("symmetric", [True, False])
def test_cuda_row_chunks_add_up(symmetric):
    """N above one row chunk (2^26 / (m n) = 16 384 rows here): the chunked GEMMs
    accumulate to the sum of the op over parts that each fit in one chunk."""
    A, M = random_inputs(17084, 64, 64, torch.float64, seed=5, symmetric=symmetric, device="cuda")
    H = torch.ops.hesskit.kron_block(A, M)
    parts = sum(torch.ops.hesskit.kron_block(a, m) for a, m in zip(A.split(4271), M.split(4271)))
    scale = sum(torch.ops.hesskit.kron_block(a.abs(), m.abs()) for a, m in zip(A.split(4271), M.split(4271)))
    assert ((H - parts).abs() <= 64 * torch.finfo(torch.float64).eps * scale).all()


@requires_native_cuda
def test_cuda_kernel_empty_batch_gives_zeros():
    A, M = random_inputs(0, 5, 3, torch.float32, seed=0, device="cuda")
    assert torch.equal(torch.ops.hesskit.kron_block(A, M), torch.zeros(15, 15, device="cuda"))


@requires_native_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_opcheck_and_cpu_agreement(dtype):
    A, M = random_inputs(29, 7, 3, dtype, seed=17, device="cuda")
    torch.library.opcheck(torch.ops.hesskit.kron_block.default, (A, M))
    assert_matches_sum(ops.kron_block(A, M), A, M)
