"""The minibatch loops the studies share: cross-entropy SGD epochs and chunked evaluation.

Each loop is the textbook one -- a fresh random permutation of the training set per
epoch (drawn from a seeded ``torch.Generator``, so a run repeats bit for bit), one
optimizer step per minibatch of the mean cross-entropy -- and evaluation runs in
chunks without gradients. Loops with something special (SAM's closure over
physical chunks, the Hessian-trace penalty) stay in their study's script.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["num_threads", "train_epoch", "train", "count_correct", "accuracy", "evaluate"]


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the old count after.

    Tiny models train faster on one thread than on several, which only add
    synchronization (and on a shared CPU, waiting for busy cores)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor,
                y: torch.Tensor, batch_size: int, generator: torch.Generator) -> float:
    """One epoch of minibatch steps on the mean cross-entropy, in train mode.

    Returns:
        The epoch's mean training loss, each minibatch weighted by its size.
    """
    model.train()
    total = 0.0
    for idx in torch.randperm(len(X), generator=generator).split(batch_size):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(X)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, X: torch.Tensor, y: torch.Tensor,
          *, batch_size: int, epochs: int, seed: int, desc: Optional[str] = None) -> nn.Module:
    """``epochs`` calls of :func:`train_epoch` with one generator seeded by ``seed``
    (a tqdm bar per epoch when ``desc`` is given); returns ``model``, in train mode."""
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", leave=False, disable=desc is None):
        train_epoch(model, optimizer, X, y, batch_size, generator)
    return model


def count_correct(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> int:
    """Number of examples whose arg-max prediction is the label, in eval mode."""
    model.eval()
    with torch.no_grad():
        return sum(int((model(X[i:i + chunk]).argmax(1) == y[i:i + chunk]).sum())
                   for i in range(0, len(X), chunk))


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int = 1000) -> float:
    """Fraction of examples classified correctly (see :func:`count_correct`)."""
    return count_correct(model, X, y, chunk) / len(X)


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int = 1024) -> dict:
    """``{"accuracy", "loss"}``: fraction correct and mean cross-entropy, in eval mode."""
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x) for x in X.split(chunk)])
    return {"accuracy": (out.argmax(1) == y).double().mean().item(),
            "loss": nn.functional.cross_entropy(out, y).item()}
