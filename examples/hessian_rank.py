"""Reproduction: the rank of the Hessian of deep linear networks at initialization.

Singh, Bachmann & Hofmann, "Analytic insights into structure and rank of neural
network Hessian maps" (NeurIPS 2021). Deep linear networks without biases
(``hk.models.deep_linear``, Glorot-normal), float64, summed losses, at
initialization: the numerical ranks (``hk.rank``) of the loss Hessian H_L
(``HessianOperator``), its outer-product part H_o = J^T (d^2 l) J (``GGNOperator``) and
its functional part H_F = H_L - H_o (``FunctionalHessianOperator``) against the
closed-form predictions of ``hk.theory.hessian_rank_predictions``, while sweeping
the sample size, the hidden width and the depth. Squared error is
``nn.MSELoss(reduction="sum")`` = sum |f - y|^2 with one-hot targets (twice the
paper's 1/2 sum |f - y|^2: the same ranks); cross-entropy is summed as well. The
predictions assume generic inputs and targets (with a single label for every
sample, for instance, rank H_F falls below the prediction under squared error).
Optionally the width sweep is repeated with ReLU networks, for which the
predictions are only approximate ("approximate" here: the measured rank of H_L
within 10% of the prediction at every width).

Inputs: scikit-learn's digits average-pooled to 4x4 (d = 16; ``--data gaussian``
for standard-normal inputs, ``--dataset mnist --data-root DIR`` for MNIST pooled to
4x4). ``--full``: the paper's ranges (n = 10..400 on the 8x8 digits flattened,
d = 64; widths 4..56 at n = 100; depth 1..9 at n = 50, width 25).

    python examples/hessian_rank.py
    python examples/hessian_rank.py --full
"""
import contextlib
import functools

import torch
from torch import nn
from tqdm.auto import tqdm

import hesskit as hk
from studies import Claim, ResultStore, experiment_parser, print_claims, run_size

#: Per sweep: the swept values and the fixed settings. "L" counts weight matrices;
#: a network with L matrices has L - 1 hidden layers of width M.
SIZES = {
    "smoke": {"sample": dict(n=[4, 12, 32], M=6, L=3, inputs="pooled"),
              "width": dict(n=32, M=[2, 6, 12], L=3),
              "depth": dict(n=20, M=4, L=[1, 2, 3])},
    "default": {"sample": dict(n=[2, 4, 8, 12, 16, 24, 32, 64, 100], M=12, L=3, inputs="pooled"),
                "width": dict(n=100, M=[2, 4, 6, 8, 10, 12, 16, 20], L=3),
                "depth": dict(n=50, M=12, L=[1, 2, 3, 4, 5, 6])},
    "full": {"sample": dict(n=[10, 20, 40, 60, 80, 100, 200, 400], M=25, L=3, inputs="fine"),
             "width": dict(n=100, M=list(range(4, 57, 4)), L=3),
             "depth": dict(n=50, M=25, L=list(range(1, 10)))},
}
LOSSES = ("mse", "ce")
HESSIANS = {"loss": hk.HessianOperator, "outer": hk.GGNOperator,
            "functional": hk.FunctionalHessianOperator}
RELU_TOLERANCE = 0.10


@functools.lru_cache(maxsize=None)
def dataset(data, dataset_name, data_root, inputs):
    """All float64 inputs (flattened) and labels: pooled to 4x4, or "fine" (8x8 digits,
    files pooled to 7x7)."""
    if dataset_name:
        X, y = hk.data.load_dataset(dataset_name, data_root, dtype=torch.float64)
        return hk.data.avg_pool_to(X, 7 if inputs == "fine" else 4).flatten(1), y
    return hk.data.load_digits(pool=None if inputs == "fine" else 4, dtype=torch.float64)


def load_inputs(args, inputs, n):
    """``n`` float64 inputs (flattened) and their labels."""
    if args.data == "gaussian" and not args.dataset:
        return hk.data.gaussian_inputs(n, 64 if inputs == "fine" else 16, 10, seed=args.seed,
                                       dtype=torch.float64)
    return hk.data.strided_subset(*dataset(args.data, args.dataset, args.data_root, inputs), n)


def configurations(sweep, spec):
    """``(x, n, hidden widths, inputs)`` for every point of a sweep."""
    if sweep == "sample":
        return [(n, n, [spec["M"]] * (spec["L"] - 1), spec["inputs"]) for n in spec["n"]]
    if sweep == "width":
        return [(m, spec["n"], [m] * (spec["L"] - 1), "pooled") for m in spec["M"]]
    return [(L, spec["n"], [spec["M"]] * (L - 1), "pooled") for L in spec["L"]]


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
    if loss == "mse":
        loss_fn = nn.MSELoss(reduction="sum")
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
    parser.add_argument("--data", default="digits", choices=["digits", "gaussian"])
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

    sweeps, exact, relu_dev = {}, {loss: [0, 0, []] for loss in LOSSES}, []
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
                relu_dev += [abs(p["empirical"]["loss"] - p["predicted"]["loss"])
                             / max(p["predicted"]["loss"], 1) for p in relu]
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
    label = args.dataset or args.data
    paths = [store.save_figure(plot_rank_sweeps(
        sweeps, LOSSES, title=f"Hessian ranks of deep linear networks at initialization "
        f"({label}); lines measured, dots predicted; dashed: ReLU"), "rank_sweeps"),
        store.save_figure(plot_rank_sweeps(
            sweeps, LOSSES, relative=True, title=f"rank / #params ({label})"),
            "rank_fraction_sweeps")]
    plt.close("all")

    claims = []
    for loss, name in (("mse", "squared error"), ("ce", "cross-entropy")):
        hits, total, misses = exact[loss]
        claims.append(Claim(
            f"predicted ranks of H_L, H_o, H_F are exact for linear nets ({name})",
            f"{hits}/{total} networks exact" + (f"; differ at {', '.join(misses)}" if misses
                                                else ""),
            hits == total))
    if relu_dev:
        worst = max(relu_dev)
        claims.append(Claim(
            f"for ReLU nets the predictions are approximate (H_L within "
            f"{RELU_TOLERANCE:.0%})",
            f"largest relative deviation of rank H_L over the width sweep: {worst:.1%}",
            worst <= RELU_TOLERANCE))
    store.save("summary", {"config": cfg, "claims": claims, "sweeps": sweeps})
    print("figures: " + ", ".join(str(p) for p in paths))
    print_claims(claims, title=f"Singh, Bachmann & Hofmann (NeurIPS 2021), {label}, {size} run")


if __name__ == "__main__":
    main()
