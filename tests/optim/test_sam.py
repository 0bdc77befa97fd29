"""SAM / ASAM against a hand-written reference of the papers' update (float64)."""
import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

import hesskit.optim as hko

D_IN, D_OUT, N = 3, 2, 12
STEPS = 20


def make_model(seed=0, batchnorm=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(D_IN, 5), nn.Tanh(), nn.Linear(5, D_OUT)]
    if batchnorm:
        layers.insert(1, nn.BatchNorm1d(5))
    return nn.Sequential(*layers).double()


def make_batches(n_steps=STEPS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(N, D_IN, generator=g, dtype=torch.float64), torch.randn(N, D_OUT, generator=g, dtype=torch.float64))
        for _ in range(n_steps)
    ]


def loss_of(model, x, y):
    return ((model(x) - y) ** 2).mean()


def closure_for(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        return loss

    return closure


# ----------------------------------------------------------------------------- reference


def ref_grad(model, names, ws, x, y):
    """Gradient of the loss at the parameter values ``ws`` (independent of the model's tensors)."""
    leaves = [w.detach().clone().requires_grad_(True) for w in ws]
    loss = ((functional_call(model, dict(zip(names, leaves)), (x,)) - y) ** 2).mean()
    return list(torch.autograd.grad(loss, leaves))


def ref_sgd(lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    def update(ws, gs, state):
        out = []
        for i, (w, g) in enumerate(zip(ws, gs)):
            d = g + weight_decay * w
            if momentum:
                buf = d.clone() if i not in state else momentum * state[i] + d
                state[i] = buf
                d = d + momentum * buf if nesterov else buf
            out.append(w - lr * d)
        return out

    return update


def ref_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas

    def update(ws, gs, state):
        t = state["t"] = state.get("t", 0) + 1
        out = []
        for i, (w, g) in enumerate(zip(ws, gs)):
            g = g + weight_decay * w
            m = b1 * state.get(("m", i), torch.zeros_like(w)) + (1 - b1) * g
            v = b2 * state.get(("v", i), torch.zeros_like(w)) + (1 - b2) * g * g
            state[("m", i)], state[("v", i)] = m, v
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            out.append(w - lr * m_hat / (v_hat.sqrt() + eps))
        return out

    return update


def reference_trajectory(model, batches, update, rhos, scaled):
    """w_{t+1} = update(w_t, grad L(w_t + e_t)), e = rho T^2 g / ||T g||, T = |w| where ``scaled``, else 1."""
    names = [n for n, _ in model.named_parameters()]
    ws = [p.detach().clone() for p in model.parameters()]
    state, trajectory = {}, []
    for x, y in batches:
        g = ref_grad(model, names, ws, x, y)
        t = [w.abs() if s else torch.ones_like(w) for w, s in zip(ws, scaled)]
        norm = math.sqrt(sum(float(((ti * gi) ** 2).sum()) for ti, gi in zip(t, g)))
        e = [rho * ti * ti * gi / norm for rho, ti, gi in zip(rhos, t, g)]
        g_adv = ref_grad(model, names, [w + ei for w, ei in zip(ws, e)], x, y)
        ws = update(ws, g_adv, state)
        trajectory.append(ws)
    return trajectory


BASES = {
    "sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-2), ref_sgd(0.1, 0.9, 1e-2)),
    "sgd_nesterov": (
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.8, weight_decay=1e-3, nesterov=True),
        ref_sgd(0.05, 0.8, 1e-3, nesterov=True),
    ),
    "adam": (torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-3), ref_adam(1e-2, weight_decay=1e-3)),
}


def assert_trajectory(model, opt, batches, reference, use_closure=True):
    for k, (x, y) in enumerate(batches):
        if use_closure:
            opt.step(closure_for(opt, model, x, y))
        else:
            loss_of(model, x, y).backward()
            opt.first_step(zero_grad=True)
            loss_of(model, x, y).backward()
            opt.second_step(zero_grad=True)
        for p, w in zip(model.parameters(), reference[k]):
            torch.testing.assert_close(p.detach(), w, rtol=1e-11, atol=1e-12, msg=f"step {k}")


