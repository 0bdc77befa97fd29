"""The native engine's fused chain path against the func engine and torch.func, in one run.

Cases (the targets of issue 3):

1. batched Hessian product, MLP 64-32-32-10 (tanh), N=512, k=64, float32: native vs ``func``;
2. the same on a tiny MLP 64-10-10-10 (ReLU), N=100, k=16: native vs ``func``;
3. every Linear layer's exact Hessian block of the 64-32-32-10 MLP: native (one backward
   Hessian propagation + ``kron_block``) vs ``func`` products on the basis columns;
4. the full dense Hessian of the 64-32-32-10 MLP (P = 3466), float64: native
   (Kronecker factors) vs ``torch.func.hessian``; and the two native algorithms
   against each other: Kronecker factors vs the batched product on identity blocks;
5. on ``--device cuda`` only, cases 1 and 3 at GPU sizes: MLP 784-256-256-10 (ReLU),
   N=4096, and the blocks of MLP 256-128-128-10 at N=4096 (the 784-wide first layer's
   block is 200960 x 200960); no targets: they show where the GPU path stands.

The machine's GEMM peak is measured in the same run; the native rows report their
achieved GFLOP/s (flops of the algorithm's GEMMs, counted analytically). Prints a
table with the machine and versions and writes it to ``benchmarks/results/native_<device>.json``
(temporary file, then rename).

    python benchmarks/bench_native.py [--device cuda] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn
from torch.func import functional_call

import hesskit as hk
from hesskit import ops
from hesskit.engines.native import NativeEngine

from _common import RESULTS, best_times, machine_info, write_json



def gemm_peak(dtype, device: str, repeats: int) -> float:
    """GFLOP/s of one square GEMM (n = 1024 on CPU, 4096 on GPU)."""
    n = 4096 if device == "cuda" else 1024
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    return 2 * n ** 3 / best_times({"gemm": lambda: a @ b}, repeats, device)["gemm"] / 1e9


def mlp(sizes, act, dtype, device, seed=0):
    """``hk.models.mlp`` with widths ``sizes`` and activation ``act`` ("tanh", "relu"),
    initialized from torch seed ``seed``."""
    torch.manual_seed(seed)
    return hk.models.mlp(sizes[0], sizes[1:-1], sizes[-1], activation=act).to(dtype=dtype, device=device)


def data(sizes, n, dtype, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, sizes[0], generator=g, dtype=dtype).to(device)
    y = torch.randint(0, sizes[-1], (n,), generator=g).to(device)
    return X, y


def rel_diff(out, ref) -> float:
    """max |out - ref| / max |ref|."""
    return float((out - ref).abs().max() / ref.abs().max())


def product_flops(sizes, n, k):
    """GEMM flops of one Hessian product: 4 Nkmn for the first layer, 12 Nkmn for the
    others (R-forward 2, backward 4 GEMMs of N k m n multiply-adds), forward 2 Nmn."""
    flops = 0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        flops += (4 if i == 0 else 12) * n * k * a * b + 2 * n * a * b
    return flops


def block_flops(sizes, n):
    """GEMM flops of all exact layer blocks: kron_block (2 N m^2 (n+1)^2, half by
    symmetry) plus the propagation (M W)^T W (2 N m^2 n + 2 N n^2 m per layer above
    the first)."""
    flops = 0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        flops += n * b * b * (a + 1) ** 2
        if i > 0:
            flops += 2 * n * b * b * a + 2 * n * a * a * b
    return flops


def dense_flops(sizes, n):
    """GEMM flops of the dense Hessian by Kronecker factors: per pair l < m the
    GGN-like and residual GEMMs (2 N m_l m_m (n_l+1)((n_m+1) + m_m) ...), diagonal
    blocks by kron_block and the factor recursion."""
    layers = list(zip(sizes[:-1], sizes[1:]))
    flops = block_flops(sizes, n)
    for m_idx, (nm, mm) in enumerate(layers):
        rows = mm + nm
        for l_idx in range(m_idx - 1, -1, -1):
            nl, ml = layers[l_idx]
            flops += 2 * n * ml * mm * (nl + 1) * (nm + 1) + 2 * n * nm * ml * (nl + 1) * mm
            flops += 2 * n * rows * layers[l_idx + 1][1] * ml
    return flops


def case_products(sizes, act, n, k, dtype, device, repeats):
    model = mlp(sizes, act, dtype, device)
    X, y = data(sizes, n, dtype, device)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    V = torch.randn(obj.n_params, k, dtype=dtype, device=device)
    native = hk.HessianOperator(obj, engine="native")
    func = hk.HessianOperator(obj, engine="func")
    out_native, out_func = native @ V, func @ V
    errors = {"max_rel_diff": rel_diff(out_native, out_func)}
    if dtype == torch.float32:  # how far each float32 engine is from the float64 product
        obj64 = hk.Objective(mlp(sizes, act, torch.float64, device), nn.CrossEntropyLoss(),
                             (X.double(), y))
        exact = hk.HessianOperator(obj64, engine="func") @ V.double()
        errors["native_vs_float64"] = rel_diff(out_native.double(), exact)
        errors["func_vs_float64"] = rel_diff(out_func.double(), exact)
    t_native, t_func = best_times({"native": lambda: native @ V, "func": lambda: func @ V},
                                  repeats, device).values()
    return t_func, t_native, product_flops(sizes, n, k), errors


def case_blocks(sizes, act, n, dtype, device, repeats, column_block=256):
    model = mlp(sizes, act, dtype, device)
    X, y = data(sizes, n, dtype, device)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    engine = NativeEngine(obj)
    func = hk.HessianOperator(obj, engine="func", column_block=column_block)
    slices = obj.slices()
    groups = {}
    for name in obj.param_names:
        groups.setdefault(name.rpartition(".")[0], []).append(slices[name])

    def func_blocks():
        out = {}
        for module, sl in groups.items():
            rows = torch.arange(sl[0].start, sl[-1].stop, device=device)
            cols = []
            for start in range(0, rows.numel(), func.column_block):
                idx = rows[start:start + func.column_block]
                E = torch.zeros(obj.n_params, idx.numel(), dtype=dtype, device=device)
                E[idx, torch.arange(idx.numel(), device=device)] = 1
                cols.append((func @ E)[rows])
            out[module] = torch.cat(cols, dim=1)
        return out

    ref = func_blocks()
    got = engine.layer_blocks("hessian")
    errors = {"max_rel_diff": max(rel_diff(got[k], ref[k]) for k in ref)}
    t_native, t_func = best_times({"native": lambda: engine.layer_blocks("hessian"),
                                   "func": func_blocks}, max(1, repeats // 2), device).values()
    return t_func, t_native, block_flops(sizes, n), errors


def case_dense(sizes, act, n, dtype, device, repeats):
    model = mlp(sizes, act, dtype, device)
    X, y = data(sizes, n, dtype, device)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    engine = NativeEngine(obj)
    names = obj.param_names
    shapes = obj.param_shapes
    flat0 = obj.parameters_vector()
    sizes_p = [p.numel() for p in obj.params]
    loss_fn = nn.CrossEntropyLoss()

    def loss(flat):
        params = {nm: t.view(s) for nm, t, s in zip(names, flat.split(sizes_p), shapes)}
        return loss_fn(functional_call(model, params, (X,)), y)

    by_products = hk.HessianOperator(obj, engine="native", column_block=512)

    def product_dense():
        P = obj.n_params
        D = torch.empty(P, P, dtype=dtype, device=device)
        for start, block in by_products._columns("dense"):
            D[:, start:start + block.shape[1]] = block
        return D

    ref = torch.func.hessian(loss)(flat0)
    errors = {"max_rel_diff": rel_diff(engine.dense(), ref)}
    t_native, t_products, t_func = best_times(
        {"native": engine.dense, "products": product_dense,
         "func": lambda: torch.func.hessian(loss)(flat0)}, max(1, repeats // 2), device).values()
    return t_func, t_native, dense_flops(sizes, n), errors, t_products


def save(result, device):
    path = os.path.join(RESULTS, f"native_{device}.json")
    write_json(path, result)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not ops.native_available():
        sys.exit(f"hesskit._C is not loaded: {ops.load_error()}")
    device, r = args.device, args.repeats
    mid, tiny = (64, 32, 32, 10), (64, 10, 10, 10)
    peaks = {str(dt).replace("torch.", ""): gemm_peak(dt, device, r)
             for dt in (torch.float32, torch.float64)}
    rows = []

    def row(name, baseline, target, t_base, t_native, flops, errors, dtype):
        """``errors``: ``max_rel_diff`` to the baseline and, for float32 products, the
        differences of both engines to the float64 product."""
        errors = {"native_vs_float64": None, "func_vs_float64": None, **errors}
        rows.append({"case": name, "baseline": baseline, "baseline_s": t_base,
                     "native_s": t_native, "speedup": t_base / t_native, "target": target,
                     "met": None if target is None else t_base / t_native >= target,
                     "native_gflops": flops / t_native / 1e9,
                     "peak_fraction": flops / t_native / 1e9 / peaks[dtype],
                     "dtype": dtype, **errors})

    f32, f64 = torch.float32, torch.float64
    row("product 64-32-32-10 tanh N=512 k=64", "func", 1.3,
        *case_products(mid, "tanh", 512, 64, f32, device, r), "float32")
    row("product 64-10-10-10 relu N=100 k=16", "func", 5.0,
        *case_products(tiny, "relu", 100, 16, f32, device, r), "float32")
    row("all layer blocks 64-32-32-10 tanh N=512", "func basis columns", 8.0,
        *case_blocks(mid, "tanh", 512, f32, device, r), "float32")
    t_func, t_native, flops, err, t_prod = case_dense(mid, "tanh", 128, f64, device, r)
    row("dense Hessian 64-32-32-10 tanh N=128 (P=3466)", "torch.func.hessian", 4.0,
        t_func, t_native, flops, err, "float64")
    # the two native algorithms for the dense matrix: Kronecker factors vs products
    row("dense Hessian: Kronecker factors vs products", "native products on I", None,
        t_prod, t_native, flops, err, "float64")
    if device == "cuda":  # sizes at which a GPU is busy: MNIST-sized MLP, N = 4096
        big = (784, 256, 256, 10)
        row("product 784-256-256-10 relu N=4096 k=64", "func", None,
            *case_products(big, "relu", 4096, 64, f32, device, r), "float32")
        row("all layer blocks 256-128-128-10 relu N=4096", "func basis columns", None,
            *case_blocks((256, 128, 128, 10), "relu", 4096, f32, device, r, column_block=64),
            "float32")
    result = {"machine": machine_info(device), "gemm_peak_gflops": peaks, "rows": rows}

    print(f"hesskit native engine (fused chain path), {device}: {result['machine']['cpu']}, "
          f"{result['machine']['threads']} threads, torch {torch.__version__}")
    print("GEMM peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    header = f"{'case':48s} {'baseline':20s} {'base s':>9s} {'native s':>9s} {'ratio':>7s} " \
             f"{'target':>6s} {'GFLOP/s':>8s} {'%peak':>6s} {'rel diff':>9s} {'f64 err native/func':>19s}"
    print(header)
    print("-" * len(header))
    for x in rows:
        target = "-" if x["target"] is None else f"{x['target']:.1f}x"
        f64 = (f"{x['native_vs_float64']:9.1e}/{x['func_vs_float64']:9.1e}"
               if x["native_vs_float64"] is not None else "")
        print(f"{x['case']:48s} {x['baseline']:20s} {x['baseline_s']:9.4f} {x['native_s']:9.4f} "
              f"{x['speedup']:6.1f}x {target:>6s} {x['native_gflops']:8.1f} "
              f"{100 * x['peak_fraction']:5.1f}% {x['max_rel_diff']:9.1e} {f64:>19s}"
              f"{'  (below target)' if x['met'] is False else ''}")
    print(f"saved {save(result, device)}")
    return result


if __name__ == "__main__":
    main()
