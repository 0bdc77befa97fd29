"""Quickstart: the Hessian of a small network trained on scikit-learn's digits.

Trains an MLP 64-32-32-10 (tanh) for a few epochs, then measures, on the whole
training set: the top eigenvalues of the Hessian, its trace (Hutchinson), its
spectral density (stochastic Lanczos quadrature) and the exact spectrum of the last
layer's block. Writes ``results/quickstart/quickstart.png`` and ``summary.json``.

    python examples/quickstart.py
"""
import argparse
import time

import torch
from torch import nn

import hesskit as hk
from studies import ResultStore, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="results/quickstart")
    args = parser.parse_args()
    store = ResultStore(args.out)

    X, y = hk.data.load_digits()
    (X_train, y_train), (X_test, y_test) = hk.data.split(X, y, fractions=(0.7, 0.3))
    model = hk.models.get_model("mlp", in_dim=64, hidden=(32, 32), n_classes=10,
                                activation="tanh", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, opt, X_train, y_train, batch_size=64, epochs=args.epochs, seed=0)
    accuracy = (model(X_test).argmax(1) == y_test).float().mean().item()
    print(f"native kernels: {hk.native_available()}   test accuracy: {accuracy:.3f}")

    obj = hk.Objective(model, nn.CrossEntropyLoss(), (X_train, y_train))
    H = hk.HessianOperator(obj)
    print(f"{obj}\nengine: {H.engine.name}")

    start = time.perf_counter()
    top = hk.eigenvalues(H, k=5, which="largest", tol=1e-5)
    print(f"top-5 eigenvalues: {[round(v, 4) for v in top.values.tolist()]} "
          f"({top.n_matvecs} products, converged={top.converged}, {time.perf_counter() - start:.1f}s)")
    tr = hk.trace(H, n_probes=100, seed=0)
    print(f"trace (Hutchinson, 100 probes): {tr.value:.3f} ± {tr.stderr:.3f}")
    density = hk.spectral_density(H, n_runs=5, n_steps=60, seed=0)
    last = torch.linalg.eigvalsh(hk.last_layer_hessian(obj))
    print(f"last layer block ({last.numel()}×{last.numel()}): λ_max = {last.max():.4f}, "
          f"rank = {hk.rank(hk.last_layer_hessian(obj))}, "
          f"{int((last > 1e-3 * last.max()).sum())} eigenvalues above 1e-3·λ_max")

    from hesskit.plotting import plot_density
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    plot_density(density, ax=axes[0])
    for v in top.values.tolist():
        axes[0].axvline(v, color="tab:red", lw=0.8, ls="--")
    axes[0].set_title(f"Hessian spectral density (P={obj.n_params}); top-5 dashed")
    axes[1].semilogy(sorted(last.clamp_min(1e-12).tolist(), reverse=True), ".")
    axes[1].set_xlabel("index")
    axes[1].set_ylabel("eigenvalue")
    axes[1].set_title("last layer block: exact spectrum")
    fig.tight_layout()
    path = store.save_figure(fig, "quickstart")
    summary = {"test_accuracy": accuracy, "top_eigenvalues": top.values.tolist(),
               "trace": tr.value, "trace_stderr": tr.stderr,
               "last_layer_eigenvalues": last.tolist()}
    store.save("summary", summary)
    print(f"figure: {path}")


if __name__ == "__main__":
    main()
