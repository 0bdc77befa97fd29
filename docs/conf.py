"""Sphinx configuration of the hesskit documentation (``make docs`` builds it).

The API reference is generated from the docstrings (autodoc + autosummary, Google
style through napoleon); the gallery under ``gallery/`` is run at build time by
sphinx-gallery, which keeps each script's printed output and figures. The build
treats every warning as an error (``-W --keep-going`` in the Makefile).
"""
import os
import sys

# Document the tree this file lives in, whatever hesskit an environment has installed.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("MPLBACKEND", "Agg")

import hesskit  # noqa: E402

project = "hesskit"
author = "the hesskit developers"
copyright = "the hesskit developers"
release = hesskit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "figures", "gallery"]
root_doc = "index"

# --- API reference --------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False
python_use_unqualified_type_names = True

# --- gallery ----------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_gallery",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
}

# --- HTML -------------------------------------------------------------------------
html_theme = "furo"
html_title = f"hesskit {release}"
html_static_path = []
