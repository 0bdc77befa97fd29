"""Inputs that must never crash the process or give silently wrong gradients:
zero output classes, sizes whose products overflow, and inputs that require grad."""
import pytest
import torch

from hesskit import ops

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="hesskit._C is not built")


def chain(C, loss="cross_entropy", n=4, requires_grad=False):
    """Arguments (X, weights, biases, codes, args, counts, loss, target, coef) of a
    two-layer chain with C outputs."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(requires_grad)

    return (rand(n, 3), [rand(5, 3), rand(C, 5)], [rand(5), None], [3], [0.0, 0.0], [1, 0],
            loss, torch.zeros(n, C, dtype=torch.float64), torch.ones(n, dtype=torch.float64))


OPS = {
    "hbp": lambda args: torch.ops.hesskit.sequential_hbp(*args, [0, 1], "hessian"),
    "matmat": lambda args: torch.ops.hesskit.sequential_matmat(
        *args, torch.ones(20 + 5 * args[1][1].shape[0], 2, dtype=torch.float64), "hessian"),
    "forward": lambda args: torch.ops.hesskit.sequential_forward(*args, "hessian"),
    "dense": lambda args: torch.ops.hesskit.sequential_dense(*args, [0, 1], "hessian"),
}


@pytest.mark.parametrize("op", list(OPS))
def test_cross_entropy_with_zero_classes_raises(op):
    with pytest.raises(ValueError, match="cross_entropy needs at least one output class"):
        OPS[op](chain(C=0))


@pytest.mark.parametrize("op", list(OPS))
def test_mse_with_zero_outputs_runs(op):
    OPS[op](chain(C=0, loss="mse"))  # an empty output is a valid (zero) MSE


def test_kron_block_size_overflow_raises():
    # m * n = 2**64 wrapped to 0 (an empty result); m * n = 2**63 and (m n)^2 = 2**64
    for n, m in [(2**33, 2**31), (2**32, 2**31), (2**16, 2**16)]:
        A = torch.empty(0, n, dtype=torch.float64)
        M = torch.empty(0, m, m, dtype=torch.float64)
        with pytest.raises(ValueError, match="kron_block: the result .* overflows int64"):
            torch.ops.hesskit.kron_block(A, M)
        with pytest.raises(ValueError, match="overflows int64"):
            ops.kron_block(A, M)


@pytest.mark.parametrize("op", list(OPS))
def test_opcheck_with_inputs_that_require_grad(op):
    args = chain(C=3, requires_grad=True)
    tail = {"hbp": ([0, 1], "hessian"), "forward": ("hessian",),
            "dense": ([0, 1], "functional"),
            "matmat": (torch.randn(35, 2, dtype=torch.float64, requires_grad=True), "hessian")}[op]
    torch.library.opcheck(getattr(torch.ops.hesskit, f"sequential_{op}").default, (*args, *tail))


@pytest.mark.parametrize("op", list(OPS))
def test_gradients_through_the_sequential_ops_raise(op):
    """Their outputs are non-differentiable (no derivative formula): asking for a
    gradient raises instead of returning zeros or a partial gradient."""
    args = chain(C=3, requires_grad=True)
    out = OPS[op](args)
    outputs = [out] if isinstance(out, torch.Tensor) else [
        t for part in out for t in (part if isinstance(part, (list, tuple)) else [part])]
    assert not any(t.requires_grad for t in outputs)
    with pytest.raises(RuntimeError, match="does not require grad"):
        torch.autograd.grad(outputs[-1].sum(), args[0])


@pytest.mark.parametrize("op", list(OPS))
def test_a_meta_tensor_among_cpu_tensors_is_refused(op):
    """The dispatcher sends such calls to the fake implementation, not to a kernel."""
    X, weights, *rest = chain(C=3)
    with pytest.raises(RuntimeError, match=r"weights\[1\] must be on the device of X \(cpu\), "
                                           r"got meta"):
        OPS[op]((X, [weights[0], weights[1].to("meta")], *rest))
