"""
SAM flattens the minimum: sharpness during training
===================================================

Sharpness-Aware Minimization (Foret et al., ICLR 2021) takes its gradient at the
worst point of a small ball around the weights. A
:class:`~hesskit.hooks.HessianMonitor` attached to the optimizer measures the top
Hessian eigenvalue of a fixed probe set every few steps; trained with the same
learning rate, SAM ends at a flatter point than plain SGD.
"""
import matplotlib.pyplot as plt
import torch
from torch import nn

import hesskit as hk

X, y = hk.data.load_digits()
probe_data = (X[:500], y[:500])
loss_fn = nn.CrossEntropyLoss()


def train(use_sam: bool, steps: int = 150):
    """Full-batch training; returns the monitor's (steps, lambda_max)."""
    torch.manual_seed(0)
    model = hk.models.mlp(64, [32], 10)
    if use_sam:
        optimizer = hk.optim.SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.5)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor = hk.hooks.HessianMonitor(hk.Objective(model, loss_fn, probe_data), every=15,
                                      metrics=("lambda_max",))
    handle = monitor.attach(optimizer)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model(X), y)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    handle.remove()
    monitor.close()
    return ([r["step"] for r in monitor.history],
            [r["lambda_max"] for r in monitor.history])


# %%
# The same model, data and learning rate; SAM's closure runs twice per step.
history = {"SGD": train(use_sam=False), "SAM (rho = 0.1)": train(use_sam=True)}
for name, (_, values) in history.items():
    print(f"{name}: final lambda_max {values[-1]:.2f}")

fig, ax = plt.subplots()
for name, (recorded, values) in history.items():
    ax.plot(recorded, values, marker="o", label=name)
ax.set(xlabel="step", ylabel=r"$\lambda_{\max}$", title="top Hessian eigenvalue along training")
ax.legend()
fig.tight_layout()
