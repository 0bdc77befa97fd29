"""hesskit::sequential_{hbp,matmat,dense}: parity with the torch.func reference
(hesskit._reference) on hypothesis-drawn chains, opcheck, exact symmetry, errors."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from hesskit import _reference, ops

needs_native = pytest.mark.skipif(not ops.native_available(),
                                  reason="hesskit._C is not built")

KINDS = ("hessian", "ggn", "functional")
#: per activation code, the (arg0, arg1) choices (LeakyReLU slope, Softplus beta and
#: threshold, ELU alpha); a Softplus threshold of 1 puts samples in its linear region.
ARGS = {2: [(0.01, 0.0), (0.3, 0.0)], 8: [(1.0, 20.0), (2.5, 1.0)], 9: [(1.0, 0.0), (0.5, 0.0)]}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def chains(draw, max_width=64, max_n=300, max_params=None):
    """A random chain spec: widths, biases, activation programs, loss, N, seed."""
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth + 1, max_size=depth + 1))
    biases = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    if max_params is not None:
        while sum(b * (a + 1) for a, b in zip(widths, widths[1:])) > max_params:
            widths = [max(1, w // 2) for w in widths]
    counts = draw(st.lists(st.integers(0, 2), min_size=depth, max_size=depth))
    codes = draw(st.lists(st.integers(1, 9), min_size=sum(counts), max_size=sum(counts)))
    args = [draw(st.sampled_from(ARGS.get(code, [(0.0, 0.0)]))) for code in codes]
    return dict(widths=widths, biases=biases, counts=counts, codes=codes,
                args=[a for pair in args for a in pair],
                loss=draw(st.sampled_from(["cross_entropy", "mse"])),
                n=draw(st.integers(1, max_n)), seed=draw(st.integers(0, 2**16)))


def build(spec, dtype=torch.float64, device="cpu"):
    """The op arguments (X, weights, biases, codes, args, counts, loss, target, coef)."""
    g = torch.Generator().manual_seed(spec["seed"])
    w, n = spec["widths"], spec["n"]

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    weights = [rand(b, a, scale=1.5 / a ** 0.5) for a, b in zip(w, w[1:])]
    biases = [rand(b, scale=0.5) if has else None for b, has in zip(w[1:], spec["biases"])]
    target = rand(n, w[-1])
    coef = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5).to(dtype).to(device)
    return (rand(n, w[0]), weights, biases, spec["codes"], spec["args"], spec["counts"],
            spec["loss"], target, coef)


def n_params(args):
    return sum(W.numel() + (0 if b is None else b.numel()) for W, b in zip(args[1], args[2]))


def as64(args):
    """The op arguments in float64 on the CPU (tensors and lists of tensors)."""
    def convert(a):
        if isinstance(a, torch.Tensor):
            return a.double().cpu()
        if isinstance(a, list) and any(isinstance(t, torch.Tensor) for t in a):
            return [None if t is None else t.double().cpu() for t in a]
        return a
    return tuple(convert(a) for a in args)


def assert_rel(out, ref, tol, terms=1.0):
    """max |out - ref| <= tol * max |ref| + 64 eps(float64) * terms: relative, with an
    absolute floor of rounding size for references that (nearly) vanish. ``terms`` is
    the size of what the reference subtracted to get ``ref`` (the functional part is
    Hessian - GGN, so it is rounding of the Hessian's size where it vanishes)."""
    out, ref = out.double().cpu(), ref.double().cpu()
    err = float((out - ref).abs().max()) if ref.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    floor = 64 * torch.finfo(torch.float64).eps * max(1.0, terms)
    assert err <= tol * scale + floor, f"error {err:.3e} vs scale {scale:.3e}"


def cancelled(reference, kind, *args):
    """The size of the terms the reference cancels for ``kind``: the Hessian's, for the
    functional part (computed as Hessian - GGN); 1 otherwise."""
    if kind != "functional":
        return 1.0
    hessian = reference(*args, "hessian")
    return float(hessian.abs().max()) if hessian.numel() else 1.0


@needs_native
@settings(max_examples=20, **SETTINGS)
@given(spec=chains(), k=st.integers(1, 6), kind=st.sampled_from(KINDS))
def test_matmat_matches_reference(spec, k, kind):
    args = build(spec)
    V = torch.randn(n_params(args), k, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    assert_rel(ops.sequential_matmat(*args, V, kind),
               _reference.sequential_matmat(*args, V, kind), 1e-10,
               cancelled(_reference.sequential_matmat, kind, *args, V))


@needs_native
@settings(max_examples=20, **SETTINGS)
@given(spec=chains(), k=st.integers(1, 4), kind=st.sampled_from(KINDS))
def test_forward_state_matches_reference_and_gives_the_same_products(spec, k, kind):
    """sequential_forward against its torch.func/autograd reference; a product from the
    state is bitwise the product that computes its own forward pass; a GGN product
    may use the longer state of a Hessian."""
    args = build(spec)
    state = ops.sequential_forward(*args, kind)
    ref = _reference.sequential_forward(*args, kind)
    assert len(state) == len(ref) == (2 if kind == "ggn" else 4) * len(args[1]) + 1
    for t, r in zip(state, ref):
        assert t.shape == r.shape
        assert_rel(t, r, 1e-12)
    V = torch.randn(n_params(args), k, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    assert torch.equal(ops.sequential_matmat(*args, V, kind, state),
                       ops.sequential_matmat(*args, V, kind))
    if kind == "hessian":
        assert torch.equal(ops.sequential_matmat(*args, V, "ggn", state),
                           ops.sequential_matmat(*args, V, "ggn"))


@needs_native
@settings(max_examples=20, **SETTINGS)
@given(spec=chains(), kind=st.sampled_from(KINDS), data=st.data())
def test_hbp_matches_reference(spec, kind, data):
    args = build(spec)
    L = len(spec["widths"]) - 1
    layers = sorted(data.draw(st.sets(st.integers(0, L - 1), min_size=1)))
    inputs, hessians = ops.sequential_hbp(*args, layers, kind)
    ref_inputs, ref_hessians = _reference.sequential_hbp(*args, layers, kind)
    assert len(hessians) == len(layers)
    for A, M, A_ref, M_ref in zip(inputs, hessians, ref_inputs, ref_hessians):
        assert_rel(A, A_ref, 1e-12)
        assert_rel(M, M_ref, 1e-10)
        assert torch.equal(M, M.transpose(1, 2))  # exactly symmetric


@needs_native
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("code", range(1, 10))
def test_activations_at_exactly_zero_follow_autograd(code, kind):
    """z = 0 exactly (a zero weight): the kinks of ReLU, LeakyReLU and ELU take
    autograd's one-sided derivatives (hypothesis found ELU's y''(0) on a dead-ReLU,
    bias-free chain)."""
    a0, a1 = ARGS.get(code, [(0.0, 0.0)])[-1]
    X = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    weights = [torch.zeros(3, 1, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)]
    for loss in ("mse", "cross_entropy"):
        args = (X, weights, [None, None], [code], [a0, a1], [1, 0], loss,
                torch.tensor([[0.7, 0.1], [0.2, 0.4]], dtype=torch.float64),
                torch.ones(2, dtype=torch.float64))
        _, (M,) = ops.sequential_hbp(*args, [0], kind)
        _, (M_ref,) = _reference.sequential_hbp(*args, [0], kind)
        assert_rel(M, M_ref, 1e-12)


@needs_native
@settings(max_examples=15, **SETTINGS)
@given(spec=chains(max_width=24, max_n=40, max_params=400), kind=st.sampled_from(KINDS),
       data=st.data())
def test_dense_matches_reference(spec, kind, data):
    args = build(spec)
    L = len(spec["widths"]) - 1
    layers = sorted(data.draw(st.sets(st.integers(0, L - 1), min_size=1)))
    H = ops.sequential_dense(*args, layers, kind)
    assert_rel(H, _reference.sequential_dense(*args, layers, kind), 1e-10,
               cancelled(_reference.sequential_dense, kind, *args, layers))
    assert torch.equal(H, H.T)


@needs_native
@settings(max_examples=10, **SETTINGS)
@given(spec=chains(max_width=16, max_n=30, max_params=300), kind=st.sampled_from(KINDS))
def test_dense_agrees_with_matmat_and_blocks(spec, kind):
    """Three kernels, one matrix: dense @ V = matmat(V); diagonal blocks = kron_block(M)."""
    args = build(spec)
    L = len(spec["widths"]) - 1
    H = ops.sequential_dense(*args, list(range(L)), kind)
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(2), dtype=H.dtype)
    assert_rel(ops.sequential_matmat(*args, V, kind), H @ V, 1e-10)
    inputs, hessians = ops.sequential_hbp(*args, list(range(L)), kind)
    start = 0
    for A, M, b in zip(inputs, hessians, args[2]):
        block = ops.kron_block(A, M) if b is None else ops.kron_block_with_bias(A, M)
        size = block.shape[0]
        assert_rel(block, H[start:start + size, start:start + size], 1e-10)
        start += size


@needs_native
@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=8, **SETTINGS)
@given(spec=chains(max_width=32, max_n=200), kind=st.sampled_from(KINDS))
def test_float32_matches_float64_reference(device, spec, kind):
    args = build(spec, torch.float32, device)
    L = len(spec["widths"]) - 1
    V = torch.randn(n_params(args), 4, generator=torch.Generator().manual_seed(3))
    ref_args = as64(args)
    assert_rel(ops.sequential_matmat(*args, V.to(device), kind),
               _reference.sequential_matmat(*ref_args, V.double(), kind), 1e-5)
    _, hessians = ops.sequential_hbp(*args, [L - 1], kind)
    _, ref_hessians = _reference.sequential_hbp(*ref_args, [L - 1], kind)
    assert_rel(hessians[0], ref_hessians[0], 1e-5)


SPEC = dict(widths=[5, 4, 3], biases=[True, False], counts=[2, 1], codes=[3, 8, 5],
            args=[0.0, 0.0, 2.0, 20.0, 0.0, 0.0], loss="cross_entropy", n=7, seed=0)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(dtype, device):
    args = build(SPEC, dtype, device)
    V = torch.randn(n_params(args), 2, dtype=dtype, device=device)
    torch.library.opcheck(torch.ops.hesskit.sequential_matmat.default, (*args, V, "hessian"))
    torch.library.opcheck(torch.ops.hesskit.sequential_hbp.default, (*args, [0, 1], "ggn"))
    torch.library.opcheck(torch.ops.hesskit.sequential_dense.default, (*args, [1], "functional"))
    torch.library.opcheck(torch.ops.hesskit.sequential_forward.default, (*args, "hessian"))
    state = torch.ops.hesskit.sequential_forward(*args, "functional")
    torch.library.opcheck(torch.ops.hesskit.sequential_matmat.default,
                          (*args, V, "functional", state))


@needs_native
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind):
    spec = dict(SPEC, widths=[9, 33, 17, 6], biases=[True, True, False], counts=[1, 2, 1],
                codes=[6, 9, 7, 4], args=[0.0] * 8, n=70)
    cpu, gpu = build(spec), build(spec, device="cuda")
    V = torch.randn(n_params(cpu), 5, dtype=torch.float64)
    assert_rel(ops.sequential_matmat(*gpu, V.cuda(), kind),
               ops.sequential_matmat(*cpu, V, kind), 1e-12)
    assert_rel(ops.sequential_dense(*gpu, [0, 2], kind),
               ops.sequential_dense(*cpu, [0, 2], kind), 1e-12)
    for M_gpu, M_cpu in zip(ops.sequential_hbp(*gpu, [0, 1, 2], kind)[1],
                            ops.sequential_hbp(*cpu, [0, 1, 2], kind)[1]):
        assert_rel(M_gpu, M_cpu, 1e-12)


