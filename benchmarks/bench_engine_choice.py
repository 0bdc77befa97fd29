"""What ``engine="auto"`` costs a fresh operator, and whether its results are reproducible.

On LeNet-5 (3x32x32 inputs, N=256, cross-entropy) a 100-probe Hutchinson trace
(``hk.trace(H, n_probes=100, seed=0)``) and a top-1 eigenvalue (``hk.eigenvalues(H,
k=1)``) are timed

* ``fresh``: building ``hk.HessianOperator(obj)`` (the engine choice included) and
  running the estimate;
* ``warm``: the same estimate again on that operator;

and the table gives ``overhead = fresh / warm - 1`` (target for the trace: below
10%), the time of the engine choice alone, the chosen engine, and whether the fresh
and warm results are bitwise equal (``same_bits``). Each case is the best of
``--repeats`` rounds after one warm-up round, fresh and warm alternating so that a
slow period of a shared machine hits both. A run takes about a minute on one core.

Prints the machine, versions and the table; results taken on a GPU are also written
to ``benchmarks/results/engine_choice_<device>.json`` (temporary file, then rename).

    python benchmarks/bench_engine_choice.py [--device cpu|cuda] [--repeats 2] [--threads T]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

import hesskit as hk
from _common import gpu_result_path, machine_info, write_json
from bench_products import print_table

N_SAMPLES, N_PROBES = 256, 100

ESTIMATES = {
    "trace (100 probes)": lambda H: hk.trace(H, n_probes=N_PROBES, seed=0, progress=False).value,
    "top-1 eigenvalue": lambda H: float(hk.eigenvalues(H, k=1, seed=0, progress=False).values[0]),
}


def _problem(device: str) -> hk.Objective:
    g = torch.Generator().manual_seed(0)
    model = hk.models.get_model("lenet", n_classes=10, in_channels=3, seed=0).to(device)
    X = torch.randn(N_SAMPLES, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (N_SAMPLES,), generator=g).to(device)
    return hk.Objective(model, nn.CrossEntropyLoss(), (X, y))


def _timed(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def bench(device: str, repeats: int) -> list[dict]:
    obj = _problem(device)
    rows = []
    for name, estimate in ESTIMATES.items():
        best = {"choice": float("inf"), "fresh": float("inf"), "warm": float("inf")}
        same_bits, engine = True, None
        for _ in range(repeats + 1):  # the first round warms up the process
            t_choice, H = _timed(lambda: hk.HessianOperator(obj), device)
            t_run, fresh = _timed(lambda: estimate(H), device)
            t_warm, warm = _timed(lambda: estimate(H), device)
            best["choice"] = min(best["choice"], t_choice)
            best["fresh"] = min(best["fresh"], t_choice + t_run)
            best["warm"] = min(best["warm"], t_warm)
            same_bits &= fresh == warm and (engine is None or engine == H.engine.name)
            engine = H.engine.name
        rows.append({"estimate": name, "engine": engine, "choice_s": best["choice"],
                     "fresh_s": best["fresh"], "warm_s": best["warm"],
                     "overhead": best["fresh"] / best["warm"] - 1.0, "same_bits": same_bits})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive int, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    print("machine:", json.dumps(info))
    print(f"LeNet-5 3x32x32, N={N_SAMPLES}: seconds (best of {args.repeats}); "
          "overhead = fresh / warm - 1 (target for the trace: < 0.10)")
    rows = bench(args.device, args.repeats)
    print_table("engine choice", [{k: (f"{v:.3f}" if isinstance(v, float) else v)
                                   for k, v in r.items()} for r in rows],
                ["estimate", "engine", "choice_s", "fresh_s", "warm_s", "overhead", "same_bits"])
    if args.device == "cuda":
        write_json(gpu_result_path("engine_choice", info["gpu"]),
                   {"machine": info, "rows": rows})


if __name__ == "__main__":
    main()
