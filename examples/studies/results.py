"""Results on disk that a study resumes from: :class:`ResultStore` and :func:`to_jsonable`.

A study computes expensive quantities once, writes every number it plots to JSON next
to the figures, and after an interruption resumes from what is on disk. Writes are
atomic (:func:`hesskit._io.atomic_write`: a ``name.tmp`` file, then a rename), so an
interrupted run never leaves a half-written result that a resumed run would trust.

Example:
    >>> import tempfile
    >>> store = ResultStore(tempfile.mkdtemp())
    >>> store.cached("spectrum_bs128", lambda: {"values": [1.0, 0.5]})
    {'values': [1.0, 0.5]}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from hesskit._io import atomic_write

__all__ = ["ResultStore", "to_jsonable"]


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
        text = json.dumps(data, indent=1)
        atomic_write(self.path(name), lambda tmp: tmp.write_text(text))
        return data

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """Load ``name`` if a previous run stored it, else compute, store and return it."""
        if self.has(name):
            return self.load(name)
        return self.save(name, compute())

    def save_checkpoint(self, name: str, state: Any) -> Path:
        """Save ``state`` (e.g. the model's and the optimizer's ``state_dict``) as ``name.pt`` with
        ``torch.save``, atomically; load it with ``torch.load(path, weights_only=True)``."""
        import torch

        return atomic_write(self.path(name, ".pt"), lambda tmp: torch.save(state, tmp))

    def save_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``name.png`` atomically; returns its path."""
        return atomic_write(self.path(name, ".png"),
                            lambda tmp: fig.savefig(tmp, dpi=dpi, format="png",
                                                    bbox_inches="tight"))
