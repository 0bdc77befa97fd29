"""Native products against the best pure-PyTorch formulations, measured in one run.

Sections (``--sections``, default all):

* ``engines``: per-vector time of ``HessianOperator.matmat`` with k in {1, 16, 64}
  columns for each engine (``autograd``, ``func``, ``native`` where it supports the
  model), in units of one plain gradient of the same loss on the same data, on an
  MLP 64-32-32-10 (N=512) and a LeNet on 3x32x32 inputs (N=256).
* ``kron_block``: the exact Linear-layer Hessian block
  ``H = sum_k (a_k a_k^T) (x) M_k`` by ``torch.ops.hesskit.kron_block`` against
  pure-torch formulations of the same sum (each is checked against the native
  result before it is timed):

  - ``einsum``: ``einsum("kij,ka,kb->iajb")`` (the reference, :mod:`hesskit._reference`);
  - ``bmm_pairs``: one batched GEMM of ``A^T diag(M[:, i, j]) A`` over the m^2 pairs;
  - ``one_gemm``: ``A^T [M[:, i, j] * A]_(i, j)`` as one (n x N) @ (N x m^2 n) GEMM;
  - ``kron_rows``: ``M^T (A (x) A)``, materializing the N x n^2 Kronecker rows;
  - ``rowblock_sym``: the native algorithm in torch ops (m GEMMs on the blocks
    j >= i, then mirrored), valid for symmetric M only.

  The ratio column is (fastest pure-torch time) / (native time): above 1 means the
  kernel is faster. ``native_general`` is the kernel on a non-symmetric M (all m^2
  blocks).

Prints the machine, versions and one table per section. Timings taken on a GPU are
also written to ``benchmarks/results/products_<device>.json`` (temporary file, then
rename).

    python benchmarks/bench_products.py [--device cpu|cuda] [--repeats 7] [--threads T]
                                        [--sections kron_block]
"""
from __future__ import annotations

import argparse
import json
from typing import Callable

import torch

from _common import best_times, gpu_result_path, machine_info, write_json
from hesskit import _reference, ops



# --- shared helpers -----------------------------------------------------------------


def best_ms(fns: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, float]:
    """:func:`_common.best_times` in milliseconds."""
    return {name: 1e3 * t for name, t in best_times(fns, repeats, device).items()}


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n== {title}")
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


# --- kron_block ---------------------------------------------------------------------

KRON_BLOCK_SHAPES = [(512, 32, 10), (1000, 84, 10), (256, 256, 10)]  # (N, n, m)
#: added on a GPU, where the CPU shapes above take ~0.1 ms and launches dominate
KRON_BLOCK_SHAPES_GPU = [(4096, 256, 10), (8192, 512, 10), (4096, 128, 64)]


