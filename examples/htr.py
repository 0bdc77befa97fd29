"""Hessian trace regularization (HTR) against SGD and SGD + L2 (Sankar et al., AAAI 2021).

Sankar, Khasbage, Vigneswaran & Balasubramanian, "A deeper look at the Hessian
eigenspectrum of deep neural networks and its applications to regularization".
HTR trains on

    loss + gamma * (1/m) sum_j v_j^T H v_j,     v_j Rademacher probes,

the penalty backpropagated through the Hessian-vector products (third order),
applied on one minibatch in ``every`` from epoch ``start`` on
(``hk.optim.SGDHTR``; with ``gamma=0`` it is ``torch.optim.SGD`` bit for bit, so
the three methods share one training loop). Compared over several seeds: test
error and the Hessian trace (Hutchinson, on a fixed subset of 10 training samples
per class) after every epoch, each summarized as the mean +- std over seeds of
each run's mean over its last epochs.

The paper's table (test error %, SGD / SGD + L2 / SGD + HTR):

    LeNet    / CIFAR-10       30.44 / 30.38 / 29.20
    LeNet    / MNIST           1.00 /  0.92 /  0.86
    LeNet    / FashionMNIST    5.43 /  5.41 /  4.78
    ResNet18 / CIFAR-10       19.38 / 18.64 / 18.36

The default is LeNet on the 8x8 digits padded to 32x32 (a stand-in for MNIST:
smaller and much easier, so its errors are not comparable with the table);
``--dataset mnist|fashion_mnist|cifar10 --data-root DIR`` uses the real files
(the paper's row is then shown as reference), ``--full`` the longer schedule.
Claims checked: HTR lowers the test error against SGD and against SGD + L2; HTR
lowers the Hessian trace.

    python examples/htr.py            # digits, 3 seeds, a few minutes on 2 cores
    python examples/htr.py --smoke    # seconds
    python examples/htr.py --dataset fashion_mnist --data-root ~/data --full

Results: ``results/htr/run_<method>_seed<s>.json`` (one per run, resumable),
``summary.json``, ``htr.png``.
"""
import statistics
import time

import torch
from torch import nn
from tqdm.auto import tqdm

import hesskit as hk
from studies import Claim, ResultStore, count_correct, experiment_parser, print_claims, run_size

SETTINGS = {
    "smoke": dict(seeds=2, epochs=2, last=1, train_limit=300, lr=0.05, batch_size=32,
                  weight_decay=5e-4, gamma=1e-3, n_probes=2, every=4, start=0, trace_probes=4,
                  per_class=2),
    "default": dict(seeds=3, epochs=12, last=4, train_limit=None, lr=0.01, batch_size=32,
                    weight_decay=5e-4, gamma=1e-3, n_probes=5, every=5, start=1, trace_probes=10,
                    per_class=10),
    "full": dict(seeds=5, epochs=50, last=5, train_limit=None, lr=0.01, batch_size=64,
                 weight_decay=5e-4, gamma=1e-3, n_probes=10, every=10, start=1, trace_probes=50,
                 per_class=10),
}
METHODS = ("SGD", "SGD + L2", "SGD + HTR")
PAPER = {"mnist": (1.00, 0.92, 0.86), "fashion_mnist": (5.43, 5.41, 4.78),
         "cifar10": (30.44, 30.38, 29.20)}


def load_data(args):
    """(train, test) pairs of 32x32 images normalized by the training mean and std."""
    (X_train, y_train), (X_test, y_test) = hk.data.train_test(
        args.dataset, args.data_root, pad_to=32, seed=0)
    mean, std = X_train.mean(), X_train.std()
    return ((X_train - mean) / std, y_train), ((X_test - mean) / std, y_test)


def error(model, X, y):
    """Test error in percent."""
    return 100.0 * (len(X) - count_correct(model, X, y)) / len(X)


