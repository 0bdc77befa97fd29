"""Layerwise Hessian spectra and distances between spectra.

Sankar, Khasbage, Vigneswaran & Balasubramanian ("A deeper look at the Hessian
eigenspectrum of deep neural networks and its applications to regularization",
AAAI 2021) compare the spectrum of each layer's diagonal Hessian block
:math:`H_{\\ell\\ell} = \\nabla^2_{\\theta_\\ell} \\mathcal{L}` with the spectrum of
the full Hessian and find the middle layers' spectra closest to it.
:func:`layerwise_spectra` measures every block (top eigenvalues, trace, density)
in one call; :func:`spectrum_distance` compares two spectra.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from hesskit.blocks import layer_blocks, parameterized_modules
from hesskit.objective import Objective
from hesskit.operators import GGNOperator, HessianOperator
from hesskit.spectral import eigenvalues, spectral_density, trace
from hesskit.spectral._common import check_int
from hesskit.spectral.results import Density, _Record

__all__ = ["LayerSpectrum", "layerwise_spectra", "spectrum_distance"]

_OPERATORS = {"hessian": HessianOperator, "ggn": GGNOperator}


@dataclasses.dataclass(frozen=True)
class LayerSpectrum(_Record):
    """The spectrum of one layer's diagonal curvature block.

    Attributes:
        name: the module's name in ``model.named_modules()``.
        param_names: the parameters of the block, in flattening order.
        n_params: the block's dimension.
        depth: relative depth ``i / (L - 1)`` of the layer among the ``L`` layers
            measured (0 for the first, 1 for the last; 0 when ``L = 1``), the abscissa
            of Sankar et al.'s figures.
        eigenvalues: ``(min(k, n_params),)`` largest eigenvalues, descending.
        trace: the block's trace (exact for explicit blocks, else Hutchinson's estimate).
        trace_stderr: the trace's standard error (0 when exact).
        density: the block's spectral density, when it was asked for.
        exact: whether the block was formed explicitly (eigenvalues and trace exact).
    """

    name: str
    param_names: list
    n_params: int
    depth: float
    eigenvalues: Tensor
    trace: float
    trace_stderr: float
    density: Optional[Density] = None
    exact: bool = False

    _tensor_fields: ClassVar[tuple] = ("eigenvalues",)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON values (the density as its own ``to_dict``)."""
        out = super().to_dict()
        if self.density is not None:
            out["density"] = self.density.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "LayerSpectrum":
        """Rebuilds a record from :meth:`to_dict` output."""
        data = dict(data)
        if data.get("density") is not None:
            data["density"] = Density.from_dict(data["density"])
        return super().from_dict(data)


