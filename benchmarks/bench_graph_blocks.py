"""Exact layer blocks of LeNet-5 on the native engine against ``func`` on basis columns.

Issue 14's target: all layer blocks of LeNet-5 (3x32x32, N=256, float32, CPU, 1
thread) at least 8x faster than ``func`` products with basis columns (what
``hk.layer_blocks(obj, engine="func")`` does: the dense matrix of each layer's
restricted objective, 64 columns per product). The native engine computes each block
from per-sample Jacobians (the convolutions), Kronecker factors (the Linear layers)
or basis tangents started at the layer (see ``hesskit/engines/native/explicit.py``).

The first Linear layer (400 -> 120, 48 120 parameters) has a 48 120 x 48 120 block:
9.3 GB in float32, above ``layer_blocks``' default ``max_bytes`` (4 GiB), which
refuses it before computing; the run records that refusal and times the other
layers (every parameter but ``7.*``). ``--func-columns C`` times ``func`` on the
first C basis columns of each block only and scales by the block's size (its cost is
linear in the columns); the default 0 times every column.

Run: ``python benchmarks/bench_graph_blocks.py`` (about 5 minutes on a quiet core);
the table goes to stdout and ``benchmarks/results/graph_blocks_cpu.json`` (written
atomically).
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import hesskit as hk
from hesskit.blocks import parameterized_modules

from _common import RESULTS, best_times, machine_info, write_json
from bench_native import gemm_peak



def problem(n: int) -> hk.Objective:
    """LeNet-5 on 3x32x32 inputs, 10 classes, cross-entropy, N samples (seed 0)."""
    torch.manual_seed(0)
    model = hk.models.lenet(10, 3)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return hk.Objective(model, nn.CrossEntropyLoss(), (X, y))


def func_seconds(obj: hk.Objective, columns: int) -> float:
    """Wall time of ``func`` on the layer's basis columns (all, or ``columns`` of them
    scaled to all)."""
    if columns <= 0 or columns >= obj.n_params:
        t0 = time.perf_counter()
        hk.layer_blocks(obj, engine="func")
        return time.perf_counter() - t0
    H = hk.HessianOperator(obj, engine="func", check_deterministic=False)
    E = torch.zeros(obj.n_params, columns)
    E[torch.arange(columns), torch.arange(columns)] = 1
    H.matmat(E[:, :8])  # warm-up
    t0 = time.perf_counter()
    for a in range(0, columns, H.column_block):
        H.matmat(E[:, a:a + H.column_block])
    return (time.perf_counter() - t0) * obj.n_params / columns


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="native: best of this many")
    parser.add_argument("--func-columns", type=int, default=0,
                        help="time func on this many basis columns per block (0: all)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = gemm_peak(torch.float32, "cpu", 5)
    full = problem(args.n)
    try:
        hk.layer_blocks(full)
        refused = None
    except ValueError as exc:
        refused = str(exc)
    obj = full.restricted([n for n in full.param_names if not n.startswith("7.")])
    rows = []
    for module, names in parameterized_modules(obj).items():
        part = obj.restricted(names)
        graph = best_times({"native": lambda: hk.layer_blocks(part, engine="native")},
                           args.repeats, "cpu")["native"]
        func = func_seconds(part, args.func_columns)
        rows.append({"module": module, "type": type(obj.model.get_submodule(module)).__name__,
                     "params": part.n_params, "graph_s": graph, "func_s": func,
                     "ratio": func / graph})
    total = best_times({"native": lambda: hk.layer_blocks(obj, engine="native")},
                       args.repeats, "cpu")["native"]
    func_total = sum(r["func_s"] for r in rows)
    info = machine_info("cpu")
    print(f"LeNet-5 layer blocks, N={args.n}, float32, {args.threads} thread(s): {info['cpu']}, "
          f"torch {torch.__version__}, load average {info.get('load_average_1m')}")
    print(f"float32 GEMM: {peak:.1f} GFLOP/s")
    if refused:
        print(f"full model refused: {refused}")
    print(f"{'module':>7} {'type':>7} {'params':>7} {'graph s':>9} {'func s':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['module']:>7} {r['type']:>7} {r['params']:>7} {r['graph_s']:>9.3f} "
              f"{r['func_s']:>9.2f} {r['ratio']:>6.1f}x")
    print(f"{'all':>7} {'':>7} {obj.n_params:>7} {total:>9.3f} {func_total:>9.2f} "
          f"{func_total / total:>6.1f}x  (func: sum over the blocks"
          f"{', extrapolated from %d columns each' % args.func_columns if args.func_columns else ''})")
    result = {"machine": info, "gemm_float32_gflops": peak, "n": args.n,
              "func_columns": args.func_columns, "full_model_refused": refused,
              "rows": rows, "all": {"params": obj.n_params, "graph_s": total,
                                    "func_s": func_total, "ratio": func_total / total}}
    path = args.json or os.path.join(RESULTS, "graph_blocks_cpu.json")
    write_json(path, result)
    print(f"saved {path}")
    return result


if __name__ == "__main__":
    main()
