"""examples/htr.py: the authors' per-method schedules, and methods that continue from
the epochs they share with another method giving the numbers of a run from scratch."""
import pytest
import torch
from tqdm.auto import tqdm

import hesskit as hk
import htr
from studies import ResultStore

TINY = dict(seeds=1, scale=0.01, last=2, train_limit=None, lr=0.05, batch_size=32, gamma=1e-3,
            n_probes=2, every=2, start=3, trace_probes=2, per_class=2)


def tiny_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 1, 32, 32, generator=g)
    y = torch.arange(100) % 10
    return (X[:80], y[:80]), (X[80:], y[80:])


def test_lr_factor_follows_multisteplr():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, [2, 4], gamma=0.1)
    for epoch in range(1, 8):
        assert opt.param_groups[0]["lr"] == pytest.approx(htr.lr_factor([2, 4], epoch))
        opt.step()
        scheduler.step()


def test_shared_epochs_of_the_authors_schedules():
    s = htr.SETTINGS["default"]  # tenfold shorter: SGD 40 (20, 30), L2 50 (30, 40), HTR 40 (20, 30)
    assert htr.shared_epochs("SGD", "SGD + L2", "mnist", s) == 20  # lr x0.1 after epoch 20 in SGD only
    assert htr.shared_epochs("SGD", "SGD + HTR", "mnist", s) == 14  # penalty from epoch 15
    assert htr.shared_epochs("SGD + L2", "SGD + HTR", "mnist", s) == 14
    # FashionMNIST: SGD + L2 has weight decay 1e-5, so it shares nothing
    assert htr.shared_epochs("SGD", "SGD + L2", "fashion_mnist", s) == 0
    assert htr.shared_epochs("SGD", "SGD + HTR", "fashion_mnist", s) == 14
    assert htr.shared_epochs("SGD", "SGD", "mnist", s) == 40


def test_continued_runs_equal_runs_from_scratch(tmp_path):
    data, s = tiny_data(), TINY
    assert htr.shared_epochs("SGD", "SGD + L2", "mnist", s) == 2
    assert htr.shared_epochs("SGD", "SGD + HTR", "mnist", s) == 2
    with tqdm(disable=True) as bar:
        runs = htr.train_seed(3, data, s, "mnist", ResultStore(tmp_path), bar)
    assert [r["method"] for r in runs] == list(htr.METHODS)
    assert [r["continued_from"] for r in runs] == [None, {"method": "SGD", "epoch": 2},
                                                   {"method": "SGD", "epoch": 2}]
    subset = hk.data.per_class_subset(*data[0], s["per_class"], seed=0)
    for run in runs:
        epochs, milestones, l2 = htr.schedule(run["method"], "mnist", s)
        state = htr.train_epochs(htr.start_state(3, data, s, l2), run["method"], milestones,
                                 epochs, data, subset, s)
        for key, values in state["history"].items():
            assert run[key] == values, (run["method"], key)  # bit for bit
    htr_run = runs[2]
    assert htr_run["minibatch_trace"][:2] == [None, None]
    assert all(v is not None for v in htr_run["minibatch_trace"][2:])
    # a second call loads every run from the store
    with tqdm(disable=True) as bar:
        assert htr.train_seed(3, data, s, "mnist", ResultStore(tmp_path), bar) == runs
