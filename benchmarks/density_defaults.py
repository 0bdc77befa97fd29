"""Accuracy of stochastic Lanczos quadrature against its cost: the data behind the
defaults of ``hk.spectral_density``.

For each problem the exact spectrum comes from the dense Hessian
(``H.dense()`` and ``torch.linalg.eigvalsh``). SLQ runs on that dense matrix (the
same numbers as on the operator, without the cost of the products) for every
``(n_runs, n_steps)`` of the grid and ``--seeds`` seeds; the error is the
1-Wasserstein distance between the quadrature measure (Ritz values with their
weights, averaged over the runs) and the exact eigenvalue distribution, divided
by the spread ``λ_max − λ_min``. The products of a call are ``n_runs * n_steps``.

Problems (float64, cross-entropy, trained for ``--train-steps`` full-batch SGD
steps so that the spectrum has the outliers of a trained network):

* ``mlp``: MLP 64-32-32-10 (tanh) on 512 digits (P = 3466);
* ``cnn``: ``hk.models.small_cnn`` (padding 1) on 512 digits 0/1/7 (P = 5187);
* ``synthetic``: 6 outliers over a Gaussian bulk, P = 2000 (no model).

Accuracies do not depend on the machine: the numbers are reproducible, only the
run time varies. Usage::

    OMP_NUM_THREADS=2 python benchmarks/density_defaults.py --out benchmarks/results/density_defaults.json

The table printed is the mean (and max) relative W1 over the seeds; the JSON
holds every number, written atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
from scipy.stats import wasserstein_distance
from torch import nn

import hesskit as hk
from hesskit.data import load_digits

from _common import machine_info

RUNS = (1, 2, 5, 10)
STEPS = (20, 40, 60, 80, 100)


def _trained_hessian(model, X, y, train_steps):
    """Dense Hessian after ``train_steps`` full-batch SGD steps (lr 0.5)."""
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(train_steps):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    H = hk.HessianOperator(hk.Objective(model, loss_fn, (X, y)))
    return H.dense(progress=False)


def problems(train_steps):
    """Yields ``(name, dense symmetric matrix)`` for the problems of the module docstring."""
    torch.manual_seed(0)
    X, y = load_digits(dtype=torch.float64)
    mlp = hk.models.mlp(64, (32, 32), 10, activation="tanh").double()
    yield "mlp", _trained_hessian(mlp, X[:512], y[:512], train_steps)
    Xc, yc = load_digits(flatten=False, classes=(0, 1, 7), dtype=torch.float64)
    cnn = hk.models.small_cnn(3, input_size=8, padding=1).double()
    yield "cnn", _trained_hessian(cnn, Xc[:512], yc[:512], train_steps)
    g = torch.Generator().manual_seed(0)
    ev = torch.cat([torch.tensor([50.0, 30, 20, 10, 8, 7.5]).double(),
                    0.3 * torch.randn(1994, generator=g, dtype=torch.float64)])
    Q, _ = torch.linalg.qr(torch.randn(2000, 2000, generator=g, dtype=torch.float64))
    yield "synthetic", (Q * ev) @ Q.T


def relative_w1_by_runs(A, ev, n_steps, seed):
    """``{n_runs: relative W1}`` for every ``n_runs`` of :data:`RUNS`, from one call.

    The runs of one call are independent recurrences whose probes are the columns
    of one random block, drawn column after column: the first ``r`` runs of a call
    with ``max(RUNS)`` runs are the call with ``n_runs=r`` (up to rounding, ~1e-15).
    """
    d = hk.spectral_density(A, n_runs=max(RUNS), n_steps=n_steps, seed=seed, progress=False)
    out = {}
    for r in RUNS:
        w1 = wasserstein_distance(d.nodes[:r].reshape(-1).numpy(), ev.numpy(),
                                  u_weights=d.weights[:r].reshape(-1).numpy())
        out[r] = w1 / float(ev[-1] - ev[0])
    return out


def write_atomically(path, payload):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--out", default=None, help="JSON file of all numbers (written atomically)")
    args = parser.parse_args(argv)
    results = {"machine": machine_info("cpu"), "seeds": args.seeds, "problems": {}}
    for name, A in problems(args.train_steps):
        A = 0.5 * (A + A.T)
        ev = torch.linalg.eigvalsh(A)
        errors = {(r, n): [] for r in RUNS for n in STEPS}
        for n_steps in STEPS:
            for seed in range(args.seeds):
                for r, w1 in relative_w1_by_runs(A, ev, n_steps, seed).items():
                    errors[r, n_steps].append(w1)
        rows = [{"n_runs": r, "n_steps": n, "products": r * n, "w1_mean": sum(e) / len(e),
                 "w1_max": max(e)} for (r, n), e in errors.items()]
        results["problems"][name] = {"P": A.shape[0], "lambda_max": float(ev[-1]),
                                     "lambda_min": float(ev[0]), "rows": rows}
        print(f"\n{name} (P = {A.shape[0]}): relative W1, mean (max) over {args.seeds} seeds")
        print("n_runs \\ n_steps " + "".join(f"{s:>18d}" for s in STEPS))
        for n_runs in RUNS:
            cells = [r for r in rows if r["n_runs"] == n_runs]
            print(f"{n_runs:>16d} " + "".join(f"  {r['w1_mean']:.1e} ({r['w1_max']:.1e})" for r in cells))
        sys.stdout.flush()
    if args.out:
        write_atomically(args.out, results)


if __name__ == "__main__":
    main()
