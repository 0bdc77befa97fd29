"""The loss on a 1-D or 2-D grid of parameters around the current ones.

For an :class:`~hesskit.objective.Objective` with loss :math:`\\mathcal{L}` at the
current parameters :math:`\\theta` and directions :math:`d_1` (and :math:`d_2`),

.. math::

    f(a) = \\mathcal{L}(\\theta + a\\, d_1), \\qquad
    f(a, b) = \\mathcal{L}(\\theta + a\\, d_1 + b\\, d_2).

The directions are typically the top Hessian eigenvectors (Yao et al. 2018,
"Hessian-based analysis of large batch training and robustness to adversaries")
or random directions rescaled filter by filter to the norms of the weights
(Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the loss landscape of
neural nets"), which makes landscapes of networks with different weight scales
comparable. Every loss is evaluated functionally (:meth:`Objective.loss` with
explicit parameters), so the model is never modified.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from hesskit.objective import Objective
from hesskit.spectral._common import make_generator, random_block
from hesskit.spectral.results import _Record

__all__ = ["Landscape", "loss_landscape", "random_directions", "filter_normalized"]

_NORMALIZE = (None, "filter")
#: Grids with at least this many points show a progress bar when ``progress=None``.
_PROGRESS_MIN_POINTS = 50


@dataclasses.dataclass(frozen=True)
class Landscape(_Record):
    """Losses on a grid around the parameters at which they were measured.

    Attributes:
        x: ``(n1,)`` coordinates along the first direction.
        y: ``(n2,)`` coordinates along the second direction (``None`` for a 1-D grid).
        loss: ``(n1,)`` losses ``L(θ + x[i] d1)``, or ``(n1, n2)`` losses
            ``L(θ + x[i] d1 + y[j] d2)`` (rows follow ``x``, columns ``y``).
        base_loss: ``L(θ)``, the loss at the centre.
        direction_norms: ``(d,)`` Euclidean norms of the directions actually used
            (after normalization), the scale of one unit of each coordinate.
        normalize: the normalization applied to the directions (``None`` or ``"filter"``).
    """

    x: Tensor
    y: Optional[Tensor]
    loss: Tensor
    base_loss: float
    direction_norms: Tensor
    normalize: Optional[str] = None

    _tensor_fields: ClassVar[tuple] = ("x", "y", "loss", "direction_norms")

    @property
    def ndim(self) -> int:
        """The grid's dimension, 1 or 2."""
        return 1 if self.y is None else 2


def filter_normalized(obj: Objective, direction: Tensor) -> Tensor:
    """Rescales a direction filter by filter to the norms of the current weights.

    Li et al. (2018, Sec. 4) split every weight tensor of two or more dimensions
    into filters (slices along its first, output dimension: a Conv kernel's output
    channel, a Linear layer's row) and rescale each filter :math:`d_{i,j}` of the
    direction to the norm of the matching filter :math:`\\theta_{i,j}`:

    .. math::

        d_{i,j} \\leftarrow \\frac{d_{i,j}}{\\lVert d_{i,j} \\rVert}\\,
        \\lVert \\theta_{i,j} \\rVert .

    Parameters with at most one dimension (biases, BatchNorm scales and shifts)
    get a zero direction, as in the authors' recommended ``ignore='biasbn'`` setting;
    filters whose direction is zero stay zero.

    Args:
        obj: the objective whose selected parameters give the filter norms.
        direction: a ``(P,)`` vector in the objective's flattening.

    Returns:
        The rescaled ``(P,)`` direction.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> d = filter_normalized(obj, torch.randn(obj.n_params))
        >>> d.shape
        torch.Size([67])
    """
    direction = _as_vector(obj, direction, "direction")
    parts = []
    for d, p in zip(obj.unflatten(direction), obj.params):
        if p.ndim <= 1:
            parts.append(torch.zeros_like(d))
            continue
        d_norms = d.reshape(d.shape[0], -1).norm(dim=1)
        p_norms = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        scale = torch.where(d_norms > 0, p_norms / torch.where(d_norms > 0, d_norms, 1.0), 0.0)
        parts.append(d * scale.reshape(-1, *([1] * (d.ndim - 1))))
    return obj.flatten(parts)


