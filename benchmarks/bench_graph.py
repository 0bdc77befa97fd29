"""The native engine (its graph path: CNNs, ResNets) against ``func`` and ``autograd``, in one run.

Per-vector cost of a Hessian product ``engine.hessian(chunk, V)`` with ``V`` of k
columns, in units of one full-batch gradient of the same loss on the same data
(``Objective.gradient``), at k = 1, 16, 64, on

* LeNet-5 (``hk.models.lenet(10, 3)``, 3x32x32 inputs, N = 256);
* a CIFAR ResNet with BatchNorm in eval mode, N = 128: the smallest ResNet in
  ``hk.models``, ResNet18 with ``width_mult`` (default 1/8: stages 8-16-32-64),

for each engine, with 1 and 2 threads (``--threads``; on ``--device cuda`` the
threads setting does not matter and one row per model is timed). Products are timed at steady
state: every engine has run one product on the data first (the native engine keeps
the forward pass between products, as eigensolvers and trace estimators use it). A
cell whose estimated time (from the engine's previous k) exceeds
``--max-cell-seconds`` is skipped and shown as ``-``. Also printed: the machine, the
float32 GEMM GFLOP/s and the largest relative difference between each row's products
and autograd's (k = 1).

Peers, in the same run, where installed (``benchmarks/_peers.py``; a missing one is
printed as missing), each on its own deepcopy of the model in eval mode, same data,
loss and dtype (float32), full batch:

* ``curvlinops``: ``HessianLinearOperator @ V`` with the (P, k) matrix (it batches
  the columns);
* ``pyhessian``: ``hessian_vector_product`` on PyHessian's kept gradient graph, once
  per column (k single products);
* ``eigenthings``: hessian-eigenthings 1.0.0a5's HVP operator (``HessianOperator``,
  double backward), ``matvec`` once per column.

Target of issue 14: the native engine at <= 1.0 gradient per vector for k >= 16.

**Flops.** Each model's convolution and linear flops are counted analytically
(:func:`flop_counts`; a layer's forward costs ``2 · outputs · fan-in``, with ``f`` the
whole forward and ``f₁`` the first layer, whose input needs no gradient):

* a gradient: forward ``f``, weight gradients ``f``, input gradients ``f − f₁``:
  ``3f − f₁``;
* one vector of an exact Hessian product (forward cached, Pearlmutter's R-op):
  R-forward ``2f − f₁`` (the layer with the tangent input and with the weight tangent;
  the data has no tangent), R-backward input gradients ``2(f − f₁)``, weight gradients
  ``2f − f₁``: ``6f − 4f₁``, i.e. ``(6f − 4f₁)/(3f − f₁)`` gradients
  (``min_gradients_per_vector``): below that no exact product can go at equal GFLOP/s.

The table adds the GFLOP/s each engine achieves on those counts (``gflops``; the
gradient's in ``gradient_gflops``) and the float32 GEMM peak of the same thread count,
so that a cost above one gradient per vector reads as flops (the R-op does more work
than a gradient) or as efficiency (it runs below the gradient's or the GEMM's rate).
The counts: LeNet-5 (N = 256) f = 0.334 GFLOP, f₁ = 0.181 (conv1 is 54 % of the
forward), so an exact product needs 1.56 gradients per vector; the ResNet (N = 128)
f = 2.27 GFLOP, f₁ = 0.057, 1.98 gradients per vector. The target of 1.0 gradient
per vector therefore needs products that run 1.56x (LeNet) and 1.98x (ResNet) more
GFLOP/s than the gradient does, which only batching the k columns into larger
convolutions can give, not a lower overhead.

**Where the native engine's time goes** (``--profile-k 16``, 2026-12-03, 1 thread, on
a shared machine at load 10-15, so shares, not times): LeNet-5 convolution/GEMM
kernels 79 %, copies and fills 10 % (the tangent layout changes ``_fold``/``_unfold``
of conv1's 6x28x28 maps), pointwise 5 % (ReLU masks), other 5 % (max-pool
gather/scatter, sums), Python overhead below the profiler's resolution (the product's
wall time was below the ATen total); ResNet: convolution kernels 65 %, pointwise 15 %
(BatchNorm's affine R-forward/R-backward via ``addcmul``, ReLU masks, tangent sums),
copies 10 %, other 5 % (mostly sums), Python 5 %. Fusing the pointwise chains into C++ kernels
could at best save part of those 5 % / 15 % (the same bytes still have to be read and
written once), far from the 1.56x / 1.98x that the flop count puts between a product
vector and a gradient, so no pointwise op was ported; the lever is the convolution
kernels' efficiency at k N samples.

    python benchmarks/bench_graph.py [--device cpu|cuda] [--threads 1,2] [--ks 1,16,64]
                                     [--repeats 1] [--models lenet,resnet]
                                     [--resnet-width 0.125] [--max-cell-seconds 30]
                                     [--profile-k 16] [--json PATH]

``--profile-k`` (0: off) profiles one native-engine product of that many columns with
:mod:`torch.profiler` on the CPU and records where its time goes
(:func:`profile_breakdown`: convolution/GEMM kernels, pointwise ops, copies and fills,
other ops, Python overhead) under ``graph_profile``.

The table (with the machine description, the GPU's name on ``cuda``) is written to
``--json`` PATH, by default ``benchmarks/results/graph_<device>.json`` (temporary
file, then rename).
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch import nn

import _peers
import hesskit as hk
from hesskit.engines import AutogradEngine, FuncEngine
from hesskit.engines.native import GraphPath

from _common import RESULTS, best_times, machine_info, write_json
from bench_native import gemm_peak

ENGINES = {"native": GraphPath, "func": FuncEngine, "autograd": AutogradEngine}


def problem(name: str, resnet_width: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The benchmark's model (eval mode) and data ``(X, y)`` (float32, fixed seeds, CPU)."""
    gen = torch.Generator().manual_seed(0)
    if name == "lenet":
        model, n = hk.models.get_model("lenet", n_classes=10, in_channels=3, seed=0), 256
    elif name == "resnet":
        model = hk.models.get_model("resnet18", n_classes=10, in_channels=3,
                                    width_mult=resnet_width, seed=0)
        n = 128
        with torch.no_grad():  # running statistics away from (0, 1), as after training
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1, generator=gen)
                    m.running_var.uniform_(0.5, 1.5, generator=gen)
    else:
        raise ValueError(f"--models: expected lenet or resnet, got {name!r}")
    model.eval()
    X = torch.randn(n, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return model, X, y


def flop_counts(model: nn.Module, X: torch.Tensor) -> dict:
    """Analytic flops of the convolution and linear layers (see the module docstring).

    Runs one forward pass with hooks on every ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear``:
    a layer's forward costs ``2 · output elements · (in_channels / groups) · kernel
    elements`` (``2 · output elements · in_features`` for a Linear); biases, pooling,
    normalization and activations (linear in the size, small) are not counted.

    Returns:
        ``forward`` (f), ``first_layer`` (f₁: the layers applied to the data itself),
        ``gradient`` (3f − f₁), ``product_per_vector`` (6f − 4f₁) and
        ``min_gradients_per_vector`` (their ratio).
    """
    counts = {"forward": 0, "first_layer": 0}

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            flops = 2 * output.numel() * module.in_features
        else:
            flops = 2 * output.numel() * (module.in_channels // module.groups) * \
                math.prod(module.kernel_size)
        counts["forward"] += flops
        if inputs[0] is X:
            counts["first_layer"] += flops

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(X)
    finally:
        for handle in handles:
            handle.remove()
    f, f1 = counts["forward"], counts["first_layer"]
    return {**counts, "gradient": 3 * f - f1, "product_per_vector": 6 * f - 4 * f1,
            "min_gradients_per_vector": (6 * f - 4 * f1) / (3 * f - f1)}


#: ATen ops (by name, without ``aten::``) counted as pointwise in :func:`profile_breakdown`.
POINTWISE = {"mul", "mul_", "add", "add_", "sub", "sub_", "div", "div_", "neg", "where",
             "relu", "threshold", "threshold_backward", "tanh", "sigmoid", "exp", "log",
             "addcmul", "addcmul_", "clamp", "clamp_min", "maximum", "minimum", "abs", "sign",
             "pow", "square", "rsqrt", "sqrt", "reciprocal", "gelu", "silu", "elu", "softplus",
             "leaky_relu", "eq", "gt", "lt", "ge", "le", "ne", "masked_fill", "masked_fill_"}
#: ATen ops (by name) counted as copies and fills (layout changes, zero initialization).
COPIES = {"copy_", "clone", "contiguous", "cat", "stack", "_to_copy", "fill_", "zero_",
          "zeros", "zeros_like", "full", "new_zeros"}


def profile_breakdown(product, V: torch.Tensor) -> dict:
    """Where one product's time goes, from :mod:`torch.profiler` (CPU).

    The self time of every ATen op, summed by category: ``gemm`` (convolutions and their
    backward, ``mm``/``addmm``/``bmm``: the flop-bearing kernels, im2col included),
    ``pointwise`` (:data:`POINTWISE`: activation masks and derivatives, BatchNorm's
    affine maps, tangent sums), ``copies`` (:data:`COPIES`: tangent layout changes and
    zero fills) and ``other`` (reductions, pooling's gather/scatter, views); and
    ``python`` = the product's wall time without the profiler minus the ATen total
    (Python and dispatch overhead; 0 when the profiler's own cost makes it negative).
    Returns the seconds and their shares of the total (ATen plus ``python``).
    """
    from torch.profiler import ProfilerActivity, profile

    product(V)
    t0 = time.perf_counter()
    product(V)
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        product(V)
    seconds = {"gemm": 0.0, "pointwise": 0.0, "copies": 0.0, "other": 0.0}
    for event in prof.key_averages():
        op = event.key.removeprefix("aten::")
        if "conv" in op or op in ("mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot"):
            category = "gemm"
        elif op in POINTWISE:
            category = "pointwise"
        elif op in COPIES:
            category = "copies"
        else:
            category = "other"
        seconds[category] += event.self_cpu_time_total / 1e6
    seconds["python"] = max(0.0, wall - sum(seconds.values()))
    total = sum(seconds.values())
    return {"wall_s": wall, "seconds": seconds,
            "shares": {key: value / total for key, value in seconds.items()}}


def synchronize(device: str) -> None:
    """Wait for the GPU's queued kernels, so that a timer read after it is honest."""
    if device == "cuda":
        torch.cuda.synchronize()


def peer_products(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> dict:
    """``{label: V -> H V}`` for the installed peers, on the benchmark's model and data."""
    loss = nn.CrossEntropyLoss()
    products = {}
    try:
        C = _peers.curvlinops(model, loss, X, y)
        products["curvlinops"] = lambda V: C @ V
    except ImportError:
        pass
    try:
        ph = _peers.pyhessian(model, loss, X, y)
        products["pyhessian"] = lambda V: torch.stack(
            [_peers.pyhessian_product(ph, v) for v in V.unbind(1)], 1)
    except ImportError:
        pass
    try:
        E = _peers.eigenthings(model, loss, X, y)
        products["eigenthings"] = lambda V: torch.stack([E.matvec(v) for v in V.unbind(1)], 1)
    except ImportError:
        pass
    return products


def case(name: str, args) -> dict:
    model, X, y = problem(name, args.resnet_width)
    model, X, y = model.to(args.device), X.to(args.device), y.to(args.device)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
    chunk = next(obj.chunks())
    t_grad = best_times({"gradient": obj.gradient}, max(args.repeats, 2),
                        args.device)["gradient"]
    engines = {label: (lambda V, e=cls(obj): e.hessian(chunk, V)) for label, cls in ENGINES.items()}
    engines.update(peer_products(model, X, y))
    V1 = torch.randn(obj.n_params, 1, generator=torch.Generator().manual_seed(1)).to(args.device)
    first = {label: product(V1) for label, product in engines.items()}  # warm-up
    ref = first["autograd"]
    diff = {label: float((out - ref).abs().max() / ref.abs().max()) for label, out in
            first.items()}
    cells: dict[str, dict[int, float | None]] = {label: {} for label in engines}
    seconds_per_vector = {label: 0.0 for label in engines}
    for k in args.ks:
        V = torch.randn(obj.n_params, k, generator=torch.Generator().manual_seed(k))
        V = V.to(args.device)
        active = [label for label in engines
                  if seconds_per_vector[label] * k <= args.max_cell_seconds]
        best = {label: float("inf") for label in active}
        for _ in range(args.repeats):  # engines in turn, so that load hits them all
            for label in active:
                synchronize(args.device)
                t0 = time.perf_counter()
                engines[label](V)
                synchronize(args.device)
                best[label] = min(best[label], time.perf_counter() - t0)
        for label in engines:
            if label in best:
                seconds_per_vector[label] = best[label] / k
            cells[label][k] = best[label] / k / t_grad if label in best else None
    profiled = {}
    if args.profile_k and args.device == "cpu":
        V = torch.randn(obj.n_params, args.profile_k, generator=torch.Generator().manual_seed(2))
        profiled = {"k": args.profile_k, **profile_breakdown(engines["native"], V)}
    flops = flop_counts(model, X)
    gflops = {label: {k: None if c is None else flops["product_per_vector"] / (c * t_grad) / 1e9
                      for k, c in row.items()} for label, row in cells.items()}
    return {"model": name, "n_params": obj.n_params, "n_samples": obj.n_samples,
            "gradient_s": t_grad, "per_vector_in_gradients": cells,
            "max_rel_diff_to_autograd_k1": diff, "flops": flops,
            "gradient_gflops": flops["gradient"] / t_grad / 1e9, "gflops": gflops,
            "graph_profile": profiled}


def print_table(rows: list[dict], ks: list[int]) -> None:
    """Per-vector cost in gradients and, beside it, the GFLOP/s achieved, per engine."""
    header = f"{'threads':>7s} {'model':8s} {'P':>8s} {'grad s':>8s} {'engine':11s} " + \
        " ".join(f"{'k=' + str(k):>7s}" for k in ks) + f" {'rel diff':>9s}  GFLOP/s at " + \
        ", ".join(f"k={k}" for k in ks)
    print(header)
    print("-" * len(header))
    for r in rows:
        for label, cells in r["per_vector_in_gradients"].items():
            values = " ".join("      -" if cells.get(k) is None else f"{cells[k]:7.2f}"
                              for k in ks)
            rates = ", ".join("-" if r["gflops"][label].get(k) is None else
                              f"{r['gflops'][label][k]:.1f}" for k in ks)
            print(f"{r['threads']:7d} {r['model']:8s} {r['n_params']:8d} {r['gradient_s']:8.3f} "
                  f"{label:11s} {values} {r['max_rel_diff_to_autograd_k1'][label]:9.1e}  {rates}")
    for r in rows:
        f = r["flops"]
        print(f"{r['threads']} thread(s), {r['model']}: forward {f['forward'] / 1e9:.3f} GFLOP "
              f"(first layer {f['first_layer'] / 1e9:.3f}), gradient {f['gradient'] / 1e9:.3f} "
              f"GFLOP at {r['gradient_gflops']:.1f} GFLOP/s; an exact product needs "
              f"{f['product_per_vector'] / 1e9:.3f} GFLOP per vector = "
              f"{f['min_gradients_per_vector']:.2f} gradients at the gradient's rate")
        prof = r["graph_profile"]
        if prof:
            print(f"  native engine (graph path) at k={prof['k']} ({prof['wall_s']:.2f} s): " + ", ".join(
                f"{key} {share:.0%}" for key, share in prof["shares"].items()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--ks", default="1,16,64")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="lenet,resnet")
    parser.add_argument("--resnet-width", type=float, default=0.125)
    parser.add_argument("--max-cell-seconds", type=float, default=30.0)
    parser.add_argument("--profile-k", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.device == "cuda":
        thread_counts = [torch.get_num_threads()]
    peers, missing = _peers.available()
    rows, peaks, machines = [], {}, {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        peaks[threads] = gemm_peak(torch.float32, args.device, 5)
        machines[threads] = machine_info(args.device)
        for name in args.models.split(","):
            rows.append({"threads": threads, **case(name, args)})
    info = machines[min(machines)]
    where = info.get("gpu", info["cpu"]) if args.device == "cuda" else info["cpu"]
    print(f"hesskit native engine (graph path), {args.device}: {where}, torch {torch.__version__}, "
          f"load average {info.get('load_average_1m')}")
    print("float32 GEMM: " + ", ".join(f"{t} thread(s) {p:.1f} GFLOP/s" for t, p in peaks.items()))
    print("peers: " + (", ".join(f"{p} {v}" for p, v in peers.items()) or "none")
          + "".join(f"; {p} missing ({why})" for p, why in missing.items()))
    print("per-vector cost of a Hessian product, in full-batch gradients (lower is better):")
    print_table(rows, args.ks)
    result = {"device": args.device, "machine": machines, "gemm_float32_gflops": peaks,
              "peers": peers, "peers_missing": missing, "ks": args.ks,
              "resnet_width": args.resnet_width, "rows": rows}
    path = args.json or os.path.join(RESULTS, f"graph_{args.device}.json")
    write_json(path, result)
    print(f"saved {path}")
    return result


if __name__ == "__main__":
    main()
