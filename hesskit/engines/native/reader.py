"""Reading a model into a graph of nodes that have a rule.

The model is traced with ``torch.fx`` (an ``nn.Sequential`` traces
to its chain of modules; a ``forward`` such as a ResNet block's traces to its
modules and additions). Every node must be a call of a module, function or method
with a rule in :mod:`hesskit.engines.native.rules`, or a size query (``x.size(0)``,
``x.shape``) feeding a reshape. The reader refuses, by name, with
:class:`~hesskit.engines.native.chain.UnsupportedModelError`:

* any other node (a parameter read directly, slicing, concatenation, ...) and
  module types without a rule (subclasses included: they may compute something else);
* a module called twice, or a parameter held by two modules (shared weights);
* forward hooks and pre-hooks, backward hooks (on a module or global) and
  parametrizations, which the traced graph would silently skip;
* train-mode BatchNorm and active dropout (``mode="train"``);
* a ``forward`` taking more than the one input tensor;
* an in-place node (``inplace=True``, ``+=``) whose input is read by another node.
"""
from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field

from torch import fx, nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

from hesskit.engines.module_hooks import hook_problem
from hesskit.engines.native.chain import UnsupportedModelError
from hesskit.engines.native.rules import FUNCTION_RULES, METHOD_RULES, MODULE_RULES, Rule
from hesskit.engines.native.rules.add import AddRule

__all__ = ["Step", "ModelGraph", "read_graph", "structure"]

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                 "_global_backward_hooks", "_global_backward_pre_hooks")
_SIZE_METHODS = ("size", "dim")


@dataclass
class Step:
    """One node of the traced graph.

    Attributes:
        node: the ``torch.fx`` node (its ``name`` keys the engine's values).
        rule: its rule; ``None`` for a size query, evaluated as written.
        inputs: the nodes whose tensors it reads, in call order (repeats kept).
    """

    node: fx.Node
    rule: Rule | None
    inputs: list[fx.Node] = field(default_factory=list)


@dataclass
class ModelGraph:
    """A model as the steps of its traced graph, in execution order."""

    placeholder: fx.Node
    steps: list[Step]
    output: fx.Node

    @property
    def owners(self) -> dict[str, Step]:
        """``{parameter name: the step that owns it}``."""
        return {name: step for step in self.steps if step.rule is not None
                for name in step.rule.param_names}


