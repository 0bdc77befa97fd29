"""Smoke runs of three reproduction scripts: decision boundary, Hessian rank, batch size.

Each script runs with ``--smoke`` in a subprocess (as a user would run it); the
tests check that it exits cleanly, prints its claims table, and writes JSON and
PNG results whose numbers are finite and consistent with the library.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hesskit as hk

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_script(name, out, *extra):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # this tree
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--smoke",
                           "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "claims hold on this run" in proc.stdout
    assert "| holds" in proc.stdout
    return proc.stdout


def load(out, name):
    path = out / f"{name}.json"
    assert path.is_file(), f"missing {path}"
    return json.loads(path.read_text())


def finite(values):
    return all(math.isfinite(v) for v in values)


def check_claims(summary):
    assert summary["claims"], "no claims recorded"
    for claim in summary["claims"]:
        assert set(claim) == {"claim", "measured", "holds"}
        assert isinstance(claim["holds"], bool)


def check_boundary_analysis(out, name, dim):
    """One setup's stored analysis: spectrum, G_theta, grid quantities and the margin."""
    a = load(out, f"analysis_{name}")
    lam = a["eigenvalues"]
    assert len(lam) == a["n_params"] and finite(lam)
    assert all(x >= y for x, y in zip(lam, lam[1:])), "eigenvalues not descending"
    assert 0 <= a["n_outliers"] <= a["n_params"] // 2
    assert 0.0 <= a["G_theta"] <= 1.0 and 0.0 < a["threshold"] <= 1.0
    assert len(a["max_alignment"]) == a["n_params"]
    # G_theta: the share of eigenvectors whose largest |A_i(x_n)| passes the threshold
    assert a["G_theta"] == pytest.approx(
        sum(v > a["threshold"] for v in a["max_alignment"]) / a["n_params"])
    assert a["n_outliers"] == hk.spectral.count_outliers(lam, bins=200)
    n_grid = len(a["grid_x"]) ** dim
    assert len(a["grid_alignment"]) == n_grid == len(a["predicted"])
    assert all(abs(v) <= 1 + 1e-9 for row in a["grid_alignment"] for v in row)
    assert all(len(p) == dim for p in a["boundary"])
    m = a["margin"]
    assert len(m["x_b"]) == dim and abs(m["alignment_x_b"]) <= 1 + 1e-9
    e = m["extreme"]
    assert m["estimate"] == min(e["distance_max"], e["distance_min"]) >= 0
    assert e["alignment_max"] >= e["alignment_min"]
    assert m["true_margin"] >= 0 and m["x_b_to_boundary"] >= 0
    # the authors' search: one start drawn from N(0, I) with the run's seed (0)
    start = torch.randn(1, dim, generator=torch.Generator().manual_seed(0))[0]
    assert m["start"] == pytest.approx(start.tolist())
    return a


def test_decision_boundary_smoke(tmp_path):
    out = tmp_path / "decision_boundary"
    run_script("decision_boundary.py", out)
    summary = load(out, "summary")
    check_claims(summary)
    setups = ("normal", "adversarial", "large_norm")
    assert set(summary["setups"]) == set(setups)
    cfg = summary["config"]
    assert (cfg["lr"], cfg["margin_steps"], cfg["margin_milestone"]) == (0.02, 200, 50)
    # the random-label stage: plain SGD on a permutation of the training labels
    stage = summary["random_label_stage"]
    assert 0 <= stage["train_random_labels"]["accuracy"] <= 1
    random_model = load(out, "model_random_labels")
    assert all(isinstance(v, list) for v in random_model["state"].values())
    for name in setups:
        a = check_boundary_analysis(out, name, dim=2)
        assert summary["setups"][name]["G_theta"] == a["G_theta"]
        assert summary["setups"][name]["margin"]["estimate"] == a["margin"]["estimate"]
    assert any(c["claim"].startswith("margin estimate") for c in summary["claims"])
    for fig in ("eigenvalue_histograms", "training_alignment", "boundary_normal",
                "boundary_adversarial", "boundary_large_norm"):
        assert (out / f"{fig}.png").stat().st_size > 1000


def test_decision_boundary_toy_1d_smoke(tmp_path):
    out = tmp_path / "toy"
    run_script("decision_boundary.py", out, "--data", "toy_1d")
    summary = load(out, "summary")
    check_claims(summary)
    assert list(summary["setups"]) == ["normal"]
    assert summary["config"]["width"] == 10
    a = check_boundary_analysis(out, "normal", dim=1)
    assert a["n_params"] == 1 * 10 + 10 + 10 * 2 + 2            # the 1-10-2 network
    assert len(a["grid_outputs"]) == len(a["grid_x"]) and len(a["grid_outputs"][0]) == 2
    assert any(c["claim"].startswith("1-D") for c in summary["claims"])
    assert (out / "boundary_normal.png").stat().st_size > 1000


