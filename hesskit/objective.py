"""The objective: WHAT is differentiated.

An :class:`Objective` binds a model, a loss function, a dataset and a selection of
parameters. Every curvature quantity in hesskit is a derivative of

.. math::

    \\mathcal{L}(\\theta) = \\sum_b w_b\\, \\ell_b(\\theta), \\qquad
    w_b = \\frac{d_b}{\\sum_{b'} d_{b'}} \\text{ (loss reduces by mean)}, \\quad
    w_b = 1 \\text{ (by sum)},

where :math:`\\ell_b` is ``loss_fn(model(x_b), y_b)`` on physical chunk ``b`` and
:math:`d_b` is the denominator of that loss's own mean on the chunk (see
:func:`mean_denominator`): the number of counted targets for cross-entropy and NLL
with class indices (``ignore_index`` left out), the sum of their class weights when
the loss has ``weight``, the number of positions for probability targets, the
number of elements for element-wise losses (MSE, L1, BCE, ...), and the number of
samples for any other callable. With a mean-reducing loss the objective is exactly
the loss of one batch holding the whole dataset, whatever the batching (padding
tokens and batches of unequal size included).

Batches are ``(inputs, targets)`` pairs of tensors, called as ``model(inputs)``.
Any other batch format (dicts of a Hugging Face tokenizer, ``(x, y, index)``
triples, models with several inputs) goes through the ``batch=`` adapter, which maps
a batch to ``(model inputs, targets)``; ``output=`` picks the tensor the loss takes
from what the model returns (``lambda out: out.logits``).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hesskit.batches import ModelInputs, mean_denominator, split_batch

__all__ = ["Objective", "Chunk", "ModelInputs"]

_MODES = ("eval", "train")
_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True)
class Chunk:
    """One physical chunk of the data.

    Attributes:
        inputs: the chunk's model inputs, on the objective's device: a tensor for
            ``model(x)``, or :class:`ModelInputs` (``model(*args, **kwargs)``) for
            batches mapped by ``batch=``. Pass them to :meth:`Objective.forward`.
        targets: the chunk's targets, on the objective's device (dim 0: samples).
        weight: the chunk loss's weight in the dataset objective
            (:math:`d_b / \\sum d` for a mean-reducing loss, ``1`` for a summing one).
        index: position of the chunk in the pass (seeds train-mode dropout).
    """

    inputs: Tensor | ModelInputs
    targets: Tensor
    weight: float
    index: int

    @property
    def size(self) -> int:
        """Number of samples in the chunk."""
        return int(self.targets.shape[0])

    @property
    def plain(self) -> bool:
        """Whether ``inputs`` is one tensor given to the model as ``model(inputs)``."""
        return isinstance(self.inputs, Tensor)


def _is_single_batch(data: Any) -> bool:
    """A dict, or a tuple/list with a tensor among its elements, is one batch; any
    other iterable (a list of batches, a DataLoader) yields batches."""
    return isinstance(data, Mapping) or (
        isinstance(data, (tuple, list)) and any(isinstance(d, Tensor) for d in data))


def _is_one_shot(data: Any, iterator: Iterator) -> bool:
    """An iterator, or a DataLoader over a stream (an ``IterableDataset``), can
    only be relied on for one pass."""
    return iterator is data or (isinstance(data, torch.utils.data.DataLoader)
                                and isinstance(data.dataset, torch.utils.data.IterableDataset))


def _infer_reduction(loss_fn: Callable, reduction: str | None) -> str | None:
    if reduction is not None:
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        return reduction
    declared = getattr(loss_fn, "reduction", None)
    if declared in ("mean", "sum"):
        return declared
    if declared is not None:
        raise ValueError(f"loss_fn: reduction={declared!r} does not give a scalar loss; "
                         "use 'mean' or 'sum'")
    return None  # decided from the data (see Objective._probe_reduction)


def _resolve_group(process_group: Any) -> Any:
    """The process group to sum over, or ``None`` when not distributed."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise ValueError("process_group: torch.distributed is not initialized")
        return None
    group = process_group if process_group is not None else dist.group.WORLD
    return group if dist.get_world_size(group) > 1 else None


