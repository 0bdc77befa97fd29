"""Explicit oracles shared by the tests: dense Hessians and GGNs via torch.func.

Import as ``from helpers import explicit_hessian`` (``tests/`` is on pytest's pythonpath).
"""
import io

import torch
from torch import nn
from torch.func import functional_call


def _flat_loss_fn(model, loss_fn, X, y, names):
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def unflat(flat):
        return {n: t.reshape(s) for n, t, s in zip(names, flat.split(sizes), shapes)}

    def outputs(flat):
        return functional_call(model, unflat(flat), (X,))

    def loss(flat):
        return loss_fn(outputs(flat), y)

    return flat0, outputs, loss


def explicit_hessian(model, loss_fn, X, y, names=None):
    """Dense Hessian of loss_fn(model(X), y) w.r.t. the named parameters (flat order)."""
    names = names or [n for n, p in model.named_parameters() if p.requires_grad]
    flat0, _, loss = _flat_loss_fn(model, loss_fn, X, y, names)
    return torch.func.hessian(loss)(flat0)


def explicit_ggn(model, loss_fn, X, y, names=None):
    """Dense J^T (d2 loss / d out2) J with J the Jacobian of the outputs."""
    names = names or [n for n, p in model.named_parameters() if p.requires_grad]
    flat0, outputs, _ = _flat_loss_fn(model, loss_fn, X, y, names)
    out = outputs(flat0).detach()
    J = torch.func.jacrev(outputs)(flat0).reshape(out.numel(), -1)
    Hout = torch.func.hessian(lambda z: loss_fn(z, y))(out).reshape(out.numel(), out.numel())
    return J.T @ Hout @ J


def mlp(act=nn.Tanh, sizes=(4, 6, 3), seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Conv + max pooling + BatchNorm + Linear, for non-MLP parity tests."""

    def __init__(self, n_classes=3, batchnorm=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3) if batchnorm else nn.Identity()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(3 * 3 * 3, n_classes)

    def forward(self, x):
        x = self.pool(torch.tanh(self.bn(self.conv(x))))
        return self.fc(x.flatten(1))


def clipped_axes(fig):
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
