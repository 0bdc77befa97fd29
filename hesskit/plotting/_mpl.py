"""What every figure function needs: matplotlib on demand, and its inputs as arrays.

matplotlib is an optional dependency (``pip install 'hesskit[plot]'``): ``import
hesskit`` never imports it; a figure function imports it when called.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pyplot", "as_array"]


def pyplot():
    """``matplotlib.pyplot``, or an ImportError that names the extra to install."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("hesskit.plotting needs matplotlib, an optional dependency: "
                          "pip install 'hesskit[plot]' (or pip install matplotlib)") from exc
    return plt


def as_array(x, name: str) -> np.ndarray:
    """``x`` (a tensor, numpy array or nested lists, as read back from JSON) as float64.

    Raises:
        TypeError: ``x`` is not numbers; the message names the argument ``name``.
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected numbers (a tensor, array or list), got "
                        f"{type(x).__name__}") from None
