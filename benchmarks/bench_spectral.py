"""Spectral toolkit against its baselines, measured in the same run.

Problem: the Hessian of an MLP 64-32-32-10 (tanh, float64, P = 3466) with
cross-entropy on N = 512 digits (``hesskit.data.load_digits``), as one
``hk.HessianOperator``. Comparisons (each ratio is baseline time / hesskit time):

* top-5 eigenvalues to 1e-6 relative: ``hk.eigenvalues`` (block Lanczos, one
  ``matmat`` of 5 columns per iteration; and with ``block_size=1``, one vector per
  iteration) vs ``scipy.sparse.linalg.eigsh`` (ARPACK, ``which="LA"``, ``tol=1e-6``)
  on ``H.to_scipy()``, which asks for one vector at a time, and vs deflated power
  iteration (PyHessian's method, ``hk.spectral.power_iteration``);
* Hutchinson trace with 100 Rademacher probes: one batched ``hk.trace`` vs 100
  single products (``H @ z`` in a loop);
* stochastic Lanczos quadrature, 10 runs x 80 steps: the 10 runs as one block
  (``hk.spectral_density(n_runs=10)``, 80 matmats of 10 columns) vs 10 runs in
  sequence (``n_runs=1`` ten times, 800 single products).

Where they are installed (in a benchmark-only environment; hesskit does not depend
on them), two other libraries join on the same problem:

    pip install --no-deps pyhessian==0.1 curvlinops-for-pytorch==3.0.1 einconv unfoldNd linear_operator einops

* PyHessian 0.1 (``pyhessian.hessian`` on its own copy of the model, which it
  gives a gradient graph): ``eigenvalues(top_n=5)`` (deflated power iteration,
  at ``tol=1e-6`` and at ``tol=1e-10``), ``trace(maxIter=100)`` and
  ``density(iter=80, n_v=10)``;
* curvlinops 3.0.1 (``HessianLinearOperator``): ``eigsh`` as above on its
  ``to_scipy()``, and ``hutchinson_trace`` with 100 probes.

The error column is measured against the exact answer, from the dense Hessian
(``H.dense()``) and ``torch.linalg.eigvalsh``: the largest relative error of the
top-5 eigenvalues; the relative error of the trace; for SLQ, the 1-Wasserstein
distance between the quadrature measure (Ritz values with their weights, averaged
over the runs) and the exact eigenvalue distribution, divided by ``‖H‖₂``.

"products" counts Hessian-vector products (a block of k counts k), "passes" the
calls that went over the data. The methods are timed round-robin, ``--repeats``
times, and the median is reported, so that drifting load on a shared machine hits
them alike. Operators (hesskit's and curvlinops') and PyHessian's ``hessian``
object are built once, outside the timing. A peer method that raises is reported
as failed and left out of the later repeats.

    python benchmarks/bench_spectral.py [--repeats 3] [--threads 1] [--engine auto] [--device cpu]

Results taken on a GPU are also written to ``benchmarks/results/bench_spectral_<device>.json``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import statistics
import time
import traceback

import numpy as np
import scipy
import scipy.stats
import torch
from torch import nn

import hesskit as hk
import _peers
from _common import gpu_result_path, write_json
from hesskit.data import load_digits


EIGEN = "top-5 eigenvalues, tol 1e-6"
TRACE = "Hutchinson trace, 100 probes"
SLQ = "SLQ density, 10 runs x 80 steps"
COMPARISONS = (EIGEN, TRACE, SLQ)


class PassCounter:
    """Wraps a CurvatureOperator and counts the ``matmat`` calls (passes over the data)."""

    def __init__(self, op):
        self.op = op
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device
        self.passes = 0

    @property
    def n_matvecs(self):
        return self.op.n_matvecs

    def matmat(self, V):
        self.passes += 1
        return self.op.matmat(V)


def build_problem(device: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    X, y = load_digits(dtype=torch.float64)
    X, y = X[:512].to(device), y[:512].to(device)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10)
    ).double().to(device)
    return model, X, y


def tasks(H):
    """Returns ``{(comparison, method): callable -> (estimate, products, passes)}``.

    The estimate is the top-5 eigenvalues (descending), the trace, or the SLQ
    quadrature ``(nodes, weights)``, as :data:`ERRORS` expects for the comparison.
    """
    P = H.shape[0]

    def ours_eigen(block_size=None):
        op = PassCounter(H)
        r = hk.eigenvalues(op, k=5, tol=1e-6, block_size=block_size, progress=False)
        assert r.converged
        return r.values.cpu().numpy(), r.n_matvecs, op.passes

    def eigsh():
        values, calls = _peers.arpack_top(H.to_scipy())
        return values, calls, calls

    def power():
        op = PassCounter(H)
        r = hk.spectral.power_iteration(op, k=5, tol=1e-6, max_iter=5000, progress=False)
        values = np.sort(r.values.cpu().numpy())[::-1]
        return values, r.n_matvecs, op.passes

    def hutchinson_batched():
        op = PassCounter(H)
        r = hk.trace(op, n_probes=100, seed=0, progress=False)
        return r.value, r.n_matvecs, op.passes

    def hutchinson_loop():
        before = H.n_matvecs
        g = torch.Generator().manual_seed(0)
        total = 0.0
        for _ in range(100):
            z = (torch.randint(0, 2, (P,), generator=g).to(H.dtype) * 2 - 1).to(H.device)
            total += float(z @ (H @ z))
        return total / 100, H.n_matvecs - before, 100

    def quadrature(densities):
        return (np.concatenate([d.nodes.cpu().numpy().ravel() for d in densities]),
                np.concatenate([d.weights.cpu().numpy().ravel() for d in densities]))

    def slq_block():
        op = PassCounter(H)
        d = hk.spectral_density(op, n_runs=10, n_steps=80, seed=0, progress=False)
        return quadrature([d]), d.n_matvecs, op.passes

    def slq_sequence():
        op = PassCounter(H)
        runs = [hk.spectral_density(op, n_runs=1, n_steps=80, seed=s, progress=False) for s in range(10)]
        return quadrature(runs), sum(d.n_matvecs for d in runs), op.passes

    return {
        (EIGEN, "hk.eigenvalues (block Lanczos)"): ours_eigen,
        (EIGEN, "hk.eigenvalues, block_size=1"): lambda: ours_eigen(1),
        (EIGEN, "scipy eigsh (ARPACK)"): eigsh,
        (EIGEN, "hk.spectral.power_iteration"): power,
        (TRACE, "hk.trace (batched)"): hutchinson_batched,
        (TRACE, "100 single products"): hutchinson_loop,
        (SLQ, "hk.spectral_density (one block)"): slq_block,
        (SLQ, "10 runs in sequence"): slq_sequence,
    }


def pyhessian_tasks(model: nn.Module, X, y, cuda: bool):
    """PyHessian 0.1's methods on a copy of the model, like :func:`tasks` (raises ImportError without it)."""
    ph = _peers.pyhessian(model, nn.CrossEntropyLoss(), X, y, cuda=cuda)
    counting_products = _peers.pyhessian_counting

    def eigen(tol):
        (values, _), products = counting_products(lambda: ph.eigenvalues(maxIter=5000, tol=tol, top_n=5))
        return np.sort(values)[::-1], products, products

    def trace():
        # tol=-inf turns its early stop off: at tol=0 a negative running mean would still stop it
        probes, products = counting_products(lambda: ph.trace(maxIter=100, tol=-math.inf))
        return float(np.mean(probes)), products, products

    def density():
        (nodes, weights), products = counting_products(lambda: ph.density(iter=80, n_v=10))
        return (np.ravel(nodes), np.ravel(weights)), products, products

    return {
        (EIGEN, "PyHessian eigenvalues, tol=1e-6"): lambda: eigen(1e-6),
        (EIGEN, "PyHessian eigenvalues, tol=1e-10"): lambda: eigen(1e-10),
        (TRACE, "PyHessian trace"): trace,
        (SLQ, "PyHessian density"): density,
    }


