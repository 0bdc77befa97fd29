"""Reading a model as a chain of Linear layers and pointwise activations.

The native engine's fused chain path (:mod:`hesskit.engines.native`) handles models that
compute, per sample,

.. math::

    a_0 = \\operatorname{prefix}(x), \\quad z_l = W_l a_{l-1} + b_l, \\quad
    a_l = \\sigma_l(z_l) \\;(l = 1..L), \\quad f = a_L,

where :math:`\\sigma_l` is the composition of the pointwise activations that follow
Linear layer :math:`l` (identity when none does) and the prefix holds what comes
before the first Linear layer (activations, ``nn.Flatten``), which depends on no
parameter. :func:`parse_chain` reads such a chain from an ``nn.Sequential``
(nested ones are flattened) or a single ``nn.Linear``; :func:`loss_terms` puts
cross-entropy and MSE in the normalized form of the kernels,

.. math::

    \\ell = \\sum_n c_n \\Phi(f_n) - \\langle T_n, f_n \\rangle, \\qquad
    \\Phi = \\operatorname{logsumexp} \\text{ (cross-entropy)}, \\;
    \\tfrac12 \\lVert \\cdot \\rVert^2 \\text{ (MSE)},

whose gradient :math:`c_n \\nabla\\Phi(f_n) - T_n` and Hessian
:math:`c_n \\nabla^2\\Phi(f_n)` equal those of the original loss for every sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hesskit.engines.module_hooks import hook_problem
from hesskit.engines.output_hessian import closed_form_kind

__all__ = ["ACTIVATION_CODES", "Activation", "LinearLayer", "Chain", "UnsupportedModelError",
           "parse_chain", "loss_terms", "loss_problem"]

#: Activation codes of the ``hesskit::sequential_*`` op schemas (csrc/sequential_math.h).
ACTIVATION_CODES = {"relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4, "gelu": 5,
                    "gelu_tanh": 6, "silu": 7, "softplus": 8, "elu": 9}

#: Most activations after one Linear layer (kMaxActivations in csrc/sequential_math.h).
_MAX_ACTIVATIONS = 8

#: Modules that pass their input through unchanged (Dropout: in eval mode; Flatten: on
#: the (N, features) outputs of a Linear layer, or before the first one).
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Flatten)


class UnsupportedModelError(ValueError):
    """The model is not a chain the fused chain path can handle."""


@dataclass(frozen=True)
class Activation:
    """One pointwise activation: its kernel code and up to two parameters."""

    code: int
    arg0: float = 0.0
    arg1: float = 0.0


def _activation_of(module: nn.Module) -> Activation | None:
    """The activation a module computes, or ``None`` if it is not a supported one."""
    kind = type(module)
    if kind is nn.ReLU:
        return Activation(ACTIVATION_CODES["relu"])
    if kind is nn.LeakyReLU:
        return Activation(ACTIVATION_CODES["leaky_relu"], float(module.negative_slope))
    if kind is nn.Tanh:
        return Activation(ACTIVATION_CODES["tanh"])
    if kind is nn.Sigmoid:
        return Activation(ACTIVATION_CODES["sigmoid"])
    if kind is nn.GELU:
        return Activation(ACTIVATION_CODES["gelu_tanh" if module.approximate == "tanh" else "gelu"])
    if kind is nn.SiLU:
        return Activation(ACTIVATION_CODES["silu"])
    if kind is nn.Softplus:
        return Activation(ACTIVATION_CODES["softplus"], float(module.beta), float(module.threshold))
    if kind is nn.ELU:
        return Activation(ACTIVATION_CODES["elu"], float(module.alpha))
    return None


@dataclass
class LinearLayer:
    """A Linear layer of the chain and the activations that follow it."""

    name: str
    module: nn.Linear
    activations: list[Activation] = field(default_factory=list)
    #: every module between this layer and the next one, with its name
    trailing: list[tuple[str, nn.Module]] = field(default_factory=list)

    @property
    def param_names(self) -> list[str]:
        """Its parameters' names in ``model.named_parameters()``, weight then bias (the
        kernels' order; the model may register them in the other order)."""
        prefix = f"{self.name}." if self.name else ""
        names = [prefix + "weight"]
        if self.module.bias is not None:
            names.append(prefix + "bias")
        return names


