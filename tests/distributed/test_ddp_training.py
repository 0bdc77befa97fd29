"""SAM, ASAM, SGDHTR and HessianTrace under DistributedDataParallel (2 gloo processes, CPU).

Each rank holds an EQUAL shard and a mean loss. DDP averages the ranks' gradients, so the
synchronized gradient is the full-batch one and a DDP run must give the single-process run
on the full data (float64, to 1e-10). All scenarios run in ONE launch (constructing DDP
imports torch._dynamo, seconds per process); each test checks one scenario.
"""
import multiprocessing

import pytest
import torch

import hesskit as hk
import helpers_distributed as hd

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")

RTOL = 1e-10


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The results saved by each rank of one DDP launch."""
    out = tmp_path_factory.mktemp("ddp_training")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=hd.ddp_training_worker,
                         args=(rank, hd.DDP_WORLD, str(out / "init"), str(out)))
             for rank in range(hd.DDP_WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a DDP worker process hung"
    assert [p.exitcode for p in procs] == [0] * hd.DDP_WORLD, "a DDP worker failed (traceback above)"
    return [torch.load(out / f"ddp_rank{rank}.pt", weights_only=True) for rank in range(hd.DDP_WORLD)]


def shards():
    _, X, y = hd.ddp_problem()
    return [hk.distributed.shard((X, y), rank, hd.DDP_WORLD) for rank in range(hd.DDP_WORLD)]


def assert_close(got, expected, what):
    err = float((got - expected).abs().max() / expected.abs().max())
    assert err <= RTOL, f"{what}: relative error {err:.2e}"


def assert_every_rank_equals(ranks, scenario, expected):
    for rank, results in enumerate(ranks):
        for key, value in expected.items():
            assert_close(results[scenario][key], value, f"{scenario} rank {rank} {key}")


def test_sam_perturbs_with_the_global_gradient_and_averages_the_second_pass(ranks):
    model, X, y = hd.ddp_problem()
    expected = hd.train_sam(model, X, y)
    # Closure calls alternate w, w + e: both the gradient that builds e (first pass) and
    # the one the base step uses (second pass) are the full-batch ones on every rank.
    assert expected["points"].shape[0] == 6
    assert_every_rank_equals(ranks, "sam", {k: expected[k] for k in ("points", "grads", "params")})
    # step() returns the rank's own loss; with equal shards their mean is the full-batch loss.
    assert_close(sum(r["sam"]["losses"] for r in ranks) / hd.DDP_WORLD, expected["losses"], "loss")


def test_sam_first_pass_under_no_sync_is_per_rank_perturbation(ranks):
    """The documented alternative: e_r from each rank's own gradient, second pass averaged."""
    model, _, _ = hd.ddp_problem()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(3):
        w = [p.detach().clone() for p in params]
        mean_grad = [torch.zeros_like(p) for p in params]
        for X, y in shards():
            g = torch.autograd.grad(hd.mse(model, X, y), params)
            norm = hd.flat(g).norm()
            with torch.no_grad():
                for p, g_p in zip(params, g):
                    p.add_(0.05 * g_p / norm)                       # w + e_r
            for total, h in zip(mean_grad, torch.autograd.grad(hd.mse(model, X, y), params)):
                total.add_(h / hd.DDP_WORLD)
            with torch.no_grad():
                for p, w_p in zip(params, w):
                    p.copy_(w_p)
        for p, g_p in zip(params, mean_grad):
            p.grad = g_p
        opt.step()
    expected = hd.flat(params)
    assert_every_rank_equals(ranks, "sam_local_perturbation", {"params": expected})
    # ... and it is not SAM with the global perturbation: the comparisons above can tell.
    gap = (ranks[0]["sam"]["params"] - expected).abs().max() / expected.abs().max()
    assert gap > 1e-6, float(gap)


def test_asam_with_groups_through_the_two_step_api(ranks):
    model, X, y = hd.ddp_problem()
    assert_every_rank_equals(ranks, "asam", hd.train_asam(model, X, y))


@pytest.mark.parametrize("scenario", ["htr", "htr_find_unused_parameters"])
def test_sgdhtr_penalty_gradient_is_synchronized(ranks, scenario):
    model, X, y = hd.ddp_problem()
    expected = hd.train_htr(model, X, y)
    assert_every_rank_equals(ranks, scenario, {"params": expected["params"]})
    # last_trace is the rank's own estimate: same probes everywhere, so their mean is the
    # estimate on the full batch.
    mean_trace = sum(r[scenario]["traces"] for r in ranks) / hd.DDP_WORLD
    assert_close(mean_trace, expected["traces"], "mean of the ranks' last_trace")
    assert not torch.equal(ranks[0][scenario]["traces"], ranks[1][scenario]["traces"])


def test_sgdhtr_with_static_graph_after_an_unpenalized_first_step(ranks):
    model, X, y = hd.ddp_problem()
    expected = hd.train_htr(model, X, y, start_step=1)
    assert_every_rank_equals(ranks, "htr_static_graph", {"params": expected["params"]})


def test_static_graph_module_is_refused_on_its_first_iteration(ranks):
    for results in ranks:
        message = results["static_graph_first_iteration"]
        assert "static_graph=True" in message and "start_step" in message, message


def test_hessian_trace_with_each_rank_drawing_its_own_probes(ranks):
    """Independent probes: the step follows the mean over ranks of loss_r + penalty_r."""
    model, _, _ = hd.ddp_problem()
    regs = [hd.hessian_trace_regularizer(10 + rank) for rank in range(hd.DDP_WORLD)]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        total = 0
        for reg, (X, y) in zip(regs, shards()):
            loss = hd.mse(model, X, y)
            total = total + loss + reg(loss, model)
        (total / hd.DDP_WORLD).backward()
        opt.step()
    assert_every_rank_equals(ranks, "hessian_trace_own_probes", {"params": hd.flat(model.parameters())})
