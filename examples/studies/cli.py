"""The command line every study script shares: :func:`experiment_parser`, :func:`run_size`."""
from __future__ import annotations

import argparse

__all__ = ["experiment_parser", "run_size"]


def experiment_parser(description: str, default_out: str) -> argparse.ArgumentParser:
    """The command line every reproduction script shares.

    ``--full`` (the paper's settings), ``--smoke`` (tiny sizes, for tests),
    ``--dataset`` and ``--data-root`` (local MNIST/FashionMNIST/CIFAR files),
    ``--out``, ``--seed``, ``--fresh`` (ignore stored results).
    """
    parser = argparse.ArgumentParser(description=description)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's settings (slow)")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, finishes in seconds")
    parser.add_argument("--dataset", default=None,
                        help="mnist | fashion_mnist | cifar10 (read from --data-root)")
    parser.add_argument("--data-root", default=None, help="folder with the dataset files")
    parser.add_argument("--out", default=default_out, help="results folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="recompute everything")
    return parser


def run_size(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"full"`` or ``"default"``: the size that the parsed
    :func:`experiment_parser` flags ask for (the key of a script's settings table)."""
    return "smoke" if args.smoke else "full" if args.full else "default"