def train_run(method, seed, data, s):
    """One training run; returns the per-epoch test error and Hessian trace."""
    (X_train, y_train), (X_test, y_test) = data
    subset = hk.data.per_class_subset(X_train, y_train, s["per_class"], seed=0)
    torch.manual_seed(seed)
    model = hk.models.lenet(int(y_train.max()) + 1, X_train.shape[1], input_size=X_train.shape[-1])
    steps_per_epoch = -(-len(X_train) // s["batch_size"])
    opt = hk.optim.SGDHTR(
        model.parameters(), lr=s["lr"], momentum=0.9,
        weight_decay=s["weight_decay"] if method == "SGD + L2" else 0.0,
        gamma=s["gamma"] if method == "SGD + HTR" else 0.0,
        n_probes=s["n_probes"], every=s["every"], start_step=s["start"] * steps_per_epoch,
        generator=torch.Generator().manual_seed(seed),
        batched=False)  # for LeNet on CPU the loop over probes is faster (SGDHTR's docs)
    generator = torch.Generator().manual_seed(seed)
    history = {"epoch": [], "train_loss": [], "test_error": [], "trace": [], "trace_stderr": [],
               "minibatch_trace": []}
    for epoch in range(1, s["epochs"] + 1):
        model.train()
        total, minibatch_traces = 0.0, []
        for idx in torch.randperm(len(X_train), generator=generator).split(s["batch_size"]):
            before = opt.regularizer.last_trace
            loss = opt.step(lambda: nn.functional.cross_entropy(model(X_train[idx]), y_train[idx]))
            total += loss.item() * len(idx)
            if opt.regularizer.last_trace is not before:  # a penalized step: its own estimate
                minibatch_traces.append(float(opt.regularizer.last_trace))
        # the Hessian trace of the training loss on the fixed subset, same probes every epoch
        obj = hk.Objective(model, nn.CrossEntropyLoss(), subset)
        H = hk.HessianOperator(obj, engine="autograd")  # faster than "auto" for LeNet on CPU
        tr = hk.trace(H, n_probes=s["trace_probes"], seed=0, progress=False)
        history["epoch"].append(epoch)
        history["train_loss"].append(total / len(X_train))
        history["test_error"].append(error(model, X_test, y_test))
        history["trace"].append(tr.value)
        history["trace_stderr"].append(tr.stderr)
        history["minibatch_trace"].append(statistics.fmean(minibatch_traces) if minibatch_traces
                                          else None)
    last = history["test_error"][-s["last"]:]
    return {"method": method, "seed": seed, **history, "final_test_error": statistics.fmean(last)}


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

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
    args = parser.parse_args()
    s = SETTINGS[run_size(args)]
    store = ResultStore(args.out, fresh=args.fresh)
    start = time.perf_counter()
    data = load_data(args)
    if s["train_limit"]:
        data = ((data[0][0][:s["train_limit"]], data[0][1][:s["train_limit"]]), data[1])
    print(f"LeNet on {args.dataset or 'digits (8x8 padded to 32x32)'}: {len(data[0][0])} train / "
          f"{len(data[1][0])} test; {s['seeds']} seeds x {s['epochs']} epochs; "
          f"HTR gamma={s['gamma']}, "
          f"{s['n_probes']} probes every {s['every']} minibatches from epoch {s['start']}")
    runs = []
    jobs = [(m, args.seed + k) for k in range(s["seeds"]) for m in METHODS]
    for method, seed in tqdm(jobs, desc="runs", unit="run"):
        name = f"run_{method.replace(' + ', '_').replace(' ', '_')}_seed{seed}"
        runs.append(store.cached(name, lambda: train_run(method, seed, data, s)))
    summary = summarize(runs, s)
    reference = PAPER.get(args.dataset or "")
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
    store.save("summary", {"settings": s, "dataset": args.dataset or "digits", "methods": summary,
                           "paper_test_error": dict(zip(METHODS, reference)) if reference else None,
                           "claims": table})
    path = figure(summary, reference, store, args.dataset or "digits")
    print(f"\n{time.perf_counter() - start:.0f}s. Figure: {path}\n"
          f"Numbers: {store.root}/summary.json\n")
    rows = [f"  {m:<10} {summary[m]['test_error_mean']:6.2f} ± {summary[m]['test_error_std']:.2f}"
            + (f"   (paper, LeNet: {r:.2f})" if reference else "")
            for m, r in zip(METHODS, reference or [None] * 3)]
    print("test error % (mean ± std over seeds of the last epochs' mean):")
    print("\n".join(rows) + "\n")
    print_claims(table, title="Sankar et al. (AAAI 2021), Hessian trace regularization")


if __name__ == "__main__":
    main()
