"""Architectures by name: :func:`get_model` and :func:`list_models`.

Only architectures a user would build on are registered; a study's particular
configuration of one (e.g. the decision-boundary study's 2-100-100-3 MLP) is built
by its script in ``examples/`` with the builder and its arguments.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from hesskit._validation import as_int_seed
from hesskit.models.cnn import lenet, small_cnn, yao_cnn
from hesskit.models.fully_connected import deep_linear, mlp
from hesskit.models.resnet import resnet18
from hesskit.models.vgg import vgg11

__all__ = ["get_model", "list_models"]

_MODELS = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "deep_linear": deep_linear,
    "lenet": lenet,
    "vgg11": vgg11,
    "vgg11_bn": partial(vgg11, batch_norm=True),
    "resnet18": resnet18,
    "yao_cnn": yao_cnn,
}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return sorted(_MODELS)


def get_model(name: str, *, seed=None, **kwargs) -> nn.Module:
    """Build an architecture by name.

    ========================  ==========================================================
    name                      builder and defaults
    ========================  ==========================================================
    ``"mlp"``                 :func:`~hesskit.models.mlp` (give ``in_dim``)
    ``"small_cnn"``           :func:`~hesskit.models.small_cnn`, decision-boundary study
    ``"deep_linear"``         :func:`~hesskit.models.deep_linear`, rank study
    ``"lenet"``               :func:`~hesskit.models.lenet`, Sankar et al.
    ``"vgg11"``/``"vgg11_bn"``  :func:`~hesskit.models.vgg11` without / with BatchNorm
    ``"resnet18"``            :func:`~hesskit.models.resnet18`, CIFAR-style
    ``"yao_cnn"``             :func:`~hesskit.models.yao_cnn`, large-batch study
    ========================  ==========================================================

    Args:
        name: one of :func:`list_models`.
        seed: if given (an int or a ``torch.Generator``), the weights are drawn
            from ``torch.manual_seed(seed)`` without touching the global random
            state; otherwise from the global random state, as ``nn`` layers do.
        **kwargs: arguments of the builder; they override the defaults above.

    Example:
        >>> net = get_model("mlp", in_dim=2, hidden=(100, 100), n_classes=4, seed=0)
        >>> net(torch.zeros(1, 2)).shape
        torch.Size([1, 4])
    """
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"name must be one of {list_models()}, got {name!r}")
    if seed is None:
        return _MODELS[name](**kwargs)
    seed = as_int_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _MODELS[name](**kwargs)
