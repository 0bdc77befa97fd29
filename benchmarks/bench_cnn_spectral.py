"""Top-5 eigenvalues and a 100-probe Hutchinson trace of a CNN's Hessian, hesskit vs the
peers, at equal accuracy.

Problems (``--models``): LeNet-5 (``hk.models.lenet(10, 3)``, N = 256 random 3x32x32
inputs) and the CIFAR ResNet-18 of ``bench_graph`` (width x1/8, BatchNorm in eval, N =
128), both eval mode, float32, cross-entropy, full batch (``bench_graph.problem``).
Methods, each on its own copy of the model (``benchmarks/_peers.py``; a missing peer
is printed as missing):

* hesskit, auto engine (the native engine, graph path): ``hk.eigenvalues(H, k=5, tol=...)``
  (Lanczos with its default block: one column on these CPU problems, see
  ``Engine.batches_columns``) and ``hk.trace(H, n_probes=100)`` (one batched pass);
* curvlinops 3.0.1: ``scipy.sparse.linalg.eigsh`` (ARPACK, ``tol=...``) on
  ``HessianLinearOperator.to_scipy()``, and ``hutchinson_trace(C, 100)``;
* PyHessian 0.1: ``eigenvalues(top_n=5, tol=..., maxIter=...)`` (deflated power
  iteration) and ``trace(maxIter=100)`` (early stop off);
* hessian-eigenthings 1.0.0a5 (its Lanczos is ``hessian_eigenthings.lanczos``):
  ``lanczos(k=5, which="LA", max_iter=..., reorthogonalize=True)`` and
  ``hutchinson(num_samples=100)``.

**Equal accuracy.** Every method's top-5 eigenvalues are compared with a float64
reference, computed once on hesskit's operator of a float64 copy of the problem
(``eigsh`` at ``tol=1e-10``); the error is the largest relative error of the five.
Each eigensolver climbs a ladder of its own accuracy settings, cheapest first (see
``LADDERS``), each rung a fresh run, and stops at the first rung whose error is at
most ``--target`` (default 1e-4): its time is the time at that accuracy. A method
that no rung brings to the target is shown with its best error and marked "not
reached". The traces all use 100 probes, so they have the same statistical accuracy;
their errors are against a ``--ref-probes`` Hutchinson trace of the float64 problem
(its standard error printed: a trace error below it is noise). With
``--max-rung-seconds`` S a ladder stops after a rung that took more than S seconds
without reaching the target (the next rung costs more), and shows its best. Times are one run each
(``--repeats`` for the median of more, round-robin over the methods at their chosen
rung). A method's warnings (e.g. hesskit's "not converged") are printed with its row.

    PYTHONPATH=$PWD:/work/peers python benchmarks/bench_cnn_spectral.py
        [--models lenet,resnet] [--quick] [--n-samples N] [--threads 1] [--repeats 1]
        [--target 1e-4] [--ref-probes 200] [--max-rung-seconds 0] [--device cpu|cuda]
        [--json PATH]

``--n-samples`` overrides N (for a quicker run); ``--quick`` is N = 64 with 100
reference probes. The table is written to ``--json``
PATH, by default ``benchmarks/results/cnn_spectral_cpu.json`` (with ``--device cuda``:
``cnn_spectral_<GPU name>.json``, where the float64 reference runs on the GPU too),
atomically (temporary file, then rename).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

import _peers
import hesskit as hk
from _common import RESULTS, gpu_result_path, machine_info, write_json
from bench_graph import problem

EIGEN = "top-5 eigenvalues"
TRACE = "trace, 100 probes"

#: Each eigensolver's accuracy settings, cheapest first (see the module docstring).
LADDERS = {
    "hesskit": [dict(tol=t) for t in (1e-2, 1e-3, 1e-4, None)],  # None: hesskit's default tol
    "curvlinops": [dict(tol=t) for t in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)],
    "PyHessian": [dict(tol=1e-3, maxIter=100), dict(tol=1e-4, maxIter=300),
                  dict(tol=1e-5, maxIter=1000)],
    "hessian-eigenthings": [dict(max_iter=m) for m in (30, 60, 120, 240)],
}


def reference(model, X, y, ref_probes: int) -> tuple[np.ndarray, float, float]:
    """Top-5 eigenvalues (eigsh, tol 1e-10) and a ``ref_probes`` Hutchinson trace (with its
    standard error) of the float64 problem, on hesskit's operator."""
    H = hk.HessianOperator(hk.Objective(copy.deepcopy(model).double(), nn.CrossEntropyLoss(),
                                        (X.double(), y)))
    top, _ = _peers.arpack_top(H.to_scipy(), 5, tol=1e-10)
    tr = hk.trace(H, n_probes=ref_probes, seed=12345, progress=False)
    return top, float(tr.value), float(tr.stderr)