def _kron_bmm_pairs(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    N, n = A.shape
    m = M.shape[1]
    weighted = M.reshape(N, m * m).T[:, :, None] * A  # (m^2, N, n)
    blocks = torch.bmm(A.T.expand(m * m, n, N), weighted)  # (m^2, n, n)
    return blocks.view(m, m, n, n).permute(0, 2, 1, 3).reshape(m * n, m * n)


def _kron_one_gemm(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    N, n = A.shape
    m = M.shape[1]
    weighted = (M.reshape(N, m * m, 1) * A[:, None, :]).reshape(N, m * m * n)
    G = A.T @ weighted  # G[a, (i, j, b)]
    return G.view(n, m, m * n).transpose(0, 1).reshape(m * n, m * n)


def _kron_rows(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    N, n = A.shape
    m = M.shape[1]
    rows = (A[:, :, None] * A[:, None, :]).reshape(N, n * n)  # the N x n^2 Kronecker rows
    G = M.reshape(N, m * m).T @ rows  # G[(i, j), (a, b)]
    return G.view(m, m, n, n).permute(0, 2, 1, 3).reshape(m * n, m * n)


def _kron_rowblock_sym(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    N, n = A.shape
    m = M.shape[1]
    H = torch.empty(m * n, m * n, dtype=A.dtype, device=A.device)
    for i in range(m):
        weighted = (M[:, i, i:, None] * A[:, None, :]).reshape(N, (m - i) * n)
        torch.mm(A.T, weighted, out=H[i * n:(i + 1) * n, i * n:])
    upper = H.triu(1)
    return H.triu() + upper.T


KRON_BLOCK_TORCH = {
    "einsum": _reference.kron_block,
    "bmm_pairs": _kron_bmm_pairs,
    "one_gemm": _kron_one_gemm,
    "kron_rows": _kron_rows,
    "rowblock_sym": _kron_rowblock_sym,
}


def bench_kron_block(device: str, repeats: int) -> tuple[list[dict], list[str]]:
    """Times (ms) of native kron_block and of each pure-torch formulation."""
    if not ops.native_available():
        raise RuntimeError(f"kron_block section needs hesskit._C: {ops.load_error()}")
    rows = []
    for dtype in (torch.float32, torch.float64):
        shapes = KRON_BLOCK_SHAPES + (KRON_BLOCK_SHAPES_GPU if device == "cuda" else [])
        for N, n, m in shapes:
            g = torch.Generator().manual_seed(0)
            A = torch.randn(N, n, generator=g, dtype=dtype).to(device)
            X = torch.randn(N, m, m, generator=g, dtype=dtype).to(device)
            M = X + X.mT  # symmetric, as Hessians are
            native = torch.ops.hesskit.kron_block(A, M)
            tol = 1e-4 if dtype == torch.float32 else 1e-10
            for fn in KRON_BLOCK_TORCH.values():  # every formulation computes the same H
                torch.testing.assert_close(fn(A, M), native, rtol=tol,
                                           atol=tol * native.abs().max().item())
            fns = {"native": lambda: torch.ops.hesskit.kron_block(A, M),
                   "native_general": lambda: torch.ops.hesskit.kron_block(A, X)}
            fns.update({name: (lambda fn=fn: fn(A, M)) for name, fn in KRON_BLOCK_TORCH.items()})
            row = {"N": N, "n": n, "m": m, "dtype": str(dtype).removeprefix("torch.")}
            row.update(best_ms(fns, repeats, device))
            best_torch = min(KRON_BLOCK_TORCH, key=row.__getitem__)
            row["best_torch"] = best_torch
            row["ratio"] = row[best_torch] / row["native"]
            rows.append(row)
    columns = ["N", "n", "m", "dtype", "native", "native_general", *KRON_BLOCK_TORCH,
               "best_torch", "ratio"]
    return rows, columns


# --- operator engines ---------------------------------------------------------------

ENGINE_KS = (1, 16, 64)


def _engine_models(device: str):
    import hesskit as hk

    g = torch.Generator().manual_seed(0)
    mlp = hk.models.get_model("mlp", in_dim=64, hidden=(32, 32), n_classes=10,
                              activation="tanh", seed=0)
    lenet = hk.models.get_model("lenet", n_classes=10, in_channels=3, seed=0)
    return [("MLP 64-32-32-10, N=512", mlp, torch.randn(512, 64, generator=g),
             torch.randint(0, 10, (512,), generator=g)),
            ("LeNet 3x32x32, N=256", lenet, torch.randn(256, 3, 32, 32, generator=g),
             torch.randint(0, 10, (256,), generator=g))]


def bench_engines(device: str, repeats: int) -> tuple[list[dict], list[str]]:
    """Per-vector time of ``matmat`` with k columns for each engine, in units of one
    plain gradient (forward + backward) of the same loss on the same data."""
    import hesskit as hk
    from hesskit.engines import ENGINES

    rows = []
    for name, model, X, y in _engine_models(device):
        model, X, y = model.to(device), X.to(device), y.to(device)
        obj = hk.Objective(model, torch.nn.CrossEntropyLoss(), (X, y))

        def gradient():
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y).backward()

        grad_ms = best_ms({"grad": gradient}, repeats, device)["grad"]
        engines = [e for e in ("autograd", "func", "native")
                   if e in ENGINES and ENGINES[e].unsupported_reason(obj) is None]
        for k in ENGINE_KS:
            V = torch.randn(obj.n_params, k, generator=torch.Generator().manual_seed(k)).to(device)
            ops = {e: hk.HessianOperator(obj, engine=e) for e in engines}
            times = best_ms({e: (lambda op=op: op.matmat(V)) for e, op in ops.items()},
                               max(1, repeats // 2), device)
            row = {"model": name, "k": k, "gradient_ms": grad_ms}
            for e in ("autograd", "func", "native"):
                row[e] = times[e] / k / grad_ms if e in times else float("nan")
            rows.append(row)
    return rows, ["model", "k", "gradient_ms", "autograd", "func", "native"]


SECTIONS: dict[str, Callable[[str, int], tuple[list[dict], list[str]]]] = {
    "engines": bench_engines,
    "kron_block": bench_kron_block,
}


# --- main ---------------------------------------------------------------------------


def _formatted(rows: list[dict]) -> list[dict]:
    return [{k: (f"{v:.2f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    info = machine_info(args.device)
    print("machine:", json.dumps(info))
    print("engines: per-vector matmat time in units of one gradient (lower is better); "
          "kron_block: times in ms (best of %d), ratio = fastest pure-torch / native"
          % args.repeats)
    results = {}
    for name in args.sections:
        rows, columns = SECTIONS[name](args.device, args.repeats)
        print_table(name, _formatted(rows), columns)
        results[name] = rows
    if args.device == "cuda":
        write_json(gpu_result_path("products", info["gpu"]),
                   {"machine": info, "results": results})


if __name__ == "__main__":
    main()
