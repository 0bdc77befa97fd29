"""Tensor transforms for image batches and per-feature standardization.

Image transforms take and return batches ``(N, C, H, W)`` of square images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hesskit._validation import check_positive_float, check_positive_int

__all__ = ["avg_pool_to", "pad_to", "resize_to", "upsample_to", "to_channels", "Standardize"]


def _check_images(X, name: str = "X") -> None:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if X.ndim != 4 or X.shape[2] != X.shape[3]:
        raise ValueError(
            f"{name} must be a batch of square images (N, C, H, H), got shape {tuple(X.shape)}"
        )


def avg_pool_to(X: torch.Tensor, size: int) -> torch.Tensor:
    """Average non-overlapping blocks so that ``H x H`` images become ``size x size``.

    Each output pixel is the mean of an ``(H/size) x (H/size)`` block, e.g. the
    8x8 digits pooled to 4x4 (16 inputs) in the rank study of Singh et al. (2021).

    Args:
        X: images ``(N, C, H, H)``.
        size: output side; must divide ``H``.

    Example:
        >>> avg_pool_to(torch.ones(2, 1, 8, 8), 4).shape
        torch.Size([2, 1, 4, 4])
    """
    _check_images(X)
    size = check_positive_int(size, "size")
    side = X.shape[-1]
    if side % size:
        raise ValueError(f"size must divide the image side {side}, got {size}")
    return F.avg_pool2d(X, side // size)


def pad_to(X: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad ``H x H`` images to ``size x size``, centred (an odd extra pixel goes right/bottom).

    LeNet (Sankar et al., AAAI 2021) takes MNIST's 28x28 images padded to 32x32.

    Example:
        >>> pad_to(torch.ones(1, 1, 28, 28), 32).shape
        torch.Size([1, 1, 32, 32])
    """
    _check_images(X)
    size = check_positive_int(size, "size")
    extra = size - X.shape[-1]
    if extra < 0:
        raise ValueError(f"size must be at least the image side {X.shape[-1]}, got {size}")
    before = extra // 2
    return F.pad(X, (before, extra - before, before, extra - before))


def upsample_to(X: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``H x H`` images up to ``size x size`` with ``torch.nn.functional.interpolate``.

    Args:
        X: images ``(N, C, H, H)``, floating point.
        size: output side, at least ``H``.
        mode: ``"bilinear"`` (``align_corners=False``) or ``"nearest"``.

    Example:
        >>> upsample_to(torch.ones(1, 1, 8, 8), 32).shape
        torch.Size([1, 1, 32, 32])
    """
    _check_images(X)
    size = check_positive_int(size, "size")
    if size < X.shape[-1]:
        raise ValueError(f"size must be at least the image side {X.shape[-1]}, got {size}")
    return resize_to(X, size, mode)


def resize_to(X: torch.Tensor, size: int, mode: str = "nearest") -> torch.Tensor:
    """Resize ``H x H`` images to ``size x size`` (up or down) with ``F.interpolate``.

    The default is ``interpolate``'s own nearest-neighbour mode: output pixel ``i``
    takes input pixel ``floor(i * H / size)``. Singh, Bachmann and Hofmann (NeurIPS
    2021) shrink MNIST this way to 8x8 (d = 64) and 4x4 (d = 16).

    Args:
        X: images ``(N, C, H, H)``, floating point.
        size: output side.
        mode: ``"nearest"`` or ``"bilinear"`` (``align_corners=False``).

    Example:
        >>> resize_to(torch.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0]
        tensor([[ 0.,  2.],
                [ 8., 10.]])
    """
    _check_images(X)
    size = check_positive_int(size, "size")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    extra = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(X, size=(size, size), mode=mode, **extra)


def to_channels(X: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat single-channel images to ``channels`` channels (identity when they already match).

    Example:
        >>> to_channels(torch.zeros(2, 1, 8, 8), 3).shape
        torch.Size([2, 3, 8, 8])
    """
    _check_images(X)
    channels = check_positive_int(channels, "channels")
    if X.shape[1] == channels:
        return X
    if X.shape[1] != 1:
        raise ValueError(
            f"channels: can only repeat single-channel images, got {X.shape[1]} channels "
            f"and channels={channels}"
        )
    return X.expand(-1, channels, -1, -1).contiguous()


class Standardize:
    """Per-feature standardization ``(x - mean) / std``, fitted on training data.

    Every entry after the sample dimension is a feature (a pixel of an image
    batch, a coordinate of a vector). Features whose standard deviation is at
    most ``eps`` (e.g. the always-black border pixels of digits) are only
    centred. Kaur, Cohen and Lipton, "On the maximum Hessian eigenvalue and
    generalization" (2022), standardize their inputs this way.

    Args:
        eps: smallest standard deviation that is divided by.

    Attributes:
        mean: per-feature mean of the fitted data, or ``None`` before :meth:`fit`.
        std: per-feature divisor (population std, 1 where it is <= ``eps``).

    Example:
        >>> scale = Standardize().fit(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        >>> scale(torch.tensor([[2.0, 3.0]]))
        tensor([[1., 2.]])
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = check_positive_float(eps, "eps")
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, X: torch.Tensor) -> "Standardize":
        """Compute the per-feature mean and standard deviation of ``X`` (samples first)."""
        if not isinstance(X, torch.Tensor) or not X.is_floating_point():
            raise TypeError(f"X must be a floating-point torch.Tensor, got {type(X).__name__}")
        if X.ndim < 2 or X.shape[0] < 2:
            raise ValueError(
                "X must have at least 2 samples and a feature dimension, "
                f"got shape {tuple(X.shape)}"
            )
        self.mean = X.mean(dim=0)
        std = X.std(dim=0, correction=0)
        self.std = torch.where(std > self.eps, std, torch.ones_like(std))
        return self

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Standardize ``X`` with the fitted statistics."""
        if self.mean is None:
            raise RuntimeError("Standardize must be fitted with .fit(X_train) before it is applied")
        if not isinstance(X, torch.Tensor) or X.shape[1:] != self.mean.shape:
            shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(
                f"X must have per-sample shape {tuple(self.mean.shape)} (as fitted), got {shape}"
            )
        return (X - self.mean) / self.std

    def __repr__(self) -> str:
        state = "unfitted" if self.mean is None else f"features={tuple(self.mean.shape)}"
        return f"Standardize(eps={self.eps}, {state})"
