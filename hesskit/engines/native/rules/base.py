"""The interface of a layer rule and the helpers the rules share.

A rule is one node of the model's graph: a function :math:`y = f(x_1, \\dots, x_m;
\\theta)` of its input tensors and its own parameters. For curvature products it
provides (Pearlmutter 1994, "Fast exact multiplication by the Hessian"; organised
per module as BackPACK's extensions, Dangel, Kunstner & Hennig 2020):

* :meth:`Rule.forward`: :math:`y` and a context of what the other passes need;
* :meth:`Rule.rforward`: the tangent :math:`\\dot y = \\sum_i J_{x_i} \\dot x_i +
  J_\\theta \\dot\\theta` for k tangents at once;
* :meth:`Rule.backward`: the R-backward pass. With :math:`U` the incoming (R-)gradient
  at the output and :math:`g = \\partial\\ell/\\partial y` the first-order gradient,

  .. math::

      \\dot g_{x_i} = J_{x_i}^\\top U + \\dot J_{x_i}^\\top g, \\qquad
      \\dot g_\\theta = J_\\theta^\\top U + \\dot J_\\theta^\\top g,

  where :math:`\\dot J` is the directional derivative of the Jacobian along the
  tangents (the second-order terms). Passing ``g=None`` drops them (the GGN's
  backward pass :math:`J^\\top U`); passing ``U=None`` keeps only them (the functional
  part :math:`H - G`); ``k=1``, ``U=g`` and ``g=None`` is the plain backward pass.

Tangents of node values are stacked along the batch dimension, tangent-major:
``(k * N, *sample_shape)``, so that a layer's k tangent passes are one call over
``k N`` samples. Parameter tangents and R-gradients are ``(k, *param.shape)``;
``None`` stands for zero everywhere.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["Rule", "LinearMapRule", "add", "describe", "shape_only"]


def describe(name: str, what: Any) -> str:
    """``node 'name' (Type)`` for error messages."""
    kind = type(what).__name__ if isinstance(what, nn.Module) else getattr(
        what, "__name__", str(what))
    return f"node {name!r} ({kind})"


def shape_only(shape, like: Tensor) -> Tensor:
    """A tensor of ``shape`` (dtype and device of ``like``) without memory, for the
    backward ops that read only their argument's shape."""
    return like.new_empty(()).expand(*shape)


def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b`` with ``None`` read as zero."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class Rule:
    """One node of the graph: see the module docstring for the passes.

    Attributes:
        name: the node's name (its module's qualified name for modules).
        param_names: qualified names of the parameters it owns, in
            ``model.named_parameters()`` order.
    """

    param_names: tuple[str, ...] = ()

    def __init__(self, name: str):
        self.name = name

    def check_mode(self, mode: str) -> str | None:
        """Why the rule cannot follow the model in objective mode ``mode``, or ``None``."""
        return None

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Any]:
        """``(output, context)``; the context holds what the other passes need."""
        raise NotImplementedError

    def rforward(self, ctx: Any, k: int, dins: list[Tensor | None],
                 dparams: dict[str, Tensor]) -> Tensor | None:
        """The output tangents ``(k N, ...)`` from the inputs' and parameters' tangents."""
        raise NotImplementedError

    def backward(self, ctx: Any, k: int, U: Tensor | None, g: Tensor | None,
                 dins: list[Tensor | None], dparams: dict[str, Tensor],
                 need_inputs: list[bool], want: set[str]
                 ) -> tuple[list[Tensor | None], dict[str, Tensor]]:
        """R-gradients of the inputs (those in ``need_inputs``) and of the parameters
        named in ``want``."""
        raise NotImplementedError

    def sample_jacobians(self, ctx: Any, k: int, U: Tensor, names: list[str]) -> Tensor:
        """Per-sample :math:`J_{\\theta,n}^\\top U_n` for k output-side vectors ``U``
        ``(k N, ...)``: ``(k, N, P)`` over the parameters ``names`` (concatenated, each
        flattened), not summed over the samples; what exact layer blocks need
        (:mod:`~hesskit.engines.native.explicit`). Every rule with parameters provides it."""
        raise NotImplementedError(f"{describe(self.name, self)} has no per-sample Jacobians")

    def keeps_input_tangents(self, selected: set[str]) -> bool:
        """Whether :meth:`backward` reads ``dins`` (second-order terms in the input
        tangents) when the parameters ``selected`` are differentiated."""
        return False


class LinearMapRule(Rule):
    """A node that is a fixed linear map :math:`y = A x` of one input (pooling, reshapes,
    identities): :math:`\\dot y = A \\dot x`, :math:`\\dot g_x = A^\\top U`, no
    second-order term. Subclasses give :meth:`apply` and :meth:`transpose`, both on
    any number of samples (the context's own N or k N)."""

    def apply(self, ctx, t: Tensor) -> Tensor:
        raise NotImplementedError

    def transpose(self, ctx, U: Tensor) -> Tensor:
        raise NotImplementedError

    def rforward(self, ctx, k, dins, dparams):
        return None if dins[0] is None else self.apply(ctx, dins[0])

    def backward(self, ctx, k, U, g, dins, dparams, need_inputs, want):
        return [self.transpose(ctx, U) if need_inputs[0] and U is not None else None], {}
