"""Every example in hesskit's docstrings and in the user guide runs and prints what it says.

One runner for the whole package: each module of ``hesskit`` (found by walking the
package, so a new module is covered without editing this file) is run through
:func:`doctest.testmod`, and the documentation's front page and guides
(``docs/index.rst``, ``docs/guides/*.rst``) through :func:`doctest.testfile`.
Examples run in a temporary folder (some write files), with a fixed seed and
matplotlib's file-only backend. The API reference pages must name every public name.
"""
import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest
import torch

import hesskit

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
MODULES = ["hesskit"] + sorted(m.name for m in pkgutil.walk_packages(hesskit.__path__, "hesskit."))
DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = [DOCS / "index.rst"] + sorted((DOCS / "guides").glob("*.rst"))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working folder, seed 0, the Agg backend; figures closed afterwards."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    yield
    plt.close("all")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, sandbox):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"


def test_public_api_has_examples():
    """Each public function and class exported at the top level shows how it is called."""
    finder = doctest.DocTestFinder(recurse=False)
    missing = [name for name in hesskit.__all__
               if callable(obj := getattr(hesskit, name)) and not isinstance(obj, type(hesskit))
               and not any(t.examples for t in finder.find(obj, name))]
    assert not missing, f"public names without a docstring example: {missing}"


@pytest.mark.parametrize("path", GUIDES, ids=[p.stem for p in GUIDES])
def test_guide_examples(path, sandbox):
    result = doctest.testfile(str(path), module_relative=False, optionflags=FLAGS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {path.name} failed"


@pytest.mark.parametrize("package", ["hesskit", "hesskit.analysis", "hesskit.data", "hesskit.models",
                                     "hesskit.optim", "hesskit.regularizers", "hesskit.hooks",
                                     "hesskit.plotting", "hesskit.engines",
                                     "hesskit.distributed", "hesskit.spectral"])
def test_api_reference_lists_every_public_name(package):
    """A name added to a package's ``__all__`` gets its page in docs/api/ (autosummary)."""
    pages = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.rst"))
    module = importlib.import_module(package)
    listed = {line.strip() for line in pages.splitlines()}
    missing = [n for n in module.__all__ if n != "__version__"
               and not isinstance(getattr(module, n), type(module))   # subpackages have pages
               and n not in listed and f"{package}.{n}" not in pages]
    assert not missing, f"{package}: not in the API reference (docs/api/*.rst): {missing}"
