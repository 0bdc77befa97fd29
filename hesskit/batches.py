"""Batch formats: how one batch of data becomes a model call and a loss's targets.

The plain format is an ``(inputs, targets)`` pair of tensors, called as
``model(inputs)``. Every other format goes through an adapter ``batch(b) ->
(model_inputs, targets)`` (see :class:`~hesskit.objective.Objective`): the model
inputs are a tensor (``model(x)``), a tuple (``model(*args)``) or a dict
(``model(**kwargs)``), held by :class:`ModelInputs` so that they can be sliced into
chunks along the sample dimension like a tensor.

:func:`mean_denominator` is what a mean-reducing loss divides by on one batch; the
objective weights its chunks by it so that the dataset loss is the loss of one
batch holding all the data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ModelInputs", "split_batch", "mean_denominator"]

_INDEX_TARGET_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
_INDEX_TARGET_FUNCTIONS = (F.cross_entropy, F.nll_loss)
_ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss,
                       nn.BCEWithLogitsLoss, nn.SoftMarginLoss)
_ELEMENTWISE_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss,
                          F.binary_cross_entropy, F.binary_cross_entropy_with_logits,
                          F.soft_margin_loss)


def _take(value: Any, index: slice) -> Any:
    return value[index] if isinstance(value, Tensor) else value


def _move(value: Any, device: torch.device, non_blocking: bool) -> Any:
    return value.to(device, non_blocking=non_blocking) if isinstance(value, Tensor) else value


@dataclass(frozen=True)
class ModelInputs:
    """The arguments of one model call, ``model(*args, **kwargs)``.

    Every tensor among them carries the samples along dim 0; other values (flags,
    scalars, ``None``) are passed unchanged to every chunk. Slicing (``inputs[a:b]``)
    slices every tensor along dim 0, as for a tensor of inputs.

    Attributes:
        args: positional arguments.
        kwargs: keyword arguments.
    """

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __getitem__(self, index: slice) -> "ModelInputs":
        return ModelInputs(tuple(_take(a, index) for a in self.args),
                           {k: _take(v, index) for k, v in self.kwargs.items()})

    def to(self, device: torch.device, non_blocking: bool = False) -> "ModelInputs":
        """The same arguments with every tensor on ``device``."""
        return ModelInputs(tuple(_move(a, device, non_blocking) for a in self.args),
                           {k: _move(v, device, non_blocking) for k, v in self.kwargs.items()})

    def named_tensors(self) -> list[tuple[str, Tensor]]:
        """``(name, tensor)`` for every tensor argument (positional ones named by index)."""
        named = [(f"argument {i}", a) for i, a in enumerate(self.args)]
        named += [(repr(k), v) for k, v in self.kwargs.items()]
        return [(name, t) for name, t in named if isinstance(t, Tensor)]


def _default_split(batch: Any, position: int) -> tuple[Tensor, Tensor]:
    """An ``(inputs, targets)`` pair of tensors, or a TypeError saying to pass ``batch=``."""
    hint = ("pass batch= a function mapping one batch to (model inputs, targets), "
            "e.g. batch=")
    if isinstance(batch, Mapping):
        keys = ", ".join(repr(k) for k in batch)
        raise TypeError(f"data: batch {position} is a dict (keys {keys}); {hint}lambda b: "
                         "({k: v for k, v in b.items() if k != 'labels'}, b['labels']) "
                         "to call model(**inputs)")
    if isinstance(batch, (tuple, list)):
        if len(batch) != 2:
            raise TypeError(f"data: batch {position} has {len(batch)} elements, expected "
                             f"(inputs, targets); {hint}lambda b: (b[0], b[1])")
        if isinstance(batch[0], (tuple, list)):
            raise TypeError(f"data: the inputs of batch {position} are a "
                             f"{type(batch[0]).__name__}, not a tensor; {hint}lambda b: "
                             "(tuple(b[0]), b[1]) to call model(*inputs)")
        if isinstance(batch[0], Tensor) and isinstance(batch[1], Tensor):
            return batch[0], batch[1]
    raise TypeError("data: expected an (inputs, targets) pair of tensors or an iterable of "
                    f"such pairs; batch {position} is {type(batch).__name__}")


def split_batch(batch: Any, position: int,
                adapter: Callable | None = None) -> tuple[Tensor | ModelInputs, Tensor]:
    """Split one batch into ``(model inputs, targets)`` and check their sample counts.

    Args:
        batch: one batch as the data yields it.
        position: its index in the pass (for the error messages).
        adapter: ``batch(b) -> (model_inputs, targets)``; ``None`` for plain pairs.

    Returns:
        The inputs (a tensor for ``model(x)``, else :class:`ModelInputs`) and the
        targets, a tensor whose dim 0 counts the samples.
    """
    if adapter is None:
        inputs, targets = _default_split(batch, position)
    else:
        result = adapter(batch)
        if not (isinstance(result, (tuple, list)) and len(result) == 2
                and isinstance(result[1], Tensor)):
            got = type(result).__name__ if not isinstance(result, (tuple, list)) else \
                f"({', '.join(type(r).__name__ for r in result)})"
            raise TypeError("batch: expected the adapter to return (model inputs, targets) "
                            f"with targets a Tensor; on batch {position} it returned {got}")
        inputs, targets = result
        if isinstance(inputs, (tuple, list)):
            inputs = ModelInputs(args=tuple(inputs))
        elif isinstance(inputs, Mapping):
            inputs = ModelInputs(kwargs=dict(inputs))
        elif not isinstance(inputs, Tensor):
            raise TypeError("batch: expected model inputs as a Tensor, a tuple (positional "
                            "arguments) or a dict (keyword arguments); on batch "
                            f"{position} the adapter returned {type(inputs).__name__}")
    if targets.ndim == 0:
        raise ValueError(f"data: the targets of batch {position} are 0-dimensional; their "
                         "first dimension must index the samples")
    n = int(targets.shape[0])
    where = "data" if adapter is None else "batch"
    if isinstance(inputs, Tensor):
        if inputs.ndim == 0 or inputs.shape[0] != n:
            lead = 0 if inputs.ndim == 0 else int(inputs.shape[0])
            raise ValueError(f"{where}: inputs and targets of batch {position} have different "
                             f"lengths ({lead} inputs, {n} targets)")
        return inputs, targets
    for name, tensor in inputs.named_tensors():
        if tensor.ndim == 0 or tensor.shape[0] != n:
            lead = "none (0-dimensional)" if tensor.ndim == 0 else int(tensor.shape[0])
            raise ValueError(f"{where}: model {name} of batch {position} has leading dimension "
                             f"{lead}, expected {n} (the number of targets): every tensor "
                             "given to the model must index the samples along dim 0")
    return inputs, targets


def mean_denominator(loss_fn: Callable, targets: Tensor) -> float:
    """What ``loss_fn(outputs, targets)`` with ``reduction="mean"`` divides by.

    As defined in the PyTorch documentation of each loss:

    * ``nn.CrossEntropyLoss``/``nn.NLLLoss`` (and ``F.cross_entropy``/``F.nll_loss``
      with their default arguments) with class-index targets :math:`y_n` (any shape
      ``(N, d_1, ...)``: every position counts): :math:`\\sum_n w_{y_n}
      [y_n \\ne \\text{ignore\\_index}]`, the number of counted targets when the
      loss has no class ``weight``;
    * the same with probability targets ``(N, C, d_1, ...)``: the number of
      positions :math:`N d_1 \\cdots` (class weights do not enter the mean);
    * element-wise losses (MSE, L1, smooth L1, Huber, BCE, BCE with logits, soft
      margin): the number of target elements;
    * any other callable: the number of samples ``targets.shape[0]``. (A loss with
      its own normalisation, say a token loss written as a function, is then weighted
      by samples: write it as ``nn.CrossEntropyLoss`` on mapped outputs instead.)
    """
    if isinstance(loss_fn, _INDEX_TARGET_LOSSES) or loss_fn in _INDEX_TARGET_FUNCTIONS:
        if targets.is_floating_point():
            positions = targets.numel() // targets.shape[1] if targets.ndim > 1 else targets.shape[0]
            return float(positions)
        ignore = getattr(loss_fn, "ignore_index", -100)
        counted = targets[targets != ignore]
        weight = getattr(loss_fn, "weight", None)
        if weight is None:
            return float(counted.numel())
        return float(weight.detach().to(targets.device, torch.float64)[counted].sum())
    if isinstance(loss_fn, _ELEMENTWISE_LOSSES) or loss_fn in _ELEMENTWISE_FUNCTIONS:
        return float(targets.numel())
    return float(targets.shape[0])
