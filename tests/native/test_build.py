"""The native extension hesskit._C: loading, build information and registered ops."""
import pathlib

import pytest
import torch

import hesskit
from hesskit import ops

requires_native = pytest.mark.skipif(
    not ops.native_available(), reason=f"hesskit._C is not loaded ({ops.load_error()})"
)

PACKAGE_DIR = pathlib.Path(hesskit.__file__).parent


def test_a_built_extension_loads():
    """A compiled _C that fails to load must fail here, not silently skip the kernels."""
    built = sorted(PACKAGE_DIR.glob("_C.*"))
    if not built:
        pytest.skip("hesskit._C was not built")
    assert ops.native_available(), f"{built[0].name} exists but: {ops.load_error()}"


def test_native_available_and_load_error_agree():
    assert ops.native_available() == (ops.load_error() is None)
    assert hesskit.native_available is ops.native_available


@requires_native
def test_build_info_describes_this_build():
    info = ops.build_info()
    assert set(info) == {"version", "torch_version", "cuda", "cuda_runtime_version", "openmp",
                         "num_threads", "compiler"}
    assert info["version"] == hesskit.__version__, "stale build: rebuild hesskit._C"
    assert info["torch_version"] == torch.__version__.split("+")[0]
    has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key("hesskit::kron_block", "CUDA")
    assert info["cuda"] is has_cuda_kernel
    assert (info["cuda_runtime_version"] is None) == (not info["cuda"])
    assert info["openmp"] is None or info["openmp"] >= 201107  # OpenMP >= 3.1
    assert isinstance(info["compiler"], str) and info["compiler"] != "unknown"


@requires_native
def test_build_info_reports_the_current_thread_count():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert ops.build_info()["num_threads"] == 1
    finally:
        torch.set_num_threads(old)
    assert ops.build_info()["num_threads"] == old


def test_build_info_without_extension_raises(monkeypatch):
    monkeypatch.setattr(ops, "_C", None)
    monkeypatch.setattr(ops, "_LOAD_ERROR", "ImportError: test")
    with pytest.raises(RuntimeError, match="hesskit._C is not loaded: ImportError: test"):
        ops.build_info()


@requires_native
def test_kron_block_schema_and_cpu_kernel_are_registered():
    assert str(torch.ops.hesskit.kron_block.default._schema) == \
        "hesskit::kron_block(Tensor A, Tensor M) -> Tensor"
    assert torch._C._dispatch_has_kernel_for_dispatch_key("hesskit::kron_block", "CPU")