def test_empty_tangent_block():
    args = build(SPEC)
    out = ops.sequential_matmat(*args, torch.empty(n_params(args), 0, dtype=torch.float64),
                                    "hessian")
    assert out.shape == (n_params(args), 0)


# Checked once, in C++ (csrc/sequential.h), for the wrappers and direct op calls alike.
@needs_native
@pytest.mark.parametrize("call", ["wrapper", "torch.ops"])
@pytest.mark.parametrize("change, error, match", [
    (lambda a: (a[0].float(), *a[1:]), TypeError,
     r"weights\[0\] must have the dtype of X \(Float\), got Double"),
    (lambda a: (a[0][:, :3], *a[1:]), ValueError,
     r"weights\[0\] must have shape \(m, 3\), got \[4, 5\]"),
    (lambda a: (*a[:2], a[2][:1], *a[3:]), ValueError,
     r"biases must have one entry \(a tensor or None\) per weight, got 1 for 2 weights"),
    (lambda a: (*a[:3], [3, 99, 5], *a[4:]), ValueError,
     r"act_codes\[1\] = 99 is not an activation code in \[1, 9\]"),
    (lambda a: (*a[:4], a[4][:-1], *a[5:]), ValueError,
     r"act_args must hold two numbers per activation code, got 5 for 3 codes"),
    (lambda a: (*a[:5], [1, 1], *a[6:]), ValueError, r"act_counts add up to 2 but 3 act_codes"),
    (lambda a: (*a[:6], "hinge", *a[7:]), ValueError,
     r"loss must be 'cross_entropy' or 'mse', got 'hinge'"),
    (lambda a: (*a[:7], a[7][:, :2], a[8]), ValueError,
     r"target must have the output shape \(7, 3\), got \[7, 2\]"),
    (lambda a: (*a[:8], a[8].float()), TypeError,
     r"coef must have the dtype of X \(Double\), got Float"),
])
def test_errors_name_the_argument(call, change, error, match):
    args = change(build(SPEC))
    op = ops.sequential_dense if call == "wrapper" else torch.ops.hesskit.sequential_dense
    with pytest.raises(error, match=match):
        op(*args, [0], "hessian")


