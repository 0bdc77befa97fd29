"""What the study scripts in ``examples/`` share, so that a new study touches only
``examples/`` and its test.

- results on disk: :class:`ResultStore` (JSON and figures, atomic, resumable),
  :func:`to_jsonable`;
- claims: :class:`Claim`, :func:`print_claims`;
- the command line: :func:`experiment_parser`, :func:`run_size`;
- independent runs on worker processes: :func:`run_cached`, :func:`default_workers`;
- training: :func:`train`, :func:`train_epoch`, :func:`evaluate`, :func:`accuracy`,
  :func:`count_correct`, :func:`num_threads`;
- the studies' own figures: :mod:`studies.figures` (the figures by result type --
  density, landscape, alignment maps, eigenvalue histograms -- are hesskit's,
  :mod:`hesskit.plotting`).

The scripts run as ``python examples/<study>.py``, which puts ``examples/`` first
on ``sys.path``, so they import this package as ``studies``.
"""
from studies.claims import Claim, print_claims
from studies.cli import experiment_parser, run_size
from studies.pool import default_workers, run_cached
from studies.results import ResultStore, to_jsonable
from studies.training import accuracy, count_correct, evaluate, num_threads, train, train_epoch

__all__ = [
    "ResultStore", "to_jsonable", "run_cached", "default_workers",
    "Claim", "print_claims",
    "experiment_parser", "run_size",
    "train", "train_epoch", "evaluate", "accuracy", "count_correct", "num_threads",
]
