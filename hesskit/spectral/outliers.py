"""Outlier eigenvalues: the top of a spectrum that a gap separates from its bulk."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["count_outliers"]


def count_outliers(values: torch.Tensor | Sequence[float], bins: int = 50) -> int:
    """Number of outlier eigenvalues: the largest ``k <= P/2`` with
    ``λ_k − λ_{k+1} > (λ_1 − λ_P) / bins`` (eigenvalues sorted descending).

    These are the eigenvalues that a gap wider than one bin of a ``bins``-bin
    histogram of the spectrum separates from the rest: the "outliers" that
    Sagun et al. (2017) and Papyan (2019) count (C − 1 or C of them for C classes),
    and that the decision-boundary study (Sabanayagam et al., 2023, arXiv
    2306.07104) reads off its log-scale histograms. Only gaps in the upper half of
    the spectrum count, so a gap near the bottom (negative eigenvalues) does not
    make the whole spectrum "outliers". Returns 0 when no gap is that wide (or for
    fewer than two eigenvalues).

    Args:
        values: the eigenvalues, in any order (a 1-D tensor or sequence).
        bins: the histogram's number of bins, >= 1.

    Example:
        >>> count_outliers([10.0, 9.0, 0.2, 0.1, 0.0, -0.1])
        2
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, got {bins!r}")
    lam = torch.as_tensor(values, dtype=torch.float64).flatten().sort(descending=True).values
    if lam.numel() < 2:
        return 0
    gaps = (lam[:-1] - lam[1:])[: max(1, lam.numel() // 2)]
    wide = torch.nonzero(gaps > (lam[0] - lam[-1]) / bins).flatten()
    return int(wide.max()) + 1 if wide.numel() else 0
