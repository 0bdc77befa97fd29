"""Data-parallel curvature products: 1 vs 2 processes, chunking on vs off.

Times 64 batched Hessian-vector products (one ``matmat`` of 64 columns, i.e. one
pass over the data) on an MLP 64-32-32-10 over 20 000 samples, with the data
sharded over 1 or 2 gloo processes (each given cores/world threads), and reports
each process's peak memory growth with ``batch_size`` chunking on (1000) and off.

    python benchmarks/bench_distributed.py [--samples 20000] [--k 64]
"""
import argparse
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(rank, world, init_file, samples, k, chunk, threads, queue):
    import hesskit as hk

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))
    X, y = hk.data.gaussian_inputs(samples, 64, n_classes=10, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 10))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), hk.distributed.shard((X, y)),
                       batch_size=chunk)
    H = hk.HessianOperator(obj, engine="func")
    V = torch.randn(obj.n_params, k, generator=torch.Generator().manual_seed(1))
    H.matmat(V[:, :2])  # warm-up
    base = _peak_rss_mib()
    dist.barrier()
    start = time.perf_counter()
    H.matmat(V)
    dist.barrier()
    elapsed = time.perf_counter() - start
    queue.put((rank, elapsed, _peak_rss_mib() - base))
    dist.destroy_process_group()


def run(world, samples, k, chunk):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_worker, args=(r, world, os.path.join(tmp, "init"),
                                                   samples, k, chunk, threads, queue))
                 for r in range(world)]
        for p in procs:
            p.start()
        rows = [queue.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
    return {"world": world, "threads_per_process": threads, "chunk": chunk,
            "seconds": max(r[1] for r in rows),
            "peak_mib_per_process": max(r[2] for r in rows)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--out", default=None, help="write the table as JSON here")
    args = parser.parse_args()
    results = [run(world, args.samples, args.k, chunk)
               for world in (1, 2) for chunk in (None, 1000)]
    base = next(r["seconds"] for r in results if r["world"] == 1 and r["chunk"] is None)
    print(f"{args.k} batched HVPs over {args.samples} samples, MLP 64-32-32-10, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}")
    print(f"{'processes':>9} {'threads':>7} {'chunk':>6} {'seconds':>8} {'speed-up':>8} "
          f"{'peak MiB/proc':>13}")
    for r in results:
        print(f"{r['world']:>9} {r['threads_per_process']:>7} {str(r['chunk']):>6} "
              f"{r['seconds']:>8.2f} {base / r['seconds']:>8.2f} "
              f"{r['peak_mib_per_process']:>13.1f}")
    if args.out:
        from _common import write_json  # here: the workers import hesskit themselves

        write_json(args.out, {"samples": args.samples, "k": args.k, "torch": torch.__version__,
                              "cores": os.cpu_count(), "results": results}, indent=1)


if __name__ == "__main__":
    main()
