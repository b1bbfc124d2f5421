"""Training the rows of a reproduction in several worker processes (``minidl reproduce --jobs``).

The rows are independent: each is seeded from ``(base seed, round, stream)`` alone
(:mod:`minidl.experiments.seeds`) and trained with one intra-op thread, so a row gives the
same numbers in any process, in any order. :func:`train_groups` hands the groups of rows (each
trained by one call of the train function) to ``jobs`` processes, the longest first so that the
workers finish together, and forwards each epoch's records to the parent's progress callback
through a queue.

On Linux the workers are forked (:data:`START_METHOD`): a spawned worker would first import
torch again, about 2 s of each worker's start here. Each sets one intra-op thread before it
computes anything, as PyTorch's ``DataLoader`` workers do, so that a thread pool the parent may
have started (which a fork does not copy) is never used in it; the numbers do not depend on
the start method. Elsewhere (macOS, Windows, where forking a process that runs threads is not
safe) they are spawned.
Once a worker has nothing left to train, the parent may use the core it leaves free
(``when_idle``: ``minidl reproduce`` draws the figures whose rows are done).

On a machine with C free cores, ``jobs = C`` divides the wall time by nearly C: the networks
are small, so one row never gains from a second thread.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch

from minidl._allocator import keep_freed_memory
from minidl._interrupts import HELD_SIGNALS, holding_interrupts
from minidl._validate import check_int, shown
from minidl.experiments.config import Experiment
from minidl.experiments.training import RowResult
from minidl.train import EpochRecord

__all__ = ["check_importable", "train_groups"]

#: Seconds between two progress messages of a worker (a row's last epochs are always sent).
_FLUSH_SECONDS = 0.25

#: The most bytes a progress message may take once pickled: a pipe takes a write of at most
#: ``PIPE_BUF`` bytes whole or not at all, and ``multiprocessing`` writes a message of up to
#: 16 KiB with one write, after 4 bytes of its length (see :func:`_send_progress`).
_MESSAGE_BYTES = getattr(select, "PIPE_BUF", 512) - 4

#: Seconds a worker may have ended before :func:`train_groups` stops waiting for the executor
#: to say so (a worker killed while it sent its results: see :func:`train_groups`).
_ENDED_GRACE_SECONDS = 1.0

#: The most seconds :func:`_how_workers_ended` waits for the executor's thread to end.
_MANAGER_SECONDS = 10.0

#: How the workers are started (see the module docstring).
START_METHOD = "fork" if sys.platform == "linux" else "spawn"

# In each worker: the queue of the progress messages, set by _start_worker.
_worker: dict[str, Any] = {}


def _start_worker(progress: Any) -> None:
    # Ctrl-C is the parent's to handle (it stops the workers): a worker that raised
    # KeyboardInterrupt too would print its traceback. SIGTERM ends a worker at once (as
    # _stop_workers sends it), whatever handler the parent had (minidl's command line raises an
    # exception there, for its clean-up). (Started with both held back, see train_groups,
    # a worker ignores SIGINT from its very start, while it imports torch: one held back
    # meanwhile is dropped here; a SIGTERM held back ends it here.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    _worker["progress"] = progress
    torch.set_num_threads(1)
    keep_freed_memory()
    _exit_with_parent()


def _exit_with_parent() -> None:
    """End this worker as soon as the parent process ends, however it ends.

    A parent that is killed (``SIGKILL``, the out-of-memory killer) cannot stop its workers, and
    they would wait for work forever: each holds both ends of the pool's task pipe, so the read
    never sees the end of the file. A daemon thread waits on the parent's sentinel instead.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="minidl-watch-parent", daemon=True).start()


def _send_progress(position: int, records: list[tuple[int, int, EpochRecord]]) -> None:
    """Put ``(position, records)`` on the progress queue, in as many messages as it takes for
    each to fit in :data:`_MESSAGE_BYTES` (a single record is sent as it is).

    A worker killed (``SIGKILL``, the out-of-memory killer) while its queue's thread wrote a
    longer message left part of it in the pipe, and the parent's next read waited for the rest
    for ever, in its main thread, before it could see that the worker was gone. A message a pipe
    takes whole is there in full or not at all.
    """
    message = (position, records)
    if len(records) > 1 and len(ForkingPickler.dumps(message)) > _MESSAGE_BYTES:
        half = len(records) // 2
        _send_progress(position, records[:half])
        _send_progress(position, records[half:])
    else:
        _worker["progress"].put(message)


