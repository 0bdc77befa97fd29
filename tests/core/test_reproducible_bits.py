"""Same inputs and seed, same bits, every run (issue 13), checked across processes.

Each case computes, in a fresh Python process, the first curvature results of that
process -- ``H @ v``, ``H.dense()``, ``hk.eigenvalues(H, k=2)`` and
``hk.trace(H, seed=0)`` -- and the test compares the SHA-256 of their bytes between
two processes started alike (same thread count). A process is needed because the
irreproducibility seen in the batch-size study hit only the first Hessian of a
process: the old ``engine="auto"`` timed ``func`` against ``autograd`` on its first
product (a cold start, on a shared CPU) and kept the faster, so runs picked
different engines -- and even returned, for that first product, the first chunk
from ``func`` summed with the other chunks from the winner. Fixed engines were
reproducible all along; these tests keep them so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Run as ``python -c SCRIPT ENGINE MODEL``; prints one JSON line of digests.
SCRIPT = r"""
import hashlib, json, sys
import torch
from torch import nn
import hesskit as hk

engine, model_kind = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if model_kind == "cnn":   # convolutions: the native graph path, or func/autograd by name
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    X = torch.randn(48, 1, 6, 6)
else:                     # a chain: the native fused chain path
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    X = torch.randn(48, 8)
y = torch.randint(0, 3, (48,))
obj = hk.Objective(model, nn.CrossEntropyLoss(), (X, y), batch_size=16)   # three chunks
H = hk.HessianOperator(obj, engine=engine)
v = torch.randn(obj.n_params, generator=torch.Generator().manual_seed(1))

def digest(t):
    t = torch.as_tensor(t).detach().contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()

out = {"Hv": digest(H @ v), "dense": digest(H.dense()),
       "eigenvalues": digest(hk.eigenvalues(H, k=2, seed=0, progress=False).values),
       "trace": digest(torch.tensor(hk.trace(H, n_probes=8, seed=0, progress=False).value,
                                    dtype=torch.float64)),
       "engine": H.engine.name}
print(json.dumps(out))
"""


def first_results(engine: str, model: str) -> dict:
    """The digests of one fresh process (two threads, this checkout's hesskit)."""
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, engine, model], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("engine, model", [("autograd", "cnn"), ("func", "cnn"),
                                           ("native", "cnn"), ("native", "mlp")])
def test_fixed_engine_gives_the_same_bits_in_two_processes(engine, model):
    first, second = first_results(engine, model), first_results(engine, model)
    assert first["engine"] == engine
    assert first == second


def test_auto_engine_gives_the_same_bits_in_two_processes():
    first, second = first_results("auto", "cnn"), first_results("auto", "cnn")
    assert first == second
