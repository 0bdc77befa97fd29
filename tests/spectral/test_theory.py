"""Hessian rank predictions (Singh, Bachmann & Hofmann 2021) against explicit Hessians
of deep linear networks at initialization (float64, no bias, Glorot-normal)."""
import math

import pytest
import torch
from torch.func import hessian, jacrev

import hesskit as hk


def _empirical_ranks(n_samples, dim, widths, n_outputs, loss, input_rank=None, seed=0):
    """Ranks of H_L, H_o = Jᵀ ∇²ℓ J and H_F = H_L − H_o, and the rank of the inputs."""
    g = torch.Generator().manual_seed(seed)
    r = input_rank or min(n_samples, dim)
    X = torch.randn(n_samples, r, dtype=torch.float64, generator=g) @ torch.randn(
        r, dim, dtype=torch.float64, generator=g
    )
    sizes = [dim, *widths, n_outputs]
    weights = [
        torch.randn(b, a, dtype=torch.float64, generator=g) * math.sqrt(2.0 / (a + b))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    shapes = [w.shape for w in weights]
    theta = torch.cat([w.reshape(-1) for w in weights])

    def outputs(flat):
        out = X.T
        for w, shape in zip(flat.split([s.numel() for s in shapes]), shapes):
            out = w.reshape(shape) @ out
        return out.T

    if loss == "mse":
        Y = torch.randn(n_samples, n_outputs, dtype=torch.float64, generator=g)
        loss_of = lambda out: 0.5 * ((out - Y) ** 2).sum()  # noqa: E731
    elif loss == "logcosh":
        Y = torch.randn(n_samples, n_outputs, dtype=torch.float64, generator=g)
        loss_of = lambda out: torch.log(torch.cosh(out - Y)).sum()  # noqa: E731
    else:
        y = torch.randint(0, n_outputs, (n_samples,), generator=g)
        loss_of = lambda out: torch.nn.functional.cross_entropy(out, y, reduction="sum")  # noqa: E731
    H = hessian(lambda flat: loss_of(outputs(flat)))(theta)
    out = outputs(theta)
    J = jacrev(outputs)(theta).reshape(out.numel(), -1)
    G = J.T @ hessian(loss_of)(out).reshape(out.numel(), out.numel()) @ J
    sym = lambda A: 0.5 * (A + A.T)  # noqa: E731
    # H_F is a difference of two matrices: its zero eigenvalues are at the rounding level of
    # H, so its threshold is H's (the relative default would count noise for a zero H_F).
    tol_h = float(torch.linalg.eigvalsh(sym(H)).abs().max()) * H.shape[0] * torch.finfo(H.dtype).eps
    ranks = {"loss": hk.rank(sym(H)), "outer": hk.rank(sym(G)), "functional": hk.rank(sym(H - G), tol=tol_h)}
    return ranks, int(torch.linalg.matrix_rank(X))


CASES = [
    # (n_samples, dim, widths, n_outputs, input_rank): sample size, width and depth sweeps
    (3, 6, [5], 4, None),
    (8, 6, [5], 4, None),
    (20, 6, [5], 4, None),
    (20, 6, [2], 4, None),
    (20, 6, [3], 4, None),
    (20, 6, [7], 4, None),
    (20, 6, [], 4, None),
    (3, 6, [], 4, None),
    (20, 5, [4, 3], 3, None),
    (20, 5, [4, 6, 5], 3, None),
    (10, 4, [7, 7], 6, None),
    (20, 8, [6], 4, 2),
]


@pytest.mark.parametrize("loss", ["mse", "ce", "logcosh"])
@pytest.mark.parametrize("n_samples,dim,widths,n_outputs,input_rank", CASES)
def test_predictions_match_deep_linear_networks(loss, n_samples, dim, widths, n_outputs, input_rank):
    ranks, r = _empirical_ranks(n_samples, dim, widths, n_outputs, loss, input_rank)
    assert ranks == hk.theory.hessian_rank_predictions(r, n_outputs, widths, loss=loss)


def test_formulas_by_hand():
    # r = 16, K = 10, L = 3, M = (25, 25): q = s = 10
    assert hk.theory.hessian_rank_predictions(16, 10, [25, 25]) == {
        "outer": 10 * (16 + 10 - 10),
        "functional": 2 * 10 * 50 + 2 * 10 * 10 - 3 * 100,
        "loss": 900 + 160 + 10 * (10 - 20),
    }
    # cross-entropy: K' = K − 1; a bottleneck of width 2 sets q = 2 < s = 9
    assert hk.theory.hessian_rank_predictions(16, 10, [2], loss="ce") == {
        "outer": 2 * (16 + 9 - 2),
        "functional": 2 * 2 * 2 + 2 * 2 * 9 - 2 * 4,
        "loss": 46 + 36 + 2 * (2 - 18),
    }
    # a single layer is linear in its weights: no functional part
    assert hk.theory.hessian_rank_predictions(3, 4, []) == {"loss": 12, "outer": 12, "functional": 0}


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((0, 3, [4]), {}, ValueError, "input_rank:"),
        ((3, 0, [4]), {}, ValueError, "n_outputs:"),
        ((3, 1, [4]), {"loss": "ce"}, ValueError, "n_outputs:"),
        ((3, 3, [4, 0]), {}, ValueError, r"widths\[i\]:"),
        ((3, 3, 4), {}, TypeError, "widths:"),
        ((3, 3, [4]), {"loss": "hinge"}, ValueError, "loss:"),
        ((3.0, 3, [4]), {}, TypeError, "input_rank:"),
    ],
)
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        hk.theory.hessian_rank_predictions(*args, **kwargs)
