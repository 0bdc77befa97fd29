"""Reproduction: large-batch training and the Hessian of the final layer.

Yao, Gholami, Lei, Keutzer & Mahoney, "Hessian-based analysis of large batch
training and robustness to adversaries" (NeurIPS 2018), CIFAR-10 experiment. The
CNN Conv3x3 64, 64 - pool - 128, 128 - pool - Dense 256 - 256 - C
(``hk.models.yao_cnn``, channels scaled by ``width_mult``) is trained with momentum
SGD (lr .01, momentum .9) at batch sizes 128, 256, 512 and 1024, every batch size
for the same number of steps (the steps of ``epochs`` epochs at batch 128; the
authors train 100 epochs at every batch size on the 50 000 CIFAR-10 images, which
gives batch 1024 still 4 900 steps, while the same epoch count on a small training
set would give it only a few dozen). For each trained network:

- the exact Hessian of the mean training loss with respect to the final dense
  weight only (``Objective(..., params=model[-1].weight)`` and ``.dense()``), on the
  Hessian subset of the training set; its top-20 eigenvalues;
- outliers, read as the study reads its top-20 plots: k = the position of the
  largest gap of log(lambda) among the top 20 (positive) eigenvalues, lambda_k /
  lambda_{k+1} the largest ratio; "about C-1" means within 1 of C-1;
- the loss surface L(theta + a v_1 + b v_2) on a 13x13 grid, a, b in [-0.3, 0.3]
  (``hk.loss_landscape``), and its sharpness: the mean rise of the loss over the grid.

Inputs are standardized per channel (training-set mean and std). The convolutions
and dense layers are initialized He-uniform with zero biases, as the authors'
code. Not reproduced: the surfaces are drawn as 2-D contour plots, not the study's
3-D plots.

Defaults (CPU): scikit-learn's digits bilinearly upsampled to 32x32 (one channel),
``width_mult`` 1/8, the steps of 20 epochs at batch 128 for every batch size. ``--dataset cifar10 --data-root DIR``: CIFAR-10
(10 000 training images unless ``--full``); ``--full``: width 1, 50 epochs, all of
the training set, Hessian on 5 000 training images.

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

SIZES = {
    "smoke": dict(width_mult=1 / 16, epochs=1, n_train=512, n_hessian=256, grid=5),
    "default": dict(width_mult=1 / 8, epochs=20, n_train=None, n_hessian=None, grid=13),
    "full": dict(width_mult=1.0, epochs=50, n_train=None, n_hessian=5000, grid=13),
}
BATCH_SIZES = (128, 256, 512, 1024)
TOP = 20        # the study plots and reads the top 20 eigenvalues
RADIUS = 0.3


def load_data(args, cfg):
    """Train and test ``(X, y)`` as ``(N, C, 32, 32)`` images."""
    if args.dataset:
        train = hk.data.load_dataset(args.dataset, args.data_root, train=True)
        test = hk.data.load_dataset(args.dataset, args.data_root, train=False)
        if train[0].shape[-1] != 32:   # (Fashion)MNIST: 28 -> 32
            train = (hk.data.pad_to(train[0], 32), train[1])
            test = (hk.data.pad_to(test[0], 32), test[1])
        n_train = cfg["n_train"] or (None if args.full else 10000)
        if n_train:
            train = hk.data.strided_subset(*train, min(n_train, len(train[0])))
        test = hk.data.strided_subset(*test, min(5000, len(test[0])))
    else:
        X, y = hk.data.load_digits(flatten=False, upsample_to=32)
        train, test = hk.data.split(X, y, fractions=(0.8, 0.2), seed=args.seed)
        if cfg["n_train"]:
            train = hk.data.strided_subset(*train, cfg["n_train"])
    mean = train[0].mean(dim=(0, 2, 3), keepdim=True)
    std = train[0].std(dim=(0, 2, 3), keepdim=True)
    return ((train[0] - mean) / std, train[1]), ((test[0] - mean) / std, test[1])


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
    """Epochs that give ``batch_size`` the steps of ``cfg["epochs"]`` epochs at batch 128."""
    steps = cfg["epochs"] * math.ceil(n_train / BATCH_SIZES[0])
    return math.ceil(steps / math.ceil(n_train / batch_size))


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
        coords = torch.linspace(-RADIUS, RADIUS, cfg["grid"])
        surface = hk.loss_landscape(head, V[:, :2].to(head.dtype), coords, progress=False)
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
    label = args.dataset or "digits (32x32)"
    cfg.update(size=size, data=label, seed=args.seed, batch_sizes=list(BATCH_SIZES))
    store = ResultStore(args.out, fresh=args.fresh)
    if store.has("config") and store.load("config") != cfg:
        store.fresh = True
        print("settings differ from the stored run: recomputing")
    store.save("config", cfg)

    train_data, test_data = load_data(args, cfg)
    n_classes = int(train_data[1].max()) + 1
    n_hessian = min(cfg["n_hessian"] or len(train_data[0]), len(train_data[0]))
    hess_data = hk.data.strided_subset(*train_data, n_hessian)
    print(f"{label}: {len(train_data[0])} training images, Hessian on {n_hessian}; "
          f"yao_cnn width_mult={cfg['width_mult']:g}, the steps of {cfg['epochs']} epochs at "
          f"batch {BATCH_SIZES[0]} for every batch size")
    results = {}
    for bs in BATCH_SIZES:
        r = run_batch_size(store, cfg, args, bs, train_data, test_data, hess_data, n_classes)
        results[bs] = r
        print(f"batch {bs:5d}: train acc {r['train']['accuracy']:.3f}, test acc "
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
            title=f"loss surface along the top-2 eigenvectors ({label})"), "landscapes")]
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
        "batch_sizes": {bs: {k: results[bs][k] for k in ("train", "test", "top_eigenvalues",
                                                         "n_outliers", "sharpness_mean_rise")}
                        for bs in BATCH_SIZES}})
    print("figures: " + ", ".join(str(p) for p in paths))
    print_claims(claims, title=f"Yao et al. (NeurIPS 2018), {label}, {size} run")


if __name__ == "__main__":
    main()
