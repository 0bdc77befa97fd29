"""Plumbing for reproducible Hessian experiments: results on disk, resume, claims.

The reproduction scripts in ``examples/`` (and users' own studies) share one
pattern: compute expensive quantities once, write every number that is plotted to
JSON next to the figures, resume from what is on disk after an interruption, and
end with a table of the study's claims against what was measured.

Writes are atomic: a file is written to ``name.tmp`` and renamed, so an
interrupted run never leaves a half-written result that a resumed run would trust.

Example:
    >>> store = ResultStore("results/my_study")
    >>> spectrum = store.cached("spectrum_bs128", lambda: {"values": [1.0, 0.5]})
    >>> table = print_claims([Claim("top eigenvalue positive", "1.0", True)])
    Claims
    -------------------------+----------+-------
     claim                   | measured | holds
    -------------------------+----------+-------
     top eigenvalue positive | 1.0      | yes
    -------------------------+----------+-------
    1 of 1 claims hold on this run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

__all__ = ["ResultStore", "Claim", "print_claims", "experiment_parser", "to_jsonable", "num_threads", "run_size"]


def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy arrays/scalars, dataclasses with ``to_dict`` and
    containers of them into JSON-serializable Python objects."""
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


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


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class ResultStore:
    """A folder of JSON results and figures that a run can resume from.

    Args:
        root: the folder (created on first write).
        fresh: ignore (and overwrite) what is already there.
    """

    def __init__(self, root: str | os.PathLike, fresh: bool = False):
        self.root = Path(root)
        self.fresh = fresh

    def path(self, name: str, suffix: str = ".json") -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"name: expected a plain file name, got {name!r}")
        return self.root / (name if name.endswith(suffix) else name + suffix)

    def has(self, name: str) -> bool:
        return not self.fresh and self.path(name).exists()

    def load(self, name: str) -> Any:
        """The stored value of ``name``; ``KeyError`` when absent."""
        if not self.has(name):
            raise KeyError(name)
        return json.loads(self.path(name).read_text())

    def save(self, name: str, value: Any) -> Any:
        """Write ``value`` (made JSON-serializable) atomically; returns what was written."""
        data = to_jsonable(value)
        _atomic_write(self.path(name), lambda tmp: tmp.write_text(json.dumps(data, indent=1)))
        return data

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """Load ``name`` if a previous run stored it, else compute, store and return it."""
        if self.has(name):
            return self.load(name)
        return self.save(name, compute())

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``name.png`` atomically; returns its path."""
        path = self.path(name, ".png")
        _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                    bbox_inches="tight"))
        return path


@dataclass(frozen=True)
class Claim:
    """One claim of a study, what this run measured, and whether it holds."""

    claim: str
    measured: str
    holds: bool

    def to_dict(self) -> dict:
        return {"claim": self.claim, "measured": self.measured, "holds": self.holds}


def print_claims(claims: Sequence[Claim], title: str = "Claims") -> str:
    """Print (and return) a plain-text table of claims."""
    rows = [("claim", "measured", "holds")] + \
        [(c.claim, c.measured, "yes" if c.holds else "NO") for c in claims]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [title, line]
    for i, row in enumerate(rows):
        out.append("|".join(f" {cell:<{w}} " for cell, w in zip(row, widths)))
        if i == 0:
            out.append(line)
    out.append(line)
    held = sum(c.holds for c in claims)
    out.append(f"{held} of {len(claims)} claims hold on this run")
    text = "\n".join(out)
    print(text)
    return text


def experiment_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The command line every reproduction script shares.

    ``--full`` (the paper's settings), ``--smoke`` (tiny sizes, for tests),
    ``--dataset`` and ``--data-root`` (local MNIST/FashionMNIST/CIFAR files),
    ``--out``, ``--seed``, ``--fresh`` (ignore stored results).
    """
    parser = argparse.ArgumentParser(description=description)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's settings (slow)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, finishes in seconds")
    parser.add_argument("--dataset", default=None,
                        help="mnist | fashion_mnist | cifar10 (read from --data-root)")
    parser.add_argument("--data-root", default=None, help="folder with the dataset files")
    parser.add_argument("--out", default=default_out, help="results folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="recompute everything")
    return parser


def run_size(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"full"`` or ``"default"``: the size that the parsed
    :func:`experiment_parser` flags ask for (the key of a script's settings table)."""
    return "smoke" if args.smoke else "full" if args.full else "default"
