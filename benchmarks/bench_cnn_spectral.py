"""Top-5 eigenvalues and a 100-probe Hutchinson trace of a CNN's Hessian, hesskit vs the peers.

Problem: LeNet-5 (``hk.models.lenet(10, 3)``, eval mode, float32), cross-entropy on
N = 256 random 3x32x32 inputs, full batch (``bench_graph.problem``). Methods, each on
its own copy of the model (``benchmarks/_peers.py``; a missing peer is printed as
missing):

* hesskit, auto engine (the graph engine for LeNet): ``hk.eigenvalues(H, k=5)``
  (block Lanczos, default tol) and ``hk.trace(H, n_probes=100)`` (one batched pass);
* curvlinops 3.0.1: ``scipy.sparse.linalg.eigsh`` (ARPACK, ``tol=1e-6``) on
  ``HessianLinearOperator.to_scipy()``, and ``hutchinson_trace(C, 100)``;
* PyHessian 0.1: ``eigenvalues(top_n=5)`` (deflated power iteration, its default
  tol 1e-3, ``maxIter=100``) and ``trace(maxIter=100)`` (early stop off);
* hessian-eigenthings 1.0.0a5 (its 1.0 API has no ``compute_hessian_eigenthings``;
  its Lanczos is ``hessian_eigenthings.lanczos``): ``lanczos(k=5, which="LA",
  max_iter=60)`` and ``hutchinson(num_samples=100)``.

Errors are against a reference computed once, on hesskit's operator of a float64
copy of the problem: the top-5 eigenvalues by ``eigsh`` at ``tol=1e-10``, and the
trace by Hutchinson with ``--ref-probes`` probes (its own standard error is printed:
a trace error below it is noise). Eigenvalue error: the largest relative error of
the top 5; trace error: relative. Times are one run each (``--repeats`` for the
median of more, round-robin). A method's warnings (e.g. hesskit's "not converged") are
printed with its row.

    python benchmarks/bench_cnn_spectral.py [--quick] [--threads 1] [--repeats 1]
                                            [--ref-probes 200] [--json PATH]

``--quick`` uses N = 64 and 100 reference probes. ``--json`` writes the table
atomically (temporary file, then rename).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

import _peers
import hesskit as hk
from _common import machine_info, write_json
from bench_graph import problem

EIGEN = "top-5 eigenvalues"
TRACE = "trace, 100 probes"


def reference(model, X, y, ref_probes: int) -> tuple[np.ndarray, float, float]:
    """Top-5 eigenvalues (eigsh, tol 1e-10) and a ``ref_probes`` Hutchinson trace (with its
    standard error) of the float64 problem, on hesskit's operator."""
    H = hk.HessianOperator(hk.Objective(copy.deepcopy(model).double(), nn.CrossEntropyLoss(),
                                        (X.double(), y)))
    top, _ = _peers.arpack_top(H.to_scipy(), 5, tol=1e-10)
    tr = hk.trace(H, n_probes=ref_probes, seed=12345, progress=False)
    return top, float(tr.value), float(tr.stderr)