def curvlinops_tasks(model: nn.Module, X, y):
    """curvlinops 3.0.1's Hessian operator on a copy of the model, like :func:`tasks`
    (raises ImportError without it)."""
    from curvlinops import hutchinson_trace

    C = _peers.curvlinops(model, nn.CrossEntropyLoss(), X, y)

    def eigsh():
        values, calls = _peers.arpack_top(C.to_scipy())
        return values, calls, calls

    def trace():
        torch.manual_seed(0)  # hutchinson_trace draws from the global generator
        # one product with the 100 probes as columns (vmapped), one pass over the single batch
        return float(hutchinson_trace(C, 100)), 100, 1

    return {
        (EIGEN, "curvlinops + scipy eigsh"): eigsh,
        (TRACE, "curvlinops hutchinson_trace"): trace,
    }


def top5_error(values, exact):
    top = exact[::-1][:5]
    return float(np.max(np.abs(values - top) / np.abs(top)))


def trace_error(value, exact):
    return abs(value - exact.sum()) / abs(exact.sum())


def slq_error(quadrature, exact):
    nodes, weights = quadrature
    return scipy.stats.wasserstein_distance(nodes, exact, u_weights=weights) / np.abs(exact).max()


ERRORS = {EIGEN: top5_error, TRACE: trace_error, SLQ: slq_error}


