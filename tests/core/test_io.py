"""atomic_write: the file appears whole or not at all."""
import doctest

import pytest

import hesskit._io
from hesskit._io import atomic_write


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write(target, lambda tmp: tmp.write_text("one")) == target
    assert target.read_text() == "one"

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == \
        ["a.txt"]


def test_docstring_example():
    result = doctest.testmod(hesskit._io)
    assert result.attempted > 0 and result.failed == 0