# ----------------------------------------------------------------------------- papers' update


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_matches_reference_update(base, adaptive):
    cls, kwargs, update = BASES[base]
    model, batches = make_model(), make_batches()
    n = len(list(model.parameters()))
    reference = reference_trajectory(make_model(), batches, update, [0.05] * n, [adaptive] * n)
    opt = hko.SAM(model.parameters(), cls, rho=0.05, adaptive=adaptive, **kwargs)
    assert_trajectory(model, opt, batches, reference)


def test_per_group_rho_and_adaptive_flags():
    # weights: ASAM with rho=0.5; biases: plain SAM with rho=0.02 -- one norm over both groups.
    model, batches = make_model(), make_batches()
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = hko.SAM(
        [{"params": weights, "rho": 0.5, "adaptive": True}, {"params": biases, "rho": 0.02}],
        torch.optim.SGD,
        lr=0.1,
        momentum=0.9,
    )
    is_weight = [n.endswith("weight") for n, _ in model.named_parameters()]
    rhos = [0.5 if w else 0.02 for w in is_weight]
    reference = reference_trajectory(make_model(), batches, ref_sgd(0.1, 0.9), rhos, is_weight)
    # the optimizer holds the weights first: compare in the model's order (reference is in that order)
    assert_trajectory(model, opt, batches, reference)


@pytest.mark.parametrize(
    "exclude", [("bias",), "bias", lambda name, p: p.ndim <= 1], ids=["tuple", "str", "callable"]
)
def test_adaptive_exclude_leaves_biases_unscaled(exclude):
    model, batches = make_model(), make_batches(8)
    params = model.named_parameters() if not callable(exclude) else model.parameters()
    opt = hko.SAM(params, torch.optim.SGD, rho=0.1, adaptive=True, adaptive_exclude=exclude, lr=0.1)
    scaled = [n.endswith("weight") for n, _ in model.named_parameters()]
    n = len(scaled)
    reference = reference_trajectory(make_model(), batches, ref_sgd(0.1), [0.1] * n, scaled)
    assert_trajectory(model, opt, batches, reference)


def test_closure_and_manual_paths_agree_bitwise():
    batches = make_batches(10)
    models = [make_model(), make_model()]
    opts = [hko.SAM(m.parameters(), torch.optim.Adam, rho=0.1, adaptive=True, lr=1e-2) for m in models]
    for x, y in batches:
        opts[0].step(closure_for(opts[0], models[0], x, y))
        loss_of(models[1], x, y).backward()
        opts[1].first_step(zero_grad=True)
        loss_of(models[1], x, y).backward()
        opts[1].second_step(zero_grad=True)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p, q)


def test_step_returns_loss_at_w_and_evaluates_closure_twice():
    model = make_model()
    x, y = make_batches(1)[0]
    opt = hko.SAM(model.parameters(), lr=0.1)
    losses = []

    def closure():
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        losses.append(loss.item())
        return loss

    expected = loss_of(model, x, y).item()
    assert opt.step(closure).item() == expected
    assert len(losses) == 2 and losses[0] == expected and losses[1] > losses[0]  # ascent step raised the loss


