"""layerwise_spectra against explicit torch.func.hessian blocks (float64)."""
import json
import math

import pytest
import torch
from torch import nn

from hesskit.analysis.layerwise import LayerSpectrum, layerwise_spectra
from hesskit.objective import Objective
from helpers import explicit_ggn, explicit_hessian, mlp


def _problem():
    model = mlp(nn.Tanh, (3, 5, 4, 2)).double()
    g = torch.Generator().manual_seed(0)
    X = torch.randn(25, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (25,), generator=g)
    return model, nn.CrossEntropyLoss(), X, y


def _names(module, weights_only=False):
    return [f"{module}.weight"] if weights_only else [f"{module}.weight", f"{module}.bias"]


@pytest.mark.parametrize("dense_limit", [2048, 20])
@pytest.mark.parametrize("weights_only", [False, True])
def test_exact_blocks_match_explicit_hessian(dense_limit, weights_only):
    # 2048: every block explicit through layer_blocks; 20: blocks of at most 20
    # parameters explicit, the 24-parameter middle layer matrix-free
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    layers = layerwise_spectra(obj, k=3, weights_only=weights_only, dense_limit=dense_limit,
                               n_probes=400, seed=1)
    assert list(layers) == ["0", "2", "4"]
    assert [s.depth for s in layers.values()] == [0.0, 0.5, 1.0]
    for module, spec in layers.items():
        names = _names(module, weights_only)
        block = explicit_hessian(model, loss_fn, X, y, names).detach()
        exact = torch.linalg.eigvalsh(block).flip(0)[:3]
        assert spec.param_names == names and spec.n_params == block.shape[0]
        torch.testing.assert_close(spec.eigenvalues, exact, rtol=1e-6, atol=1e-9)
        true_trace = float(block.trace())
        if spec.exact:
            assert spec.trace == pytest.approx(true_trace, rel=1e-10, abs=1e-12)
            assert spec.trace_stderr == 0.0
        else:
            assert abs(spec.trace - true_trace) <= 5 * spec.trace_stderr + 1e-12
    expected_exact = {2048: [True, True, True], 20: [True, weights_only, True]}[dense_limit]
    assert [s.exact for s in layers.values()] == expected_exact


def test_matrix_free_trace_converges():
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    block = explicit_hessian(model, loss_fn, X, y, _names("2")).detach()
    errors = []
    for n_probes in (10, 250):
        spec = layerwise_spectra(obj, k=1, dense_limit=0, n_probes=n_probes, seed=0)["2"]
        assert not spec.exact and spec.trace_stderr > 0
        errors.append(spec.trace_stderr)
        assert abs(spec.trace - float(block.trace())) <= 5 * spec.trace_stderr
    assert errors[1] < errors[0] / 2.5  # stderr ~ 1/sqrt(n_probes): 5 times smaller


def test_ggn_blocks_and_module_types():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)  # eval statistics that are not the identity
    X = torch.randn(12, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    loss_fn = nn.CrossEntropyLoss()
    obj = Objective(model, loss_fn, (X, y))
    all_layers = layerwise_spectra(obj, k=2, kind="ggn")
    assert list(all_layers) == ["0", "1", "3"]
    layers = layerwise_spectra(obj, k=2, kind="ggn", module_types=(nn.Linear,))
    assert list(layers) == ["0", "3"] and [s.depth for s in layers.values()] == [0.0, 1.0]
    model.eval()
    for module, spec in layers.items():
        block = explicit_ggn(model, loss_fn, X, y, _names(module)).detach()
        torch.testing.assert_close(spec.eigenvalues, torch.linalg.eigvalsh(block).flip(0)[:2],
                                   rtol=1e-8, atol=1e-10)
        assert spec.trace == pytest.approx(float(block.trace()), rel=1e-10)


def test_density_and_json_round_trip():
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    layers = layerwise_spectra(obj, k=2, density=True, n_runs=3, n_steps=30, seed=0)
    for module, spec in layers.items():
        block = explicit_hessian(model, loss_fn, X, y, _names(module)).detach()
        lam = torch.linalg.eigvalsh(block)
        d = spec.density
        assert d is not None and d.nodes.shape[0] == 3
        assert d.moment(0) == pytest.approx(1.0, rel=1e-10)
        # Gauss nodes of a Lanczos run lie in the spectrum's hull
        assert float(d.nodes.min()) >= float(lam[0]) - 1e-8
        assert float(d.nodes.max()) <= float(lam[-1]) + 1e-8
    text = json.dumps({n: s.to_dict() for n, s in layers.items()})
    back = {n: LayerSpectrum.from_dict(v) for n, v in json.loads(text).items()}
    for n, s in layers.items():
        assert torch.equal(back[n].eigenvalues, s.eigenvalues)
        assert torch.equal(back[n].density.nodes, s.density.nodes)
        assert back[n].depth == s.depth and back[n].param_names == s.param_names


def test_k_larger_than_block_and_bad_arguments():
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y), params=model[4].bias)
    spec = layerwise_spectra(obj, k=5)["4"]
    assert spec.eigenvalues.shape == (2,) and spec.depth == 0.0
    with pytest.raises(ValueError, match="kind"):
        layerwise_spectra(obj, kind="fisher")
    with pytest.raises(ValueError, match="k:"):
        layerwise_spectra(obj, k=0)
    with pytest.raises(TypeError, match="weights_only"):
        layerwise_spectra(obj, weights_only=1)
    with pytest.raises(ValueError, match="no selected parameters"):
        layerwise_spectra(obj, weights_only=True)
    with pytest.raises(TypeError, match="module_types"):
        layerwise_spectra(obj, module_types=("Linear",))


def test_densities_by_the_layerhessians_recipe():
    """recipe= reaches every layer's density: Sankar et al.'s kernel width for the block's
    steps, a grid spanning the exact block spectrum with the 5 % margins."""
    model, loss_fn, X, y = _problem()
    obj = Objective(model, loss_fn, (X, y))
    layers = layerwise_spectra(obj, k=2, density=True, n_runs=1, n_steps=128, seed=0,
                               recipe="layerhessians")
    for module, spec in layers.items():
        lam = torch.linalg.eigvalsh(explicit_hessian(model, loss_fn, X, y, _names(module)).detach())
        d = spec.density
        steps = d.nodes.shape[1]
        assert steps == spec.n_params  # min(128, n_params) steps
        half = float(d.grid[-1] - d.grid[0]) / 2
        assert d.sigma == pytest.approx(2 / (steps - 1) / math.sqrt(8 * math.log(1.25)) * half)
        margin = 0.05 * float(lam[-1] - lam[0])
        assert float(d.grid[0]) <= float(lam[0]) - 0.9 * margin
        assert float(d.grid[-1]) >= float(lam[-1]) + 0.9 * margin
    with pytest.raises(ValueError, match="recipe:"):
        layerwise_spectra(obj, density=True, recipe="papyan")
