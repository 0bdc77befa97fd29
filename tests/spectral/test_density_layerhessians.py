"""``spectral_density(recipe="layerhessians")``: Papyan's recipe as Sankar et al. run it,
against a line-by-line transcription of their loop and against exact spectra."""
import math

import numpy as np
import pytest
import torch

import hesskit as hk
from hesskit.spectral._common import make_generator, random_block

SIGMA_UNIT = (2 / 127) / math.sqrt(8 * math.log(1.25))  # their σ for 128 steps, in [-1, 1] units


def _their_lanczos(A, v, steps):
    """The authors' plain three-term Lanczos (no reorthogonalization): Ritz values,
    eigenvectors of T, and the last β."""
    alp, bet = np.zeros(steps), np.zeros(steps)
    v = v / np.linalg.norm(v)
    v_prev = None
    for j in range(steps):
        w = A @ v
        if j:
            w = w - bet[j - 1] * v_prev
        alp[j] = w @ v
        w = w - alp[j] * v
        bet[j] = np.linalg.norm(w)
        v_prev, v = v, w / bet[j]
    T = np.diag(alp) + np.diag(bet[:-1], 1) + np.diag(bet[:-1], -1)
    ritz, S = np.linalg.eigh(T)
    return ritz, S, bet[-1]


def _their_density(A, v_range, v_run, steps=128, points=1024):
    """Their LanczosLoop: range from a 64-step run with residual bounds, ±5 %, the
    kernel cut where |x − θ| ≥ σ √(−2 ln 1e-8), then mapped back to eigenvalue units."""
    ritz, S, b = _their_lanczos(A, v_range, 64)
    lb, ub = ritz[0] - abs(b * S[-1, 0]), ritz[-1] + abs(b * S[-1, -1])
    margin = 0.05 * (ub - lb)
    lb, ub = lb - margin, ub + margin
    c, d = (lb + ub) / 2, (ub - lb) / 2
    sigma = 2 / (steps - 1) / np.sqrt(8 * np.log(1.25))
    width = sigma * np.sqrt(-2.0 * np.log(1e-8))
    xdos = np.linspace(-1, 1, points)
    y = np.zeros(points)
    ritz, S, _ = _their_lanczos(A, v_run, steps)
    ritz = (ritz - c) / d
    gamma2 = S[0] ** 2
    diff = ritz[:, None] - xdos[None, :]
    i, k = np.where(np.abs(diff) < width)
    np.add.at(y, k, gamma2[i] * np.exp(-((xdos[k] - ritz[i]) ** 2) / (2 * sigma**2)))
    y = y / np.sqrt(2 * sigma**2 * np.pi)
    return xdos * d + c, y / d


def _exact_smoothed(eigenvalues, d):
    """The exact eigenvalue distribution under the recipe's kernel and cut, on ``d.grid``."""
    z = (d.grid[:, None] - eigenvalues[None, :]) / d.sigma
    kernel = torch.exp(-0.5 * z**2)
    kernel = torch.where(kernel > 1e-8, kernel, torch.zeros_like(kernel))
    return kernel.mean(dim=1) / (d.sigma * math.sqrt(2 * math.pi))


def _bulk_and_outliers(P=400, seed=3):
    g = torch.Generator().manual_seed(seed)
    bulk = torch.randn(P - 3, dtype=torch.float64, generator=g) ** 2
    return torch.cat([torch.tensor([25.0, 15.0, 9.0], dtype=torch.float64), bulk])


class _Diagonal:
    """A duck-typed diagonal operator (numpy ``@`` for the transcription, ``matmat`` for hesskit)."""

    def __init__(self, eigenvalues):
        self.ev = eigenvalues
        self.shape = (eigenvalues.numel(),) * 2
        self.dtype, self.device, self.n_matvecs = eigenvalues.dtype, eigenvalues.device, 0

    def matmat(self, V):
        self.n_matvecs += V.shape[1]
        return self.ev[:, None] * V

    def __matmul__(self, v):
        return self.ev.numpy() * v