def _train_in_worker(
    position: int,
    train: Callable[..., list[RowResult]],
    group: list[Experiment],
    rounds: int,
    base_seed: int,
    epochs: int | None,
    report: bool,
) -> list[RowResult]:
    """Train one group in a worker; send ``(position, [(row, round, record), ...])`` messages."""
    pending: list[tuple[int, int, EpochRecord]] = []
    last = time.monotonic()

    def on_epoch(experiment: Experiment, index: int, record: EpochRecord) -> None:
        nonlocal last
        pending.append((group.index(experiment), index, record))
        now = time.monotonic()
        if now - last >= _FLUSH_SECONDS:
            _send_progress(position, pending.copy())
            pending.clear()
            last = now

    results = train(group, rounds, base_seed, epochs=epochs, on_epoch=on_epoch if report else None)
    if pending:
        _send_progress(position, pending)
    return results


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the workers at once, as Ctrl-C or an error leaves the pool: a group running would
    otherwise be trained to its end, blocked for good once the progress queue, which nobody
    reads any more, is full (the executor has no public way to do this before Python 3.14).

    A worker stopped while it sent its results leaves part of a message in the pipe of the
    results, which the executor's thread would wait to read in full for ever, and the pool's
    shutdown with it: this process holds the pipe's write end too, so that its end never came.
    Once the workers are gone that end is closed here, and the thread reads the end of the pipe.

    A second Ctrl-C or a SIGTERM that comes meanwhile is held back until every worker is
    stopped (at most 10 s each): raised at once, it left the workers not yet stopped to train
    on, and the parent waited for them at its exit.
    """
    with holding_interrupts():
        processes = list(pool._processes.values())
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10.0)
            if process.exitcode is None:
                process.kill()
                process.join()
        writer = getattr(pool._result_queue, "_writer", None)  # (a Connection)
        if writer is not None:
            writer.close()


def _a_worker_ended(pool: ProcessPoolExecutor) -> bool:
    """Whether a worker of ``pool`` has ended (read from its sentinel: the process is not
    reaped, which is the executor's to do)."""
    sentinels = [process.sentinel for process in list((pool._processes or {}).values())]
    return bool(sentinels) and bool(multiprocessing.connection.wait(sentinels, timeout=0))


def _how_workers_ended(pool: ProcessPoolExecutor) -> str:
    """How the workers of a broken pool ended: the exit of each that ended by itself, for
    :class:`BrokenProcessPool`'s message (which says only that one "terminated abruptly").

    The executor stops the others with ``SIGTERM``, which is left out where another one ended
    otherwise.

    The executor's thread is awaited first (:data:`_MANAGER_SECONDS` at most), which reaps the
    workers too: where it had collected a worker's exit status (``waitpid``) and not yet stored
    it, a ``join`` here found no such child and gave no exit status, and the worker killed was
    left out (on a loaded machine, where that thread waits long for a core).
    """
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None and manager is not threading.current_thread():
        manager.join(timeout=_MANAGER_SECONDS)
    endings = []
    for process in list((pool._processes or {}).values()):
        process.join(timeout=1.0)
        code = process.exitcode
        if code is None or code == 0:
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            ending = f"killed by {name}"
            if -code == signal.SIGKILL:
                ending += ", as the out-of-memory killer does"
        else:
            ending = f"exited with status {code}"
        endings.append((code == -signal.SIGTERM, f"process {process.pid} {ending}"))
    # The SIGTERMs only where nothing else explains the pool's end.
    named = [text for stopped, text in endings if not stopped] or [text for _, text in endings]
    return "; ".join(named) if named else "its exit status is unknown"


def check_importable(where: str, train: object) -> None:
    """Refuse a ``train`` function that cannot be sent to a worker process (a lambda, a
    function defined inside another), in ``where``'s name."""
    try:
        pickle.dumps(train)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            f"{where}: the train function runs in worker processes, so it must be importable "
            f"(a function defined at the top level of a module), got {train!r}"
        ) from error


