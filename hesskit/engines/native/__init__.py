"""The ``native`` engine (:class:`NativeEngine`): exact curvature passes of hesskit's
own, for chains of Linear layers (compiled fused kernels) and for CNNs and ResNets
read as graphs (one rule per layer type).

- :mod:`~hesskit.engines.native.engine`: :class:`NativeEngine`, which picks the path;
- :mod:`~hesskit.engines.native.chain` and :mod:`~hesskit.engines.native.fused`: the
  fused chain path (:class:`FusedChain`);
- :mod:`~hesskit.engines.native.reader`: the model as a graph of supported nodes;
- :mod:`~hesskit.engines.native.rules`: forward, R-forward and R-backward of each layer;
- :mod:`~hesskit.engines.native.graph`: :class:`GraphPath`, the products on a graph;
- :mod:`~hesskit.engines.native.explicit`: the graph path's exact layer blocks,
  diagonal and dense matrix.
"""
from hesskit.engines.native.engine import NativeEngine
from hesskit.engines.native.fused import FusedChain
from hesskit.engines.native.graph import GraphPath
from hesskit.engines.native.reader import read_graph

#: tried in this order: the fused kernels are faster where they apply (the MLP)
NativeEngine.paths = (FusedChain, GraphPath)

__all__ = ["NativeEngine", "FusedChain", "GraphPath", "read_graph"]
