"""The five studies' own figures (the figures by result type are :mod:`hesskit.plotting`).

- :mod:`studies.figures.boundary`: decision regions, alignment maps on the boundary,
  training-point alignment (Sabanayagam et al., arXiv 2306.07104);
- :mod:`studies.figures.rank`: measured ranks against predictions (Singh et al., 2021);
- :mod:`studies.figures.layers`: layer-to-full distances, layer densities, histories,
  method bars (Sankar et al., AAAI 2021);
- :mod:`studies.figures.batch_size`: top eigenvalues and surfaces per batch size
  (Yao et al., 2018);
- :mod:`studies.figures.sharpness`: accuracy against λ_max, edge of stability
  (Kaur et al., 2022).
"""
from studies.figures.batch_size import plot_batch_landscapes, plot_batch_spectra
from studies.figures.boundary import plot_boundary_1d, plot_boundary_maps, plot_training_alignment
from studies.figures.layers import (plot_history, plot_layer_densities, plot_layer_distances,
                                    plot_method_bars)
from studies.figures.rank import plot_rank_sweep, plot_rank_sweeps
from studies.figures.sharpness import plot_edge_of_stability, plot_sharpness_generalization

__all__ = ["plot_boundary_maps", "plot_boundary_1d", "plot_training_alignment",
           "plot_rank_sweep", "plot_rank_sweeps", "plot_batch_landscapes", "plot_batch_spectra",
           "plot_history", "plot_layer_densities", "plot_layer_distances", "plot_method_bars",
           "plot_edge_of_stability", "plot_sharpness_generalization"]
