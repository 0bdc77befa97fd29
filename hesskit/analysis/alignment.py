"""Alignment of per-input loss gradients with Hessian eigenvectors.

Sabanayagam, Behrens, Adomaityte & Dawid ("Unveiling the Hessian's connection to
the decision boundary", arXiv 2306.07104) measure how the gradient of the loss at
a single input :math:`x` points along each top Hessian eigenvector :math:`v_i`:

.. math::

    A_i(x) = \\frac{\\langle g(x), v_i \\rangle}{\\lVert g(x) \\rVert}, \\qquad
    g(x) = \\nabla_\\theta\\, \\ell\\big(f_\\theta(x), \\hat y(x)\\big),

with :math:`\\hat y(x) = \\arg\\max_c f_\\theta(x)_c` the predicted label. On a grid
of inputs, :math:`|A_i|` lights up the part of the decision boundary that
eigenvector :math:`v_i` encodes.

The same cosine, maximized over the input, gives the study's margin estimate
(:func:`align_inputs`, :func:`margin_estimate`): an input :math:`x_b` whose
gradient is parallel to :math:`v_1` lies on the part of the boundary that
:math:`v_1` encodes, and its distance to the training points most aligned with
:math:`v_1` (one on each side) estimates the margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch.func import grad, grad_and_value, vmap

from hesskit.objective import Objective

__all__ = ["alignment", "align_inputs", "margin_estimate", "MarginEstimate"]

_LABELS = ("predicted", "true")
#: The input searches of :func:`align_inputs`.
_SEARCHES = ("adam", "sgd")
#: Bytes of per-input gradients one vectorized pass holds by default.
GRADIENT_BYTES = 2**28


def alignment(obj: Objective, eigenvectors: Tensor, inputs: Tensor,
              label: Union[str, Tensor] = "predicted", targets: Optional[Tensor] = None, *,
              batch_size: Optional[int] = None) -> Tensor:
    """Cosines between per-input loss gradients and the given eigenvectors.

    For every input :math:`x_n` the gradient :math:`g(x_n)` of the loss of that one
    input (``loss_fn`` on a batch of one) with respect to the objective's selected
    parameters is computed with ``torch.func`` (``vmap`` over the inputs of
    ``grad`` of the one-input loss), and

    .. math::

        A[n, i] = \\frac{g(x_n)^\\top v_i}{\\lVert g(x_n) \\rVert}.

    Sign convention: an eigenvector is only defined up to its sign, and flipping
    :math:`v_i` flips column ``i``; :math:`|A|` (the quantity plotted by
    Sabanayagam et al.) does not depend on it. An input whose gradient vanishes
    gets ``A[n, :] = 0``.

    The model is evaluated as the objective's ``mode="eval"`` prescribes; objectives
    in train mode are refused, because BatchNorm batch statistics of a single input
    are not defined.

    Args:
        obj: the objective (model, loss function and parameter selection; its data
            is not used).
        eigenvectors: ``(P,)`` or ``(P, k)`` with unit-norm columns (e.g.
            ``eigenvalues(H, k).vectors``), in the objective's flattening.
        inputs: ``(n, ...)`` inputs, one per row, shaped as the model expects.
        label: the label each loss is taken at: ``"predicted"`` (the arg-max of the
            model's output: classification losses), ``"true"`` (``targets``), or a
            tensor of labels, ``(n, ...)`` or one label for every input.
        targets: the true labels, ``(n, ...)``; needed for ``label="true"`` only.
        batch_size: how many inputs go through one vectorized pass (memory grows
            with ``batch_size × P``); default as many as give 256 MiB of gradients.

    Returns:
        The ``(n, k)`` alignments, in ``[-1, 1]``.

    Raises:
        ValueError: wrong shapes, columns that are not unit vectors, a train-mode
            objective, ``label="true"`` without ``targets``.
        TypeError: arguments of the wrong type.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(40, 2), torch.randint(0, 2, (40,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> V = hk.eigenvalues(hk.HessianOperator(obj), k=5).vectors
        >>> grid_points = torch.randn(100, 2)
        >>> A = alignment(obj, V, grid_points)
        >>> A.shape
        torch.Size([100, 5])
        >>> peak = A.abs().max(dim=0).values        # how much each v_i lights up
    """
    if obj.mode != "eval":
        raise ValueError("obj: alignment needs an objective with mode='eval' (a single "
                         f"input has no batch statistics), got mode={obj.mode!r}")
    V = _check_eigenvectors(obj, eigenvectors)
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs: expected a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(f"inputs: expected a non-empty batch (n, ...), got shape "
                         f"{tuple(inputs.shape)}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
    inputs = inputs.to(obj.device)
    n = inputs.shape[0]
    itemsize = torch.finfo(obj.dtype).bits // 8
    step = batch_size or max(1, min(n, GRADIENT_BYTES // (obj.n_params * itemsize)))
    labels = _labels(obj, inputs, label, targets, step)
    params = tuple(p.detach() for p in obj.params)

    def one_loss(ps, x, y):
        return obj.loss_fn(obj.forward(ps, x.unsqueeze(0)), y.unsqueeze(0)).reshape(())

    per_input_grad = vmap(grad(one_loss), in_dims=(None, 0, 0))
    out = []
    with obj.evaluation():
        for start in range(0, n, step):
            G = obj.flatten(per_input_grad(params, inputs[start:start + step],
                                           labels[start:start + step]))  # (P, b)
            norms = G.norm(dim=0)
            safe = torch.where(norms > 0, norms, torch.ones_like(norms))
            out.append(torch.where(norms[:, None] > 0, (G.T @ V) / safe[:, None], 0.0))
    return torch.cat(out)


def align_inputs(obj: Objective, vector: Tensor, start: Tensor, *, steps: int = 300,
                 lr: float = 0.01, label: Union[str, Tensor] = "predicted",
                 method: str = "adam", weight_decay: float = 0.0,
                 milestones: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """Move inputs until their loss gradient is parallel to a direction.

    The first step of the margin estimate of Sabanayagam et al. (arXiv 2306.07104,
    Sec. 5): find an input :math:`x_b` whose per-input gradient :math:`g(x)` (as in
    :func:`alignment`) is parallel to the top eigenvector :math:`v_1`. Every start
    :math:`x^{(0)}` climbs the squared cosine

    .. math::

        c(x) = A(x)^2 = \\frac{\\langle g(x), v \\rangle^2}{\\lVert g(x) \\rVert^2} \\in [0, 1]

    by one of two searches, each start on its own:

    - ``method="adam"``: Adam gradient ascent on :math:`c(x)` (``steps`` steps,
      learning rate ``lr`` annealed to 0 by a cosine schedule); ``lr`` is in the
      units of the inputs, so many starts (e.g. the training points) climb at once;
    - ``method="sgd"``: the authors' search (their public code): plain SGD descent on
      :math:`(c(x) - 1)^2`, whose gradient is :math:`2 (c - 1) \\nabla_x c`, with
      weight decay ``weight_decay`` on :math:`x` and the learning rate multiplied by
      0.1 at each step in ``milestones``. The authors start from one
      :math:`x \\sim \\mathcal N(0, I)` and run 20 000 steps at ``lr=0.01``,
      ``weight_decay=1e-3``, ``milestones=(5000,)``.

    The gradient :math:`\\nabla_x c` is a mixed second derivative of the loss
    (parameters, then input), taken with ``torch.func`` (``grad`` of a function of
    ``grad``) and vectorized over the starts (a single start takes plain double
    backward instead). With ``label="predicted"`` the label is re-read from the model
    at every step, so an input may cross the decision boundary.

    Args:
        obj: the objective (model, loss function, parameter selection; its data is
            not used), ``mode="eval"``.
        vector: ``(P,)`` or ``(P, 1)`` unit vector, e.g. the top Hessian eigenvector.
        start: ``(m, ...)`` starting inputs, shaped as the model expects.
        steps: optimizer steps.
        lr: the learning rate; with ``"adam"`` in the units of the inputs (roughly
            the largest distance moved per step).
        label: ``"predicted"`` or a tensor of labels (one for all, or ``(m, ...)``).
        method: ``"adam"`` (ascent on :math:`c`) or ``"sgd"`` (the authors' descent
            on :math:`(c - 1)^2`).
        weight_decay: L2 weight decay on the inputs, ``"sgd"`` only.
        milestones: steps at which the learning rate is multiplied by 0.1, ``"sgd"``
            only.

    Returns:
        ``(inputs, alignments)``: the ``(m, ...)`` final inputs and their ``(m,)``
        signed alignments :math:`A(x)` with ``vector`` (as :func:`alignment` gives).

    Raises:
        ValueError: a train-mode objective, more than one direction, wrong shapes,
            non-positive ``steps`` or ``lr``, an unknown ``method``, a negative
            ``weight_decay``, bad ``milestones``, or either of them with ``"adam"``.
        TypeError: arguments of the wrong type.

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(40, 2), torch.randint(0, 2, (40,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> v1 = torch.linalg.eigh(hk.HessianOperator(obj).dense())[1][:, -1]
        >>> x, a = align_inputs(obj, v1, X[:5], steps=20)
        >>> x_b = x[a.abs().argmax()]             # gradient most parallel to v1
        >>> x.shape, a.shape
        (torch.Size([5, 2]), torch.Size([5]))
        >>> x0 = torch.randn(1, 2, generator=torch.Generator().manual_seed(0))
        >>> x_b, a_b = align_inputs(obj, v1, x0, steps=50, method="sgd",    # the authors'
        ...                         weight_decay=1e-3, milestones=(25,))
    """
    if obj.mode != "eval":
        raise ValueError("obj: align_inputs needs an objective with mode='eval', got "
                         f"mode={obj.mode!r}")
    v = _check_eigenvectors(obj, vector)
    if v.shape[1] != 1:
        raise ValueError(f"vector: expected one direction (P,) or (P, 1), got shape "
                         f"{tuple(vector.shape)}")
    if not isinstance(start, Tensor):
        raise TypeError(f"start: expected a torch.Tensor, got {type(start).__name__}")
    if start.ndim == 0 or start.shape[0] == 0:
        raise ValueError(f"start: expected a non-empty batch (m, ...), got shape "
                         f"{tuple(start.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    if method not in _SEARCHES:
        raise ValueError(f"method: expected one of {_SEARCHES}, got {method!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected a number >= 0, got {weight_decay!r}")
    milestones = list(milestones) if isinstance(milestones, (list, tuple)) else milestones
    if not isinstance(milestones, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones):
        raise ValueError(f"milestones: expected a list or tuple of positive ints, got "
                         f"{milestones!r}")
    if method == "adam" and (weight_decay or milestones):
        raise ValueError("weight_decay, milestones: only method='sgd' takes them, got "
                         f"weight_decay={weight_decay!r}, milestones={milestones!r} with "
                         "method='adam'")
    params = tuple(p.detach() for p in obj.params)
    directions = obj.unflatten(v[:, 0])
    tiny = torch.finfo(obj.dtype).tiny

    def one_loss(ps, x, y):
        return obj.loss_fn(obj.forward(ps, x.unsqueeze(0)), y.unsqueeze(0)).reshape(())

    def cosine_squared(g):
        dot = sum((gi * vi).sum() for gi, vi in zip(g, directions))
        return dot**2 / (sum((gi * gi).sum() for gi in g) + tiny)

    def squared_cosine(x, y):
        return cosine_squared(grad(one_loss)(params, x, y))

    if start.shape[0] > 1:
        ascent_direction = vmap(grad_and_value(squared_cosine))
    else:
        # one start: plain double backward, as vmap's per-call overhead made each
        # step 15x slower (measured on a 2-64-64-3 MLP)
        tracked = tuple(p.clone().requires_grad_(True) for p in params)

        def ascent_direction(x, y):
            x = x.requires_grad_(True)
            g = torch.autograd.grad(one_loss(tracked, x[0], y[0]), tracked,
                                    create_graph=True)
            c = cosine_squared(g)
            return torch.autograd.grad(c, x)[0], c.detach().reshape(1)

    x = start.detach().to(device=obj.device, dtype=obj.dtype).clone().requires_grad_(True)
    if method == "adam":
        optimizer = torch.optim.Adam([x], lr=float(lr), maximize=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    else:
        optimizer = torch.optim.SGD([x], lr=float(lr), weight_decay=float(weight_decay))
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    with obj.evaluation():
        for _ in range(steps):
            labels = _labels(obj, x.detach(), label, None, x.shape[0])
            dc, c = ascent_direction(x.detach(), labels)
            if method == "adam":
                x.grad = dc
            else:   # d/dx (c - 1)^2, one factor per start
                x.grad = 2 * (c - 1).reshape((-1,) + (1,) * (dc.ndim - 1)) * dc
            optimizer.step()
            schedule.step()
    x = x.detach()
    return x, alignment(obj, v, x, label)[:, 0]


@dataclass(frozen=True)
class MarginEstimate:
    """The margin estimate of Sabanayagam et al. and how it was formed.

    Attributes:
        margin: :math:`\\min(d_{\\max}, d_{\\min})`, the estimated margin.
        index_max, index_min: the training points with the largest and the
            smallest (most negative) alignment :math:`A_1(x_n)`.
        distance_max, distance_min: their Euclidean distances to :math:`x_b`.
        alignment_max, alignment_min: their alignments.
    """

    margin: float
    index_max: int
    index_min: int
    distance_max: float
    distance_min: float
    alignment_max: float
    alignment_min: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def margin_estimate(obj: Objective, vector: Tensor, boundary_input: Tensor,
                    inputs: Tensor) -> MarginEstimate:
    """Estimate the margin from an input whose gradient is parallel to ``vector``.

    Sabanayagam et al. (arXiv 2306.07104, Sec. 5): with :math:`x_b` an input whose
    gradient is parallel to the top eigenvector :math:`v_1` (:func:`align_inputs`),
    a point of the boundary part that :math:`v_1` encodes, and :math:`x_t^{\\max}`,
    :math:`x_t^{\\min}` the training points whose gradients are most aligned and
    most anti-aligned with :math:`v_1` (the largest and smallest :math:`A_1(x_n)`:
    the extreme points, one on each side of that boundary part),

    .. math::

        \\hat m = \\min\\big(\\lVert x_t^{\\max} - x_b \\rVert,\\
                            \\lVert x_t^{\\min} - x_b \\rVert\\big).

    Distances are Euclidean over the flattened inputs.

    Args:
        obj: the objective, ``mode="eval"``.
        vector: ``(P,)`` or ``(P, 1)`` unit vector (:math:`v_1`).
        boundary_input: one input :math:`x_b`, shaped like one row of ``inputs``.
        inputs: ``(n, ...)`` training inputs.

    Returns:
        A :class:`MarginEstimate`.

    Raises:
        ValueError: wrong shapes (see :func:`alignment`).

    Example:
        >>> import torch, hesskit as hk
        >>> X, y = torch.randn(40, 2), torch.randint(0, 2, (40,))
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
        >>> obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))
        >>> v1 = torch.linalg.eigh(hk.HessianOperator(obj).dense())[1][:, -1]
        >>> x, a = align_inputs(obj, v1, X[:5], steps=20)
        >>> m = margin_estimate(obj, v1, x[a.abs().argmax()], X).margin
        >>> m >= 0
        True
    """
    if not isinstance(boundary_input, Tensor) or not isinstance(inputs, Tensor):
        raise TypeError("boundary_input, inputs: expected torch.Tensors")
    if tuple(boundary_input.shape) != tuple(inputs.shape[1:]):
        raise ValueError(f"boundary_input: expected one input of shape {tuple(inputs.shape[1:])}, "
                         f"got {tuple(boundary_input.shape)}")
    a = alignment(obj, vector, inputs)
    if a.shape[1] != 1:
        raise ValueError(f"vector: expected one direction (P,) or (P, 1), got shape "
                         f"{tuple(vector.shape)}")
    a = a[:, 0]
    i_max, i_min = int(a.argmax()), int(a.argmin())
    xb = boundary_input.to(device=inputs.device, dtype=inputs.dtype).reshape(-1)
    d_max = float((inputs[i_max].reshape(-1) - xb).norm())
    d_min = float((inputs[i_min].reshape(-1) - xb).norm())
    return MarginEstimate(margin=min(d_max, d_min), index_max=i_max, index_min=i_min,
                          distance_max=d_max, distance_min=d_min,
                          alignment_max=float(a[i_max]), alignment_min=float(a[i_min]))


def _check_eigenvectors(obj: Objective, eigenvectors) -> Tensor:
    if not isinstance(eigenvectors, Tensor):
        raise TypeError(f"eigenvectors: expected a torch.Tensor, got {type(eigenvectors).__name__}")
    V = eigenvectors.unsqueeze(1) if eigenvectors.ndim == 1 else eigenvectors
    if V.ndim != 2 or V.shape[0] != obj.n_params or V.shape[1] == 0:
        raise ValueError(f"eigenvectors: expected shape ({obj.n_params},) or "
                         f"({obj.n_params}, k), got {tuple(eigenvectors.shape)}")
    if not V.is_floating_point():
        raise TypeError(f"eigenvectors: expected a floating-point tensor, got {V.dtype}")
    V = V.detach().to(dtype=obj.dtype, device=obj.device)
    tol = 10 * math.sqrt(torch.finfo(obj.dtype).eps)
    deviation = float((V.norm(dim=0) - 1).abs().max())
    if not deviation <= tol:
        raise ValueError("eigenvectors: expected unit-norm columns, got a column norm off "
                         f"by {deviation:.3g}")
    return V


def _labels(obj: Objective, inputs: Tensor, label, targets, step: int) -> Tensor:
    """The ``(n, ...)`` labels the per-input losses are taken at."""
    n = inputs.shape[0]
    if isinstance(label, Tensor):
        labels = label.to(obj.device)
        if labels.ndim == 0:
            return labels.expand(n)
        if labels.shape[0] != n:
            raise ValueError(f"label: expected one label per input ({n}), got shape "
                             f"{tuple(labels.shape)}")
        return labels
    if label not in _LABELS:
        raise ValueError(f"label: expected 'predicted', 'true' or a tensor, got {label!r}")
    if label == "true":
        if not isinstance(targets, Tensor):
            raise ValueError("targets: label='true' needs the targets as a tensor, got "
                             f"{type(targets).__name__}")
        if targets.ndim == 0 or targets.shape[0] != n:
            raise ValueError(f"targets: expected one target per input ({n}), got shape "
                             f"{tuple(targets.shape)}")
        return targets.to(obj.device)
    params = [p.detach() for p in obj.params]
    with torch.no_grad(), obj.evaluation():
        return torch.cat([obj.forward(params, inputs[s:s + step]).argmax(dim=-1)
                          for s in range(0, n, step)])
