"""
The Hessian spectrum of a digits classifier
===========================================

Train a small MLP on the 8×8 digits that ship with hesskit, then measure the
curvature of its training loss: the top eigenvalues (Lanczos, with their residuals),
the trace (Hutchinson, with its standard error) and the eigenvalue density
(stochastic Lanczos quadrature, as in Ghorbani, Krishnan and Xiao, ICML 2019). The
density shows the familiar picture: a bulk near zero and a few large outliers, about
one per class.
"""
import torch
from torch import nn

import hesskit as hk

torch.manual_seed(0)
X, y = hk.data.load_digits()
model = hk.models.mlp(64, [32], 10)
loss_fn = nn.CrossEntropyLoss()

# %%
# A few hundred full-batch gradient steps bring the training loss down.
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for _ in range(300):
    optimizer.zero_grad()
    loss = loss_fn(model(X), y)
    loss.backward()
    optimizer.step()
print(f"training loss {loss.item():.3f}")

# %%
# The objective is the mean loss over all 1 797 samples; every product with the
# Hessian is one pass over them.
obj = hk.Objective(model, loss_fn, (X, y))
H = hk.HessianOperator(obj)
top = hk.eigenvalues(H, k=10, seed=0)
tr = hk.trace(H, n_probes=100, seed=0)
print("top eigenvalues:", [round(v, 3) for v in top.values.tolist()])
print(f"largest residual {top.residuals.max().item():.1e}, {top.n_matvecs} products")
print(f"trace {tr.value:.2f} ± {tr.stderr:.2f} ({tr.n_matvecs} products)")

# %%
# The density, on a logarithmic axis to show the bulk and the outliers together.
density = hk.spectral_density(H, n_runs=5, n_steps=60, seed=0)
ax = hk.plotting.plot_density(density, title="Hessian eigenvalue density, digits MLP")
for v in top.values[:3].tolist():
    ax.axvline(v, color="C3", lw=0.8, ls="--")
ax.figure.tight_layout()