def jobs(model, X, y) -> tuple[dict, dict]:
    """``{(comparison, method): [(setting, callable -> estimate), ...]}`` for hesskit and
    the installed peers (an eigensolver's ladder of settings, one rung for a trace), and
    the missing peers with the reason."""
    loss = nn.CrossEntropyLoss()
    H = hk.HessianOperator(hk.Objective(model, loss, (X, y)))

    def hesskit_top5(tol):
        return hk.eigenvalues(H, k=5, tol=tol, progress=False).values.double().cpu().numpy()

    out = {
        (EIGEN, f"hesskit eigenvalues ({H.engine.name})"):
            [(kw, lambda kw=kw: hesskit_top5(**kw)) for kw in LADDERS["hesskit"]],
        (TRACE, f"hesskit trace ({H.engine.name})"):
            [({}, lambda: float(hk.trace(H, n_probes=100, progress=False).value))],
    }
    _, missing = _peers.available()
    if "curvlinops" not in missing:
        from curvlinops import hutchinson_trace

        C = _peers.curvlinops(model, loss, X, y)

        def curvlinops_trace():
            torch.manual_seed(0)  # hutchinson_trace draws from the global generator
            return float(hutchinson_trace(C, 100))

        out[(EIGEN, "curvlinops + scipy eigsh")] = [
            (kw, lambda kw=kw: _peers.arpack_top(C.to_scipy(), 5, **kw)[0])
            for kw in LADDERS["curvlinops"]]
        out[(TRACE, "curvlinops hutchinson_trace")] = [({}, curvlinops_trace)]
    if "PyHessian" not in missing:
        ph = _peers.pyhessian(model, loss, X, y, cuda=X.is_cuda)
        out[(EIGEN, "PyHessian eigenvalues")] = [
            (kw, lambda kw=kw: np.sort(_peers.pyhessian_counting(
                lambda: ph.eigenvalues(top_n=5, **kw))[0][0])[::-1])
            for kw in LADDERS["PyHessian"]]
        # tol=-inf turns its early stop off
        out[(TRACE, "PyHessian trace")] = [({}, lambda: float(np.mean(
            _peers.pyhessian_counting(lambda: ph.trace(maxIter=100, tol=-math.inf))[0])))]
    if "hessian-eigenthings" not in missing:
        import hessian_eigenthings as he

        E = _peers.eigenthings(model, loss, X, y)
        out[(EIGEN, "eigenthings lanczos")] = [
            (kw, lambda kw=kw: np.sort(he.lanczos(E, k=5, which="LA", reorthogonalize=True,
                                                  seed=0, **kw).eigenvalues.double().cpu().numpy())[::-1])
            for kw in LADDERS["hessian-eigenthings"]]
        out[(TRACE, "eigenthings hutchinson")] = [({}, lambda: float(
            he.hutchinson(E, num_samples=100, seed=0).estimate))]
    return out, missing


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(job) -> tuple[object, float, list]:
    """Runs ``job()``: its result, wall time (the GPU synchronized before and after) and
    the distinct RuntimeWarnings it raised."""
    _synchronize()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        estimate = job()
    _synchronize()
    seconds = time.perf_counter() - start
    return estimate, seconds, sorted({str(w.message).split(";")[0] for w in caught
                                      if issubclass(w.category, RuntimeWarning)})


