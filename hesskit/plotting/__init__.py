"""Matplotlib figures of hesskit results, one module per result type.

- :func:`plot_density`: a spectral density (:func:`hesskit.spectral_density`);
- :func:`plot_landscape`: a loss landscape (:func:`hesskit.loss_landscape`);
- :func:`plot_alignment_maps`: alignment maps on a 2-D input grid (:func:`hesskit.alignment`);
- :func:`plot_eigenvalue_histograms`: whole spectra as histograms, outliers marked.

matplotlib is optional (``pip install 'hesskit[plot]'``): it is imported when a figure
is made, never by ``import hesskit``, and a missing matplotlib raises an ImportError
naming the extra. The reproduced studies' own figures live with them, in ``examples/``.
"""
from hesskit.plotting.alignment import plot_alignment_maps
from hesskit.plotting.density import plot_density
from hesskit.plotting.histogram import plot_eigenvalue_histograms
from hesskit.plotting.landscape import plot_landscape

__all__ = ["plot_density", "plot_landscape", "plot_alignment_maps", "plot_eigenvalue_histograms"]
