"""
Hessian, Gauss-Newton and functional part
=========================================

The Hessian of a loss :math:`\\ell(f(x; \\theta), y)` splits into the generalized
Gauss-Newton matrix :math:`G = J^\\top \\nabla^2_f \\ell\\, J` (positive
semi-definite for convex losses such as cross-entropy) and the functional part
:math:`F = \\sum_c \\partial_{f_c} \\ell\\, \\nabla^2_\\theta f_c`, which holds the
network's own second derivatives (Papyan, JMLR 2020; Singh, Bachmann and Hofmann,
NeurIPS 2021). On a small model every matrix fits in memory, so the three operators
can be formed and compared (600 digits here), together with the exact layer blocks that
:func:`hesskit.layer_blocks` computes in one pass.
"""
import matplotlib.pyplot as plt
import torch
from torch import nn

import hesskit as hk

torch.manual_seed(0)
X, y = hk.data.load_digits()
X, y = X[:600].double(), y[:600]
model = hk.models.mlp(64, [12], 10).double()
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
for _ in range(200):
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(X), y).backward()
    optimizer.step()

obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y))
H = hk.HessianOperator(obj).dense()
G = hk.GGNOperator(obj).dense()
F = hk.FunctionalHessianOperator(obj).dense()
print(f"P = {H.shape[0]} parameters; H = G + F up to "
      f"{(H - G - F).abs().max().item():.1e}")

# %%
# The GGN has no negative eigenvalues; the Hessian's negative ones come from the
# functional part, which is small at the end of training.
eig = {name: torch.linalg.eigvalsh(M).flip(0) for name, M in
       (("Hessian H", H), ("Gauss-Newton G", G), ("functional F", F))}
for name, values in eig.items():
    print(f"{name:15s} largest {values[0].item():7.3f}   smallest {values[-1].item():9.1e}")

# %%
# Left: the sorted eigenvalues (a symmetric log axis shows both signs). Right: the
# Hessian's magnitude with the layer boundaries; the diagonal blocks are the exact
# layer blocks. The wide black stripes are the incoming weights of hidden units
# that the ReLU keeps at zero on every sample: the loss does not depend on them,
# so their rows of the Hessian vanish.
blocks = hk.layer_blocks(obj)
dead = (model[:3](X) == 0).all(dim=0)
print(f"hidden units inactive on every sample: {dead.nonzero().flatten().tolist()}")
print({name: tuple(b.shape) for name, b in blocks.items()})

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9.5, 4))
for name, values in eig.items():
    ax0.plot(values.numpy(), label=name)
ax0.set_yscale("symlog", linthresh=1e-4)
ax0.set_xlabel("index")
ax0.set_ylabel("eigenvalue")
ax0.legend()
ax1.imshow(H.abs().clamp_min(1e-8).log10().numpy(), cmap="magma")
edge = 0
for b in blocks.values():
    edge += b.shape[0]
    ax1.axhline(edge - 0.5, color="w", lw=0.6)
    ax1.axvline(edge - 0.5, color="w", lw=0.6)
ax1.set_title(r"$\log_{10} |H_{ij}|$ with the layer blocks")
fig.tight_layout()
