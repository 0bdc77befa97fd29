"""Worker processes for the torch.distributed tests (importable so spawn can pickle them)."""
import contextlib
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import hesskit as hk

SHARD_SIZES = {2: [37, 63], 3: [10, 55, 35]}


def problem():
    """The same model and 100-sample dataset in every process (float64)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    X = torch.randn(100, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (100,), generator=g)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 4, generator=g,
                    dtype=torch.float64)
    return model, X, y, V


def measure(obj, V):
    H = hk.HessianOperator(obj)
    return {
        "HV": H @ V,
        "GV": hk.GGNOperator(obj) @ V,
        "dense": H.dense(),
        "diagonal": H.diagonal(),
        "eigenvalues": hk.eigenvalues(H, k=3, tol=1e-9).values,
        "trace": torch.tensor(hk.trace(H, n_probes=30, seed=1).value),
        "loss": obj.loss(),
        "gradient": obj.gradient(),
        "last_layer": hk.last_layer_hessian(obj),
        "n_samples": torch.tensor(obj.n_samples),
    }


def worker(rank, world, init_file, out_dir, scenario):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=10))
    model, X, y, V = problem()
    sizes = SHARD_SIZES[world]
    start = sum(sizes[:rank])
    Xs, ys = X[start:start + sizes[rank]], y[start:start + sizes[rank]]
    # uneven batches inside each shard too
    data = [(Xs[:7], ys[:7]), (Xs[7:], ys[7:])] if len(Xs) > 7 else (Xs, ys)
    obj = hk.Objective(model, nn.CrossEntropyLoss(), data, batch_size=16)
    if scenario == "die":
        if rank == world - 1:
            os._exit(3)
        started = time.monotonic()
        try:
            hk.HessianOperator(obj) @ V
            message = "no error"
        except RuntimeError as exc:
            message = str(exc)
        torch.save({"message": message, "elapsed": time.monotonic() - started},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        os._exit(0)
    if scenario == "monitor":
        monitor = hk.hooks.HessianMonitor(obj, every=1, metrics=("lambda_max", "trace"),
                                          log_dir=os.path.join(out_dir, f"log{rank}"))
        monitor.measure(step=1)
        torch.save({"lambda_max": torch.tensor(monitor.history[0]["lambda_max"])},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()
        return
    results = measure(obj, V)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


# --------------------------------------------- training under DistributedDataParallel
# (tests/distributed/test_ddp_training.py)

DDP_WORLD = 2
# EQUAL shards: DDP averages the per-rank gradients with weight 1/world, so the mean of
# the per-rank mean-loss gradients is the full-batch gradient only when shards are equal.
DDP_SHARD = 12
HTR_SEED = 7


def ddp_problem():
    """A float64 MLP and a regression set of DDP_WORLD * DDP_SHARD samples, the same everywhere."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    X = torch.randn(DDP_WORLD * DDP_SHARD, 4, generator=g, dtype=torch.float64)
    y = torch.randn(DDP_WORLD * DDP_SHARD, 2, generator=g, dtype=torch.float64)
    return model, X, y


def mse(model, X, y):
    return ((model(X) - y) ** 2).mean()


def flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def train_sam(model, X, y, first_pass=contextlib.nullcontext, steps=3):
    """SAM around SGD with momentum, driven by ``step(closure)``.

    Records, for every closure call (at w, then at w + e), the point and the gradient
    left in ``.grad`` by the closure's backward. ``first_pass``: context manager for
    the first forward/backward of each step (``ddp_model.no_sync`` to skip its all-reduce).
    """
    opt = hk.optim.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    points, grads = [], []

    def closure():
        opt.zero_grad()
        with first_pass() if len(points) % 2 == 0 else contextlib.nullcontext():
            loss = mse(model, X, y)
            loss.backward()
        points.append(flat(model.parameters()))
        grads.append(flat(p.grad for p in model.parameters()))
        return loss.detach()

    losses = torch.stack([opt.step(closure) for _ in range(steps)])
    return {"params": flat(model.parameters()), "points": torch.stack(points),
            "grads": torch.stack(grads), "losses": losses}


def train_asam(model, X, y, steps=3):
    """ASAM around Adam through first_step()/second_step(), two groups with their own rho."""
    net = model.module if isinstance(model, DistributedDataParallel) else model
    groups = [{"params": net[0].parameters(), "rho": 0.5}, {"params": net[2].parameters()}]
    opt = hk.optim.SAM(groups, torch.optim.Adam, rho=0.2, adaptive=True, lr=0.01)
    for _ in range(steps):
        mse(model, X, y).backward()
        opt.first_step(zero_grad=True)
        mse(model, X, y).backward()
        opt.second_step(zero_grad=True)
    return {"params": flat(model.parameters())}


def train_htr(model, X, y, start_step=0, steps=4):
    """SGDHTR penalizing every other step, probes from a generator seeded alike on every rank."""
    opt = hk.optim.SGDHTR(model.parameters(), lr=0.05, momentum=0.9, gamma=0.1, n_probes=3,
                          every=2, start_step=start_step,
                          generator=torch.Generator().manual_seed(HTR_SEED))
    traces = []
    for _ in range(steps):
        active = opt.regularizer.is_active()
        opt.step(lambda: mse(model, X, y))
        if active:
            traces.append(opt.regularizer.last_trace)
    return {"params": flat(model.parameters()), "traces": torch.stack(traces)}


def hessian_trace_regularizer(seed, **kwargs):
    return hk.regularizers.HessianTrace(gamma=0.1, n_probes=2,
                                        generator=torch.Generator().manual_seed(seed), **kwargs)


def train_hessian_trace(model, X, y, seed, steps=3):
    """Adam on loss + HessianTrace(loss, model) (the DDP module itself is passed as params)."""
    reg = hessian_trace_regularizer(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        loss = mse(model, X, y)
        (loss + reg(loss, model)).backward()
        opt.step()
    return {"params": flat(model.parameters())}


def ddp_training_worker(rank, world, init_file, out_dir):
    """Every DDP training scenario in one process group (constructing DDP costs seconds)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=20))

    def wrapped(**ddp_kwargs):
        model, X, y = ddp_problem()
        X_shard, y_shard = hk.distributed.shard((X, y))
        return DistributedDataParallel(model, **ddp_kwargs), X_shard, y_shard

    results = {"sam": train_sam(*wrapped())}
    ddp, X, y = wrapped()
    results["sam_local_perturbation"] = train_sam(ddp, X, y, first_pass=ddp.no_sync)
    results["asam"] = train_asam(*wrapped())
    results["htr"] = train_htr(*wrapped())
    results["htr_find_unused_parameters"] = train_htr(*wrapped(find_unused_parameters=True))
    results["htr_static_graph"] = train_htr(*wrapped(static_graph=True), start_step=1)
    results["hessian_trace_own_probes"] = train_hessian_trace(*wrapped(), seed=10 + rank)
    ddp, X, y = wrapped(static_graph=True)  # last: this forward is never followed by a backward
    loss = mse(ddp, X, y)
    try:
        hessian_trace_regularizer(0)(loss, ddp)
        results["static_graph_first_iteration"] = "no error"
    except ValueError as exc:
        results["static_graph_first_iteration"] = str(exc)
    torch.save(results, os.path.join(out_dir, f"ddp_rank{rank}.pt"))
    dist.destroy_process_group()
