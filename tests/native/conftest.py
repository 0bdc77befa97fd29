"""Fixtures of the native-op tests: which implementation path a wrapper takes."""
import pytest

from hesskit import ops


@pytest.fixture(params=["native", "reference"])
def path(request, monkeypatch):
    """Run a wrapper of :mod:`hesskit.ops` through the kernels or the fallback.

    ``"reference"`` hides the loaded extension, exactly as when ``hesskit._C`` is
    missing; ``"native"`` skips when it is missing.
    """
    if request.param == "native" and not ops.native_available():
        pytest.skip(f"hesskit._C is not loaded ({ops.load_error()})")
    if request.param == "reference":
        monkeypatch.setattr(ops, "_C", None)
    return request.param
