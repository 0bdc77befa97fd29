"""The decision-boundary study's figures (examples/studies/figures/boundary.py):
what is drawn, labels, and argument checks."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

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