def run_model(name: str, args) -> dict:
    """The reference, every method's ladder and the table rows of one model."""
    model, X, y = problem(name, args.resnet_width)
    if args.n_samples:
        X, y = X[:args.n_samples], y[:args.n_samples]
    model, X, y = model.to(args.device), X.to(args.device), y.to(args.device)
    t0 = time.perf_counter()
    top, ref_trace, ref_stderr = reference(model, X, y, args.ref_probes)
    t_ref = time.perf_counter() - t0
    print(f"{name}: float32, N={X.shape[0]}, P={sum(p.numel() for p in model.parameters())}; "
          f"reference (float64, {t_ref:.0f} s): top-5 {np.array2string(top, precision=5)}, "
          f"trace {ref_trace:.5g} +- {ref_stderr:.2g} ({args.ref_probes} probes)", flush=True)

    def error(comparison, estimate):
        if comparison == EIGEN:
            return float(np.max(np.abs(np.asarray(estimate)[:5] - top) / np.abs(top)))
        return abs(estimate - ref_trace) / abs(ref_trace)

    work, _ = jobs(model, X, y)
    chosen, rows = {}, {}
    for key, ladder in work.items():  # climb each ladder to the target accuracy
        tried = []
        for setting, job in ladder:
            estimate, seconds, notes = timed(job)
            tried.append(dict(setting=setting, time_s=seconds, rel_error=error(key[0], estimate),
                              estimate=np.asarray(estimate).tolist()))
            chosen[key], rows[key] = job, dict(setting=setting, times=[seconds],
                                               rel_error=tried[-1]["rel_error"], warnings=notes)
            if key[0] == TRACE or tried[-1]["rel_error"] <= args.target:
                break
            if args.max_rung_seconds and seconds > args.max_rung_seconds:
                break  # the next rung, more accurate, would cost more still
        best = min(tried, key=lambda t: t["rel_error"])
        if key[0] == EIGEN and best["rel_error"] > args.target:  # not reached: report its best
            rows[key].update(setting=best["setting"], times=[best["time_s"]],
                             rel_error=best["rel_error"])
            chosen[key] = None
        rows[key].update(reached=key[0] == TRACE or rows[key]["rel_error"] <= args.target,
                         ladder=tried)
    for _ in range(args.repeats - 1):  # round-robin at the chosen rungs
        for key, job in chosen.items():
            if job is not None:
                rows[key]["times"].append(timed(job)[1])
    out = []
    header = f"{'comparison':<18} {'method':<32} {'setting':<26} {'time (s)':>9} {'rel error':>10}"
    print(header)
    print("-" * len(header))
    for (comparison, method), row in rows.items():
        median = statistics.median(row["times"])
        setting = ", ".join(f"{k}={v}" for k, v in row["setting"].items()) or "-"
        flag = "" if row["reached"] else "  not reached"
        note = "; ".join(row["warnings"])
        print(f"{comparison:<18} {method:<32} {setting:<26} {median:>9.2f} "
              f"{row['rel_error']:>10.1e}{flag}  {note}")
        out.append(dict(comparison=comparison, method=method, setting=row["setting"],
                        time_s=median, rel_error=row["rel_error"], reached=row["reached"],
                        warnings="; ".join(row["warnings"]), ladder=row["ladder"]))
    print(f"trace errors below the reference's relative standard error "
          f"({ref_stderr / abs(ref_trace):.1e}) are noise.", flush=True)
    return dict(model=name, n_samples=int(X.shape[0]),
                n_params=sum(p.numel() for p in model.parameters()),
                reference=dict(top5=top.tolist(), trace=ref_trace, trace_stderr=ref_stderr,
                               probes=args.ref_probes, seconds=t_ref),
                rows=out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet")
    parser.add_argument("--quick", action="store_true",
                        help="N = 64 and 100 reference probes (overridden by the explicit options)")
    parser.add_argument("--n-samples", type=int, default=None)
    parser.add_argument("--resnet-width", type=float, default=0.125)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--target", type=float, default=1e-4)
    parser.add_argument("--ref-probes", type=int, default=None)
    parser.add_argument("--max-rung-seconds", type=float, default=0,
                        help="stop a ladder after a rung that took longer (0: climb to the top)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", default=None,
                        help="default: results/cnn_spectral_cpu.json, or one file per GPU model")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    if args.n_samples is None and args.quick:
        args.n_samples = 64
    if args.ref_probes is None:
        args.ref_probes = 100 if args.quick else 200
    torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    if args.json is None:
        args.json = (os.path.join(RESULTS, "cnn_spectral_cpu.json") if args.device == "cpu"
                     else gpu_result_path("cnn_spectral", info["gpu"]))
    versions, missing = _peers.available()
    print(f"hesskit {hk.__version__}, torch {torch.__version__}, {args.device}: "
          f"{info.get('gpu', info['cpu'])}, "
          f"threads {torch.get_num_threads()}, load average {info.get('load_average_1m')}; "
          f"target relative error of the top 5: {args.target:g}")
    print("peers: " + (", ".join(f"{p} {v}" for p, v in versions.items()) or "none")
          + "".join(f"; {p} missing ({why})" for p, why in missing.items()))
    result = dict(machine=info, torch=torch.__version__, peers=versions, peers_missing=missing,
                  target_rel_error=args.target, ladders=LADDERS, models=[])
    for name in args.models.split(","):
        result["models"].append(run_model(name, args))
        write_json(args.json, result)  # after each model, so a long run keeps what it has
    print(f"saved {args.json}")
    return result


if __name__ == "__main__":
    main()
