"""ResultStore, claims table and the shared command line."""
import json

import pytest
import torch

from hesskit.experiments import (
    Claim, ResultStore, experiment_parser, print_claims, run_size, to_jsonable,
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