class Objective:
    """A model, a loss and a dataset: the function whose curvature is measured.

    Args:
        model: the network, an ``nn.Module``. It is never left changed: its mode
            (train/eval), parameters, buffers and ``.grad`` fields are the same after
            every product as before.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, reducing by mean or by sum
            over the samples (read from ``loss_fn.reduction`` when present, else
            found by evaluating it on the first batch, or given by ``reduction``).
        data: one batch, or any re-iterable of batches (a ``DataLoader``). A batch
            is an ``(inputs, targets)`` pair of tensors (dim 0 indexes the samples),
            or anything ``batch`` maps. One batch is told from an iterable of
            batches by being a dict, or a tuple/list with a tensor among its
            elements. Data that can be read only once (an iterator or generator, a
            ``DataLoader`` over an ``IterableDataset``) is read into memory, once,
            here. Every pass over the data must give the same samples: a pass with
            a different sample count raises a ``ValueError``, and the operators
            check on their first product that two passes agree (see
            :class:`~hesskit.operators.CurvatureOperator`).
        params: the parameters to differentiate: names, modules or tensors (or one
            of them); default all parameters with ``requires_grad``. They are always
            ordered as in ``model.named_parameters()``.
        mode: ``"eval"`` (default) evaluates BatchNorm with running statistics and
            switches dropout off, so every product is deterministic. ``"train"`` uses
            batch statistics (without updating the running ones) and draws dropout
            masks from a fixed per-chunk seed, so repeated products still agree.
        batch_size: physical chunk size; larger batches are split. The numbers do not
            change (up to rounding), only the memory.
        reduction: override for loss functions that carry no ``reduction`` attribute
            (else it is found by evaluating the loss on the two halves of the first
            batch with more than one sample).
        seed: base seed of the train-mode dropout masks.
        batch: adapter for batches that are not ``(inputs, targets)`` pairs:
            ``batch(b) -> (model_inputs, targets)`` with ``model_inputs`` a tensor
            (``model(x)``), a tuple (``model(*args)``) or a dict (``model(**kwargs)``)
            and ``targets`` a tensor. Every tensor in the model inputs must index the
            samples along dim 0 (chunks slice them all); other values (flags, scalars)
            reach every call unchanged. ``n_samples`` counts the targets' dim 0.
            E.g. ``batch=lambda b: (b[0], b[1])`` for ``(x, y, index)`` triples;
            ``batch=lambda b: ((b["input_ids"], b["attention_mask"]), b["labels"])``
            or a dict of keyword arguments for a tokenizer's batches.
        output: ``output(model_output) -> Tensor``, the tensor given to ``loss_fn``
            (e.g. ``lambda out: out.logits`` for Hugging Face models). Default: the
            model's output, which must then be a tensor. For a causal language model
            the shift is ``output=lambda out: out.logits[:, :-1].transpose(1, 2)``
            with the targets ``labels[:, 1:]`` and ``nn.CrossEntropyLoss()``, so that
            padding (``-100``) is left out of the mean over all data.
        process_group: when ``torch.distributed`` is initialized, each process holds
            its own shard of the data and the objective is the one over the union of
            the shards: every product is summed across the processes of this group
            (default: the default group) with ``all_reduce``, the chunks weighted by
            the global sample count (exchanged once, here). Pass the shards
            uneven as they come; never pad them (that would change the objective).

    Attributes:
        plain_batches: whether every chunk is a tensor pair fed as ``model(inputs)``
            whose output goes straight to ``loss_fn`` (no ``output=`` mapping): what
            engines that read the model as a chain of layers can follow.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> X, y = torch.randn(100, 4), torch.randint(0, 3, (100,))
        >>> obj = Objective(model, nn.CrossEntropyLoss(), (X, y))
        >>> obj.n_params, obj.n_samples
        (67, 100)

        Dict batches (a tokenizer's) through the ``batch=`` adapter:

        >>> batches = [{"x": X[:60], "labels": y[:60]}, {"x": X[60:], "labels": y[60:]}]
        >>> obj = Objective(model, nn.CrossEntropyLoss(), batches,
        ...                 batch=lambda b: (b["x"], b["labels"]))
        >>> obj.n_batches, obj.n_samples
        (2, 100)
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data: Any, *,
                 params: Any = None, mode: str = "eval", batch_size: int | None = None,
                 reduction: str | None = None, seed: int = 0, process_group: Any = None,
                 batch: Callable | None = None, output: Callable | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive int or None, got {batch_size!r}")
        for name, fn in (("batch", batch), ("output", output)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a callable or None, got {type(fn).__name__}")
        self.model = model
        self.batch = batch
        self.output = output
        self.loss_fn = loss_fn
        self.mode = mode
        self.batch_size = batch_size
        self.seed = int(seed)
        self._set_params(*self._select_params(model, params))
        self.process_group = _resolve_group(process_group)
        self._single_batch = _is_single_batch(data)
        self._data = self._read_data(data)
        self.n_samples = int(self._global_sum(self.local_n_samples))
        self._denominator = self._global_sum(self._local_denominator)
        self.reduction = _infer_reduction(loss_fn, reduction) or self._probe_reduction()
        if self.reduction == "mean" and self._denominator <= 0:
            raise ValueError("data: every target is left out of the loss's mean (all "
                             "ignore_index, or zero class weights); the loss is undefined")

    # ------------------------------------------------------------------ set-up
    def _set_params(self, names: list[str], params: list[Tensor]) -> None:
        self.param_names, self.params = names, params
        self.device = params[0].device
        self.dtype = params[0].dtype
        self.param_shapes = [tuple(p.shape) for p in params]
        self.param_sizes = [p.numel() for p in params]
        self.n_params = sum(self.param_sizes)
        self._offsets = [0]
        for size in self.param_sizes:
            self._offsets.append(self._offsets[-1] + size)

    def restricted(self, params: Any) -> "Objective":
        """The same objective (model, loss, data, mode) over a subset of its parameters.

        The Hessian of the restricted objective is the corresponding diagonal block of
        this one's. The data is not read again.

        Args:
            params: names, modules or tensors, all among this objective's parameters.
        """
        names, tensors = self._select_params(self.model, params)
        outside = [n for n in names if n not in self.param_names]
        if outside:
            raise ValueError(f"params: {outside} are not among this objective's parameters")
        sub = copy.copy(self)
        sub._set_params(names, tensors)
        return sub

    @staticmethod
    def _select_params(model: nn.Module, params: Any) -> tuple[list[str], list[Tensor]]:
        named = list(model.named_parameters())
        if params is None:
            chosen = [(n, p) for n, p in named if p.requires_grad]
            if not chosen:
                raise ValueError("model: it has no trainable parameters "
                                 "(none with requires_grad=True)")
            return [n for n, _ in chosen], [p for _, p in chosen]
        items = [params] if isinstance(params, (str, Tensor, nn.Module)) else list(params)
        by_id = {id(p): n for n, p in named}
        modules = dict(model.named_modules())
        wanted: set[str] = set()
        for item in items:
            if isinstance(item, str):
                if item in dict(named):
                    wanted.add(item)
                elif item in modules and item != "":
                    prefix = item + "."
                    wanted.update(n for n, _ in named if n.startswith(prefix))
                else:
                    raise ValueError(f"params: {item!r} is neither a parameter nor a "
                                     "submodule name of model")
            elif isinstance(item, nn.Module):
                ids = [id(p) for p in item.parameters()]
                if not ids or any(i not in by_id for i in ids):
                    raise ValueError(f"params: module {type(item).__name__} is not a "
                                     "submodule of model with parameters")
                wanted.update(by_id[i] for i in ids)
            elif isinstance(item, Tensor):
                if id(item) not in by_id:
                    raise ValueError(f"params: a tensor of shape {tuple(item.shape)} is "
                                     "not a parameter of model")
                wanted.add(by_id[id(item)])
            else:
                raise TypeError("params: expected names, modules or parameter tensors, "
                                f"got {type(item).__name__}")
        if not wanted:
            raise ValueError("params: the selection holds no parameters")
        chosen = [(n, p) for n, p in named if n in wanted]
        dtypes = {p.dtype for _, p in chosen}
        if len(dtypes) > 1 or not chosen[0][1].is_floating_point():
            raise TypeError(f"params: expected floating parameters of one dtype, got {dtypes}")
        return [n for n, _ in chosen], [p for _, p in chosen]

    def _read_data(self, data: Any) -> Any:
        """Check every batch once; count samples, batches and the mean's denominator.

        Sets ``local_n_samples``, ``n_batches``, ``_local_denominator`` and
        ``plain_batches``; returns the data to iterate over (one-shot data read into
        a list).
        """
        if data is None:
            raise ValueError("data: expected an (inputs, targets) pair or an iterable "
                             "of batches, got None")
        if not self._single_batch:
            if isinstance(data, torch.utils.data.Dataset) and not hasattr(data, "__iter__"):
                raise TypeError("data: a Dataset is not a batch iterable; wrap it in a "
                                "torch.utils.data.DataLoader")
            try:
                iterator = iter(data)
            except TypeError:
                raise TypeError("data: expected an (inputs, targets) pair or an iterable "
                                f"of batches, got {type(data).__name__}") from None
            if _is_one_shot(data, iterator):  # keep the batches: a second pass would be empty
                data = list(iterator)
        self.local_n_samples = self.n_batches = 0
        self._local_denominator = 0.0
        plain = self.output is None
        for inputs, targets in self._split_batches(data):
            self.local_n_samples += int(targets.shape[0])
            self._local_denominator += mean_denominator(self.loss_fn, targets)
            self.n_batches += 1
            plain = plain and isinstance(inputs, Tensor)
        if self.local_n_samples == 0:
            raise ValueError("data: the dataset is empty (0 samples)")
        self.plain_batches = plain
        return data

    def _global_sum(self, local: float) -> float:
        if self.process_group is None:
            return local
        value = torch.tensor([float(local)], dtype=torch.float64, device=self._comm_device())
        return float(self.all_reduce(value).item())

    def _comm_device(self) -> torch.device:
        backend = torch.distributed.get_backend(self.process_group)
        return self.device if backend == "nccl" else torch.device("cpu")

    @property
    def world_size(self) -> int:
        """Number of processes sharing the data (1 when not distributed)."""
        if self.process_group is None:
            return 1
        return torch.distributed.get_world_size(self.process_group)

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` in place over the processes (no-op when not distributed).

        Every process must call it in the same order (the spectral routines do, since
        they run the same seeded computation everywhere). A process that died makes
        the others raise a ``RuntimeError`` here (after the process group's timeout)
        instead of hanging forever.
        """
        if self.process_group is None:
            return tensor
        dist = torch.distributed
        target = self._comm_device()
        buffer = tensor if tensor.device == target else tensor.to(target)
        try:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=self.process_group)
        except (RuntimeError, dist.DistBackendError) as exc:
            raise RuntimeError(
                f"hesskit: summing a curvature product over {self.world_size} processes "
                f"failed on rank {dist.get_rank()} (did another process die or call a "
                f"different sequence of products?): {exc}") from exc
        if buffer is not tensor:
            tensor.copy_(buffer)
        return tensor

    def _probe_reduction(self) -> str:
        """Decide mean vs sum by evaluating ``loss_fn`` on the halves of the first batch
        with more than one sample (with one sample, mean and sum coincide)."""
        probe = next(((x, y) for x, y in self._split_batches(self._data) if y.shape[0] > 1),
                     None)
        if probe is None:
            if self.n_samples == 1:
                return "mean"
            raise ValueError("loss_fn: cannot tell whether it reduces by mean or by sum: "
                             "every batch holds one sample; pass reduction='mean' or "
                             "reduction='sum'")
        x, y = probe[0].to(self.device), probe[1].to(self.device)
        n = int(y.shape[0])
        h = n // 2
        with torch.no_grad(), self.evaluation():
            out = self.forward([p.detach() for p in self.params], x)
            full = float(self.loss_fn(out, y))
            a, b = float(self.loss_fn(out[:h], y[:h])), float(self.loss_fn(out[h:], y[h:]))
        scale = max(abs(full), abs(a), abs(b), 1e-30)
        as_sum = abs(full - (a + b)) <= 1e-5 * scale
        as_mean = abs(full - (h * a + (n - h) * b) / n) <= 1e-5 * scale
        if as_mean:
            return "mean"
        if as_sum:
            return "sum"
        raise ValueError("loss_fn: cannot tell whether it reduces by mean or by sum over "
                         "the samples; pass reduction='mean' or reduction='sum'")

    # ----------------------------------------------------------------- data
    def _split_batches(self, data: Any) -> Iterator[tuple[Tensor | ModelInputs, Tensor]]:
        """``(model inputs, targets)`` of every batch of ``data``, checked."""
        batches = [data] if self._single_batch else data
        for position, batch in enumerate(batches):
            yield split_batch(batch, position, self.batch)

    def chunks(self) -> Iterator[Chunk]:
        """The physical chunks of one pass over the data, with their weights.

        A chunk whose weight is zero (a mean-reduced loss with every target ignored
        there, whose own loss is 0/0) is left out. A pass that does not give the
        samples counted when the objective was built raises a ``ValueError``.
        """
        index = seen = 0
        for x, y in self._split_batches(self._data):
            n = int(y.shape[0])
            step = self.batch_size or max(n, 1)
            for start in range(0, n, step):
                yc = y[start:start + step]
                weight = 1.0
                if self.reduction == "mean":
                    weight = mean_denominator(self.loss_fn, yc) / self._denominator
                if weight != 0:
                    yield Chunk(x[start:start + step].to(self.device, non_blocking=True),
                                yc.to(self.device, non_blocking=True), weight, index)
                index += 1
            seen += n
        if seen != self.local_n_samples:
            raise ValueError(
                f"data: a pass over the data gave {seen} samples, the first gave "
                f"{self.local_n_samples}: the data changes between passes (a stream that "
                "can be read once, a sampler that draws a new subset). Pass a re-iterable "
                "dataset, or a list of the batches")

    @property
    def single_chunk(self) -> bool:
        """Whether one pass over the data is a single chunk of one tensor pair (graphs
        can be reused)."""
        return self._single_batch and self.plain_batches and (
            self.batch_size is None or self.batch_size >= self.n_samples)

    def variability_causes(self) -> list[str]:
        """What in this objective can make two passes over the data differ (for the
        operators' determinism check to name)."""
        causes = []
        data = torch.utils.data
        if isinstance(self._data, data.DataLoader):
            sampler = getattr(self._data.batch_sampler, "sampler", self._data.sampler)
            if isinstance(sampler, data.RandomSampler) and self._data.drop_last:
                causes.append("data: a DataLoader with shuffle=True and drop_last=True drops "
                              "different samples on every pass")
            elif not isinstance(sampler, data.SequentialSampler):
                causes.append(f"data: a DataLoader whose sampler ({type(sampler).__name__}) "
                              "draws different batches on every pass")
        if self.mode == "train":
            stochastic = sorted({type(m).__name__ for m in self.model.modules()
                                 if isinstance(m, (*_BATCHNORM, nn.modules.dropout._DropoutNd))})
            if stochastic:
                causes.append(f"mode='train' with {', '.join(stochastic)}: batch statistics "
                              "and dropout masks follow the batches, which change between "
                              "passes")
        return causes

    # -------------------------------------------------------------- evaluation
    @contextlib.contextmanager
    def evaluation(self, chunk_index: int = 0):
        """Context in which the model evaluates as this objective prescribes.

        Sets train/eval behaviour on every module (BatchNorm in train mode uses batch
        statistics without touching the running ones), seeds dropout in train mode,
        and restores every flag and the global RNG state afterwards.
        """
        modules = list(self.model.modules())
        flags = [m.training for m in modules]
        tracked = [(m, m.track_running_stats) for m in modules if isinstance(m, _BATCHNORM)]
        try:
            for m in modules:
                m.training = self.mode == "train"
            if self.mode == "train":
                for m, _ in tracked:
                    m.track_running_stats = False
                devices = [self.device.index or 0] if self.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(self.seed + chunk_index)
                    yield
            else:
                yield
        finally:
            for m, flag in zip(modules, flags):
                m.training = flag
            for m, flag in tracked:
                m.track_running_stats = flag

    def forward(self, params: Sequence[Tensor], inputs: Tensor | ModelInputs) -> Tensor:
        """Model outputs with the selected parameters replaced by ``params``.

        ``inputs`` is a chunk's :attr:`Chunk.inputs`; the result is what ``loss_fn``
        takes (after the ``output=`` mapping). Call inside :meth:`evaluation`.
        Differentiable in ``params`` only: the model's other parameters enter
        detached, so that what is computed from the outputs (products, dense
        matrices) carries no autograd graph back into them even where they require
        grad (a ``params=`` subset). Works under ``torch.func`` transforms.
        """
        selected = set(self.param_names)
        state = {name: p.detach() for name, p in self.model.named_parameters()
                 if name not in selected and p.requires_grad}
        state.update(zip(self.param_names, params))
        if isinstance(inputs, ModelInputs):
            out = functional_call(self.model, state, inputs.args, inputs.kwargs)
        else:
            out = functional_call(self.model, state, (inputs,))
        if self.output is not None:
            out = self.output(out)
        if not isinstance(out, Tensor):
            raise TypeError(f"output: the model returned a {type(out).__name__}, not a tensor; "
                            "pass output= a function picking the tensor loss_fn takes "
                            "(e.g. output=lambda out: out.logits)")
        return out

    def chunk_loss(self, params: Sequence[Tensor], chunk: Chunk,
                   loss_fn: Callable | None = None) -> Tensor:
        """``loss_fn(model(x), y)`` on one chunk (its own reduction, unweighted).

        ``loss_fn`` overrides the objective's loss with an equivalent formulation.
        """
        loss = (loss_fn or self.loss_fn)(self.forward(params, chunk.inputs), chunk.targets)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn: expected a scalar loss, got {shape}")
        return loss.reshape(())

    def loss(self, params: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        """The dataset loss at the current parameters, or at ``params``.

        Args:
            params: ``None``, a flat vector of length P, or a list of tensors shaped
                like the selected parameters.
        """
        ps = self._as_param_list(params)
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for chunk in self.chunks():
                with self.evaluation(chunk.index):
                    total += chunk.weight * self.chunk_loss(ps, chunk)
        return self.all_reduce(total)

    def gradient(self, params: Tensor | Sequence[Tensor] | None = None) -> Tensor:
        """The flat gradient (P,) of the dataset loss."""
        base = self._as_param_list(params)
        total = torch.zeros(self.n_params, dtype=self.dtype, device=self.device)
        for chunk in self.chunks():
            ps = [p.detach().requires_grad_(True) for p in base]
            with self.evaluation(chunk.index):
                loss = self.chunk_loss(ps, chunk)
            grads = torch.autograd.grad(loss, ps, allow_unused=True)
            total += chunk.weight * self.flatten(grads)
        return self.all_reduce(total)

    # --------------------------------------------------------------- vectors
    def _as_param_list(self, params) -> list[Tensor]:
        if params is None:
            return [p.detach() for p in self.params]
        if isinstance(params, Tensor):
            self.check_vector(params, "params")
            return [t.detach() for t in self.unflatten(params)]
        params = list(params)
        if [tuple(p.shape) for p in params] != self.param_shapes:
            raise ValueError("params: expected tensors of shapes "
                             f"{self.param_shapes}, got {[tuple(p.shape) for p in params]}")
        return [p.detach() for p in params]

    def parameters_vector(self) -> Tensor:
        """The current values of the selected parameters as one flat vector (P,)."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def flatten(self, tensors: Sequence[Tensor | None]) -> Tensor:
        """Concatenate per-parameter tensors into the flat convention.

        Each tensor is shaped like its parameter (result ``(P,)``) or carries a
        leading batch dimension ``(k, *shape)`` (result ``(P, k)``). ``None`` (an
        unused parameter) is read as zeros.
        """
        first = next((t for t in tensors if t is not None), None)
        batched = first is not None and first.ndim == len(self.param_shapes[0]) + 1 \
            and tuple(first.shape[1:]) == self.param_shapes[0]
        parts = []
        for t, shape, size in zip(tensors, self.param_shapes, self.param_sizes):
            if batched:
                k = first.shape[0]
                t = torch.zeros((k, *shape), dtype=self.dtype, device=self.device) if t is None else t
                parts.append(t.reshape(k, size))
            else:
                t = torch.zeros(shape, dtype=self.dtype, device=self.device) if t is None else t
                parts.append(t.reshape(size))
        return torch.cat(parts, dim=-1).T.contiguous() if batched else torch.cat(parts)

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        """Split a flat ``(P,)`` vector into parameter shapes, or a ``(P, k)`` block
        into tensors of shape ``(k, *param_shape)``."""
        if vector.ndim == 1:
            return [vector[a:b].view(shape) for a, b, shape in
                    zip(self._offsets[:-1], self._offsets[1:], self.param_shapes)]
        k = vector.shape[1]
        rows = vector.T
        return [rows[:, a:b].reshape(k, *shape) for a, b, shape in
                zip(self._offsets[:-1], self._offsets[1:], self.param_shapes)]

    def slices(self) -> dict[str, slice]:
        """Where each selected parameter lives in the flat vector."""
        return {n: slice(a, b) for n, a, b in
                zip(self.param_names, self._offsets[:-1], self._offsets[1:])}

    def check_vector(self, v: Tensor, name: str = "v") -> Tensor:
        """Validate a ``(P,)`` vector or ``(P, k)`` block for products."""
        if not isinstance(v, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(v).__name__}")
        if v.ndim not in (1, 2) or v.shape[0] != self.n_params:
            raise ValueError(f"{name}: expected shape ({self.n_params},) or "
                             f"({self.n_params}, k), got {tuple(v.shape)}")
        if v.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype}, got {v.dtype}")
        if v.device != self.device:
            raise ValueError(f"{name}: expected device {self.device}, got {v.device}")
        return v

    def name_of_index(self, index: int) -> str:
        """The parameter name holding flat position ``index``."""
        for name, a, b in zip(self.param_names, self._offsets[:-1], self._offsets[1:]):
            if a <= index < b:
                return name
        raise IndexError(index)

    def __repr__(self) -> str:
        return (f"Objective(model={type(self.model).__name__}, loss={getattr(self.loss_fn, '__name__', type(self.loss_fn).__name__)}, "
                f"n_samples={self.n_samples}, n_params={self.n_params}, "
                f"reduction={self.reduction!r}, mode={self.mode!r})")