@needs_native
def test_errors_layers_kind_and_V():
    args = build(SPEC)
    with pytest.raises(ValueError, match=r"layers must be strictly increasing, got \[1, 0\]"):
        ops.sequential_hbp(*args, [1, 0], "hessian")
    with pytest.raises(ValueError, match=r"layers\[0\] = 2 is not a layer index in \[0, 2\)"):
        ops.sequential_dense(*args, [2], "hessian")
    with pytest.raises(ValueError, match="kind must be 'hessian', 'ggn' or 'functional', got "
                                         "'fisher'"):
        ops.sequential_hbp(*args, [0], "fisher")
    with pytest.raises(ValueError, match=rf"V must have shape \({n_params(args)}, k\), got "
                                         r"\[3, 2\]"):
        ops.sequential_matmat(*args, torch.zeros(3, 2, dtype=torch.float64), "ggn")
    with pytest.raises(TypeError, match="X: expected a torch.Tensor, got ndarray"):
        ops.sequential_forward(args[0].numpy(), *args[1:], "ggn")


@needs_native
def test_forward_state_is_checked():
    """A state of the wrong length, shape, dtype or kind is refused, naming the entry."""
    args = build(SPEC)
    V = torch.zeros(n_params(args), 1, dtype=torch.float64)
    ggn = ops.sequential_forward(*args, "ggn")
    hessian = ops.sequential_forward(*args, "hessian")
    with pytest.raises(ValueError, match="state must hold 9 tensors"):
        ops.sequential_matmat(*args, V, "hessian", ggn)   # no residual tensors
    with pytest.raises(ValueError, match=r"state\[1\] must have shape \(4, 7\), got \[6, 7\]"):
        ops.sequential_matmat(*args, V, "ggn", [ggn[0], ggn[0], *ggn[2:]])
    with pytest.raises(ValueError, match=r"state\[4\] must have the dtype"):
        ops.sequential_matmat(*args, V, "ggn", [*ggn[:4], ggn[4].float()])
    with pytest.raises(RuntimeError, match="argument 'state'"):  # the op's schema
        ops.sequential_matmat(*args, V, "ggn", hessian[0])


