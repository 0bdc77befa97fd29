"""Build hesskit and its native extension ``hesskit._C``.

The C++ CPU sources (``csrc/hesskit.cpp`` and ``csrc/cpu/*.cpp``) are always
compiled.  The CUDA sources (``csrc/cuda/*.cpp`` glue and ``csrc/cuda/*.cu``
kernels) are added when torch was built with CUDA and ``nvcc`` is found.
Environment overrides: ``HESSKIT_FORCE_CUDA=1`` builds them regardless,
``HESSKIT_NO_CUDA=1`` never builds them.

Install with ``pip install --no-build-isolation -e .`` so that the extension is
compiled against the torch that will load it.
"""
import glob
import os
import re
import shutil

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    with open(os.path.join(HERE, "hesskit", "_version.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda():
    if _flag("HESSKIT_NO_CUDA"):
        return False
    if _flag("HESSKIT_FORCE_CUDA"):
        return True
    nvcc_found = CUDA_HOME is not None or shutil.which("nvcc") is not None
    return torch.version.cuda is not None and nvcc_found


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


def extensions():
    sources = _sources("csrc/hesskit.cpp") + _sources("csrc/cpu/*.cpp")
    if not sources:
        return []
    # No -std flag: BuildExtension adds the standard that the torch headers need (C++20).
    cxx = ["-O3", "-fopenmp"]
    # Unquoted on purpose (quotes do not survive ninja); csrc/hesskit.cpp stringifies it.
    define_macros = [("HESSKIT_VERSION", _version())]
    extra_link_args = ["-fopenmp"]
    if _want_cuda():
        sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
        define_macros.append(("HESSKIT_WITH_CUDA", None))
        nvcc = ["-O3"]  # no fast math: float32 tanh/exp stay IEEE-accurate
        return [CUDAExtension("hesskit._C", sources, define_macros=define_macros,
                              extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                              extra_link_args=extra_link_args)]
    return [CppExtension("hesskit._C", sources, define_macros=define_macros,
                         extra_compile_args={"cxx": cxx}, extra_link_args=extra_link_args)]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