def test_zero_gradient_gives_no_perturbation():
    w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = hko.SAM([w], rho=0.1, adaptive=True, lr=0.1)
    w.grad = torch.zeros_like(w)
    opt.first_step()
    assert torch.equal(w.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt.second_step()
    assert torch.all(torch.isfinite(w))


def test_params_without_grad_are_left_alone():
    model = make_model()
    frozen = model[2].bias
    opt = hko.SAM(model.parameters(), rho=0.1, lr=0.1)
    x, y = make_batches(1)[0]
    before = frozen.detach().clone()
    loss_of(model, x, y).backward()
    frozen.grad = None
    opt.first_step()
    assert torch.equal(frozen.detach(), before)
    opt.restore()


# ----------------------------------------------------------------------------- optimizer plumbing


def test_state_dict_round_trip_gives_identical_continuation():
    batches = make_batches(10)

    def fresh():
        model = make_model()
        w = [p for n, p in model.named_parameters() if n.endswith("weight")]
        b = [p for n, p in model.named_parameters() if n.endswith("bias")]
        opt = hko.SAM([{"params": w}, {"params": b, "rho": 0.01}], torch.optim.Adam, rho=0.1, adaptive=True, lr=1e-2)
        return model, opt

    model, opt = fresh()
    for x, y in batches[:5]:
        opt.step(closure_for(opt, model, x, y))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    for x, y in batches[5:]:
        opt.step(closure_for(opt, model, x, y))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model2, opt2 = fresh()
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups is opt2.base_optimizer.param_groups and opt2.state is opt2.base_optimizer.state
    assert opt2.param_groups[1]["rho"] == 0.01 and opt2.param_groups[0]["adaptive"] is True
    assert len(opt2.base_optimizer.state) == 4  # Adam's moments came back
    for x, y in batches[5:]:
        opt2.step(closure_for(opt2, model2, x, y))
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_scheduler_on_sam_drives_the_base_optimizer():
    model, batches = make_model(), make_batches(6)
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    manual_model = make_model()
    manual = hko.SAM(manual_model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    for k, (x, y) in enumerate(batches):
        assert opt.base_optimizer.param_groups[0]["lr"] == 0.1 * 0.5 ** (k // 2)
        manual.base_optimizer.param_groups[0]["lr"] = 0.1 * 0.5 ** (k // 2)
        opt.step(closure_for(opt, model, x, y))
        manual.step(closure_for(manual, manual_model, x, y))
        sched.step()
    for p, q in zip(model.parameters(), manual_model.parameters()):
        assert torch.equal(p, q)
    opt.load_state_dict(opt.state_dict())  # re-linked groups: the scheduler still reaches the base optimizer
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_add_param_group_reaches_base_with_sam_defaults():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    opt = hko.SAM([a], torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [b], "lr": 0.01})
    assert len(opt.base_optimizer.param_groups) == 2 and opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[1]["rho"] == 0.2 and opt.param_groups[1]["momentum"] == 0.9
    with pytest.raises(ValueError, match="rho"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(1))], "rho": -1.0})


# ----------------------------------------------------------------------------- mixed precision


def sam_amp_step(opt, model, scaler, x, y, second_pass_overflow=False):
    """The GradScaler recipe of the SAM docstring."""
    scaler.scale(loss_of(model, x, y)).backward()
    scaler.unscale_(opt)
    if not opt.grads_finite():
        opt.zero_grad()
        scaler.update()
        return False
    opt.first_step(zero_grad=True)
    loss = loss_of(model, x, y) * (float("inf") if second_pass_overflow else 1.0)
    scaler.scale(loss).backward()
    opt.restore()
    scaler.step(opt.base_optimizer)
    scaler.update()
    opt.zero_grad()
    return True


def test_grad_scaler_recipe_equals_unscaled_sam():
    batches = make_batches(6)
    model, ref_model = make_model(), make_model()
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    ref = hko.SAM(ref_model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    for x, y in batches:
        assert sam_amp_step(opt, model, scaler, x, y)
        ref.step(closure_for(ref, ref_model, x, y))
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)  # power-of-two scaling is exact


def test_grad_scaler_skips_on_overflow_at_w():
    model = make_model()
    x, y = make_batches(1)[0]
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    before = [p.detach().clone() for p in model.parameters()]
    x_bad = x.clone()
    x_bad[0, 0] = float("inf")
    assert not sam_amp_step(opt, model, scaler, x_bad, y)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert len(opt.state) == 0 and all(p.grad is None for p in model.parameters())
    assert scaler.get_scale() == 2.0**11
    assert sam_amp_step(opt, model, scaler, x, y)  # the next iteration runs normally


def test_grad_scaler_skips_update_on_overflow_at_w_plus_e():
    model = make_model()
    x, y = make_batches(1)[0]
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    before = [p.detach().clone() for p in model.parameters()]
    assert sam_amp_step(opt, model, scaler, x, y, second_pass_overflow=True)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # restored exactly, no update
    assert len(opt.state) == 0  # the base optimizer never stepped
    assert scaler.get_scale() == 2.0**11


def test_grads_finite():
    w = nn.Parameter(torch.ones(3))
    opt = hko.SAM([w], lr=0.1)
    assert opt.grads_finite()  # no gradients at all
    w.grad = torch.tensor([0.0, 1.0, 2.0])
    assert opt.grads_finite()
    w.grad[1] = float("nan")
    assert not opt.grads_finite()


