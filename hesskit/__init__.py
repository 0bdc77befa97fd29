"""hesskit: the Hessian of neural-network losses for PyTorch.

Curvature operators (Hessian, GGN, functional part, layer blocks) over whole
datasets, spectral tools, curvature-aware optimizers and training hooks, with
C++/CUDA kernels for the hot paths and a pure-PyTorch reference for each.

    >>> import hesskit as hk
    >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
    >>> hk.eigenvalues(hk.HessianOperator(obj), k=5).values
"""
from hesskit._version import __version__
from hesskit._native import native_available

# --- objective and operators ---
from hesskit.objective import Objective
from hesskit.operators import (CurvatureOperator, FunctionalHessianOperator, GGNOperator,
                               HessianOperator)
# --- blocks ---
from hesskit.blocks import last_layer_hessian, layer_blocks
# --- spectral ---
from hesskit.spectral import (Density, EigenResult, TraceResult, eigenvalues, power_iteration,
                              rank, spectral_density, theory, trace)
# --- analysis ---
from hesskit.analysis import alignment, layerwise_spectra, loss_landscape, spectrum_distance
# --- training: optim, regularizers, hooks (subpackages) ---
from hesskit import hooks, optim, regularizers
# --- data, models, plotting (subpackages) ---
from hesskit import analysis, data, distributed, models, plotting

__all__ = [
    "__version__",
    # native
    "native_available",
    # objective and operators
    "Objective", "CurvatureOperator", "HessianOperator", "GGNOperator",
    "FunctionalHessianOperator",
    # blocks
    "layer_blocks", "last_layer_hessian",
    # spectral
    "eigenvalues", "power_iteration", "trace", "spectral_density", "rank", "theory",
    "EigenResult", "TraceResult", "Density",
    # analysis
    "layerwise_spectra", "spectrum_distance", "loss_landscape", "alignment",
    # subpackages
    "data", "models", "distributed", "optim", "regularizers",
    "hooks", "analysis", "plotting",
]
