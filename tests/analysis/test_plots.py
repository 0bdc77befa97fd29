"""The landscape and alignment figures: what is drawn, labels, and argument checks;
matplotlib stays optional."""
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hesskit.analysis.landscape import Landscape  # noqa: E402
from hesskit.plotting.alignment import plot_alignment_maps  # noqa: E402
from hesskit.plotting.histogram import plot_eigenvalue_histograms  # noqa: E402
from hesskit.plotting.landscape import plot_landscape  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


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


def test_import_hesskit_does_not_import_matplotlib():
    code = "import sys, hesskit; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"hesskit\[plot\]"):
        plot_landscape(_landscape(1))
    with pytest.raises(ImportError, match="matplotlib"):
        plot_eigenvalue_histograms({"a": [1.0, 0.0]}, {"a": 1})


def test_plot_eigenvalue_histograms_outliers_and_checks():
    fig = plot_eigenvalue_histograms({"a": [5.0, 4.0, 0.1, 0.0, -0.1], "b": [1.0, 0.5, 0.0]},
                                     {"a": 2, "b": 0}, bins=10, title="t")
    ax_a, ax_b = fig.axes
    assert ax_a.get_yscale() == "log" and fig._suptitle.get_text() == "t"
    assert ax_a.get_title() == "a: P=5, 2 outliers" and ax_b.get_title() == "b: P=3, 0 outliers"
    counts = [sum(p.get_height() for p in c.patches) for c in ax_a.containers]
    assert counts == [3, 2]  # bulk, then outliers
    with pytest.raises(ValueError, match="spectra"):
        plot_eigenvalue_histograms({}, {})
    with pytest.raises(TypeError, match="spectra"):
        plot_eigenvalue_histograms({"a": object()}, {"a": 0})
    plt.close("all")