def test_wrappers_on_both_paths(path):
    """The wrappers give the same numbers through the kernels and through the
    pure-PyTorch fallback (``path`` hides hesskit._C for the latter)."""
    args = build(SPEC)
    V = torch.randn(n_params(args), 3, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    H = ops.sequential_dense(*args, [0, 1], "hessian")
    assert_rel(H, _reference.sequential_dense(*args, [0, 1], "hessian"), 1e-10)
    assert_rel(ops.sequential_matmat(*args, V, "hessian"), H @ V, 1e-10)
    state = ops.sequential_forward(*args, "hessian")
    for t, r in zip(state, _reference.sequential_forward(*args, "hessian")):
        assert_rel(t, r, 1e-12)
    assert_rel(ops.sequential_matmat(*args, V, "hessian", state), H @ V, 1e-10)
    inputs, hessians = ops.sequential_hbp(*args, [1], "ggn")
    ref_inputs, ref_hessians = _reference.sequential_hbp(*args, [1], "ggn")
    assert_rel(inputs[0], ref_inputs[0], 1e-12)
    assert_rel(hessians[0], ref_hessians[0], 1e-10)


@needs_native
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-13)])
def test_tanh_derivatives_keep_relative_precision_when_saturated(dtype, tol):
    """One Linear(1, 1) = identity, tanh, squared error with target 0: per sample
    M = d^2 l / dz^2 = s'^2 + s s'' = sech^4 x - 2 tanh^2 x sech^2 x, checked entry by
    entry against cosh in float64 out to |x| = 30 (where sech^2 = 3.5e-26 and
    1 - tanh^2 is 0 in float64)."""
    x = torch.tensor([-30.0, -9.0, -1.0, -1e-6, 0.0, 1e-6, 0.3, 4.0, 9.0, 30.0], dtype=torch.float64)
    args = (x[:, None].to(dtype), [torch.ones(1, 1, dtype=dtype)], [None], [3], [0.0, 0.0], [1],
            "mse", torch.zeros(x.numel(), 1, dtype=dtype), torch.ones(x.numel(), dtype=dtype))
    _, (M,) = ops.sequential_hbp(*args, [0], "hessian")
    sech2 = 1 / torch.cosh(x) ** 2
    expected = sech2 ** 2 - 2 * torch.tanh(x) ** 2 * sech2
    rel = ((M.flatten().double() - expected).abs() / expected.abs().clamp_min(1e-300))
    assert (rel <= tol).all(), rel
