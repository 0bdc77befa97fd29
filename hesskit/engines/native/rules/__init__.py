"""One rule per layer type, and the tables that map a graph node to its rule.

Adding a layer type: its rule module here, one entry in :data:`MODULE_RULES` (or
:data:`FUNCTION_RULES` / :data:`METHOD_RULES`), and its parity test.
"""
from __future__ import annotations

import operator

import torch
from torch import nn

from hesskit.engines.native.rules.activation import (ACTIVATION_FUNCTIONS, ACTIVATION_METHODS,
                                                    ActivationRule)
from hesskit.engines.native.rules.add import AddRule
from hesskit.engines.native.rules.base import LinearMapRule, Rule
from hesskit.engines.native.rules.batchnorm import BatchNormRule
from hesskit.engines.native.rules.conv import ConvRule
from hesskit.engines.native.rules.linear import LinearRule
from hesskit.engines.native.rules.pooling import (AdaptiveAvgPool2dRule, AvgPool2dRule,
                                                 MaxPoolRule)
from hesskit.engines.native.rules.shape import IdentityRule, ReshapeRule

__all__ = ["Rule", "LinearMapRule", "MODULE_RULES", "FUNCTION_RULES", "METHOD_RULES"]

_ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU,
                       nn.Softplus, nn.ELU)

#: exact module type -> ``rule(name, module)``
MODULE_RULES = {
    nn.Linear: LinearRule,
    nn.Conv1d: ConvRule,
    nn.Conv2d: ConvRule,
    nn.MaxPool1d: MaxPoolRule,
    nn.MaxPool2d: MaxPoolRule,
    nn.AvgPool2d: AvgPool2dRule,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2dRule,
    nn.BatchNorm1d: BatchNormRule,
    nn.BatchNorm2d: BatchNormRule,
    nn.Flatten: ReshapeRule.from_flatten_module,
    nn.Identity: IdentityRule,
    nn.Dropout: IdentityRule,
    **{kind: ActivationRule.from_module for kind in _ACTIVATION_MODULES},
}


def _flatten_function(name, target, args, kwargs):
    return ReshapeRule(name, torch.flatten, target)


def _add_function(name, target, args, kwargs):
    return AddRule(name, target)


#: function target -> ``rule(name, target, args after the first, kwargs)``; the node's
#: tensor arguments are checked by the reader
FUNCTION_RULES = {
    operator.add: _add_function,
    torch.add: _add_function,
    operator.iadd: _add_function,
    torch.flatten: _flatten_function,
    **{fn: ActivationRule.from_function for fn in ACTIVATION_FUNCTIONS},
}

def _method(method: str):
    return lambda x, *args, **kwargs: getattr(x, method)(*args, **kwargs)


def _reshape_method(name, method):
    return ReshapeRule(name, _method(method), f"Tensor.{method}")


#: tensor method -> ``rule(name, method)``
METHOD_RULES = {
    "add": lambda name, method: AddRule(name, "Tensor.add"),
    "flatten": _reshape_method,
    "view": _reshape_method,
    "reshape": _reshape_method,
    **{m: ActivationRule.from_method for m in ACTIVATION_METHODS},
}