# ----------------------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("momentum", [0.1, None], ids=["ema", "cumulative"])
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_disable_running_stats_keeps_statistics_and_flags(momentum, norm):
    torch.manual_seed(0)
    layer = nn.BatchNorm1d(4, momentum=momentum) if norm == "batch" else nn.InstanceNorm1d(4, momentum=momentum, affine=True, track_running_stats=True)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), layer, nn.Tanh()).double()
    x = torch.randn(5, 2, 7, dtype=torch.float64)
    model(x)  # non-trivial statistics
    state = {k: v.clone() for k, v in layer.named_buffers()}
    with hko.disable_running_stats(model):
        out_inside = model(x)
    out_inside.square().sum().backward()  # backward after the block is fine
    grads_inside = [p.grad.clone() for p in model.parameters()]
    for k, v in layer.named_buffers():
        assert torch.equal(v, state[k]), k
    assert layer.momentum == momentum and layer.track_running_stats and layer.training
    model.zero_grad()
    out_outside = model(x)  # updates the statistics, normalizes with the same batch statistics
    out_outside.square().sum().backward()
    torch.testing.assert_close(out_inside, out_outside, rtol=0, atol=0)
    for g, p in zip(grads_inside, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=0)
    # outside the block the statistics do move (InstanceNorm ignores momentum=None: it never updates then)
    if momentum is not None:
        assert not torch.equal(layer.running_mean, state["running_mean"])
    if norm == "batch":
        assert layer.num_batches_tracked.item() == 2


def test_disable_running_stats_leaves_eval_mode_alone():
    model = make_model(batchnorm=True)
    model(make_batches(1)[0][0])
    model.eval()
    x = make_batches(1)[0][0]
    with hko.disable_running_stats(model):
        inside = model(x)
    torch.testing.assert_close(inside, model(x), rtol=0, atol=0)  # still the running statistics


def test_disable_running_stats_restores_on_exception():
    model = make_model(batchnorm=True)
    before = model[1].running_mean.clone()
    with pytest.raises(RuntimeError, match="boom"):
        with hko.disable_running_stats(model):
            model(make_batches(1)[0][0])
            raise RuntimeError("boom")
    assert torch.equal(model[1].running_mean, before)


def test_sam_with_batchnorm_counts_each_batch_once():
    model = make_model(batchnorm=True)
    opt = hko.SAM(model.parameters(), lr=0.1)
    for x, y in make_batches(3):
        loss_of(model, x, y).backward()
        after_first_pass = {k: v.clone() for k, v in model[1].named_buffers()}
        opt.first_step(zero_grad=True)
        with hko.disable_running_stats(model):
            loss_of(model, x, y).backward()
        opt.second_step(zero_grad=True)
        for k, v in model[1].named_buffers():
            assert torch.equal(v, after_first_pass[k]), k
    assert model[1].num_batches_tracked.item() == 3


# ----------------------------------------------------------------------------- bad input


def test_bad_arguments():
    params = [nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="rho"):
        hko.SAM(params, rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="rho"):
        hko.SAM(params, rho=float("nan"), lr=0.1)
    with pytest.raises(TypeError, match="rho"):
        hko.SAM(params, rho="0.05", lr=0.1)
    with pytest.raises(ValueError, match="base_optimizer"):
        hko.SAM(params, torch.optim.SGD(params, lr=0.1), lr=0.1)
    with pytest.raises(ValueError, match="base_optimizer"):
        hko.SAM(params, nn.Linear, lr=0.1)
    with pytest.raises(TypeError, match="adaptive"):
        hko.SAM(params, adaptive="yes", lr=0.1)
    with pytest.raises(TypeError, match="adaptive_exclude"):
        hko.SAM(params, adaptive=True, adaptive_exclude=[1, 2], lr=0.1)
    with pytest.raises(ValueError, match="named_parameters"):
        hko.SAM(params, adaptive=True, adaptive_exclude="bias", lr=0.1)
    with pytest.raises(ValueError, match="lr|learning rate"):
        hko.SAM(params, lr=-1.0)


def test_misuse_of_the_two_step_api():
    w = nn.Parameter(torch.ones(2))
    opt = hko.SAM([w], lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="first_step"):
        opt.second_step()
    w.grad = torch.ones(2)
    opt.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="w \\+ e"):
        opt.state_dict()
    opt.second_step()
    opt.state_dict()


