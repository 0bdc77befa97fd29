"""Timing and machine description shared by the benchmark scripts (imported as
``_common``: each script runs with ``benchmarks/`` first on ``sys.path``)."""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Callable

import torch

import hesskit as hk
from hesskit import ops
from hesskit._io import atomic_write


def best_times(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """Best wall time (seconds) of each ``fn()`` over ``repeats`` rounds after one warm-up.

    The candidates are timed in turn within each round, so that a slow period of a
    shared machine hits all of them rather than one.
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


#: Where the benchmarks write their JSON results (committed under ``benchmarks/results/``).
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def gpu_result_path(stem: str, gpu: str) -> str:
    """``results/<stem>_<gpu>.json``, spaces in the GPU's name as underscores: one
    file per GPU model, so that runs on different GPUs do not overwrite each other."""
    return os.path.join(RESULTS, f"{stem}_{gpu.replace(' ', '_')}.json")


def write_json(path, payload, indent: int = 2) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (temporary file, then rename), so
    that an interrupted run never leaves a half-written result."""
    text = json.dumps(payload, indent=indent)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device) -> dict:
    """CPU, threads, versions, the native build, the 1-minute load average (where the
    OS has one), and the GPU's name on a ``cuda`` device (a string or torch.device)."""
    device = str(device)
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "hesskit": hk.__version__,
        "device": device,
        "native": ops.native_available(),
        "build": ops.build_info() if ops.native_available() else ops.load_error(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info
