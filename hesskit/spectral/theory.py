"""Predicted Hessian ranks of deep linear networks (Singh, Bachmann & Hofmann, 2021).

Singh, Bachmann & Hofmann, "Analytic insights into structure and rank of
neural network Hessian maps" (NeurIPS 2021) decompose the loss Hessian
``H_L = H_o + H_F`` into the outer-product part ``H_o = Jᵀ ∇²ℓ J`` (the
generalized Gauss–Newton) and the functional part ``H_F = Σ ∂ℓ/∂f · ∇²f``
and give their ranks for a network ``f(x) = W_L ⋯ W_1 x`` without biases.
"""
from __future__ import annotations

from typing import Dict, Sequence

from hesskit.spectral._common import check_choice, check_int

__all__ = ["hessian_rank_predictions"]

_LOSSES = ("mse", "ce", "logcosh")


def hessian_rank_predictions(
    input_rank: int, n_outputs: int, widths: Sequence[int], loss: str = "mse"
) -> Dict[str, int]:
    """Predicts the ranks of the loss Hessian and of its two parts.

    With ``L = len(widths) + 1`` weight matrices, hidden widths
    ``M₁ … M_{L−1}``, ``K`` outputs, ``K' = K`` for the squared error and for
    log-cosh ``Σ log cosh(f − y)`` (output Hessians ``I`` and
    ``diag(sech²(f − y))``, both of full rank ``K``) and ``K' = K − 1`` for
    cross-entropy (its output Hessian ``diag(p) − ppᵀ`` annihilates the
    all-ones vector), ``r`` the rank of the input matrix,
    ``s = min(r, K')`` and ``q = min(r, K', M₁, …, M_{L−1})``:

        rank H_o = q (r + K' − q)
        rank H_F = 2 q Σᵢ Mᵢ + 2 q s − L q²
        rank H_L = rank H_F + rank H_o + q (q − 2 s)

    For a single layer (``L = 1``) the model is linear in its weights, so
    ``H_F = 0`` and ``H_L = H_o``.

    The formulas are exact for deep linear networks without biases at a generic
    (e.g. Glorot-normal) initialization with generic targets, and only an
    approximation (usually an upper bound of the numerical rank) for ReLU or
    tanh networks.

    Args:
        input_rank: ``r``, the rank of the ``(d, N)`` input matrix, ``>= 1``.
        n_outputs: ``K``, the output dimension (``>= 2`` for ``"ce"``).
        widths: the hidden widths ``M₁ … M_{L−1}`` (empty for one layer).
        loss: ``"mse"`` (summed or mean squared error), ``"ce"`` (cross-entropy) or
            ``"logcosh"`` (summed or mean log-cosh, the paper's third loss).

    Returns:
        ``{"loss": rank H_L, "outer": rank H_o, "functional": rank H_F}``.

    Example:
        >>> import hesskit as hk
        >>> hk.theory.hessian_rank_predictions(16, 10, [25, 25], loss="mse")
        {'loss': 960, 'outer': 160, 'functional': 900}
    """
    check_int(input_rank, "input_rank", 1)
    check_choice(loss, "loss", _LOSSES)
    check_int(n_outputs, "n_outputs", 2 if loss == "ce" else 1)
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise TypeError(f"widths: expected a sequence of ints, got {type(widths).__name__}")
    widths = [check_int(width, "widths[i]", 1) for width in widths]
    r = input_rank
    k = n_outputs - 1 if loss == "ce" else n_outputs
    n_layers = len(widths) + 1
    s = min(r, k)
    q = min([r, k] + widths)
    outer = q * (r + k - q)
    if n_layers == 1:
        return {"loss": outer, "outer": outer, "functional": 0}
    functional = 2 * q * sum(widths) + 2 * q * s - n_layers * q * q
    return {"loss": functional + outer + q * (q - 2 * s), "outer": outer, "functional": functional}