@dataclass
class Chain:
    """A model read as ``prefix`` then Linear layers with their activations."""

    prefix: list[tuple[str, nn.Module]]
    layers: list[LinearLayer]

    def activation_spec(self, start: int = 0) -> tuple[list[int], list[float], list[int]]:
        """``(act_codes, act_args, act_counts)`` of the layers from ``start`` on."""
        codes, args, counts = [], [], []
        for layer in self.layers[start:]:
            counts.append(len(layer.activations))
            for act in layer.activations:
                codes.append(act.code)
                args.extend((act.arg0, act.arg1))
        return codes, args, counts

    def weights(self, start: int = 0) -> list[Tensor]:
        return [layer.module.weight.detach() for layer in self.layers[start:]]

    def biases(self, start: int = 0) -> list[Tensor | None]:
        return [None if layer.module.bias is None else layer.module.bias.detach()
                for layer in self.layers[start:]]

    def run_prefix(self, x: Tensor, stop: int = 0) -> Tensor:
        """The input of layer ``stop``: the prefix and layers ``0..stop-1`` applied to ``x``
        (no graph is recorded). Dropout is the identity here whatever the modules'
        ``training`` flags: :func:`parse_chain` refuses it in train-mode objectives
        unless ``p = 0``."""
        modules = [m for _, m in self.prefix]
        for layer in self.layers[:stop]:
            modules += [layer.module] + [m for _, m in layer.trailing]
        with torch.no_grad():
            for module in modules:
                if type(module) is not nn.Dropout:
                    x = module(x)
        return x


def _leaves(module: nn.Module, name: str):
    if type(module) is nn.Sequential:
        # not named_children(): it skips a module's repeated occurrences
        for child_name, child in module._modules.items():
            yield from _leaves(child, f"{name}.{child_name}" if name else child_name)
    else:
        yield name, module


def _describe(name: str, module: nn.Module) -> str:
    if not name:
        return f"model ({type(module).__name__}, not an nn.Sequential)"
    return f"module {name!r} ({type(module).__name__})"


def _shared_parameter_problem(layers: list[LinearLayer]) -> str | None:
    """Why the layers' parameters are not independent (one tensor in two places)."""
    owner: dict[int, tuple[str, str]] = {}
    for layer in layers:
        for attr in ("weight", "bias"):
            p = getattr(layer.module, attr)
            if p is None:
                continue
            if id(p) in owner:
                other, other_attr = owner[id(p)]
                return (f"{_describe(layer.name, layer.module)} shares its parameter {attr!r} "
                        f"with module {other!r} ({other_attr!r}); tied parameters are not "
                        "supported by the fused chain path")
            owner[id(p)] = (layer.name, attr)
    return None


def parse_chain(model: nn.Module, mode: str = "eval") -> Chain:
    """Read ``model`` as a chain of Linear layers and pointwise activations.

    Accepted: an ``nn.Sequential`` (nested ``nn.Sequential`` flattened) of
    ``nn.Linear``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.Tanh``, ``nn.Sigmoid``,
    ``nn.GELU`` (exact and tanh approximation), ``nn.SiLU``, ``nn.Softplus``,
    ``nn.ELU``, ``nn.Identity``, ``nn.Flatten`` (``start_dim=1, end_dim=-1``) and
    ``nn.Dropout`` (in eval mode, or with ``p=0``), holding at least one Linear
    layer; or a single ``nn.Linear``. Subclasses of these are not accepted (they may
    compute something else), nor models with forward hooks or forward pre-hooks
    (``torch.nn.utils.prune`` and ``weight_norm`` are pre-hooks), global ones included,
    or with ``torch.nn.utils.parametrize`` parametrizations, nor Linear layers that
    share a parameter (tied weights): the kernels would not follow them.

    Args:
        model: the network.
        mode: the objective's mode; ``"train"`` rejects dropout with ``p > 0``.

    Raises:
        UnsupportedModelError: naming the first module that is not supported.
    """
    problem = hook_problem(model)
    if problem is not None:
        raise UnsupportedModelError(problem)
    chain = Chain(prefix=[], layers=[])
    seen: set[int] = set()
    for name, module in _leaves(model, ""):
        if id(module) in seen:
            raise UnsupportedModelError(f"{_describe(name, module)} appears twice in the "
                                        "chain (shared modules are not supported)")
        seen.add(id(module))
        if type(module) is nn.Linear:
            chain.layers.append(LinearLayer(name, module))
            continue
        activation = _activation_of(module)
        if activation is None and type(module) not in _PASS_THROUGH:
            raise UnsupportedModelError(f"{_describe(name, module)} is not supported by the "
                                        "fused chain path")
        if type(module) is nn.Flatten and (module.start_dim != 1 or module.end_dim != -1):
            raise UnsupportedModelError(f"{_describe(name, module)} with start_dim="
                                        f"{module.start_dim}, end_dim={module.end_dim} is not "
                                        "supported (only start_dim=1, end_dim=-1)")
        if type(module) is nn.Dropout and mode == "train" and module.p > 0:
            raise UnsupportedModelError(f"{_describe(name, module)} draws random masks in "
                                        "train mode (use mode='eval')")
        if not chain.layers:
            chain.prefix.append((name, module))
            continue
        layer = chain.layers[-1]
        layer.trailing.append((name, module))
        if activation is not None:
            if len(layer.activations) == _MAX_ACTIVATIONS:
                raise UnsupportedModelError(
                    f"{_describe(name, module)}: more than {_MAX_ACTIVATIONS} activations "
                    f"follow Linear layer {layer.name!r}")
            layer.activations.append(activation)
    if not chain.layers:
        raise UnsupportedModelError(f"model ({type(model).__name__}) has no nn.Linear layer "
                                    "in a supported chain")
    problem = _shared_parameter_problem(chain.layers)
    if problem is not None:
        raise UnsupportedModelError(problem)
    return chain


