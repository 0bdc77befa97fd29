"""Top eigenvalues, trace and spectral density of a network on the full digits set,
with the data sharded over processes.

    torchrun --nproc_per_node=2 examples/distributed_spectrum.py
    python examples/distributed_spectrum.py            # one process, same numbers

Every process holds a disjoint shard (``hk.distributed.shard``); the Objective
sums each curvature product over the processes with ``all_reduce`` and weights
the shards by their sizes, so the results equal the single-process ones on the
whole dataset. Every process computes the same numbers; rank 0 prints and writes
``results/distributed_spectrum/``.
"""
import os
import time

import torch
import torch.distributed as dist
from torch import nn

import hesskit as hk
from studies import ResultStore, experiment_parser


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/distributed_spectrum")
    args = parser.parse_args()
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1

    X, y = hk.data.load_digits(dtype=torch.float64)
    if args.smoke:
        X, y = X[:300], y[:300]
    model = hk.models.get_model("mlp", in_dim=64, hidden=(32, 32), n_classes=10,
                                activation="tanh", seed=args.seed).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2 if args.smoke else 20):  # same full-batch steps in every process
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()

    X_shard, y_shard = hk.distributed.shard((X, y))
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X_shard, y_shard), batch_size=256)
    H = hk.HessianOperator(obj)
    start = time.perf_counter()
    top = hk.eigenvalues(H, k=5, tol=1e-6, progress=False)
    tr = hk.trace(H, n_probes=32 if args.smoke else 100, seed=args.seed, progress=False)
    density = hk.spectral_density(H, n_runs=4, n_steps=20 if args.smoke else 60,
                                  seed=args.seed, progress=False)
    elapsed = time.perf_counter() - start
    if rank == 0:
        print(f"{world} process(es); this one holds {len(X_shard)} of {obj.n_samples} samples; "
              f"P = {obj.n_params}")
        print(f"top-5 eigenvalues: {[round(v, 5) for v in top.values.tolist()]}")
        print(f"trace: {tr.value:.4f} ± {tr.stderr:.4f}   ({elapsed:.1f}s for "
              f"{H.n_matvecs} products)")
        store = ResultStore(args.out, fresh=True)
        store.save(f"spectrum_world{world}", {"world_size": world, "top": top,
                                              "trace": tr, "density": density})
        print(f"results: {store.path(f'spectrum_world{world}')}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
