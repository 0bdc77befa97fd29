"""The landscape, alignment and decision-boundary figures: what is drawn, labels, and
argument checks."""
import io

import matplotlib
import matplotlib.figure

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hesskit.analysis.landscape import Landscape  # noqa: E402
from hesskit.plotting.alignment import plot_alignment_maps  # noqa: E402
from hesskit.plotting.boundary import plot_boundary_1d, plot_boundary_maps  # noqa: E402
from hesskit.plotting.landscape import plot_landscape  # noqa: E402


def _landscape(ndim):
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    y = torch.linspace(-2, 2, 4, dtype=torch.float64) if ndim == 2 else None
    loss = (x[:, None] ** 2 + y[None, :] ** 2 + 1) if ndim == 2 else x**2 + 1
    return Landscape(x=x, y=y, loss=loss, base_loss=1.0,
                     direction_norms=torch.ones(ndim, dtype=torch.float64))


def test_plot_landscape_1d_curve():
    ax = plot_landscape(_landscape(1), labels=["$v_1$"], title="t")
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), (np.linspace(-1, 1, 5) ** 2 + 1))
    assert ax.get_xlabel() == "$v_1$" and ax.get_ylabel() == "loss" and ax.get_title() == "t"
    plt.close(ax.figure)


def test_plot_landscape_2d_contour_orientation():
    ax = plot_landscape(_landscape(2), labels=("a", "b"), log=True)
    assert ax.get_xlabel() == "a" and ax.get_ylabel() == "b"
    # x spans the first axis of the grid, y the second
    assert ax.get_xlim() == (-1.0, 1.0) and ax.get_ylim() == (-2.0, 2.0)
    assert len(ax.figure.axes) == 2  # the colour bar
    plt.close(ax.figure)


def test_plot_landscape_bad_arguments():
    with pytest.raises(TypeError, match="landscape"):
        plot_landscape({"x": [0.0]})
    with pytest.raises(ValueError, match="levels"):
        plot_landscape(_landscape(2), levels=1)
    with pytest.raises(ValueError, match="labels"):
        plot_landscape(_landscape(2), labels=["only one"])
    bad = _landscape(1)
    with pytest.raises(ValueError, match="log"):
        plot_landscape(Landscape(bad.x, None, bad.loss - 1, 0.0, bad.direction_norms), log=True)
    plt.close("all")


def test_plot_alignment_maps_panels_and_titles():
    xx, yy = torch.meshgrid(torch.linspace(-1, 1, 6), torch.linspace(-1, 1, 4), indexing="xy")
    A = torch.stack([xx.ravel() / 2, -yy.ravel() / 2, xx.ravel() * 0], 1)
    fig = plot_alignment_maps(A, xx, yy, torch.tensor([3.0, 2.0, 0.5]), ncols=2,
                              points=torch.zeros(3, 2), point_labels=torch.tensor([0, 1, 1]))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == [
        "$v_{1}$, $\\lambda_{1}$ = 3", "$v_{2}$, $\\lambda_{2}$ = 2",
        "$v_{3}$, $\\lambda_{3}$ = 0.5"]
    mesh = panels[1].collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(4, 6),
                               np.abs(yy.numpy()) / 2, rtol=1e-6)
    plt.close(fig)


def test_plot_alignment_maps_bad_arguments():
    xx, yy = torch.meshgrid(torch.linspace(-1, 1, 3), torch.linspace(-1, 1, 3), indexing="xy")
    A = torch.zeros(9, 2)
    with pytest.raises(ValueError, match="A: expected shape"):
        plot_alignment_maps(torch.zeros(8, 2), xx, yy, [1.0, 2.0])
    with pytest.raises(ValueError, match="eigenvalues"):
        plot_alignment_maps(A, xx, yy, [1.0])
    with pytest.raises(ValueError, match="xx, yy"):
        plot_alignment_maps(A, xx, yy[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match="point_labels"):
        plot_alignment_maps(A, xx, yy, [1.0, 2.0], point_labels=[0])
    with pytest.raises(TypeError, match="eigenvalues"):
        plot_alignment_maps(A, xx, yy, object())


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


# ----------------------------------------------------------------------------- layout


def _outside_canvas(fig):
    """The axes whose drawn texts (tick labels, axis labels, title) a default ``savefig`` clips,
    with the box they need and the canvas, in pixels."""
    fig.savefig(io.BytesIO(), format="png")  # the saved layout, as a user gets it
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    clipped = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        box = ax.get_tightbbox(renderer)  # everything drawn for these axes, labels included
        if (box.x0 < canvas.x0 - 0.5 or box.y0 < canvas.y0 - 0.5
                or box.x1 > canvas.x1 + 0.5 or box.y1 > canvas.y1 + 0.5):
            clipped.append((i, tuple(round(v) for v in box.extents), tuple(canvas.extents)))
    return clipped


def _density():
    import hesskit as hk

    A = torch.diag(torch.linspace(-0.5, 120.0, 200, dtype=torch.float64))
    return hk.spectral_density(A, n_runs=2, n_steps=20)


def _default_size_figures():
    from hesskit import plotting as P

    d = _density()
    runs = [{"lambda_max": 20.0, "test_accuracy": 0.95, "lr": 0.1, "batch_size": 32},
            {"lambda_max": 60.0, "test_accuracy": 0.93, "lr": 0.02, "batch_size": 128}]
    return {
        "density": lambda: P.plot_density(d),
        "landscape_1d": lambda: plot_landscape(_landscape(1), labels=["$v_1$"]),
        "landscape_2d": lambda: plot_landscape(_landscape(2), labels=("a", "b")),
        "layer_distances": lambda: P.plot_layer_distances(
            {"epoch 1": ([0, 0.5, 1], [0.3, 0.1, 0.2])}, layer_names=["conv1", "conv2", "fc"]),
        "layer_densities": lambda: P.plot_layer_densities(d, {"fc": d}),
        "history": lambda: P.plot_history({"SGD": ([1, 2, 3], [5000.0, 4000.0, 3500.0])}, ylabel="trace"),
        "method_bars": lambda: P.plot_method_bars(["SGD", "SGD + L2", "SGD + HTR"], [2.0, 1.9, 1.8],
                                                  [0.1, 0.1, 0.2]),
        "rank_sweep": lambda: P.plot_rank_sweep([10, 20, 40], {"loss": [100, 200, 400]},
                                                xlabel="width", title="rank"),
        "sharpness_generalization": lambda: P.plot_sharpness_generalization(runs),
        "edge_of_stability": lambda: P.plot_edge_of_stability([0.02, 0.2], [95.0, 10.5]),
        "alignment_maps": lambda: plot_alignment_maps(
            torch.rand(24, 3), *torch.meshgrid(torch.linspace(-1, 1, 6), torch.linspace(-1, 1, 4),
                                               indexing="xy"), torch.tensor([3.0, 2.0, 0.5]), ncols=2),
    }


@pytest.mark.parametrize("name", sorted(_default_size_figures()))
def test_saved_default_size_figures_keep_their_labels_on_the_canvas(name):
    made = _default_size_figures()[name]()
    fig = made if isinstance(made, matplotlib.figure.Figure) else made.figure
    assert _outside_canvas(fig) == []
    plt.close(fig)