def loss_problem(loss_fn: Callable) -> str | None:
    """``None`` when the kernels support ``loss_fn``, else why not."""
    if isinstance(loss_fn, nn.Module):
        problem = hook_problem(loss_fn, "loss_fn")
        if problem is not None:
            return problem  # (closed_form_kind is None then, with a vaguer reason)
    kind = closed_form_kind(loss_fn)
    if kind is None:
        return (f"loss_fn ({getattr(loss_fn, '__name__', type(loss_fn).__name__)}) is not "
                "supported: the native engine needs nn.CrossEntropyLoss (without class "
                "weights) or nn.MSELoss")
    return None


def loss_terms(loss_fn: Callable, reduction: str, outputs_shape: tuple[int, int],
               targets: Tensor, dtype: torch.dtype) -> tuple[str, Tensor, Tensor]:
    """The normalized loss of one chunk: ``(loss, T, c)`` for the kernels.

    Cross-entropy with class-index targets :math:`y_n` (``ignore_index`` and
    ``label_smoothing`` :math:`\\varepsilon` honoured): :math:`\\tilde y_n =
    (1-\\varepsilon)\\, e_{y_n} + \\varepsilon / C` for counted samples, 0 for ignored
    ones; with probability targets :math:`\\tilde y_n = (1-\\varepsilon) y_n +
    \\varepsilon / C`. Then :math:`T_n = w\\tilde y_n`, :math:`c_n = w \\sum_k
    \\tilde y_{nk}` with :math:`w = 1/\\#\\text{counted}` (mean) or 1 (sum).
    MSE: :math:`c_n = 2w`, :math:`T_n = 2w\\, y_n`, :math:`w = 1/(NC)` or 1.

    Args:
        loss_fn: ``nn.CrossEntropyLoss``/``F.cross_entropy`` or ``nn.MSELoss``/``F.mse_loss``.
        reduction: the objective's reduction (used when ``loss_fn`` has none).
        outputs_shape: ``(N, C)`` of the chain's outputs.
        targets: the chunk's targets.
        dtype: the parameters' dtype.

    Raises:
        ValueError: targets whose shape does not fit the outputs.
    """
    N, C = outputs_shape
    reduction = getattr(loss_fn, "reduction", reduction)
    device = targets.device
    if closed_form_kind(loss_fn) == "ce":
        eps = float(getattr(loss_fn, "label_smoothing", 0.0))
        if targets.is_floating_point():
            if tuple(targets.shape) != (N, C):
                raise ValueError(f"targets: cross-entropy with probabilities needs shape "
                                 f"{(N, C)}, got {tuple(targets.shape)}")
            smoothed = (1 - eps) * targets.to(dtype) + eps / C
            count = N
        else:
            if tuple(targets.shape) != (N,):
                raise ValueError(f"targets: cross-entropy with class indices needs shape "
                                 f"{(N,)}, got {tuple(targets.shape)}")
            valid = targets != getattr(loss_fn, "ignore_index", -100)
            onehot = F.one_hot(torch.where(valid, targets, 0), C).to(dtype)
            smoothed = ((1 - eps) * onehot + eps / C) * valid.unsqueeze(1).to(dtype)
            count = int(valid.sum())
        w = 1.0 / max(count, 1) if reduction == "mean" else 1.0
        return "cross_entropy", (w * smoothed).contiguous(), w * smoothed.sum(1)
    if tuple(targets.shape) != (N, C):
        raise ValueError(f"targets: MSE needs the outputs' shape {(N, C)}, got "
                         f"{tuple(targets.shape)}")
    w = 2.0 / (N * C) if reduction == "mean" else 2.0
    return "mse", (w * targets.to(dtype)).contiguous(), torch.full((N,), w, dtype=dtype,
                                                                  device=device)
