"""Stochastic Lanczos quadrature against known spectra."""
import json

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from scipy.stats import wasserstein_distance

import hesskit as hk
from hesskit.plotting.density import plot_density


def _w1(density, eigenvalues):
    """1-Wasserstein distance between the averaged quadrature measure and the spectrum."""
    return wasserstein_distance(
        density.nodes.reshape(-1).numpy(),
        eigenvalues.numpy(),
        u_weights=density.weights.reshape(-1).numpy(),
    )


def test_ritz_distribution_is_close_to_the_spectrum(known_spectrum):
    A, ev = known_spectrum
    d = hk.spectral_density(A, n_runs=10, n_steps=80)
    spread = float(ev.max() - ev.min())
    assert _w1(d, ev) < 0.01 * spread
    # a wrong spectrum is far: the test can tell them apart
    assert _w1(d, ev + 0.05 * spread) > 0.03 * spread


def test_more_runs_get_closer(spectrum_matrix):
    """The error of the quadrature average is random; it shrinks with the number of runs."""
    ev = torch.linspace(-1.0, 1.0, 300, dtype=torch.float64) ** 3
    A = spectrum_matrix(ev, seed=1)
    few = [_w1(hk.spectral_density(A, n_runs=1, n_steps=40, seed=s), ev) for s in range(8)]
    many = [_w1(hk.spectral_density(A, n_runs=16, n_steps=40, seed=s), ev) for s in range(8)]
    assert sum(many) < 0.5 * sum(few)


def test_quadrature_is_exact_for_low_moments_of_a_diagonal_matrix():
    """Rademacher v has v_i^2 = 1/P, so vᵀ A^p v = tr(A^p)/P for diagonal A, and the
    m-point Gauss rule integrates degrees up to 2m − 1 exactly."""
    ev = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 - 1
    d = hk.spectral_density(torch.diag(ev), n_runs=3, n_steps=6)
    for p in range(0, 12):
        assert d.moment(p) == pytest.approx(float((ev**p).mean()), rel=1e-9, abs=1e-12)
    assert d.moment(14) != pytest.approx(float((ev**14).mean()), rel=1e-9)


def test_structure_of_the_result(known_spectrum):
    A, ev = known_spectrum
    d = hk.spectral_density(A, n_runs=4, n_steps=30, n_points=500)
    assert d.nodes.shape == d.weights.shape == (4, 30)
    torch.testing.assert_close(d.weights.sum(dim=1), torch.ones(4, dtype=torch.float64))
    assert d.grid.shape == d.density.shape == (500,)
    assert bool((d.density >= 0).all())
    assert float(torch.trapezoid(d.density, d.grid)) == pytest.approx(1.0, abs=1e-3)
    spread = float(d.nodes.max() - d.nodes.min())
    assert d.sigma == pytest.approx(0.005 * spread)
    assert float(d.grid[0]) == pytest.approx(float(d.nodes.min()) - 4 * d.sigma)
    assert d.n_matvecs == 4 * 30


def test_outliers_are_separate_peaks(spectrum_matrix):
    ev = torch.cat([torch.tensor([20.0, 12.0]), 0.5 * torch.rand(398, generator=torch.Generator().manual_seed(1))])
    d = hk.spectral_density(spectrum_matrix(ev.double()), n_runs=10, n_steps=60)
    for outlier in (20.0, 12.0):
        near = (d.grid - outlier).abs() < 3 * d.sigma
        between = (d.grid - (outlier - 3.0)).abs() < 3 * d.sigma
        assert float(d.density[near].max()) > 1e6 * float(d.density[between].max())


def test_every_step_is_one_matmat_of_all_runs(spectrum_matrix, counting):
    op = counting(spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64)))
    d = hk.spectral_density(op, n_runs=7, n_steps=25)
    assert op.calls == [7] * 25 and d.n_matvecs == 175


