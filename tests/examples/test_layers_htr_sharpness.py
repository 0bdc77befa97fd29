"""Smoke runs of the Sankar et al. and Kaur et al. reproductions (examples/).

Each script runs with ``--smoke --out <tmp>`` in a subprocess; we check that it
exits cleanly, prints its claims table, and writes JSON (with finite, consistent
numbers) and PNG figures. One thread per run keeps them quick on shared CPUs.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def run_script(name, out, *extra, timeout=600):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, str(ROOT / "examples" / name), "--smoke", "--out", str(out), *extra]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "claims hold on this run" in proc.stdout, proc.stdout[-2000:]
    return proc.stdout


def check_png(path):
    assert path.is_file(), f"missing figure {path}"
    assert path.read_bytes()[:8] == PNG


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def check_claims(summary, stdout):
    assert summary["claims"], "no claims recorded"
    for claim in summary["claims"]:
        assert set(claim) == {"claim", "measured", "holds"} and isinstance(claim["holds"], bool)
        assert claim["claim"] in stdout
    held = sum(c["holds"] for c in summary["claims"])
    assert f"{held} of {len(summary['claims'])} claims hold on this run" in stdout


@pytest.mark.slow
def test_layer_spectra_smoke(tmp_path):
    stdout = run_script("layer_spectra.py", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    check_claims(summary, stdout)
    epochs = summary["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, summary["settings"]["epochs"] + 1))
    for e in epochs:
        assert 0.0 <= e["test_accuracy"] <= 1.0
        assert finite(e["full"]["lambda_max"]) and finite(e["full"]["trace"])
        assert "density" not in e["full"]
        depths = [layer["depth"] for layer in e["layers"].values()]
        assert depths == sorted(depths) and depths[0] == 0.0 and depths[-1] == 1.0
        assert len(depths) == 5  # LeNet: 2 Conv + 3 Linear weights
        for layer in e["layers"].values():
            assert layer["distance_layerhessians"] >= 0 and layer["distance_wasserstein"] >= 0
            assert finite(layer["lambda_max"]) and finite(layer["trace"])
    detail = json.loads((tmp_path / "epoch_1.json").read_text())
    density = detail["full"]["density"]
    assert len(density["grid"]) == len(density["density"]) and all(map(finite, density["density"]))
    # the largest Ritz value of the density's Lanczos runs does not exceed lambda_max by much
    top_node = max(max(run) for run in density["nodes"])
    assert top_node <= 1.05 * abs(detail["full"]["lambda_max"]) + 1e-6
    for name in ("distance_vs_depth", "densities", "curvature_vs_epoch"):
        check_png(tmp_path / f"{name}.png")
    # a second run resumes from the stored epochs and reports the same numbers
    again = run_script("layer_spectra.py", tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == epochs
    assert "claims hold on this run" in again


@pytest.mark.slow
def test_htr_smoke(tmp_path):
    stdout = run_script("htr.py", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    check_claims(summary, stdout)
    s = summary["settings"]
    assert set(summary["methods"]) == {"SGD", "SGD + L2", "SGD + HTR"}
    for method in summary["methods"].values():
        assert 0.0 <= method["test_error_mean"] <= 100.0 and method["test_error_std"] >= 0.0
        assert len(method["trace_mean"]) == len(method["epochs"])
        assert all(map(finite, method["trace_mean"]))
    runs = sorted(tmp_path.glob("run_*.json"))
    assert len(runs) == 3 * s["seeds"]
    htr = json.loads((tmp_path / "run_SGD_HTR_seed0.json").read_text())
    sgd = json.loads((tmp_path / "run_SGD_seed0.json").read_text())
    # the authors' per-method schedules (scaled): SGD + L2 runs longer on MNIST
    l2 = json.loads((tmp_path / "run_SGD_L2_seed0.json").read_text())
    assert l2["epochs"] > sgd["epochs"] == htr["epochs"] == len(htr["test_error"])
    # the penalty's own trace estimates were recorded from epoch `start` on; SGD has none
    assert all(v is None for v in htr["minibatch_trace"][:s["start"] - 1])
    assert all(v is not None for v in htr["minibatch_trace"][s["start"] - 1:])
    assert all(v is None for v in sgd["minibatch_trace"])
    assert htr["final_test_error"] == pytest.approx(sum(htr["test_error"][-s["last"]:]) / s["last"])
    check_png(tmp_path / "htr.png")


@pytest.mark.slow
def test_sharpness_generalization_smoke(tmp_path):
    stdout = run_script("sharpness_generalization.py", tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    check_claims(summary, stdout)
    s = summary["settings"]
    grid = summary["grid"]
    assert len(grid) == 2 * len(s["lrs"]) * len(s["batch_sizes"]) * s["seeds"]
    assert len(summary["scaling"]) == s["seeds"]
    assert len(summary["dropout_sweep"]) == sum(p > 0 for p in s["dropouts"])
    v = s["vgg"]
    bn = summary["batchnorm"]
    assert len(bn) == 2 * len(v["lrs"]) * len(v["batch_sizes"]) * v["seeds"]
    assert sorted({r["model"] for r in bn}) == ["vgg11", "vgg11_bn"]
    for run in grid + summary["dropout_sweep"] + bn:
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["steps"] >= 1
        if not run["diverged"]:
            assert finite(run["lambda_max"]) and run["lambda_max"] > 0
            assert run["eos_ratio"] == pytest.approx(run["lambda_max"] * run["lr"] / 2)
    full = [r for r in grid if r["batch_size"] == 0]
    assert full and all(r["steps"] == r["epochs"] for r in full)  # one step per epoch at full batch
    assert "BatchNorm does not consistently lower lambda_max" in stdout
    check_png(tmp_path / "sharpness_generalization.png")


@pytest.mark.slow
def test_sharpness_between_iterates_and_train_mode(tmp_path):
    run_script("sharpness_generalization.py", tmp_path, "--between-iterates", "--train-mode")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["train_mode"] and summary["between_iterates"]
    for run in summary["grid"] + summary["batchnorm"]:
        if not run["diverged"]:
            # the maximum over the segment includes the end point
            assert run["lambda_max_between"] >= run["lambda_max"] * (1 - 1e-3)


def _sharpness_tiny_jobs():
    """Two tiny runs of the study (an MLP with dropout, a VGG11-BN at width 1/32) as
    ``run_cached`` jobs, with lambda_max also between the last two iterates."""
    import argparse

    from sharpness_generalization import SETTINGS, VGGS, load_data, run_name, train_run

    args = argparse.Namespace(dataset="mnist_sample", data_root=None, train_mode=True,
                              between_iterates=True)
    s = {**SETTINGS["smoke"], "max_epochs": 1, "n_eval": 100}
    flat, images = load_data(args), load_data(args, images=True)
    flat, images = (((X[:200], y[:200]), test) for (X, y), test in (flat, images))
    mlp = dict(model="mlp", dropout=0.5, optimizer="SAM", lr=0.05, batch_size=50, seed=3)
    vgg = dict(model=VGGS[1], dropout=0.0, optimizer="SGD", lr=0.05, batch_size=50, seed=1)
    return [(run_name(vgg, args), train_run, (vgg, images, {**s, **s["vgg"]}, args)),
            (run_name(mlp, args), train_run, (mlp, flat, s, args))], args, s, flat


@pytest.mark.slow
def test_sharpness_pooled_runs_equal_in_process_runs(tmp_path):
    """Runs computed by two worker processes give the same bits (histories, lambda_max,
    between iterates) as the same runs computed one after the other in this process,
    and both are stored; a stored run is read back, not recomputed."""
    from studies import ResultStore, run_cached

    jobs, _, _, _ = _sharpness_tiny_jobs()
    here = run_cached(ResultStore(tmp_path / "here"), jobs, workers=1)
    pooled = run_cached(ResultStore(tmp_path / "pool"), jobs, workers=2)
    assert list(pooled) == [name for name, _, _ in jobs]
    assert pooled == here
    for record in pooled.values():
        assert finite(record["lambda_max"]) and finite(record["lambda_max_between"])
    for name in pooled:
        assert json.loads((tmp_path / "pool" / f"{name}.json").read_text()) == here[name]
    # stored runs are read back: a job that would fail is never called
    broken = [(name, os._exit, (3,)) for name, _, _ in jobs]
    assert run_cached(ResultStore(tmp_path / "pool"), broken, workers=2) == here


@pytest.mark.slow
def test_sharpness_failing_run_raises_with_its_name(tmp_path):
    """A run that raises in a worker, or whose worker dies, raises a RuntimeError naming
    it (no hang); the runs that finished are stored."""
    from sharpness_generalization import train_run
    from studies import ResultStore, run_cached

    jobs, args, s, flat = _sharpness_tiny_jobs()
    good = jobs[1]  # the MLP
    bad = dict(good[2][0], model="resnet")
    store = ResultStore(tmp_path)
    with pytest.raises(RuntimeError, match="run 'run_bad' failed.*cfg\\['model'\\]"):
        run_cached(store, [("run_bad", train_run, (bad, flat, s, args)), good], workers=2)
    assert store.has(good[0])
    with pytest.raises(RuntimeError, match="run 'run_dies' failed"):
        run_cached(store, [("run_dies", os._exit, (3,)), ("run_too", os._exit, (4,))], workers=2)
    with pytest.raises(RuntimeError, match="run 'run_bad' failed"):
        run_cached(store, [("run_bad", train_run, (bad, flat, s, args))], workers=1)
    with pytest.raises(ValueError, match="workers: expected an int >= 1, got 0"):
        run_cached(store, [], workers=0)


def test_sharpness_batchnorm_lambda_max_is_that_of_the_chunked_train_mode_loss():
    """The VGGs' lambda_max: the Hessian of the mean loss over chunks of the training
    batch size, each normalised by its own BatchNorm statistics (the authors' train-mode
    measurement), against the explicit float64 Hessian of that function."""
    import torch
    from torch import nn

    import hesskit as hk
    from sharpness_generalization import hessian_objective

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    X, y = torch.randn(8, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def chunked_train_loss(flat, chunk):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        model.train()
        total = 0.0
        for start in range(0, len(X), chunk):
            out = torch.func.functional_call(model, params, (X[start:start + chunk],))
            part = y[start:start + chunk]
            total = total + nn.functional.cross_entropy(out, part) * len(part) / len(X)
        return total

    for chunk in (4, 8):
        H = torch.autograd.functional.hessian(lambda t: chunked_train_loss(t, chunk), theta)
        exact = torch.linalg.eigvalsh(H)[-1].item()
        obj = hessian_objective(model, X, y, chunk, train_mode=True)
        measured = hk.hooks.measure_metrics(obj, ("lambda_max",), tol=1e-10)["lambda_max"]
        assert measured == pytest.approx(exact, rel=1e-6)
        if chunk == 4:
            per_batch = exact
    assert abs(per_batch - exact) > 1e-3 * exact  # the chunks are part of the function
    eval_obj = hessian_objective(model, X, y, 4, train_mode=False)
    assert eval_obj.mode == "eval"


# ----------------------------------------------------------------- the figures' functions
def test_plot_functions_draw_and_check_arguments():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import hesskit as hk
    from studies.figures import (plot_edge_of_stability, plot_history, plot_layer_densities,
                                 plot_layer_distances, plot_method_bars,
                                 plot_sharpness_generalization)

    ax = plot_layer_distances({"epoch 1": ([0, 0.5, 1], [0.3, 0.1, 0.2])},
                              layer_names=["a", "b", "c"])
    assert ax.get_xlabel() == "relative depth" and len(ax.get_lines()) == 2  # curve + its minimum
    assert ax.get_lines()[1].get_xdata()[0] == 0.5
    with pytest.raises(ValueError, match="series"):
        plot_layer_distances({"e": ([0, 1], [1.0])})
    d = hk.spectral_density(torch.diag(torch.linspace(0, 1, 40, dtype=torch.float64)), n_steps=10)
    assert len(plot_layer_densities(d, {"a": d, "b": d}).get_lines()) == 3
    with pytest.raises(TypeError, match="full"):
        plot_layer_densities({"grid": []}, {})
    ax = plot_history({"x": ([1, 2], [3.0, 2.0])}, bands={"x": [0.1, 0.1]}, ylabel="trace",
                      log=True)
    assert ax.get_ylabel() == "trace" and ax.get_yscale() == "log"
    ax = plot_method_bars(["a", "b"], [1.0, 2.0], [0.1, 0.2], reference=[0.9, None])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    with pytest.raises(ValueError, match="same non-zero length"):
        plot_method_bars(["a"], [1.0, 2.0], [0.1])
    runs = [dict(lambda_max=2.0, test_accuracy=0.9, lr=0.1, batch_size=32, optimizer="SGD"),
            dict(lambda_max=1.0, test_accuracy=0.95, lr=0.5, batch_size=32, optimizer="SAM")]
    ax = plot_sharpness_generalization(runs, hollow_by="optimizer")
    faces = [c.get_facecolors() for c in ax.collections]
    assert len(faces[0]) == 1 and len(faces[1]) == 0  # SGD (met first) filled, SAM hollow
    assert len(ax.get_legend().get_texts()) == 2 + 1 + 2
    with pytest.raises(ValueError, match="no key 'dropout'"):
        plot_sharpness_generalization(runs, color_by="dropout")
    ax = plot_edge_of_stability([0.1, 1.0], [19.0, 1.5], labels=["a", "b"], markers=["o", "s"])
    assert ax.get_xscale() == "log" and ax.get_lines()[0].get_label() == "λ_max = 2/η"
    with pytest.raises(ValueError, match="positive"):
        plot_edge_of_stability([0.0], [1.0])
    plt.close("all")
