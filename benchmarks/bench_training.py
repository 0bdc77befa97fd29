"""Cost of one SAM / SGDHTR training step relative to one SGD step, measured in the same run.

Steps timed (forward, backward and update included, on the same batch):

* ``SGD``: ``zero_grad``; loss; ``backward``; ``torch.optim.SGD.step``  (the baseline, ratio 1)
* ``SAM``: ``hk.optim.SAM(..., torch.optim.SGD).step(closure)``  (two forward/backward passes)
* ``SGDHTR m=1`` / ``m=10``: ``hk.optim.SGDHTR(every=1)``, i.e. a step on which the Hessian-trace
  penalty is computed with m Hutchinson probes (batched Hessian-vector products)
* ``SGDHTR m=10 loop``: the same with ``batched=False`` (one HVP per probe), to show what batching buys

on an MLP 64-32-32-10 (batch 128) and LeNet-5 on 3x32x32 inputs (batch 64), cross-entropy.
The methods are timed round-robin (one step of each per round) so that drifting load on a
shared machine hits them alike; the table reports median times and their ratios to SGD.

    python benchmarks/bench_training.py [--rounds 30] [--threads N] [--device cpu|cuda]

Results taken on a GPU are also written to ``benchmarks/results/bench_training_<device>.json``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import hesskit as hk  # noqa: F401  (the package under test)
from hesskit.models.cnn import lenet
from hesskit.optim import SAM, SGDHTR

from _common import gpu_result_path, machine_info, write_json



def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))


PROBLEMS = {
    "MLP 64-32-32-10, batch 128": (mlp, (128, 64)),
    "LeNet 3x32x32, batch 64": (lambda: lenet(10, 3), (64, 3, 32, 32)),
}


def make_steps(build, x, y):
    """One closure per method, each with its own model copy and optimizer."""
    loss_fn = nn.CrossEntropyLoss()
    torch.manual_seed(0)
    reference = build().to(x.device)
    steps = {}

    def copy():
        model = build().to(x.device)
        model.load_state_dict(reference.state_dict())
        return model

    model_sgd = copy()
    sgd = torch.optim.SGD(model_sgd.parameters(), lr=1e-3, momentum=0.9)

    def sgd_step():
        sgd.zero_grad()
        loss_fn(model_sgd(x), y).backward()
        sgd.step()

    steps["SGD"] = sgd_step

    model_sam = copy()
    sam = SAM(model_sam.parameters(), torch.optim.SGD, rho=0.05, lr=1e-3, momentum=0.9)

    def sam_closure():
        sam.zero_grad()
        loss = loss_fn(model_sam(x), y)
        loss.backward()
        return loss

    steps["SAM"] = lambda: sam.step(sam_closure)

    for name, m, batched in (("SGDHTR m=1", 1, True), ("SGDHTR m=10", 10, True), ("SGDHTR m=10 loop", 10, False)):
        model_htr = copy()
        htr = SGDHTR(model_htr.parameters(), lr=1e-3, momentum=0.9, gamma=1e-3, n_probes=m, every=1, batched=batched)
        steps[name] = (lambda opt, mod: lambda: opt.step(lambda: loss_fn(mod(x), y)))(htr, model_htr)
    return steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(steps, rounds: int, warmup: int, device: torch.device):
    times = {name: [] for name in steps}
    for r in range(warmup + rounds):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (one step of every method each)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    info = machine_info(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    results = {}
    for problem, (build, shape) in PROBLEMS.items():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(device)
        y = torch.randint(0, 10, (shape[0],), generator=g).to(device)
        medians = time_round_robin(make_steps(build, x, y), args.rounds, args.warmup, device)
        results[problem] = medians
        print(f"\n{problem}  (median of {args.rounds} rounds)")
        print(f"  {'step':<18}{'ms':>10}{'x SGD':>9}")
        for name, seconds in medians.items():
            print(f"  {name:<18}{1e3 * seconds:>10.2f}{seconds / medians['SGD']:>9.2f}")

    if device.type == "cuda":
        path = gpu_result_path("bench_training", info["gpu"])
        write_json(path, {"machine": info, "median_seconds": results})
        print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