def _describe(node: fx.Node, model: nn.Module) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(model.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"node {node.name!r} (method Tensor.{node.target})"
    if node.op == "call_function":
        target = getattr(node.target, "__name__", str(node.target))
        return f"node {node.name!r} (function {target})"
    return f"node {node.name!r} ({node.op} {node.target!r})"


def _check_hooks(model: nn.Module) -> None:
    """Refuse what ``model(x)`` runs besides its layers: forward hooks, pre-hooks and
    parametrizations (:func:`~hesskit.engines.module_hooks.hook_problem`, as the fused
    chain path), and backward hooks too, which the graph path would not run either."""
    reason = hook_problem(model)
    if reason is not None:
        raise UnsupportedModelError(reason)
    for kind in ("_global_backward_hooks", "_global_backward_pre_hooks"):
        if getattr(module_globals, kind, None):
            raise UnsupportedModelError(f"global module hooks are registered "
                                        f"(torch.nn.modules.module.{kind}); the graph path "
                                        "would not run them")
    for name, module in model.named_modules(remove_duplicate=False):
        label = f"module {name!r} ({type(module).__name__})" if name else \
            f"model ({type(module).__name__})"
        for kind in ("_backward_hooks", "_backward_pre_hooks"):
            if getattr(module, kind, None):
                raise UnsupportedModelError(f"{label} has {kind.strip('_').replace('_', ' ')}; "
                                            "the graph path would not run them")


def structure(model: nn.Module) -> tuple:
    """What a graph read from ``model`` depends on besides values: every module (by
    identity and type) with its hook counts and parametrizations, every parameter
    (by identity), the global hook counts. Equal structures read to the same graph."""
    modules = tuple((name, id(m), type(m), parametrize.is_parametrized(m),
                     *(len(getattr(m, kind, ())) for kind in _HOOKS))
                    for name, m in model.named_modules(remove_duplicate=False))
    params = tuple((name, id(p)) for name, p in model.named_parameters(remove_duplicate=False))
    hooks = tuple(len(getattr(module_globals, kind, ())) for kind in _GLOBAL_HOOKS)
    return modules, params, hooks


def _check_sharing(model: nn.Module) -> None:
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            raise UnsupportedModelError(f"parameters {seen[id(p)]!r} and {name!r} are the same "
                                        "tensor (shared parameters are not supported)")
        seen[id(p)] = name


def _nodes_in(args, kwargs) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((args, kwargs), lambda n: found.append(n) or n)
    return found


def _inplace(node: fx.Node, model: nn.Module) -> bool:
    if node.op == "call_module":
        return bool(getattr(model.get_submodule(node.target), "inplace", False))
    if node.op == "call_function" and node.target is operator.iadd:
        return True
    if node.op == "call_function":
        try:
            bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
        except (TypeError, ValueError):
            return bool(node.kwargs.get("inplace", False))
        return bool(bound.arguments.get("inplace", False))
    return False


def _rule_of(node: fx.Node, model: nn.Module) -> Rule:
    what = _describe(node, model)
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        make = MODULE_RULES.get(type(module))
        if make is None:
            raise UnsupportedModelError(f"{what} has no rule in the graph path")
        return make(node.target, module)
    if node.op == "call_function" and node.target in FUNCTION_RULES:
        return FUNCTION_RULES[node.target](node.name, node.target, node.args[1:], node.kwargs)
    if node.op == "call_method" and node.target in METHOD_RULES:
        return METHOD_RULES[node.target](node.name, node.target)
    raise UnsupportedModelError(f"{what} has no rule in the graph path")


class _Tracer(fx.Tracer):
    """Keeps modules of a type with a rule (and subclasses of those types, so that
    they are refused by name rather than traced through) as single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, tuple(MODULE_RULES)) or super().is_leaf_module(m, qualname)


def read_graph(model: nn.Module, mode: str = "eval") -> ModelGraph:
    """Trace ``model`` and give every node its rule.

    Args:
        model: the network.
        mode: the objective's mode (``"train"`` refuses BatchNorm and active dropout).

    Raises:
        UnsupportedModelError: naming the first node, module or parameter the graph
            engine cannot follow exactly.
    """
    _check_hooks(model)
    _check_sharing(model)
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 (any tracing failure means: not supported)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(f"model ({type(model).__name__}) cannot be traced by "
                                    f"torch.fx: {first}") from None
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(
            f"model ({type(model).__name__}).forward takes {len(placeholders)} inputs "
            f"({[n.target for n in placeholders]}); the graph path needs one input tensor")
    steps: list[Step] = []
    sizes: set[fx.Node] = set()  # size queries and what is computed from them only
    called: set[str] = set()
    output = None
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output = node.args[0]
            if not isinstance(output, fx.Node) or output in sizes:
                raise UnsupportedModelError(f"model ({type(model).__name__}) returns "
                                            f"{type(output).__name__}; the graph path needs "
                                            "one output tensor")
            continue
        refs = _nodes_in(node.args, node.kwargs)
        if (node.op == "call_method" and node.target in _SIZE_METHODS) or (
                node.op == "call_function" and node.target is getattr
                and node.args[1:] == ("shape",)) or (
                node.op == "call_function" and node.target is operator.getitem
                and refs and all(r in sizes for r in refs)):
            sizes.add(node)
            steps.append(Step(node, None))
            continue
        what = _describe(node, model)
        if node.op == "get_attr":
            raise UnsupportedModelError(f"{what} reads a parameter or buffer outside a module "
                                        "with a rule")
        rule = _rule_of(node, model)
        tensors = [r for r in refs if r not in sizes]
        n_tensors = 2 if isinstance(rule, AddRule) else 1
        if len(tensors) != n_tensors or node.args[0] is not tensors[0] or \
                (n_tensors == 2 and node.args[1] is not tensors[1]) or \
                (n_tensors == 2 and (len(node.args) != 2 or node.kwargs)):
            raise UnsupportedModelError(f"{what} is called with arguments {node.args}, "
                                        f"{dict(node.kwargs)}; the graph path supports it "
                                        f"on {n_tensors} tensor(s) only")
        if node.op == "call_module":
            if node.target in called:
                raise UnsupportedModelError(f"{what} is called twice (shared modules are not "
                                            "supported)")
            called.add(node.target)
        if _inplace(node, model) and len(tensors[0].users) > 1:
            raise UnsupportedModelError(f"{what} writes in place into {tensors[0].name!r}, "
                                        "which another node reads")
        reason = rule.check_mode(mode)
        if reason is not None:
            raise UnsupportedModelError(reason)
        steps.append(Step(node, rule, tensors))
    return ModelGraph(placeholders[0], steps, output)

