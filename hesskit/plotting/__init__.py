"""Matplotlib figures of hesskit results (matplotlib is imported when a figure is made)."""
from hesskit.plotting.alignment import plot_alignment_maps
from hesskit.plotting.batch_size import plot_batch_landscapes, plot_batch_spectra
from hesskit.plotting.boundary import (plot_boundary_1d, plot_boundary_maps,
                                       plot_eigenvalue_histograms, plot_training_alignment)
from hesskit.plotting.density import plot_density
from hesskit.plotting.landscape import plot_landscape
from hesskit.plotting.layers import (plot_history, plot_layer_densities, plot_layer_distances,
                                     plot_method_bars)
from hesskit.plotting.rank import plot_rank_sweep, plot_rank_sweeps
from hesskit.plotting.sharpness import plot_edge_of_stability, plot_sharpness_generalization

__all__ = ["plot_density", "plot_landscape", "plot_alignment_maps", "plot_boundary_maps",
           "plot_boundary_1d",
           "plot_eigenvalue_histograms", "plot_training_alignment", "plot_rank_sweep",
           "plot_rank_sweeps", "plot_batch_landscapes", "plot_batch_spectra",
           "plot_history", "plot_layer_densities", "plot_layer_distances", "plot_method_bars",
           "plot_edge_of_stability", "plot_sharpness_generalization"]