def test_failing_second_closure_restores_w():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = hko.SAM([w], rho=0.5, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second pass failed")
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="second pass"):
        opt.step(closure)
    assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
    opt.state_dict()  # not left half-way


# ----------------------------------------------------------------------------- drop-in loop styles


class CountingNet(nn.Module):
    """make_model(batchnorm=True) that counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.net = make_model(batchnorm=True)
        self.forwards = 0

    def forward(self, x):
        self.forwards += 1
        return self.net(x)


def run_style(style, opt, model, x, y):
    """One SAM step in one of the loop styles users bring along."""
    if style == "closure":  # hesskit / torch.optim style: the closure zeroes the gradients
        return opt.step(closure_for(opt, model, x, y))
    if style == "davda54":  # davda54/sam README: backward outside, closure without zero_grad
        def closure():
            loss = loss_of(model, x, y)
            loss.backward()
            return loss

        loss_of(model, x, y).backward()
        out = opt.step(closure)
        opt.zero_grad()
        return out
    assert style == "two_step"  # first_step / second_step, no disable_running_stats around the second pass
    loss_of(model, x, y).backward()
    opt.first_step(zero_grad=True)
    loss_of(model, x, y).backward()
    opt.second_step(zero_grad=True)
    return None


STYLES = ["closure", "davda54", "two_step"]


@pytest.mark.parametrize("style", STYLES)
def test_batchnorm_statistics_come_from_the_first_pass_only(style):
    model = CountingNet()
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
    bn = model.net[1]
    for x, y in make_batches(3):
        at_w = copy.deepcopy(model.net)
        at_w(x)  # a single forward pass at w: the statistics SAM must keep
        run_style(style, opt, model, x, y)
        for name, buffer in bn.named_buffers():
            assert torch.equal(buffer, dict(at_w[1].named_buffers())[name]), name
    assert bn.num_batches_tracked.item() == 3
    assert bn.track_running_stats  # flags restored after the step


@pytest.mark.parametrize("style", STYLES)
def test_every_style_gives_the_same_trajectory_with_two_passes_per_step(style):
    batches = make_batches(4)
    model, ref = CountingNet(), CountingNet()
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    ref_opt = hko.SAM(ref.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    for k, (x, y) in enumerate(batches):
        run_style(style, opt, model, x, y)
        assert model.forwards == 2 * (k + 1), "more than two passes per SAM step"
        loss_of(ref, x, y).backward()
        ref_opt.first_step(zero_grad=True)
        with hko.disable_running_stats(ref):
            loss_of(ref, x, y).backward()
        ref_opt.second_step(zero_grad=True)
    for (name, p), q in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(p, q), name


def test_davda54_pattern_returns_none_and_reuses_the_gradient_at_w():
    model = make_model()
    x, y = make_batches(1)[0]
    opt = hko.SAM(model.parameters(), lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        loss = loss_of(model, x, y)
        loss.backward()
        return loss

    loss_of(model, x, y).backward()
    assert opt.step(closure) is None  # the caller holds the loss at w, as with davda54/sam
    assert len(calls) == 1


def test_gradients_zeroed_in_place_are_not_taken_for_a_gradient_at_w():
    # zero_grad(set_to_none=False) before step(closure): the closure must still run at w.
    model, batches = make_model(), make_batches(5)
    n = len(list(model.parameters()))
    reference = reference_trajectory(make_model(), batches, ref_sgd(0.1), [0.1] * n, [False] * n)
    opt = hko.SAM(model.parameters(), rho=0.1, lr=0.1)
    for k, (x, y) in enumerate(batches):
        opt.zero_grad(set_to_none=False)
        opt.step(closure_for(opt, model, x, y))
        for p, w in zip(model.parameters(), reference[k]):
            torch.testing.assert_close(p.detach(), w, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("style", ["closure", "two_step"])
def test_scheduler_sees_a_real_step_in_every_style(style):
    model, batches = make_model(), make_batches(4)
    opt = hko.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in batches:
            run_style(style, opt, model, x, y)
            sched.step()
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_step_hooks_fire_once_per_completed_sam_step():
    model = make_model()
    opt = hko.SAM(model.parameters(), lr=0.1)
    seen = []
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(o._backup is None))
    for style in STYLES:
        run_style(style, opt, model, *make_batches(1)[0])
    assert seen == [True, True, True]  # after the step, back at w
