"""
The loss along the sharpest directions
======================================

The top eigenvectors of the Hessian are the directions in which the loss curves the
most. This example draws the training loss on the plane spanned by the two top
eigenvectors, next to the plane of two random unit directions. At the same distance
the loss rises steeply along the eigenvectors and hardly moves along the random
directions: a random unit direction :math:`d` sees the average curvature,
:math:`d^\\top H d \\approx \\operatorname{tr}(H)/P`, far below :math:`\\lambda_1`.
(To compare the landscapes of different models, use filter-normalized directions
instead, as Li, Xu, Taylor, Studer and Goldstein, NeurIPS 2018:
:func:`hesskit.analysis.random_directions` draws them by default.)
"""
import matplotlib.pyplot as plt
import torch
from torch import nn

import hesskit as hk

torch.manual_seed(0)
X, y = hk.data.load_digits()
model = hk.models.mlp(64, [32], 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for _ in range(300):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    optimizer.step()

obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
H = hk.HessianOperator(obj)

# %%
# Two planes through the trained weights, both spanned by unit vectors in the
# flattened parameter space.
top = hk.eigenvalues(H, k=2, seed=0)
random2 = hk.analysis.random_directions(obj, n=2, filter_normalize=False, seed=0)
random2 = random2 / random2.norm(dim=0)
print("lambda_1, lambda_2:", [round(v, 3) for v in top.values.tolist()])
print(f"tr(H) / P: {hk.trace(H, n_probes=50, seed=0).value / H.shape[0]:.4f}")

coords = torch.linspace(-1.0, 1.0, 21)
sharp = hk.loss_landscape(obj, top.vectors, coords, progress=False)
flat = hk.loss_landscape(obj, random2, coords, progress=False)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
hk.plotting.plot_landscape(sharp, ax=axes[0], labels=("$v_1$", "$v_2$"),
                           title="top-2 Hessian eigenvectors")
hk.plotting.plot_landscape(flat, ax=axes[1], labels=("$d_1$", "$d_2$"),
                           title="random unit directions")
fig.tight_layout()