def layerwise_spectra(obj: Objective, k: int = 5, weights_only: bool = False,
                      density: bool = False, kind: str = "hessian", *, n_runs: int = 10,
                      n_steps: int = 80, n_probes: int = 100, tol: Optional[float] = None,
                      module_types: Optional[tuple] = None, dense_limit: int = 2048,
                      engine: str = "auto", seed: Union[int, torch.Generator] = 0,
                      progress: Optional[bool] = None,
                      recipe: str = "slq") -> Dict[str, LayerSpectrum]:
    """Top eigenvalues, trace and (optionally) spectral density of every layer's block.

    For each module that owns selected parameters (a Conv or Linear layer: weight
    and bias; with ``weights_only`` the weight alone) the diagonal block
    :math:`H_{\\ell\\ell} = \\nabla^2_{\\theta_\\ell}\\mathcal{L}` of the objective's
    Hessian (or GGN) is measured, as in Sankar et al. (AAAI 2021). Blocks of at
    most ``dense_limit`` parameters are formed explicitly (all at once with
    :func:`~hesskit.blocks.layer_blocks` when every layer is that small, which the
    native engine does in one pass for Linear chains), so that their eigenvalues
    and traces are exact; larger blocks are used matrix-free through the objective
    restricted to the layer's parameters (Lanczos eigenvalues, Hutchinson trace
    with ``n_probes`` Rademacher probes).

    Args:
        obj: the objective; its parameter selection decides which layers exist.
        k: how many of the largest eigenvalues per layer (fewer for smaller blocks).
        weights_only: measure each layer's ``weight`` alone (the study's setting);
            modules without a selected ``weight`` are skipped.
        density: also compute each block's spectral density (stochastic Lanczos
            quadrature with ``n_runs`` runs of ``min(n_steps, n_params)`` steps).
        kind: ``"hessian"`` or ``"ggn"``.
        n_runs: Lanczos runs of the densities.
        n_steps: Lanczos steps per run of the densities.
        n_probes: probes of the matrix-free trace estimates.
        tol: relative residual of the matrix-free eigenvalues (default: that of
            :func:`~hesskit.spectral.eigenvalues`, ``max(1e-6, 128 ε)``).
        module_types: keep only modules of these types (e.g. ``(nn.Conv2d, nn.Linear)``);
            default every module that owns selected parameters.
        dense_limit: the largest block dimension that is formed explicitly.
        engine: engine of the curvature products.
        seed: seed of the random starts and probes (the same for every layer).
        progress: bars over the layers and the products: True, False, or None
            (shown after 2 seconds).
        recipe: the densities' recipe, ``"slq"`` or ``"layerhessians"`` (Sankar et
            al.'s: pass ``n_runs=1, n_steps=128``), see
            :func:`~hesskit.spectral.spectral_density`.

    Returns:
        ``{module_name: LayerSpectrum}`` in the model's order; each record serializes
        with ``to_dict``/``to_json``.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> layers = layerwise_spectra(obj, k=3, weights_only=True, density=True,
        ...                            module_types=(nn.Conv2d, nn.Linear))
        >>> full = hk.spectral_density(hk.HessianOperator(obj), n_steps=20)
        >>> d = {n: (s.depth, spectrum_distance(full, s.density)) for n, s in layers.items()}
        >>> list(d)
        ['0', '2']
    """
    if kind not in _OPERATORS:
        raise ValueError(f"kind: expected one of {sorted(_OPERATORS)}, got {kind!r}")
    check_int(k, "k", 1)
    check_int(n_runs, "n_runs", 1)
    check_int(n_steps, "n_steps", 1)
    check_int(n_probes, "n_probes", 2)
    check_int(dense_limit, "dense_limit", 0)
    for flag, name in ((weights_only, "weights_only"), (density, "density")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    modules = parameterized_modules(obj)
    groups = _layer_groups(obj, modules, weights_only, module_types)
    slices = obj.slices()
    all_small = all(sum(slices[n].stop - slices[n].start for n in names) <= dense_limit
                    for names in modules.values())
    blocks = layer_blocks(obj, kind=kind, engine=engine) if all_small else {}
    out = {}
    depth_scale = max(len(groups) - 1, 1)
    bar = tqdm(groups.items(), desc="layer spectra", unit="layer", leave=False,
               disable=progress is False, delay=0.0 if progress else 2.0)
    for i, (module, names) in enumerate(bar):
        sub = obj.restricted(names)
        if module in blocks:
            kept = _positions(obj, modules[module], names)
            matrix = blocks[module][kept][:, kept].detach()
        else:
            op = _OPERATORS[kind](sub, engine=engine)
            matrix = op.dense(progress=progress) if sub.n_params <= dense_limit else op
        exact = isinstance(matrix, Tensor)
        top = eigenvalues(matrix, k=min(k, sub.n_params), tol=tol, seed=seed,
                          progress=progress).values
        if exact:
            tr, stderr = float(matrix.diagonal().sum()), 0.0
        else:
            estimate = trace(matrix, method="hutchinson", n_probes=n_probes, seed=seed,
                             progress=progress)
            tr, stderr = float(estimate.value), float(estimate.stderr)
        dens = spectral_density(matrix, n_runs=n_runs, n_steps=min(n_steps, sub.n_params),
                                seed=seed, progress=progress, recipe=recipe) if density else None
        out[module] = LayerSpectrum(name=module, param_names=list(names), n_params=sub.n_params,
                                    depth=i / depth_scale, eigenvalues=top, trace=tr,
                                    trace_stderr=stderr, density=dens, exact=exact)
    return out


def _layer_groups(obj: Objective, modules: Dict[str, list], weights_only: bool,
                  module_types) -> Dict[str, list]:
    """Module name → the names of its parameters to measure, from ``modules``
    (every module's selected parameters)."""
    if module_types is not None:
        types = module_types if isinstance(module_types, tuple) else (module_types,)
        if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise TypeError(f"module_types: expected nn.Module classes, got {module_types!r}")
    instances = dict(obj.model.named_modules())
    groups = {}
    for module, names in modules.items():
        if module_types is not None and not isinstance(instances[module], types):
            continue
        if weights_only:
            names = [n for n in names if n.rpartition(".")[2] == "weight"]
        if names:
            groups[module] = names
    if not groups:
        raise ValueError("obj: no selected parameters are left to measure (check "
                         "params, weights_only and module_types)")
    return groups


def _positions(obj: Objective, block_names: list, kept: list) -> Tensor:
    """Indices of the ``kept`` parameters inside the block over ``block_names``."""
    slices, offset, index = obj.slices(), 0, []
    for name in block_names:
        size = slices[name].stop - slices[name].start
        if name in kept:
            index.extend(range(offset, offset + size))
        offset += size
    return torch.tensor(index, dtype=torch.long)

_DISTANCES = ("wasserstein", "layerhessians")


def spectrum_distance(a, b, method: str = "wasserstein") -> float:
    """A distance between two Hessian spectra.

    ``method="wasserstein"`` (default) is the 1-Wasserstein distance between the
    two spectral distributions,

    .. math::

        W_1(\\mu, \\nu) = \\int_{-\\infty}^{\\infty} |F_\\mu(t) - F_\\nu(t)|\\, dt,

    where :math:`F` are the cumulative distribution functions. A :class:`Density`
    stands for the discrete measure of its stochastic Lanczos quadrature,
    :math:`\\mu = \\frac{1}{R}\\sum_r \\sum_i w_{r,i}\\, \\delta_{\\theta_{r,i}}` (the Ritz
    nodes with their weights, averaged over the ``R`` runs), an estimate of the
    empirical eigenvalue distribution :math:`\\frac1P\\sum_j \\delta_{\\lambda_j}`;
    the Gaussian smoothing is not used. A 1-D tensor of eigenvalues stands for
    that empirical distribution itself (equal weights). The result is in the
    units of the eigenvalues: shifting every eigenvalue by ``c`` gives ``|c|``.

    ``method="layerhessians"`` reproduces the number Sankar et al. (2021) plot as
    "distance" (their released analysis code): each smoothed density vector
    :math:`p` is transformed by

    .. math::

        q = \\log p \\;(\\text{zeros replaced by the smallest positive } p), \\quad
        q \\leftarrow \\frac{q - \\min q}{\\max q - \\min q}, \\quad
        q \\leftarrow q / \\textstyle\\sum q,

    and the two vectors of transformed values are compared as if they were samples,
    with an unweighted 1-D Wasserstein distance. That is not a distance between
    spectra: the grid (where the eigenvalues are) is discarded, so two densities
    with the same histogram of (log-)density values are at distance 0 even when
    their eigenvalues are far apart (e.g. a density and its mirror image); it
    compares the shapes of the two log-density curves, and depends on the number
    of grid points and on how the densities were smoothed: their densities come from
    ``spectral_density(..., n_runs=1, n_steps=128, n_points=1024,
    recipe="layerhessians")``, whose kernel cut-off leaves exact zeros that the
    transform maps to the smallest positive value (on LeNet the cut-off alone
    changes the distances several-fold). Use it with that recipe to reproduce the
    published figure, and the default method to compare spectra.

    Args:
        a: a :class:`Density` (from ``spectral_density``), or for
            ``"wasserstein"`` also a 1-D tensor of eigenvalues.
        b: the same for the other spectrum.
        method: ``"wasserstein"`` or ``"layerhessians"``.

    Returns:
        The distance, a float (symmetric in ``a`` and ``b``).

    Raises:
        TypeError: ``a`` or ``b`` is neither a Density nor (for ``"wasserstein"``)
            a 1-D tensor.
        ValueError: an unknown method, empty or non-finite spectra, negative
            weights, or (``"layerhessians"``) a density with no positive or only
            equal values.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> full = hk.spectral_density(hk.HessianOperator(obj), n_steps=20, seed=0)
        >>> layer = hk.spectral_density(hk.HessianOperator(obj.restricted(model[0])), n_steps=20,
        ...                             seed=0)
        >>> spectrum_distance(full, layer) >= 0
        True
    """
    if method not in _DISTANCES:
        raise ValueError(f"method: expected one of {_DISTANCES}, got {method!r}")
    from scipy.stats import wasserstein_distance  # scipy.stats is slow to import

    if method == "wasserstein":
        (u, uw), (v, vw) = _measure(a, "a"), _measure(b, "b")
        return float(wasserstein_distance(u, v, uw, vw))
    return float(wasserstein_distance(_layerhessians_transform(a, "a"),
                                      _layerhessians_transform(b, "b")))


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy().reshape(-1)


def _measure(spectrum, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Atoms and weights of the discrete spectral measure."""
    if isinstance(spectrum, Density):
        # every run's weights sum to 1, so normalizing the pooled weights averages the runs
        values, weights = _numpy(spectrum.nodes), _numpy(spectrum.weights)
        if values.shape != weights.shape:
            raise ValueError(f"{name}: nodes and weights have different shapes "
                             f"{tuple(spectrum.nodes.shape)} and {tuple(spectrum.weights.shape)}")
    elif isinstance(spectrum, Tensor) and spectrum.ndim == 1:
        values = _numpy(spectrum)
        weights = np.full(values.shape, 1.0 / max(values.size, 1))
    else:
        shape = f" of shape {tuple(spectrum.shape)}" if isinstance(spectrum, Tensor) else ""
        raise TypeError(f"{name}: expected a Density or a 1-D tensor of eigenvalues, got "
                        f"{type(spectrum).__name__}{shape}")
    if values.size == 0:
        raise ValueError(f"{name}: the spectrum is empty")
    if not (np.isfinite(values).all() and np.isfinite(weights).all()):
        raise ValueError(f"{name}: the spectrum has non-finite values or weights")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"{name}: the weights must be non-negative with a positive sum")
    return values, weights / weights.sum()


def _layerhessians_transform(spectrum, name: str) -> np.ndarray:
    """Sankar et al.'s transform of a density vector: log, min-max scaling, sum to 1."""
    if not isinstance(spectrum, Density):
        raise TypeError(f"{name}: method='layerhessians' compares density curves; expected "
                        f"a Density, got {type(spectrum).__name__}")
    p = _numpy(spectrum.density)
    if p.size == 0 or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name}: expected a non-empty, finite, non-negative density")
    positive = p[p > 0]
    if positive.size == 0:
        raise ValueError(f"{name}: the density has no positive value to take the log of")
    q = np.log(np.where(p > 0, p, positive.min()))
    spread = q.max() - q.min()
    if spread == 0:
        raise ValueError(f"{name}: the density is constant, so min-max scaling is undefined")
    q = (q - q.min()) / spread
    return q / q.sum()