def describe_failure(error: Exception) -> str:
    """The exception's type and first sentence, with the last line outside torch that it came through."""
    torch_dir = os.path.dirname(torch.__file__)
    frame = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(torch_dir)][-1]
    return (f"{type(error).__name__} at {os.path.basename(frame.filename)}:{frame.lineno} `{frame.line}`: "
            f"{str(error).split('. ')[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, X, y = build_problem(args.device)
    H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), (X, y)), engine=args.engine)
    exact = torch.linalg.eigvalsh(H.dense()).cpu().numpy()

    peer_jobs, versions, missing = {}, {}, []
    for name, distribution, make in (
        ("PyHessian", "PyHessian", lambda: pyhessian_tasks(model, X, y, cuda=args.device.startswith("cuda"))),
        ("curvlinops", "curvlinops-for-pytorch", lambda: curvlinops_tasks(model, X, y)),
    ):
        try:
            peer_jobs.update(make())
        except ImportError as e:
            missing.append(f"{name} ({e})")
        else:
            versions[name] = importlib.metadata.version(distribution)
    jobs = dict(sorted({**tasks(H), **peer_jobs}.items(), key=lambda item: COMPARISONS.index(item[0][0])))

    times = {key: [] for key in jobs}
    outcome, failed = {}, {}
    for _ in range(args.repeats):
        for key, job in jobs.items():
            if key in failed:
                continue
            start = time.perf_counter()
            try:
                outcome[key] = job()
            except Exception as e:  # a peer that breaks is reported, hesskit's own methods must not
                if key not in peer_jobs:
                    raise
                failed[key] = describe_failure(e)
                continue
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)

    device_name = (
        torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    )
    print(f"hesskit {hk.__version__} | torch {torch.__version__} | scipy {scipy.__version__} | "
          f"numpy {np.__version__} | Python {platform.python_version()}")
    if versions:
        print("peers: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    if missing:
        print("peers not installed: " + ", ".join(missing))
    print(f"machine: {platform.machine()} {device_name}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, device {args.device}, "
          f"engine {H.engine.name}, native {hk.native_available()}")
    print(f"problem: MLP 64-32-32-10 tanh, float64, N=512 digits, cross-entropy, P={H.shape[0]}; "
          f"median of {args.repeats} round-robin repeats\n")
    header = (f"{'comparison':<32} {'method':<33} {'time (s)':>9} {'products':>9} {'passes':>7} "
              f"{'speed-up':>9} {'error':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    reference = {}
    for (comparison, method), samples in times.items():
        if (comparison, method) in failed:
            message = failed[(comparison, method)]
            rows.append(dict(comparison=comparison, method=method, failed=message))
            print(f"{comparison:<32} {method:<33} failed: {message}")
            continue
        median = statistics.median(samples)
        reference.setdefault(comparison, median)
        estimate, products, passes = outcome[(comparison, method)]
        speedup = median / reference[comparison]
        error = ERRORS[comparison](estimate, exact)
        rows.append(dict(comparison=comparison, method=method, time_s=median, products=int(products),
                         passes=int(passes), speedup_of_hesskit=speedup, error=error))
        print(f"{comparison:<32} {method:<33} {median:>9.3f} {products:>9d} {passes:>7d} {speedup:>8.2f}x "
              f"{error:>8.1e}")
    print("\nspeed-up: this method's time / hesskit's time in the same comparison (>1: hesskit faster).")
    print("error, against the dense Hessian's eigenvalues: top-5, the largest relative error; trace, the\n"
          "relative error; SLQ, the 1-Wasserstein distance of the quadrature to the eigenvalue\n"
          "distribution / ||H||_2. Trace and SLQ errors are those of one seeded draw of probes.")
    if args.device.startswith("cuda"):
        path = gpu_result_path("bench_spectral", device_name)
        write_json(path, dict(device=device_name, torch=torch.__version__, peers=versions, rows=rows))
        print(f"written: {path}")


if __name__ == "__main__":
    main()
