"""Atomic file writes: the one helper every result, figure and checkpoint writer uses."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` all at once: ``write`` fills a temporary sibling, which is then renamed.

    The rename (``os.replace``) is atomic on POSIX and Windows, so a reader -- or a
    resumed run -- sees either the previous file or the complete new one, never a
    half-written one. If ``write`` raises, the temporary file is removed and ``path``
    is left as it was. Parent folders are created.

    Args:
        path: the destination file.
        write: called with the temporary path (in the same folder, named
            ``<name>.tmp``); it must create that file, e.g.
            ``lambda tmp: tmp.write_text(text)`` or ``lambda tmp: torch.save(obj, tmp)``.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out" / "result.json"
        >>> atomic_write(target, lambda tmp: tmp.write_text("{}")).read_text()
        '{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
