"""scikit-learn's 8x8 handwritten digits, the download-free stand-in for MNIST."""
from __future__ import annotations

import torch

from hesskit._validation import check_float_dtype
from hesskit.data._images import finish_images

__all__ = ["load_digits"]


def load_digits(
    *,
    flatten: bool = True,
    pool: int | None = None,
    pad_to: int | None = None,
    upsample_to: int | None = None,
    classes=None,
    channels: int = 1,
    dtype: torch.dtype = torch.float32,
):
    """The 1797 8x8 digit images that ship with scikit-learn, scaled to [0, 1].

    UCI "Optical Recognition of Handwritten Digits" (Alpaydin and Kaynak, 1998),
    loaded with ``sklearn.datasets.load_digits``; pixel values 0..16 are divided
    by 16. It stands in for MNIST in the examples so that they run without a
    download. The options apply in this order: ``classes``, ``pool``,
    ``upsample_to``, ``pad_to``, ``channels``, ``flatten``:

    - ``pool=4``: average 2x2 blocks, giving 4x4 images (16 inputs), as the
      pooled MNIST of the rank study (Singh et al., NeurIPS 2021);
    - ``upsample_to=32``: bilinear resize, e.g. for LeNet / VGG / the large-batch
      CNN, which need 32x32 inputs;
    - ``pad_to=32``: centred zero padding (as MNIST 28 -> 32 for LeNet);
    - ``classes=(0, 1, 7)``: keep those digits, relabelled 0, 1, 2 (the image
      task of the decision-boundary study);
    - ``channels=3``: repeat the grey channel (for 3-channel models).

    Args:
        flatten: return ``(N, C*H*W)`` instead of ``(N, C, H, W)``.
        pool: output side of average pooling; must divide 8.
        pad_to: side after zero padding.
        upsample_to: side after bilinear upsampling.
        classes: digits to keep, relabelled ``0 .. k-1`` in the order given.
        channels: 1, or the number of channels to repeat the image to.
        dtype: floating dtype of the images (computed in float64, then cast).

    Returns:
        ``(X, y)``: images and int64 labels.

    Example:
        >>> X, y = load_digits(pool=4)
        >>> X.shape
        torch.Size([1797, 16])
    """
    dtype = check_float_dtype(dtype)
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a test dependency
        raise ImportError("load_digits needs scikit-learn (pip install scikit-learn)") from exc
    bunch = sklearn_load_digits()
    X = torch.as_tensor(bunch.images, dtype=torch.float64).unsqueeze(1) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    return finish_images(X, y, dtype=dtype, classes=classes, pool=pool, upsample_to=upsample_to,
                         pad_to=pad_to, channels=channels, flatten=flatten)