def test_invariant_krylov_space_gives_the_exact_measure(spectrum_matrix):
    """Three distinct eigenvalues: every run breaks down after 3 steps; the rest has weight 0."""
    ev = torch.cat([torch.full((150,), 1.0), torch.full((100,), 3.0), torch.full((50,), -2.0)]).double()
    d = hk.spectral_density(spectrum_matrix(ev), n_runs=4, n_steps=20, sigma=0.1)
    for nodes, weights in zip(d.nodes, d.weights):
        torch.testing.assert_close(
            nodes[weights > 1e-12], torch.tensor([-2.0, 1.0, 3.0]).double(), rtol=0, atol=1e-10
        )
    assert d.moment(1) == pytest.approx(float(ev.mean()), abs=0.1)
    assert d.sigma == 0.1


def test_on_a_hessian_operator(mlp_hessian):
    H, E = mlp_hessian
    ev = torch.linalg.eigvalsh(E)
    d = hk.spectral_density(H, n_runs=6, n_steps=40)
    assert _w1(d, ev) < 0.01 * float(ev.max() - ev.min())
    assert d.moment(0) == pytest.approx(1.0)


def test_seed_and_json(spectrum_matrix):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64))
    a = hk.spectral_density(A, n_runs=2, n_steps=10, seed=3)
    b = hk.spectral_density(A, n_runs=2, n_steps=10, seed=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.nodes, b.nodes, rtol=0, atol=0)
    back = hk.Density.from_json(a.to_json())
    torch.testing.assert_close(back.density, a.density)
    assert back.sigma == a.sigma and back.n_matvecs == a.n_matvecs
    assert set(json.loads(a.to_json())) == {"grid", "density", "nodes", "weights", "sigma", "n_matvecs"}


def test_plot_density(spectrum_matrix):
    d = hk.spectral_density(spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64)), n_runs=2, n_steps=10)
    ax = plot_density(d, title="H", color="k")
    assert ax.get_yscale() == "log" and ax.get_title() == "H" and len(ax.lines) == 1
    ydata = ax.lines[0].get_ydata()
    assert ydata.min() >= 1e-8 * ydata.max() * (1 - 1e-12)
    ax2 = plot_density(d, log=False)
    assert ax2.get_yscale() == "linear"
    with pytest.raises(TypeError, match="density:"):
        plot_density(d.density)
    with pytest.raises(ValueError, match="floor:"):
        plot_density(d, floor=0.0)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(n_runs=0), ValueError, "n_runs:"),
        (dict(n_steps=101), ValueError, "n_steps:"),
        (dict(n_points=1), ValueError, "n_points:"),
        (dict(sigma=-1.0), ValueError, "sigma:"),
        (dict(probe="normal"), ValueError, "probe:"),
        (dict(n_steps=2.5), TypeError, "n_steps:"),
    ],
)
def test_bad_arguments(spectrum_matrix, kwargs, error, match):
    A = spectrum_matrix(torch.linspace(0.0, 1.0, 100, dtype=torch.float64))
    with pytest.raises(error, match=match):
        hk.spectral_density(A, **kwargs)


def test_defaults_buy_the_documented_accuracy_at_the_documented_cost(known_spectrum):
    """The defaults (5 runs x 40 steps, 200 products in 40 passes): on these P = 400
    spectra the W1 error averages under 1 % of the spread over seeds, within 2x of
    10 runs x 80 steps (800 products), and below PyHessian's 1 run x 100 steps."""
    A, ev = known_spectrum
    spread = float(ev.max() - ev.min())
    seeds = range(4)
    defaults = [hk.spectral_density(A, seed=s) for s in seeds]
    assert {d.n_matvecs for d in defaults} == {200} and defaults[0].nodes.shape == (5, 40)
    w1 = sum(_w1(d, ev) for d in defaults) / len(seeds)
    w1_800 = sum(_w1(hk.spectral_density(A, n_runs=10, n_steps=80, seed=s), ev) for s in seeds) / len(seeds)
    w1_pyhessian = sum(_w1(hk.spectral_density(A, n_runs=1, n_steps=100, seed=s), ev) for s in seeds) / len(seeds)
    assert w1 < 0.01 * spread
    assert w1 < 2 * w1_800
    assert w1 < w1_pyhessian
