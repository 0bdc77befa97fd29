"""Random probes, progress bars and argument checks shared by the spectral routines."""
from __future__ import annotations

from typing import Optional, Union

import torch
from tqdm.auto import tqdm

#: Seconds a computation runs before ``progress=None`` shows its bar.
AUTO_PROGRESS_DELAY = 2.0

PROBES = ("rademacher", "gaussian")


def make_generator(seed: Union[int, torch.Generator]) -> torch.Generator:
    """Returns a generator: ``seed`` itself, or a CPU generator seeded with the int ``seed``."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def random_block(
    generator: torch.Generator,
    size: int,
    k: int,
    dtype: torch.dtype,
    device: torch.device,
    kind: str = "gaussian",
) -> torch.Tensor:
    """Draws ``k`` random vectors of length ``size`` as a ``(size, k)`` block.

    Column ``j`` is drawn as one contiguous run of the generator's stream, so a
    sequence of blocks of any widths gives the same vectors as one wide block.

    Args:
        generator: the source of randomness (its device is where numbers are drawn).
        size: the vector length ``P``.
        k: the number of vectors.
        dtype: the dtype of the block.
        device: the device of the block.
        kind: ``"gaussian"`` (standard normal entries) or ``"rademacher"`` (±1).
    """
    gen_device = generator.device
    if kind == "gaussian":
        block = torch.randn(k, size, generator=generator, dtype=torch.float64, device=gen_device)
    elif kind == "rademacher":
        bits = torch.randint(0, 2, (k, size), generator=generator, device=gen_device)
        block = bits.to(torch.float64).mul_(2.0).sub_(1.0)
    else:
        raise ValueError(f"probe: expected one of {PROBES}, got {kind!r}")
    return block.T.to(device=device, dtype=dtype)


def progress_bar(progress: Optional[bool], total: Optional[int], desc: str) -> tqdm:
    """Returns a tqdm bar counting Hessian-vector products.

    Args:
        progress: True shows the bar at once, False never, None (auto) shows it only
            once the computation has run :data:`AUTO_PROGRESS_DELAY` seconds.
        total: the number of products when it is fixed in advance (probes, Lanczos
            steps); None for an iteration that stops at convergence, whose budget is
            no estimate of its cost: the bar then counts products without an ETA and
            shows the residual against ``tol`` (:func:`show_residual`).
        desc: the bar's label.
    """
    return tqdm(
        total=total,
        desc=desc,
        unit="matvec",
        disable=progress is False,
        delay=0.0 if progress else AUTO_PROGRESS_DELAY,
        leave=False,
    )


def show_residual(bar: tqdm, residual, tol: float) -> None:
    """Shows the largest relative residual so far against ``tol`` in the bar's postfix.

    ``residual`` may be a tensor; it is read (a device synchronization) only when
    the bar is enabled.
    """
    if not bar.disable:
        bar.set_postfix_str(f"residual {float(residual):.1e} → tol {tol:.0e}", refresh=False)


def check_progress(progress) -> None:
    """Raises TypeError unless ``progress`` is None, True or False."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress: expected None, True or False, got {progress!r}")


def check_int(value, name: str, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """Returns ``value`` if it is an int in ``[minimum, maximum]``, else raises."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise ValueError(f"{name}: expected an int at least {minimum}{upper}, got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    """Returns ``value`` if it is one of ``choices``, else raises ValueError."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_positive_float(value, name: str) -> float:
    """Returns ``value`` as a float if it is a finite positive number, else raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a positive float, got {type(value).__name__}")
    if not (0.0 < float(value) < float("inf")):
        raise ValueError(f"{name}: expected a finite positive float, got {value!r}")
    return float(value)


WHICH = ("largest", "smallest", "magnitude")


def wanted_order(values: torch.Tensor, which: str) -> torch.Tensor:
    """Returns the indices of ``values`` from most to least wanted.

    ``"largest"``: descending values; ``"smallest"``: ascending values (the most
    negative first); ``"magnitude"``: descending ``|value|``.
    """
    if which == "largest":
        return torch.argsort(values, descending=True)
    if which == "smallest":
        return torch.argsort(values)
    return torch.argsort(values.abs(), descending=True)


def residual_scale(values: torch.Tensor, norm_estimate: float, eps: float) -> torch.Tensor:
    """Returns ``max(|λ|, √ε · ‖H‖)``, the scale that makes a residual relative.

    An eigenvalue far below ``‖H‖`` in magnitude (a zero eigenvalue of a
    rank-deficient Hessian) cannot be resolved to a relative accuracy, because a
    product is only accurate to about ``ε ‖H‖``; below ``√ε ‖H‖`` the residual is
    measured relative to ``√ε ‖H‖`` instead, an absolute accuracy of
    ``tol · √ε · ‖H‖`` (``1.5e-14 ‖H‖`` in float64 for ``tol=1e-6``).
    """
    floor = max(eps**0.5 * norm_estimate, torch.finfo(values.dtype).tiny)
    return values.abs().clamp_min(floor)
