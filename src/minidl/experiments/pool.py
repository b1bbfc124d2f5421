"""Training the rows of a reproduction in several worker processes (``minidl reproduce --jobs``).

The rows are independent: each is seeded from ``(base seed, round, stream)`` alone
(:mod:`minidl.experiments.seeds`) and trained with one intra-op thread, so a row gives the
same numbers in any process, in any order. :func:`train_rows` hands the rows to ``jobs``
processes (started with ``spawn``, so no thread pool is inherited from the parent), the longest
first so that the workers finish together, and forwards each epoch's records to the parent's
progress callback through a queue.

On a machine with C free cores, ``jobs = C`` divides the wall time by nearly C: the networks
are small, so one row never gains from a second thread.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from minidl._allocator import keep_freed_memory
from minidl.experiments.config import Experiment
from minidl.experiments.training import RowResult
from minidl.train import EpochRecord

__all__ = ["train_rows"]

#: Seconds between two progress messages of a worker (a row's last epochs are always sent).
_FLUSH_SECONDS = 0.25

# In each worker: the queue of the progress messages, set by _start_worker.
_worker: dict[str, Any] = {}


def _start_worker(progress: Any) -> None:
    _worker["progress"] = progress
    torch.set_num_threads(1)
    keep_freed_memory()


def _train_in_worker(
    position: int,
    train: Callable[..., RowResult],
    experiment: Experiment,
    rounds: int,
    base_seed: int,
    epochs: int | None,
    report: bool,
) -> RowResult:
    """Train one row in a worker; send ``(position, [(round, record), ...])`` messages."""
    pending: list[tuple[int, EpochRecord]] = []
    last = time.monotonic()

    def on_epoch(index: int, record: EpochRecord) -> None:
        nonlocal last
        pending.append((index, record))
        now = time.monotonic()
        if index == rounds - 1 and now - last >= _FLUSH_SECONDS:
            _worker["progress"].put((position, pending.copy()))
            pending.clear()
            last = now

    result = train(
        experiment, rounds, base_seed, epochs=epochs, on_epoch=on_epoch if report else None
    )
    if pending:
        _worker["progress"].put((position, pending))
    return result


def train_rows(
    experiments: Sequence[Experiment],
    rounds: int,
    base_seed: int,
    *,
    jobs: int,
    train: Callable[..., RowResult],
    epochs: int | None = None,
    on_epoch: Callable[[Experiment, int, EpochRecord], None] | None = None,
) -> list[RowResult]:
    """Train each of ``experiments`` (distinct rows) in ``jobs`` worker processes.

    Args:
        experiments: the rows; each is trained once.
        rounds, base_seed, epochs: as for :func:`minidl.experiments.runner.run_experiments`.
        jobs: the number of worker processes, >= 1.
        train: the function that trains one row (it must be importable: it runs in a worker).
        on_epoch: called in this process with ``(experiment, round index, record)`` for every
            epoch of every round; the calls of one row come in order.

    Returns:
        The results, in the order of ``experiments``.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"train_rows: jobs must be an integer >= 1, got {jobs!r}")
    try:
        pickle.dumps(train)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            "train_rows: the train function runs in worker processes, so it must be importable "
            f"(a function defined at the top level of a module), got {train!r}"
        ) from error
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    # The longest rows first: the workers then finish at about the same time.
    order = sorted(
        range(len(experiments)),
        key=lambda i: -(experiments[i].epochs if epochs is None else epochs),
    )
    results: dict[int, RowResult] = {}

    def drain() -> None:
        while True:
            try:
                position, records = progress.get_nowait()
            except queue.Empty:
                return
            if on_epoch is not None:
                for index, record in records:
                    on_epoch(experiments[position], index, record)

    with ProcessPoolExecutor(
        max_workers=min(jobs, max(len(experiments), 1)),
        mp_context=context,
        initializer=_start_worker,
        initargs=(progress,),
    ) as pool:
        futures: dict[Future[RowResult], int] = {
            pool.submit(
                _train_in_worker,
                position,
                train,
                experiments[position],
                rounds,
                base_seed,
                epochs,
                on_epoch is not None,
            ): position
            for position in order
        }
        try:
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, timeout=0.1, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    results[futures[future]] = future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    drain()
    return [results[position] for position in range(len(experiments))]