def test_decision_boundary_checkerboard_noisy_init_smoke(tmp_path):
    out = tmp_path / "checkerboard"
    run_script("decision_boundary.py", out, "--data", "checkerboard")
    summary = load(out, "summary")
    assert set(summary["setups"]) == {"normal", "noisy_init"}
    assert load(out, "model_noisy_data")["state"]     # the pre-training on the noisy set
    for name in ("normal", "noisy_init"):
        check_boundary_analysis(out, name, dim=2)


def test_hessian_rank_smoke(tmp_path):
    out = tmp_path / "hessian_rank"
    run_script("hessian_rank.py", out)
    summary = load(out, "summary")
    check_claims(summary)
    n_points = 0
    for sweep in ("sample", "width", "depth"):
        for loss in ("mse", "ce", "logcosh"):
            for point in load(out, f"{sweep}_{loss}_linear"):
                expected = hk.theory.hessian_rank_predictions(point["input_rank"], 10,
                                                              point["widths"], loss=loss)
                assert point["predicted"] == expected
                # the study's result: exact for linear networks
                assert point["empirical"] == point["predicted"], (sweep, loss, point)
                assert 0 < point["empirical"]["loss"] <= point["n_params"]
                n_points += 1
    assert n_points > 0
    relu = load(out, "width_mse_relu")
    assert all(0 < p["empirical"]["loss"] <= p["n_params"] for p in relu)
    assert [c["holds"] for c in summary["claims"][:3]] == [True] * 3  # the linear claims
    assert summary["config"]["data"] == "mnist_sample"
    for fig in ("rank_sweeps", "rank_fraction_sweeps"):
        assert (out / f"{fig}.png").stat().st_size > 1000


def test_batch_size_spectrum_smoke(tmp_path):
    out = tmp_path / "batch_size_spectrum"
    run_script("batch_size_spectrum.py", out)
    summary = load(out, "summary")
    check_claims(summary)
    assert set(summary["batch_sizes"]) == {"128", "256", "512", "1024"}
    assert summary["config"]["data"] == "mnist_sample"
    # the default schedule: every batch size trained for the same number of steps
    assert len({r["steps"] for r in summary["batch_sizes"].values()}) == 1
    for bs in (128, 256, 512, 1024):
        r = load(out, f"batch_{bs}")
        top = r["top_eigenvalues"]
        assert len(top) == min(20, r["n_params_hessian"]) and finite(top)
        assert all(x >= y for x, y in zip(top, top[1:]))
        assert len(r["eigenvalues"]) == r["n_params_hessian"]
        assert min(r["eigenvalues"]) > -1e-4 * max(1.0, top[0])   # CE last-layer block is PSD
        surface = r["landscape"]
        n = len(surface["x"])
        assert len(surface["loss"]) == n and all(len(row) == n for row in surface["loss"])
        assert finite([v for row in surface["loss"] for v in row])
        # the surface is taken on the penultimate features: same loss at the centre
        assert math.isclose(r["hessian_loss"], r["head_loss"], rel_tol=1e-4)
        assert math.isclose(surface["base_loss"], r["head_loss"], rel_tol=1e-9)
    for fig in ("top_eigenvalues", "landscapes"):
        assert (out / f"{fig}.png").stat().st_size > 1000


def _write_fake_mnist(folder, n_train=600, n_test=100, seed=0):
    """Random images and labels in MNIST's IDX files (the ``--dataset`` code path).

    The labels must be generic: with one label for every sample of a subset the
    squared-error residuals are degenerate and rank H_F falls below the prediction.
    """
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, array, code in (
                ("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 3),
                ("labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8), 1)):
            header = struct.pack(">BBBB", 0, 0, 0x08, code) + struct.pack(f">{code}I",
                                                                         *array.shape)
            (folder / f"{prefix}-{kind}").write_bytes(header + array.tobytes())
    return folder


def test_rank_and_batch_size_read_local_files(tmp_path):
    root = _write_fake_mnist(tmp_path / "mnist")
    run_script("hessian_rank.py", tmp_path / "rank", "--dataset", "mnist", "--data-root",
               str(root), "--no-relu")
    summary = load(tmp_path / "rank", "summary")
    assert summary["config"]["data"] == "mnist"
    assert [c["holds"] for c in summary["claims"]] == [True] * 3
    run_script("batch_size_spectrum.py", tmp_path / "batch", "--dataset", "mnist",
               "--data-root", str(root))
    r = load(tmp_path / "batch", "batch_128")
    assert r["n_params_hessian"] == 10 * 16   # yao_cnn(width_mult=1/16): 16 features
