"""The option pipeline that the embedded image sets share (digits, MNIST sample)."""
from __future__ import annotations

import torch

from hesskit.data import transforms
from hesskit.data.subsets import select_classes


def finish_images(X: torch.Tensor, y: torch.Tensor, *, dtype: torch.dtype, classes=None,
                  pool: int | None = None, resize_to: int | None = None,
                  upsample_to: int | None = None, pad_to: int | None = None,
                  channels: int = 1, flatten: bool = True):
    """Apply a loader's options to float64 images ``(N, 1, H, H)``, in this order:
    ``classes`` (kept and relabelled), ``pool``, ``resize_to``, ``upsample_to``,
    ``pad_to``, ``channels``; then cast to ``dtype`` and flatten if asked."""
    if classes is not None:
        X, y = select_classes(X, y, classes)
    if pool is not None:
        X = transforms.avg_pool_to(X, pool)
    if resize_to is not None:
        X = transforms.resize_to(X, resize_to)
    if upsample_to is not None:
        X = transforms.upsample_to(X, upsample_to)
    if pad_to is not None:
        X = transforms.pad_to(X, pad_to)
    X = transforms.to_channels(X, channels).to(dtype)
    return (X.flatten(1) if flatten else X), y