def train_groups(
    groups: Sequence[Sequence[Experiment]],
    rounds: int,
    base_seed: int,
    *,
    jobs: int,
    train: Callable[..., list[RowResult]],
    epochs: int | None = None,
    on_epoch: Callable[[Experiment, int, EpochRecord], None] | None = None,
    when_idle: Callable[[dict[int, list[RowResult]]], object] | None = None,
) -> list[list[RowResult]]:
    """Train each group of rows with one call of ``train``, in ``jobs`` worker processes.

    Args:
        groups: the groups of distinct rows; each row is trained once.
        rounds, base_seed, epochs: as for :func:`minidl.experiments.runner.run_experiments`.
        jobs: the number of worker processes, >= 1.
        train: the function that trains a group, as ``train(group, rounds, base_seed,
            epochs=..., on_epoch=...)`` (it must be importable: it runs in a worker).
        on_epoch: called in this process with ``(experiment, round index, record)`` for every
            epoch of every round; the calls of one round come in order.
        when_idle: called in this process, about every 0.1 s while fewer groups are left than
            workers (a worker has nothing left to train), with the results of the groups
            finished so far by position in ``groups``. It should return soon: progress messages
            wait for it.

    Returns:
        The results of each group, in the order of ``groups``.

    Raises:
        BrokenProcessPool: a worker ended before its group was trained (killed by a signal, or
            it exited); the message says how. The other workers are stopped.
    """
    jobs = check_int("train_groups", "jobs", jobs)
    # (an empty group failed in the sorting below, an IndexError; an on_epoch that is no
    # function at the first progress message, the workers training)
    if isinstance(groups, str) or not isinstance(groups, Sequence):
        raise TypeError(
            f"train_groups: groups must be a sequence of groups of Experiment, got {shown(groups)}"
        )
    for position, group in enumerate(groups):
        if (
            isinstance(group, str)
            or not isinstance(group, Sequence)
            or not group
            or not all(isinstance(row, Experiment) for row in group)
        ):
            raise TypeError(
                "train_groups: every group must be a non-empty sequence of Experiment, got "
                f"{shown(group)} at position {position}"
            )
    for name, function in (("on_epoch", on_epoch), ("when_idle", when_idle)):
        if function is not None and not callable(function):
            raise TypeError(
                f"train_groups: {name} must be a function or None, got {shown(function)}"
            )
    check_importable("train_groups", train)
    context = multiprocessing.get_context(START_METHOD)
    progress = context.Queue()
    # The longest groups first (epochs times rows): the workers then finish at about the
    # same time.
    order = sorted(
        range(len(groups)),
        key=lambda i: -(groups[i][0].epochs if epochs is None else epochs) * len(groups[i]),
    )
    results: dict[int, list[RowResult]] = {}

    def drain() -> None:
        while True:
            try:
                position, records = progress.get_nowait()
            except queue.Empty:
                return
            if on_epoch is not None:
                for row, index, record in records:
                    on_epoch(groups[position][row], index, record)

    workers = min(jobs, max(len(groups), 1))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(progress,),
    ) as pool:
        try:
            # The submissions start the workers. An interrupt raised between a worker's start
            # and the pool's record of it left that worker unstopped, and the parent, at its
            # exit, waited for it to train its group: Ctrl-C and SIGTERM are held back until the
            # pool knows every worker, and the workers start with both blocked (until
            # _start_worker). (Inside the try: an interrupt raised here, as one held back is at
            # the end, or an error of a submission, left the pool's end to wait for the groups
            # submitted to be trained.)
            with holding_interrupts():
                futures: dict[Future[list[RowResult]], int] = {
                    pool.submit(
                        _train_in_worker,
                        position,
                        train,
                        list(groups[position]),
                        rounds,
                        base_seed,
                        epochs,
                        on_epoch is not None,
                    ): position
                    for position in order
                }
            remaining = set(futures)
            ended: float | None = None  # when a worker was first found ended
            while remaining:
                done, remaining = wait(remaining, timeout=0.1, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    results[futures[future]] = future.result()
                # A worker killed (SIGKILL, the out-of-memory killer) while it sent its results
                # leaves part of a message in the results' pipe: the executor's thread waits for
                # the rest for ever, and never fails the futures. (While groups are left, a
                # worker ends only when it is killed or exits; the executor, which watches them
                # too, reports it at once otherwise.)
                if remaining and _a_worker_ended(pool):
                    ended = time.monotonic() if ended is None else ended
                    if time.monotonic() - ended > _ENDED_GRACE_SECONDS:
                        raise BrokenProcessPool("a worker ended, unnoticed by the executor")
                if when_idle is not None and remaining and len(remaining) < workers:
                    when_idle(dict(results))
        except BrokenProcessPool as error:
            _stop_workers(pool)
            raise BrokenProcessPool(
                "train_groups: a worker process ended before its rows were trained "
                f"({_how_workers_ended(pool)}); the other workers were stopped"
            ) from error
        except BaseException:
            # The pool, broken by this, fails every future left (cancelling them first would
            # make Python 3.11's executor fail on the cancelled ones, with a traceback).
            _stop_workers(pool)
            raise
    drain()
    return [results[position] for position in range(len(groups))]