def jobs(model, X, y) -> tuple[dict, dict]:
    """``{(comparison, method): callable -> estimate}`` for hesskit and the installed peers,
    and the missing peers with the reason."""
    loss = nn.CrossEntropyLoss()
    H = hk.HessianOperator(hk.Objective(model, loss, (X, y)))
    out = {
        (EIGEN, f"hesskit eigenvalues ({H.engine.name})"):
            lambda: hk.eigenvalues(H, k=5, progress=False).values.double().numpy(),
        (TRACE, f"hesskit trace ({H.engine.name})"): lambda: float(hk.trace(H, n_probes=100, progress=False).value),
    }
    _, missing = _peers.available()
    if "curvlinops" not in missing:
        from curvlinops import hutchinson_trace

        C = _peers.curvlinops(model, loss, X, y)

        def curvlinops_trace():
            torch.manual_seed(0)  # hutchinson_trace draws from the global generator
            return float(hutchinson_trace(C, 100))

        out[(EIGEN, "curvlinops + scipy eigsh")] = lambda: _peers.arpack_top(C.to_scipy(), 5)[0]
        out[(TRACE, "curvlinops hutchinson_trace")] = curvlinops_trace
    if "PyHessian" not in missing:
        ph = _peers.pyhessian(model, loss, X, y)
        out[(EIGEN, "PyHessian eigenvalues")] = lambda: np.sort(
            _peers.pyhessian_counting(lambda: ph.eigenvalues(maxIter=100, top_n=5))[0][0])[::-1]
        # tol=-inf turns its early stop off
        out[(TRACE, "PyHessian trace")] = lambda: float(np.mean(
            _peers.pyhessian_counting(lambda: ph.trace(maxIter=100, tol=-math.inf))[0]))
    if "hessian-eigenthings" not in missing:
        import hessian_eigenthings as he

        E = _peers.eigenthings(model, loss, X, y)
        out[(EIGEN, "eigenthings lanczos")] = lambda: np.sort(
            he.lanczos(E, k=5, which="LA", max_iter=60, seed=0).eigenvalues.double().numpy())[::-1]
        out[(TRACE, "eigenthings hutchinson")] = lambda: float(
            he.hutchinson(E, num_samples=100, seed=0).estimate)
    return out, missing


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ref-probes", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, X, y = problem("lenet", 0.0)
    if args.quick:
        X, y = X[:64], y[:64]
    ref_probes = args.ref_probes or (100 if args.quick else 200)
    t0 = time.perf_counter()
    top, ref_trace, ref_stderr = reference(model, X, y, ref_probes)
    t_ref = time.perf_counter() - t0
    work, missing = jobs(model, X, y)
    versions, _ = _peers.available()
    times, estimates, notes = {key: [] for key in work}, {}, {}
    for _ in range(args.repeats):  # round-robin, so that drifting load hits every method
        for key, job in work.items():
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                estimates[key] = job()
            times[key].append(time.perf_counter() - start)
            notes[key] = sorted({str(w.message).split(";")[0] for w in caught
                                 if issubclass(w.category, RuntimeWarning)})
    info = machine_info("cpu")
    print(f"hesskit {hk.__version__}, torch {torch.__version__}, cpu: {info['cpu']}, "
          f"threads {torch.get_num_threads()}, load average {info.get('load_average_1m')}")
    print("peers: " + (", ".join(f"{p} {v}" for p, v in versions.items()) or "none")
          + "".join(f"; {p} missing ({why})" for p, why in missing.items()))
    print(f"problem: LeNet-5 eval, float32, N={X.shape[0]}, P={sum(p.numel() for p in model.parameters())}; "
          f"reference (float64, {t_ref:.0f} s): top-5 {np.array2string(top, precision=5)}, "
          f"trace {ref_trace:.5g} +- {ref_stderr:.2g} ({ref_probes} probes)")
    header = f"{'comparison':<18} {'method':<32} {'time (s)':>9} {'rel error':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for (comparison, method), samples in times.items():
        estimate = estimates[(comparison, method)]
        if comparison == EIGEN:
            error = float(np.max(np.abs(np.asarray(estimate)[:5] - top) / np.abs(top)))
        else:
            error = abs(estimate - ref_trace) / abs(ref_trace)
        median = statistics.median(samples)
        note = "; ".join(notes[(comparison, method)])
        rows.append(dict(comparison=comparison, method=method, time_s=median, rel_error=error, warnings=note))
        print(f"{comparison:<18} {method:<32} {median:>9.2f} {error:>10.1e}  {note}")
    print(f"trace errors below the reference's relative standard error ({ref_stderr / abs(ref_trace):.1e}) are noise.")
    result = dict(machine=info, torch=torch.__version__, peers=versions, peers_missing=missing,
                  n_samples=int(X.shape[0]), reference=dict(top5=top.tolist(), trace=ref_trace,
                                                            trace_stderr=ref_stderr, probes=ref_probes),
                  rows=rows)
    if args.json:
        write_json(args.json, result)
        print(f"saved {args.json}")
    return result


if __name__ == "__main__":
    main()
