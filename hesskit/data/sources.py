"""One entry point for a study's train and test sets: embedded images or local files."""
from __future__ import annotations

import torch

from hesskit.data.digits import load_digits
from hesskit.data.files import load_dataset
from hesskit.data.mnist_sample import load_mnist_sample
from hesskit.data.subsets import split
from hesskit.data.transforms import pad_to as _pad_to

__all__ = ["train_test"]


def train_test(dataset: str | None = None, root=None, *, pad_to: int | None = None,
               flatten: bool = False, test_fraction: float = 0.3, seed=0,
               dtype: torch.dtype = torch.float32):
    """``((X_train, y_train), (X_test, y_test))`` of a study.

    The embedded sets -- ``dataset=None``, scikit-learn's 8x8 digits, and
    ``dataset="mnist_sample"``, the 5 000 real MNIST images of
    :func:`~hesskit.data.load_mnist_sample` (scaled to [0, 1]) -- are split
    ``1 - test_fraction`` / ``test_fraction`` with ``seed``; any other ``dataset``
    (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``) is read as its
    standard train and test files from the local folder ``root`` — nothing is
    downloaded.

    Args:
        dataset: ``None`` for the digits, ``"mnist_sample"``, else a name
            :func:`load_dataset` reads.
        root: folder with the dataset's files (required for a local-file ``dataset``).
        pad_to: pad images centred to this side (LeNet takes 32x32; MNIST is 28x28).
        flatten: return ``(N, C·H·W)`` inputs instead of images.
        test_fraction: an embedded set's test share.
        seed: an embedded set's split seed.
        dtype: floating dtype of the inputs.

    Example:
        >>> (X_tr, y_tr), (X_te, y_te) = train_test(pad_to=32)
        >>> tuple(X_tr.shape[1:]), len(X_tr) + len(X_te)
        ((1, 32, 32), 1797)
    """
    if dataset is None or dataset == "mnist_sample":
        load = load_digits if dataset is None else load_mnist_sample
        X, y = load(flatten=False, dtype=dtype)
        train, test = split(X, y, fractions=(1 - test_fraction, test_fraction), seed=seed)
    else:
        if root is None:
            raise ValueError(f"root: reading {dataset!r} needs the folder holding its files "
                             "(nothing is downloaded)")
        train, test = (load_dataset(dataset, root, train=t, dtype=dtype) for t in (True, False))
    out = []
    for X, y in (train, test):
        if pad_to is not None and X.shape[-1] < pad_to:
            X = _pad_to(X, pad_to)
        out.append((X.flatten(1) if flatten else X, y))
    return tuple(out)
