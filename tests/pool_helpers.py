"""Train functions for the tests of worker processes (importable, so that a worker can run them)."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import Experiment
from minidl.experiments.training import RowResult
from minidl.train import EpochRecord


def is_late(experiment: Experiment) -> bool:
    """Fig. 1's cross-entropy row: its group starts late (:func:`train_cross_entropy_late`)."""
    return experiment.table == "Fig. 1" and experiment.loss == "cross-entropy"


def train_cross_entropy_late(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """``train_rows_batched``, started for the group of Fig. 1's cross-entropy row only once the
    caller has seen a worker with nothing to train: its ``when_idle`` leaves a file ``idle`` in
    the folder named by :data:`PID_FOLDER_ENV` (waited for two minutes at most). The other
    groups then finish first, whatever the machine's load (a fixed delay of 3 s need not be
    enough for them on a loaded machine)."""
    if any(is_late(experiment) for experiment in group):
        idle = Path(os.environ[PID_FOLDER_ENV]) / "idle"
        deadline = time.monotonic() + 120
        while not idle.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return train_rows_batched(group, rounds, base_seed, **kwargs)


def train_but_wait_late(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """``train_rows_batched``, except that the group of Fig. 1's cross-entropy row waits ten
    minutes first: a run that has drawn the figures of the other groups is then still training,
    however long a test takes to see them."""
    if any(is_late(experiment) for experiment in group):
        time.sleep(600)
    return train_rows_batched(group, rounds, base_seed, **kwargs)


#: The folder where :func:`wait_in_worker` leaves a file named after its worker's process id.
PID_FOLDER_ENV = "MINIDL_TEST_PID_FOLDER"


def wait_in_worker(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """Leave ``<pid>.pid`` in the folder named by :data:`PID_FOLDER_ENV`, then wait ten minutes
    (long enough for a test to kill the parent process meanwhile, and for a pool that would
    wait for it to outlast the tests' deadlines, two minutes at most)."""
    (Path(os.environ[PID_FOLDER_ENV]) / f"{os.getpid()}.pid").touch()
    time.sleep(600)
    return []


def untrained(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """One result of no rounds per row of ``group``, at once (for tests of the results' order)."""
    return [RowResult(experiment=experiment, rounds=(), seconds=0.0) for experiment in group]


def kill_late(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """``train_rows_batched``, except that the worker given the group of Fig. 1's cross-entropy
    row (:func:`is_late`) kills itself with ``SIGKILL`` first, as the out-of-memory killer would."""
    if any(is_late(experiment) for experiment in group):
        os.kill(os.getpid(), signal.SIGKILL)
    return train_rows_batched(group, rounds, base_seed, **kwargs)


#: The size of the results :func:`send_part_then_wait` and :func:`send_part_then_die` return:
#: more than a pipe holds (64 KiB), as a group's networks and curves can be.
LARGE_RESULT_BYTES = 2**20

#: How much of such a result the worker writes into the results' pipe before it stops.
SENT_BYTES = 4096


def _send_in_part(stop: Callable[[], None], at_least: int = LARGE_RESULT_BYTES) -> None:
    """Make this process write only the first :data:`SENT_BYTES` of any write of ``at_least``
    bytes or more into its pipes, leave a file ``sent`` in the folder named by
    :data:`PID_FOLDER_ENV` and call ``stop``: the reader is left with part of a message
    whatever the timing (its length, read first, says how much is to come).

    It replaces ``multiprocessing.connection.Connection._send``, the loop of ``os.write`` calls
    that CPython's pipes send each part of a message with; a test finds no file ``sent`` if a
    Python version sends otherwise."""
    from multiprocessing.connection import Connection

    send = Connection._send  # type: ignore[attr-defined]

    def send_in_part(connection: Connection, buffer: Any, *args: Any) -> None:
        if len(buffer) < at_least:
            send(connection, buffer, *args)
            return
        os.write(connection.fileno(), buffer[:SENT_BYTES])  # (a pipe takes it whole)
        (Path(os.environ[PID_FOLDER_ENV]) / "sent").touch()
        stop()

    Connection._send = send_in_part  # type: ignore[attr-defined]


def _die() -> None:
    """Leave a file ``killed`` in the folder named by :data:`PID_FOLDER_ENV`, then kill this
    process with ``SIGKILL``, as the out-of-memory killer would."""
    (Path(os.environ[PID_FOLDER_ENV]) / "killed").touch()
    os.kill(os.getpid(), signal.SIGKILL)


def _report_and_wait(group: Sequence[Experiment], kwargs: dict[str, Any]) -> None:
    """Report one epoch of the group's first row at once, and wait until the caller has it (a
    file ``reading`` in the folder named by :data:`PID_FOLDER_ENV`)."""
    from minidl.experiments.pool import _FLUSH_SECONDS

    time.sleep(_FLUSH_SECONDS + 0.05)  # (the worker then sends the record at once)
    kwargs["on_epoch"](group[0], 0, EpochRecord(0, train_loss=0.5, lr=0.1, validation_error=50.0))
    reading = Path(os.environ[PID_FOLDER_ENV]) / "reading"
    while not reading.exists():
        time.sleep(0.01)


def send_part_then_wait(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Report one epoch, then return a result of :data:`LARGE_RESULT_BYTES` of which the worker
    sends only a part before it waits for good (as one blocked on a full pipe would): for a
    test that stops the pool while a result is on its way."""
    _report_and_wait(group, kwargs)

    def wait() -> None:
        while True:
            time.sleep(1)

    _send_in_part(wait)
    return [bytes(LARGE_RESULT_BYTES)]


def send_part_then_die(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Report one epoch, then return a result of :data:`LARGE_RESULT_BYTES` of which the worker
    sends only a part before it kills itself (:func:`_die`)."""
    _report_and_wait(group, kwargs)
    _send_in_part(_die)
    return [bytes(LARGE_RESULT_BYTES)]


#: How many epochs :func:`report_many_then_die` reports at once.
MANY_EPOCHS = 1000


def report_many_then_die(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Report :data:`MANY_EPOCHS` epochs of the group's first row at once (about 54 KB of
    records) and one more a flush later, wait until the progress queue has sent them and kill
    this worker (:func:`_die`), every write its pipes would not take whole (more than
    ``PIPE_BUF`` bytes) cut short as a kill at that moment would cut it (:func:`_send_in_part`,
    which kills it there)."""
    from minidl.experiments import pool

    _send_in_part(_die, at_least=select.PIPE_BUF + 1)
    for epoch in range(MANY_EPOCHS + 1):
        if epoch == MANY_EPOCHS:
            time.sleep(pool._FLUSH_SECONDS + 0.05)  # (the records are then sent)
        record = EpochRecord(epoch, train_loss=0.5, lr=0.1, validation_error=50.0)
        kwargs["on_epoch"](group[0], 0, record)
    progress = pool._worker["progress"]
    progress.close()
    progress.join_thread()  # (every message is in the pipe)
    _die()
    return []


def worker_state(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """How this worker was started, as one result: whether it ignores SIGINT, whether SIGTERM
    has its default action, the names of the signals its thread blocks, and torch's intra-op
    threads."""
    import torch

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    blocked = sorted(signal.Signals(number).name for number in mask)
    return [
        (
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
            blocked,
            torch.get_num_threads(),
        )
    ]


def report_at_exit(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """:func:`untrained`, after one epoch reported for each row of ``group``; the worker's
    progress messages reach its queue only as the worker exits (after the pool has every
    result), whatever the machine's load."""
    import multiprocessing.util

    from minidl.experiments import pool

    progress = pool._worker["progress"]
    if not isinstance(progress, _HeldBack):
        held = pool._worker["progress"] = _HeldBack()
        multiprocessing.util.Finalize(None, held.send, args=(progress,), exitpriority=100)
    for row in group:
        kwargs["on_epoch"](row, 0, EpochRecord(0, train_loss=0.5, lr=0.1, validation_error=50.0))
    return untrained(group, rounds, base_seed)


class _HeldBack:
    """A progress queue that keeps its messages until :meth:`send` puts them on the real one."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def put(self, message: Any) -> None:
        self.messages.append(message)

    def send(self, progress: Any) -> None:
        for message in self.messages:
            progress.put(message)
        progress.close()
        progress.join_thread()  # (every message is in the pipe)


def report_then_wait(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """:func:`untrained`, once the caller has seen one epoch of the group's first row (a file
    ``reading``, :func:`_report_and_wait`); the group of Fig. 1's cross-entropy row
    (:func:`is_late`) reports nothing and waits instead for the file ``idle`` (two minutes at
    most, as :func:`train_cross_entropy_late`). Until the caller has the first epoch, no group
    can end."""
    if any(is_late(experiment) for experiment in group):
        idle = Path(os.environ[PID_FOLDER_ENV]) / "idle"
        deadline = time.monotonic() + 120
        while not idle.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        _report_and_wait(group, kwargs)
    return untrained(group, rounds, base_seed)


def ignore_sigterm_then_wait(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Ignore SIGTERM (as a train function may), report one epoch (:func:`_report_and_wait`) and
    wait for good: for a test that stops the pool while a worker does not end on SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _report_and_wait(group, kwargs)
    while True:
        time.sleep(1)


def send_part_then_die_beside_a_waiting_worker(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """:func:`send_part_then_die` for the group of Fig. 1's cross-entropy row (:func:`is_late`);
    any other group waits ten minutes (:func:`wait_in_worker`), in a worker that only the pool's
    stop ends."""
    if any(is_late(experiment) for experiment in group):
        return send_part_then_die(group, rounds, base_seed, **kwargs)
    return wait_in_worker(group, rounds, base_seed, **kwargs)


def no_results_table_iii_late(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[str]:
    """No results: a text per row, Table III's group 1.5 s after the others, so that a worker
    is idle while it trains (the caller's ``when_idle`` reads the groups finished first)."""
    if group[0].table == "III":
        time.sleep(1.5)
    return ["not a result"] * len(group)


def threads_in_worker(group: Any, rounds: int, base_seed: int, **kwargs: Any) -> list[Any]:
    """A train function (importable: a worker runs it) that gives the worker's intra-op threads."""
    return [torch.get_num_threads()]


def sleep_then_nothing(group: Any, rounds: int, base_seed: int, **kwargs: Any) -> list[Any]:
    """A train function that sleeps ``$MINIDL_TEST_SLEEP`` seconds, then gives its rows' keys."""
    time.sleep(float(os.environ["MINIDL_TEST_SLEEP"]))
    return [row.key for row in group]
