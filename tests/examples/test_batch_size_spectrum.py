"""The large-batch study's pieces (examples/batch_size_spectrum.py and its figures):
the surface the study draws, its 3-D figure, the training schedule, the outlier reading.
The whole script runs in tests/examples/test_boundary_rank_batch.py (smoke mode)."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import hesskit as hk  # noqa: E402
from helpers import clipped_axes  # noqa: E402
from batch_size_spectrum import SIZES, epochs_for, log_gap_outliers, study_surface  # noqa: E402
from studies.figures.batch_size import plot_batch_landscapes  # noqa: E402


def test_study_surface_is_w_plus_c1_v2_plus_c2_v1():
    """The study's grid: loss[i, j] = L(W + c_i v_2 + c_j v_1) (its c1 along the second
    eigenvector, c2 along the first), checked against the loss written out in float64."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.arange(12) % 3
    head = nn.Linear(4, 3).double()
    obj = hk.Objective(head, nn.CrossEntropyLoss(), (X, y), params="weight")
    V, _ = torch.linalg.qr(torch.randn(12, 2, generator=g, dtype=torch.float64))
    coords = torch.tensor([-0.3, 0.0, 0.3], dtype=torch.float64)
    surface = study_surface(obj, V, coords)

    def loss_at(c1, c2):
        W = head.weight.detach() + (c1 * V[:, 1] + c2 * V[:, 0]).reshape(3, 4)
        return nn.functional.cross_entropy(X @ W.T + head.bias.detach(), y).item()

    for i, j in ((0, 2), (2, 0), (0, 0), (1, 2)):
        assert surface.loss[i, j].item() == pytest.approx(loss_at(coords[i], coords[j]),
                                                          rel=1e-12)
    with pytest.raises(ValueError, match="eigenvectors"):
        study_surface(obj, V[:, :1], coords)


def _bowl(scale, n=7):
    x = torch.linspace(-0.3, 0.3, n, dtype=torch.float64)
    loss = 0.1 + scale * (x[:, None] ** 2 + 2 * x[None, :] ** 2)
    return {"x": x.tolist(), "y": x.tolist(), "loss": loss.tolist(), "base_loss": 0.1}


def test_plot_batch_landscapes_3d_panels_share_the_z_scale():
    landscapes = {1024: _bowl(4.0), 128: _bowl(1.0), 256: _bowl(2.0)}
    fig = plot_batch_landscapes(landscapes, title="t")
    assert fig._suptitle.get_text() == "t"
    assert len(fig.axes) == 3 and all(ax.name == "3d" for ax in fig.axes)
    assert [ax.get_title().splitlines()[0] for ax in fig.axes] == [
        "batch 128", "batch 256", "batch 1024"]            # sorted by batch size
    hi = 0.1 + 4.0 * 3 * 0.09                               # the sharpest surface's corner
    for ax in fig.axes:
        assert ax.get_zlim() == pytest.approx((0.0, hi))    # one z scale for every panel
        assert "v_2" in ax.get_xlabel() and "v_1" in ax.get_ylabel()
        surfaces = [c for c in ax.collections if c.get_array() is not None]
        assert len(surfaces) == 1 and surfaces[0].norm.vmax == pytest.approx(hi)
    assert clipped_axes(fig) == []
    plt.close(fig)


def test_plot_batch_landscapes_bad_arguments():
    with pytest.raises(ValueError, match="landscapes"):
        plot_batch_landscapes({})
    one_d = {"x": [0.0, 1.0], "y": None, "loss": [1.0, 2.0]}
    with pytest.raises(ValueError, match="landscapes"):
        plot_batch_landscapes({128: one_d})
    plt.close("all")


@pytest.mark.parametrize("n_train", [4000, 1437, 50000])
def test_default_schedule_gives_every_batch_size_the_same_steps(n_train):
    cfg = SIZES["default"]
    target = cfg["epochs"] * math.ceil(n_train / 128)
    for bs in (128, 256, 512, 1024):
        steps = epochs_for(bs, n_train, cfg) * math.ceil(n_train / bs)
        assert target <= steps < target + math.ceil(n_train / bs)   # within one epoch


def test_full_schedule_is_the_authors_equal_epochs():
    cfg = SIZES["full"]
    assert cfg["epochs"] == 100 and cfg["n_hessian"] == 20000
    # 100 epochs at every batch size: 39 100 / 19 600 / 9 800 / 4 900 steps on CIFAR-10
    assert [epochs_for(bs, 50000, cfg) * math.ceil(50000 / bs) for bs in (128, 256, 512, 1024)
            ] == [39100, 19600, 9800, 4900]


def test_log_gap_outliers():
    assert log_gap_outliers([100.0, 90.0, 80.0, 1.0, 0.9, 0.8]) == 3
    assert log_gap_outliers([0.8, 100.0, 1.0, 90.0]) == 2          # any order
    assert log_gap_outliers([5.0, -1.0, -2.0]) == 0                # one positive value
    # only the top 20 are read: the bigger gap after them does not count
    values = [100.0 * 0.9 ** i for i in range(5)] + [10.0 * 0.9 ** i for i in range(15)]
    assert log_gap_outliers(values + [1e-9]) == 5