def test_matches_a_transcription_of_the_authors_loop():
    """Plain Lanczos amplifies rounding once a Ritz value converges, so the comparison
    uses a spectrum on which 128 steps converge none (20 000 spread eigenvalues): there
    the two must agree to rounding."""
    op = _Diagonal(torch.linspace(-1.0, 3.0, 20_000, dtype=torch.float64) ** 3)
    d = hk.spectral_density(op, n_runs=1, n_steps=128, n_points=1024, seed=5, probe="gaussian",
                            recipe="layerhessians")
    g = make_generator(5)
    v_range = random_block(g, 20_000, 1, torch.float64, "cpu", "gaussian")[:, 0].numpy()
    v_run = random_block(g, 20_000, 1, torch.float64, "cpu", "gaussian")[:, 0].numpy()
    grid, density = _their_density(op, v_range, v_run)
    np.testing.assert_allclose(d.grid.numpy(), grid, rtol=0, atol=1e-12)
    np.testing.assert_allclose(d.density.numpy(), density, rtol=0, atol=1e-12 * density.max())
    assert (density == 0).any()  # the cut-off is exercised
    half = float(d.grid[-1] - d.grid[0]) / 2
    assert d.sigma == pytest.approx(SIGMA_UNIT * half)


def test_converges_to_the_exact_spectrum(spectrum_matrix):
    """The average over runs tends to the exact eigenvalues under the same kernel: the L1
    error shrinks with the runs (over several seeds) and is small with many."""
    ev = _bulk_and_outliers()
    A = spectrum_matrix(ev, seed=1)

    def l1(n_runs, seed):
        d = hk.spectral_density(A, n_runs=n_runs, n_steps=128, seed=seed, recipe="layerhessians")
        return float(torch.trapezoid((d.density - _exact_smoothed(ev, d)).abs(), d.grid))

    few = [l1(1, s) for s in range(6)]
    many = [l1(24, s) for s in range(6)]
    assert sum(many) < 0.4 * sum(few)
    assert max(many) < 0.1


def test_range_covers_the_spectrum_with_the_margin(spectrum_matrix):
    ev = _bulk_and_outliers()
    d = hk.spectral_density(spectrum_matrix(ev), n_runs=1, n_steps=128, recipe="layerhessians")
    spread = float(ev.max() - ev.min())
    assert float(d.grid[0]) == pytest.approx(float(ev.min()) - 0.05 * spread, abs=0.01 * spread)
    assert float(d.grid[-1]) == pytest.approx(float(ev.max()) + 0.05 * spread, abs=0.01 * spread)
    assert float(torch.trapezoid(d.density, d.grid)) == pytest.approx(1.0, abs=1e-3)


def test_the_cut_off_leaves_exact_zeros_far_from_every_node(spectrum_matrix):
    """Two clusters with a wide gap: in the gap, more than σ √(2 ln 1e8) from every node,
    the density is exactly 0 (the default recipe, uncut, stays positive there)."""
    ev = torch.cat([torch.linspace(0.0, 1.0, 200), torch.linspace(1.6, 2.6, 200)]).double()
    A = spectrum_matrix(ev)
    d = hk.spectral_density(A, n_runs=1, n_steps=128, recipe="layerhessians")
    reach = d.sigma * math.sqrt(2 * math.log(1e8))
    far = (d.grid[:, None] - d.nodes.reshape(1, -1)).abs().min(dim=1).values
    assert bool((far > reach * 1.001).any())
    assert bool((d.density[far > reach * 1.001] == 0).all())
    near = far < reach * 0.999
    heavy = (d.grid[:, None] - d.nodes.reshape(1, -1)[:, d.weights.reshape(-1) > 1e-6]).abs()
    assert bool((d.density[heavy.min(dim=1).values < reach * 0.999] > 0).all())
    assert bool(near.any())
    assert bool((d.density[(d.grid > 1.2) & (d.grid < 1.4)] == 0).all())
    uncut = hk.spectral_density(A, n_runs=1, n_steps=128, sigma=d.sigma)
    assert bool((uncut.density[(uncut.grid > 1.2) & (uncut.grid < 1.4)] > 0).all())


def test_products_are_the_range_run_then_the_runs(spectrum_matrix, counting):
    op = counting(spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64)))
    d = hk.spectral_density(op, n_runs=3, n_steps=40, recipe="layerhessians")
    assert op.calls == [1] * 64 + [3] * 40 and d.n_matvecs == 64 + 120
    assert d.nodes.shape == d.weights.shape == (3, 40)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(sigma=0.1), ValueError, "sigma:"),
        (dict(n_steps=1), ValueError, "n_steps:"),
        (dict(recipe="papyan"), ValueError, "recipe:"),
    ],
)
def test_bad_arguments(spectrum_matrix, kwargs, error, match):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64))
    kwargs = {"recipe": "layerhessians", "n_steps": 20, **kwargs}
    with pytest.raises(error, match=match):
        hk.spectral_density(A, **kwargs)
