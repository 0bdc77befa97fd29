"""Curvature-aware optimizers.

``SAM``: Sharpness-Aware Minimization around any ``torch.optim`` optimizer
(``adaptive=True``: ASAM; it keeps the BatchNorm statistics of the pass at ``w``), and
``disable_running_stats`` for hand-written loops that need the same.
``SGDHTR``: SGD with the Hessian-trace penalty of ``hesskit.regularizers.HessianTrace``.
"""
from hesskit.optim.htr import SGDHTR
from hesskit.optim.sam import SAM, disable_running_stats

__all__ = ["SAM", "SGDHTR", "disable_running_stats"]
