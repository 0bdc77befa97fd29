"""Analyses built on the curvature operators: layerwise spectra and the distances
between spectra, loss landscapes, and gradient–eigenvector alignment."""
from hesskit.analysis.alignment import MarginEstimate, align_inputs, alignment, margin_estimate
from hesskit.analysis.landscape import (Landscape, filter_normalized, loss_landscape,
                                        random_directions)
from hesskit.analysis.layerwise import LayerSpectrum, layerwise_spectra, spectrum_distance

__all__ = [
    "layerwise_spectra", "LayerSpectrum", "spectrum_distance",
    "loss_landscape", "Landscape", "random_directions", "filter_normalized",
    "alignment", "align_inputs", "margin_estimate", "MarginEstimate",
]
