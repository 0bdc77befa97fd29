"""The decision-boundary study's figures (examples/studies/figures/boundary.py):
what is drawn, labels, and argument checks."""
import matplotlib
import matplotlib.figure

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import clipped_axes  # noqa: E402
from studies.figures.boundary import plot_boundary_1d, plot_boundary_maps  # noqa: E402


def test_plot_boundary_1d_panels_boundary_and_marks():
    x = torch.linspace(0, 2, 41, dtype=torch.float64)
    outputs = torch.stack([x - 0.52, torch.zeros_like(x)], 1)   # class 0 right of .52
    A = torch.stack([torch.exp(-(x - 0.5) ** 2), -0.5 * torch.ones_like(x)], 1)
    fig = plot_boundary_1d(x, outputs, A, [2.0, 0.1], points=[0.2, 1.5], point_labels=[1, 0],
                           marked={"$x_b$": [0.52], "extreme": [0.2, 1.5]}, title="t")
    ax_out, ax_align, ax_data = fig.axes[:3]
    assert fig._suptitle.get_text() == "t"
    # the boundary: the midpoint of the grid cell where the arg-max changes
    vlines = [ln for ln in ax_out.get_lines() if ln.get_linestyle() == ":"]
    assert len(vlines) == 1 and vlines[0].get_xdata()[0] == pytest.approx(0.525)
    curves = [ln for ln in ax_align.get_lines() if ln.get_linestyle() != ":"]
    np.testing.assert_allclose(curves[1].get_ydata(), 0.5)          # |A| is drawn
    assert [t.get_text() for t in ax_align.get_legend().get_texts()] == [
        "$|A_{1}(x)|$, $\\lambda_{1}$ = 2", "$|A_{2}(x)|$, $\\lambda_{2}$ = 0.1"]
    assert [t.get_text() for t in ax_data.get_legend().get_texts()] == ["$x_b$", "extreme"]
    plt.close(fig)
    fig = plot_boundary_1d(x, outputs, A[:, :1], [2.0], boundary=[0.3, 1.0])
    assert len([ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"]) == 2
    plt.close(fig)


def test_plot_boundary_1d_bad_arguments():
    x = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="outputs"):
        plot_boundary_1d(x, torch.zeros(4, 2), torch.zeros(5, 1), [1.0])
    with pytest.raises(ValueError, match="alignments"):
        plot_boundary_1d(x, torch.zeros(5, 2), torch.zeros(5), [1.0])
    with pytest.raises(ValueError, match="eigenvalues"):
        plot_boundary_1d(x, torch.zeros(5, 2), torch.zeros(5, 2), [1.0])
    plt.close("all")


def test_plot_boundary_maps_marked_points():
    xx, yy = torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 4), indexing="xy")
    pred = (xx > 0).long()
    fig = plot_boundary_maps(xx, yy, pred, torch.zeros(20, 2), [1.0, 0.5],
                             marked={"$x_b$": [0.0, 0.1], "pair": [[0.5, 0.5], [-0.5, 0.5]]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["$x_b$", "pair"]
    offsets = [c.get_offsets() for c in ax.collections if c.get_label() in ("$x_b$", "pair")]
    np.testing.assert_allclose(offsets[0], [[0.0, 0.1]])
    np.testing.assert_allclose(offsets[1], [[0.5, 0.5], [-0.5, 0.5]])
    plt.close(fig)


def test_plot_boundary_maps_spectrum_panel_marks_the_outliers():
    xx, yy = torch.meshgrid(torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 4), indexing="xy")
    lam = [5.0, 4.0, 0.1, 0.0, -0.1, 0.05]
    fig = plot_boundary_maps(xx, yy, (xx > 0).long(), torch.zeros(20, 2), [5.0, 4.0],
                             spectrum=(lam, 2), bins=10)
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    hist = shown[3]                       # regions, |A_1|, |A_2|, then the spectrum
    assert hist.get_yscale() == "log" and "2 outliers" in hist.get_title()
    counts = [sum(p.get_height() for p in c.patches) for c in hist.containers]
    assert counts == [4, 2]               # bulk, then the two outliers in red
    plt.close(fig)


def _study_figures():
    import hesskit as hk
    from studies.figures.layers import (plot_history, plot_layer_densities,
                                        plot_layer_distances, plot_method_bars)
    from studies.figures.rank import plot_rank_sweep
    from studies.figures.sharpness import plot_edge_of_stability, plot_sharpness_generalization

    d = hk.spectral_density(torch.diag(torch.linspace(-0.5, 120.0, 200, dtype=torch.float64)),
                            n_runs=2, n_steps=20)
    runs = [{"lambda_max": 20.0, "test_accuracy": 0.95, "lr": 0.1, "batch_size": 32},
            {"lambda_max": 60.0, "test_accuracy": 0.93, "lr": 0.02, "batch_size": 128}]
    return {
        "layer_distances": lambda: plot_layer_distances(
            {"epoch 1": ([0, 0.5, 1], [0.3, 0.1, 0.2])}, layer_names=["conv1", "conv2", "fc"]),
        "layer_densities": lambda: plot_layer_densities(d, {"fc": d}),
        "history": lambda: plot_history({"SGD": ([1, 2, 3], [5000.0, 4000.0, 3500.0])},
                                        ylabel="trace"),
        "method_bars": lambda: plot_method_bars(["SGD", "SGD + L2", "SGD + HTR"],
                                                [2.0, 1.9, 1.8], [0.1, 0.1, 0.2]),
        "rank_sweep": lambda: plot_rank_sweep([10, 20, 40], {"loss": [100, 200, 400]},
                                              xlabel="width", title="rank"),
        "sharpness_generalization": lambda: plot_sharpness_generalization(runs),
        "edge_of_stability": lambda: plot_edge_of_stability([0.02, 0.2], [95.0, 10.5]),
    }


@pytest.mark.parametrize("name", sorted(_study_figures()))
def test_saved_default_size_study_figures_keep_their_labels_on_the_canvas(name):
    made = _study_figures()[name]()
    fig = made if isinstance(made, matplotlib.figure.Figure) else made.figure
    assert clipped_axes(fig) == []
    plt.close(fig)
