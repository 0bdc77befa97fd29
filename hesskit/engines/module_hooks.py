"""Hooks and parametrizations: what makes ``module(x)`` compute something else than
the module's own layer.

Forward hooks and forward pre-hooks (on any submodule, or registered globally with
``torch.nn.modules.module.register_module_forward_hook``/``..._pre_hook``) rewrite
inputs or outputs; ``torch.nn.utils.parametrize`` rewrites parameters
(``torch.nn.utils.prune`` and ``weight_norm`` are pre-hooks). Code that computes a
layer or a loss itself instead of calling the module (the native kernels, the closed
forms of the output Hessian) must refuse such modules, never ignore what they add.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

__all__ = ["hook_problem"]


def hook_problem(model: nn.Module, what: str = "model") -> str | None:
    """Why ``model(x)`` may compute something else than its modules do, or ``None``.

    Args:
        model: the module (its submodules are checked too).
        what: how the message names ``model`` (``"loss_fn"`` for a loss module).
    """
    for kind, hooks in (("forward hook", module_globals._global_forward_hooks),
                        ("forward pre-hook", module_globals._global_forward_pre_hooks)):
        if hooks:
            return (f"a global {kind} is registered (torch.nn.modules.module."
                    f"register_module_{kind.replace(' ', '_').replace('-', '_')}), which "
                    "computing the layers directly would skip")
    for name, module in model.named_modules(remove_duplicate=False):
        where = f"module {name!r}" if name else what
        where += f" ({type(module).__name__})"
        if parametrize.is_parametrized(module):
            return (f"{where} has parametrizations (torch.nn.utils.parametrize) of "
                    f"{sorted(module.parametrizations)}, which reading its parameters directly "
                    "would skip")
        for kind, hooks in (("forward hook", module._forward_hooks),
                            ("forward pre-hook", module._forward_pre_hooks)):
            if hooks:
                return f"{where} has a {kind}, which computing it directly would skip"
    return None
