"""Wrappers around the peer libraries that the benchmarks compare hesskit with.

hesskit does not depend on them; they live in a benchmark-only environment:

    pip install --no-deps pyhessian==0.1 curvlinops-for-pytorch==3.0.1 einconv unfoldNd \
        linear_operator einops hessian-eigenthings==1.0.0a5

Each constructor works on its own ``copy.deepcopy`` of the model, in eval mode (the
peers set ``requires_grad``, keep graphs or switch modes on the module they are
given; the benchmarks compare Hessians with BatchNorm on running statistics) and
raises ImportError when its library is missing, so that a benchmark can report the
peer as missing instead of failing (:func:`available`).
"""
from __future__ import annotations

import copy
import importlib
import importlib.metadata
from unittest import mock

import numpy as np
import scipy.sparse.linalg
import torch
from torch import nn

#: benchmark label -> (import name, distribution name)
PEERS = {
    "PyHessian": ("pyhessian", "PyHessian"),
    "curvlinops": ("curvlinops", "curvlinops-for-pytorch"),
    "hessian-eigenthings": ("hessian_eigenthings", "hessian-eigenthings"),
}


def available() -> tuple[dict[str, str], dict[str, str]]:
    """``(versions, missing)``: the peers that import, with their versions, and the others with the reason."""
    versions, missing = {}, {}
    for label, (module, distribution) in PEERS.items():
        try:
            importlib.import_module(module)
        except Exception as e:  # a broken install is as missing as an absent one
            missing[label] = f"{type(e).__name__}: {e}"
        else:
            versions[label] = importlib.metadata.version(distribution)
    return versions, missing


def pyhessian(model: nn.Module, loss: nn.Module, X, y, cuda: bool = False):
    """PyHessian 0.1's ``hessian`` object on a copy of the model, full batch ``(X, y)``.

    It runs the forward and backward pass once, keeping the gradient's graph
    (``gradsH``), so its products are one backward pass each.
    """
    from pyhessian import hessian

    return hessian(copy.deepcopy(model).eval(), loss, data=(X, y), cuda=cuda)


def pyhessian_product(ph, v: torch.Tensor) -> torch.Tensor:
    """One PyHessian product ``H v`` with a flat vector ``v`` (its ``hessian_vector_product``)."""
    from pyhessian.utils import hessian_vector_product

    pieces, start = [], 0
    for p in ph.params:
        pieces.append(v[start:start + p.numel()].view_as(p))
        start += p.numel()
    return torch.cat([h.reshape(-1) for h in hessian_vector_product(ph.gradsH, ph.params, pieces)])


def pyhessian_counting(method):
    """Runs ``method`` from torch seed 0 (PyHessian draws from the global generator)
    and returns its result with the number of Hessian products it made."""
    module = importlib.import_module("pyhessian.hessian")  # the module holds the product it calls
    with mock.patch.object(module, "hessian_vector_product", wraps=module.hessian_vector_product) as product:
        torch.manual_seed(0)
        result = method()
    return result, product.call_count


def curvlinops(model: nn.Module, loss: nn.Module, X, y):
    """curvlinops 3.0.1's ``HessianLinearOperator`` on a copy of the model (one batch ``(X, y)``);
    ``C @ V`` takes a ``(P, k)`` matrix and batches its columns."""
    from curvlinops import HessianLinearOperator

    model = copy.deepcopy(model).eval()
    return HessianLinearOperator(model, loss, list(model.parameters()), [(X, y)])


def eigenthings(model: nn.Module, loss: nn.Module, X, y):
    """hessian-eigenthings 1.0.0a5's ``HessianOperator`` (its HVP operator; ``matvec`` of one
    flat vector, double backward each time) on a copy of the model, one batch ``(X, y)``."""
    from hessian_eigenthings import HessianOperator, supervised_loss

    return HessianOperator(copy.deepcopy(model).eval(), [(X, y)], supervised_loss(loss))


def arpack_top(scipy_op, k: int = 5, tol: float = 1e-6) -> tuple[np.ndarray, int]:
    """The ``k`` largest eigenvalues by ``eigsh`` (ARPACK, descending) and the number of products it asked for."""
    calls = 0

    def matvec(v):
        nonlocal calls
        calls += 1
        return scipy_op.matvec(v)

    counted = scipy.sparse.linalg.LinearOperator(scipy_op.shape, matvec=matvec, dtype=scipy_op.dtype)
    v0 = np.random.default_rng(0).standard_normal(scipy_op.shape[0])
    values = scipy.sparse.linalg.eigsh(counted, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return np.sort(values)[::-1], calls
