"""Independent runs of a study on a pool of worker processes: :func:`run_cached`.

A study made of many independent training runs (each seeded by its own settings,
each on one thread) finishes in about ``1 / workers`` of the time on a machine with
``workers`` idle cores. The runs are computed in spawned processes (a fresh
interpreter, so no thread pool or random state is inherited from the parent), each
limited to one thread; the parent writes every finished run to the
:class:`~studies.results.ResultStore` atomically as soon as it arrives, so an
interrupted study resumes from the runs on disk, and a run already stored is
never recomputed. A run gives the same bits whether it ran in the parent
(``workers=1``) or in a worker: both run it on one thread from the same arguments.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from studies.results import ResultStore
from studies.training import num_threads

__all__ = ["default_workers", "run_cached"]


def default_workers() -> int:
    """``min(2, os.cpu_count())``: the study machines have 2 cores."""
    return min(2, os.cpu_count() or 1)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    return workers


def run_cached(store: ResultStore, jobs: Sequence[tuple[str, Callable[..., Any], tuple]],
               workers: int = 1, desc: str = "runs") -> dict[str, Any]:
    """Compute the ``jobs`` not yet in ``store``, store each result, return all of them.

    Args:
        store: where every finished run is written (``store.save(name, result)``,
            atomic) and read back from (``store.load(name)``) when already there.
        jobs: ``(name, fn, args)`` triples; ``fn(*args)`` computes the run named
            ``name``. With ``workers > 1``, ``fn`` and ``args`` must pickle (``fn`` a
            module-level function). Runs start in this order: put the longest
            first, so that no worker is left with a long run at the end.
        workers: the number of processes; 1 computes the runs here, one after
            the other.
        desc: the progress bar's label.

    Returns:
        ``{name: result}`` for every job, as stored (JSON-converted).

    Raises:
        RuntimeError: naming the run whose ``fn`` raised (the worker's exception
            is its cause), or whose worker process died; the runs not yet started
            are cancelled, those under way are finished and stored first.
    """
    workers = _check_workers(workers)
    names = [name for name, _, _ in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"jobs: expected distinct names, got duplicates "
                         f"{sorted({n for n in names if names.count(n) > 1})}")
    results = {name: store.load(name) for name in names if store.has(name)}
    todo = [(name, fn, args) for name, fn, args in jobs if name not in results]
    bar = tqdm(total=len(jobs), initial=len(results), desc=desc, unit="run")
    try:
        if workers == 1 or len(todo) <= 1:
            for name, fn, args in todo:
                try:
                    with num_threads(1):
                        value = fn(*args)
                except Exception as exc:
                    raise RuntimeError(f"run {name!r} failed: {exc!r}") from exc
                results[name] = store.save(name, value)
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context,
                                     initializer=_one_thread) as pool:
                pending = {pool.submit(fn, *args): name for name, fn, args in todo}
                failure = None
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for future in [f for f in pending if f in finished]:  # in job order
                            name = pending.pop(future)
                            if future.cancelled():
                                continue
                            exc = future.exception()
                            if exc is None:
                                results[name] = store.save(name, future.result())
                                bar.update()
                            elif failure is None:  # start no more runs; finish those under way
                                failure = (name, exc)
                                pool.shutdown(wait=False, cancel_futures=True)
                except BaseException:  # e.g. KeyboardInterrupt: start no more runs
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
                if failure is not None:
                    name, exc = failure
                    raise RuntimeError(f"run {name!r} failed: {exc!r}") from exc
    finally:
        bar.close()
    return {name: results[name] for name in names}
