"""Progress bars tell the truth: the products actually spent, and convergence against tol."""
import pytest
import torch

import hesskit as hk
from hesskit.spectral import _common


@pytest.fixture
def bars(monkeypatch):
    """Every bar the spectral routines open, kept for inspection after it closed."""
    opened = []

    class RecordingBar(_common.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(_common, "tqdm", RecordingBar)
    return opened


@pytest.fixture
def A(spectrum_matrix):
    """Two outliers over a bulk: the eigenvalue solvers converge in a few dozen products."""
    return spectrum_matrix(torch.cat([torch.tensor([40.0, 20.0]), torch.linspace(-1.0, 1.0, 98)]).double())


def test_eigenvalues_bar_counts_products_without_a_budget_eta(bars, A):
    result = hk.eigenvalues(A, k=1, tol=1e-6, method="lanczos", progress=True)
    assert result.converged and result.n_matvecs < 100  # a call that ends long before max_matvecs
    (bar,) = bars
    assert bar.n == result.n_matvecs
    assert bar.total is None  # no total: no ETA computed from the worst-case budget
    assert "residual" in bar.postfix and "tol 1e-06" in bar.postfix


def test_power_iteration_bar_counts_products_and_shows_the_residual(bars, A):
    result = hk.spectral.power_iteration(A, k=2, tol=1e-8, progress=True)
    assert result.converged
    (bar,) = bars
    assert bar.n == result.n_matvecs and bar.total is None
    assert "tol 1e-08" in bar.postfix


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_bar_total_is_the_products_spent(bars, A, method):
    result = hk.trace(A, method=method, n_probes=30, progress=True)
    (bar,) = bars
    assert bar.total == bar.n == result.n_matvecs == 30


def test_density_bar_total_is_the_products_spent(bars, A):
    result = hk.spectral_density(A, n_runs=3, n_steps=20, progress=True)
    (bar,) = bars
    assert bar.total == bar.n == result.n_matvecs == 60