def random_directions(obj: Objective, n: int = 2, filter_normalize: bool = True,
                      seed: Union[int, torch.Generator] = 0) -> Tensor:
    """Gaussian random directions in parameter space, filter-normalized by default.

    Args:
        obj: the objective (its parameter count, dtype, device and, for the
            normalization, its current weights).
        n: how many directions.
        filter_normalize: rescale each direction with :func:`filter_normalized`
            (Li et al. 2018); without it the entries are standard normal.
        seed: an int or a ``torch.Generator``; the directions are drawn on the CPU
            in float64, so a seed gives the same directions on every device.

    Returns:
        A ``(P, n)`` block, one direction per column.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> D = random_directions(obj, n=2, seed=0)
        >>> D.shape
        torch.Size([67, 2])
        >>> surface = loss_landscape(obj, D, torch.linspace(-1, 1, 21))
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n: expected at least 1 direction, got {n}")
    if not isinstance(filter_normalize, bool):
        raise TypeError(f"filter_normalize: expected a bool, got {type(filter_normalize).__name__}")
    block = random_block(make_generator(seed), obj.n_params, n, obj.dtype, obj.device)
    if filter_normalize:
        block = torch.stack([filter_normalized(obj, block[:, j]) for j in range(n)], dim=1)
    return block


def loss_landscape(obj: Objective, directions, coords, normalize: Optional[str] = None, *,
                   progress: Optional[bool] = None) -> Landscape:
    """The loss along one or two directions around the current parameters.

    Evaluates :math:`\\mathcal{L}(\\theta + a\\,d_1)` on a 1-D grid, or
    :math:`\\mathcal{L}(\\theta + a\\,d_1 + b\\,d_2)` on a 2-D grid, one pass over
    the objective's data per grid point. The model is not touched (losses are
    evaluated with explicit parameters), so the parameters are exactly as before.

    Args:
        obj: the objective.
        directions: one direction (a ``(P,)`` tensor), two as a ``(P, 2)`` block
            (e.g. ``eigenvalues(H, k=2).vectors``, or :func:`random_directions`), or
            a sequence of one or two ``(P,)`` tensors. Cast to the objective's dtype
            and device.
        coords: the grid coordinates: one 1-D sequence used along every direction,
            or, for two directions, a pair ``(xs, ys)`` of 1-D sequences.
        normalize: ``None`` uses the directions as given (eigenvectors have unit
            norm, so coordinates are distances in parameter space); ``"filter"``
            applies :func:`filter_normalized` to each direction first (Li et al. 2018).
        progress: show a progress bar: ``True`` always, ``False`` never, ``None``
            for grids of at least 50 points.

    Returns:
        A :class:`Landscape` (serializable with ``to_json``).

    Raises:
        ValueError: wrong shapes, empty or non-finite coordinates, more than two
            directions, an unknown ``normalize``, or a direction that is zero.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> top = hk.eigenvalues(hk.HessianOperator(obj), k=2).vectors
        >>> surface = loss_landscape(obj, top, torch.linspace(-0.3, 0.3, 13))
        >>> surface.loss.shape
        torch.Size([13, 13])
    """
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize: expected None or 'filter', got {normalize!r}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress: expected None, True or False, got {progress!r}")
    D = _as_directions(obj, directions)
    if normalize == "filter":
        D = torch.stack([filter_normalized(obj, D[:, j]) for j in range(D.shape[1])], dim=1)
    norms = D.norm(dim=0)
    if bool((norms == 0).any()):
        raise ValueError("directions: a direction is zero"
                         + (" after filter normalization (only biases or other 1-D "
                            "parameters are selected?)" if normalize == "filter" else ""))
    axes = _as_coords(coords, D.shape[1], obj.dtype, obj.device)
    theta = obj.parameters_vector()
    grid = torch.cartesian_prod(*axes) if len(axes) == 2 else axes[0].unsqueeze(1)
    show = progress if progress is not None else grid.shape[0] >= _PROGRESS_MIN_POINTS
    losses = torch.empty(grid.shape[0], dtype=obj.dtype, device=obj.device)
    for i in tqdm(range(grid.shape[0]), desc="loss landscape", unit="point", disable=not show,
                  leave=False):
        losses[i] = obj.loss(params=theta + D @ grid[i])
    shape = tuple(len(a) for a in axes)
    return Landscape(
        x=axes[0],
        y=axes[1] if len(axes) == 2 else None,
        loss=losses.reshape(shape),
        base_loss=float(obj.loss()),
        direction_norms=norms,
        normalize=normalize,
    )


def _as_vector(obj: Objective, v, name: str) -> Tensor:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(v).__name__}")
    if v.shape != (obj.n_params,):
        raise ValueError(f"{name}: expected shape ({obj.n_params},), got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name}: has non-finite entries")
    return v.detach().to(dtype=obj.dtype, device=obj.device)


def _as_directions(obj: Objective, directions) -> Tensor:
    """The directions as a ``(P, d)`` block with ``d`` in {1, 2}."""
    if isinstance(directions, Tensor):
        if directions.ndim == 1:
            columns = [directions]
        elif directions.ndim == 2:
            columns = list(directions.unbind(dim=1))
        else:
            raise ValueError(f"directions: expected shape ({obj.n_params},) or "
                             f"({obj.n_params}, d), got {tuple(directions.shape)}")
    elif isinstance(directions, (list, tuple)):
        columns = list(directions)
    else:
        raise TypeError("directions: expected a tensor or a sequence of (P,) tensors, "
                        f"got {type(directions).__name__}")
    if len(columns) not in (1, 2):
        raise ValueError(f"directions: expected 1 or 2 directions, got {len(columns)}")
    return torch.stack([_as_vector(obj, c, "directions") for c in columns], dim=1)


def _as_coords(coords, n_dirs: int, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    """One 1-D coordinate tensor per direction."""
    per_axis = (isinstance(coords, (list, tuple)) and len(coords) > 0
                and all(isinstance(c, (list, tuple, Tensor)) for c in coords))
    if per_axis:
        if len(coords) != n_dirs:
            raise ValueError(f"coords: got {len(coords)} coordinate axes for {n_dirs} "
                             "direction(s)")
        raw: Sequence = coords
    else:
        raw = [coords] * n_dirs
    axes = []
    for c in raw:
        try:
            axis = torch.as_tensor(c, dtype=dtype).to(device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError("coords: expected a 1-D sequence of numbers or a pair of them, "
                            f"got {type(c).__name__}") from None
        if axis.ndim != 1 or axis.numel() == 0:
            raise ValueError(f"coords: expected a non-empty 1-D sequence, got shape "
                             f"{tuple(axis.shape)}")
        if not bool(torch.isfinite(axis).all()):
            raise ValueError("coords: has non-finite entries")
        axes.append(axis)
    return axes
