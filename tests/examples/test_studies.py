"""The studies' shared package: ResultStore, claims table, command line, training loops,
and hesskit's atomic write under them."""
import json

import pytest
import torch

from torch import nn

from hesskit._io import atomic_write
from studies import (
    Claim, ResultStore, accuracy, count_correct, evaluate, experiment_parser, num_threads,
    print_claims, run_size, to_jsonable, train, train_epoch,
)


def test_cached_computes_once_and_resumes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"values": torch.tensor([1.5, 2.0]), "n": 3}

    store = ResultStore(tmp_path / "run")
    assert store.cached("spec", compute) == {"values": [1.5, 2.0], "n": 3}
    assert ResultStore(tmp_path / "run").cached("spec", compute) == {"values": [1.5, 2.0], "n": 3}
    assert len(calls) == 1
    assert ResultStore(tmp_path / "run", fresh=True).cached("spec", compute)["n"] == 3
    assert len(calls) == 2
    assert json.loads((tmp_path / "run" / "spec.json").read_text())["n"] == 3
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_failed_write_leaves_previous_result(tmp_path):
    store = ResultStore(tmp_path)
    store.save("a", {"x": 1})
    with pytest.raises(TypeError):
        store.save("a", {"x": object()})
    assert store.load("a") == {"x": 1}
    with pytest.raises(KeyError):
        store.load("missing")
    with pytest.raises(ValueError, match="name"):
        store.path("../escape")


def test_claims_table_and_parser(capsys):
    text = print_claims([Claim("λ grows with batch size", "3.1 → 7.9", True),
                         Claim("C−1 outliers", "4 (expected 9)", False)])
    assert "| yes" in text and "| NO" in text and "1 of 2 claims hold" in text
    assert capsys.readouterr().out.strip() == text.strip()
    args = experiment_parser("x", "results/x").parse_args(["--smoke", "--seed", "3"])
    assert args.smoke and not args.full and args.seed == 3 and args.out == "results/x"
    parser = experiment_parser("x", "r")
    assert [run_size(parser.parse_args(a)) for a in ([], ["--smoke"], ["--full"])] == \
        ["default", "smoke", "full"]
    with pytest.raises(SystemExit):
        experiment_parser("x", "r").parse_args(["--smoke", "--full"])
    assert to_jsonable((torch.tensor(2.0), {1: [torch.ones(2)]})) == [2.0, {"1": [[1.0, 1.0]]}]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write(target, lambda tmp: tmp.write_text("one")) == target
    assert target.read_text() == "one"

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == \
        ["a.txt"]


def test_checkpoint_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    path = store.save_checkpoint("ckpt", {"w": torch.arange(3.0)})
    assert path.name == "ckpt.pt"
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3.0))


def test_num_threads_restores_the_count():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n:"):
        with num_threads(0):
            pass


def _problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2)).double(), X, y


def test_train_epoch_is_plain_minibatch_sgd():
    model, X, y = _problem()
    reference = nn.Sequential(nn.Linear(3, 2)).double()
    reference.load_state_dict(model.state_dict())
    loss = train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), X, y, 16,
                       torch.Generator().manual_seed(1))
    # the same epoch written out: one permutation, minibatches of 16, w -= lr * grad
    total = 0.0
    for idx in torch.randperm(50, generator=torch.Generator().manual_seed(1)).split(16):
        reference.zero_grad()
        batch_loss = nn.functional.cross_entropy(reference(X[idx]), y[idx])
        batch_loss.backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.1 * p.grad
        total += batch_loss.item() * len(idx)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert loss == pytest.approx(total / 50)


def test_train_repeats_and_evaluation_counts():
    a, X, y = _problem()
    b, _, _ = _problem()
    for m in (a, b):
        train(m, torch.optim.SGD(m.parameters(), lr=0.5), X, y, batch_size=8, epochs=3, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    right = int((a(X).argmax(1) == y).sum())
    assert count_correct(a, X, y, chunk=7) == right
    assert accuracy(a, X, y, chunk=7) == right / 50
    result = evaluate(a, X, y, chunk=7)
    assert result["accuracy"] == right / 50
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(a(X), y).item())


@pytest.mark.parametrize("name", ["studies.results", "studies.claims"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
