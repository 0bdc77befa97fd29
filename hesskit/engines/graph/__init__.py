"""The graph engine: CNNs and ResNets read with ``torch.fx``, one rule per layer type.

- :mod:`~hesskit.engines.graph.reader`: the model as a graph of supported nodes;
- :mod:`~hesskit.engines.graph.rules`: forward, R-forward and R-backward of each layer;
- :mod:`~hesskit.engines.graph.engine`: :class:`GraphEngine`, the products;
- :mod:`~hesskit.engines.graph.explicit`: exact layer blocks, diagonal and dense
  matrix.
"""
from hesskit.engines.graph.engine import GraphEngine
from hesskit.engines.graph.reader import read_graph

__all__ = ["GraphEngine", "read_graph"]
