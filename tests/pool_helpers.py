"""Train functions for the tests of worker processes (importable, so that a worker can run them)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import Experiment
from minidl.experiments.training import RowResult
from minidl.train import EpochRecord

#: How long :func:`train_cross_entropy_late` waits before a group with Fig. 1's cross-entropy row.
DELAY_SECONDS = 3.0


def is_late(experiment: Experiment) -> bool:
    """Fig. 1's cross-entropy row: its group starts :data:`DELAY_SECONDS` late."""
    return experiment.table == "Fig. 1" and experiment.loss == "cross-entropy"


def train_cross_entropy_late(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """``train_rows_batched``, started :data:`DELAY_SECONDS` late for the group of Fig. 1's
    cross-entropy row: the others then finish first, and a worker waits with nothing to train."""
    if any(is_late(experiment) for experiment in group):
        time.sleep(DELAY_SECONDS)
    return train_rows_batched(group, rounds, base_seed, **kwargs)


#: The folder where :func:`wait_in_worker` leaves a file named after its worker's process id.
PID_FOLDER_ENV = "MINIDL_TEST_PID_FOLDER"


def wait_in_worker(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """Leave ``<pid>.pid`` in the folder named by :data:`PID_FOLDER_ENV`, then wait two minutes
    (long enough for a test to kill the parent process meanwhile)."""
    (Path(os.environ[PID_FOLDER_ENV]) / f"{os.getpid()}.pid").touch()
    time.sleep(120)
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


#: The size of :func:`send_a_large_result`'s result.
LARGE_RESULT_BYTES = 64 * 2**20


class _LargeResult:
    """:data:`LARGE_RESULT_BYTES` to send back, which leave a file ``sending`` in the folder
    named by :data:`PID_FOLDER_ENV` as they are about to be sent."""

    def __reduce__(self) -> tuple[type[bytes], tuple[bytes]]:
        (Path(os.environ[PID_FOLDER_ENV]) / "sending").touch()
        return (bytes, (bytes(LARGE_RESULT_BYTES),))


def send_a_large_result(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Report one epoch of the group's first row at once, wait until the caller has it (a file
    ``reading`` in the folder named by :data:`PID_FOLDER_ENV`), then return a
    :class:`_LargeResult` (for a test that stops the pool while the result is being sent)."""
    from minidl.experiments.pool import _FLUSH_SECONDS

    time.sleep(_FLUSH_SECONDS + 0.05)  # (the worker then sends the record at once)
    kwargs["on_epoch"](group[0], 0, EpochRecord(0, train_loss=0.5, lr=0.1, validation_error=50.0))
    reading = Path(os.environ[PID_FOLDER_ENV]) / "reading"
    while not reading.exists():
        time.sleep(0.01)
    return [_LargeResult()]


#: Seconds after :class:`_KilledWhileSending` starts to be sent that its worker is killed.
KILL_AFTER_SECONDS = 1.0


class _KilledWhileSending(_LargeResult):
    """A :class:`_LargeResult` whose worker kills itself with ``SIGKILL`` (as the out-of-memory
    killer would) :data:`KILL_AFTER_SECONDS` after it starts to send it, leaving a file
    ``killed`` in the folder named by :data:`PID_FOLDER_ENV` just before."""

    def __reduce__(self) -> tuple[type[bytes], tuple[bytes]]:
        def kill() -> None:
            (Path(os.environ[PID_FOLDER_ENV]) / "killed").touch()
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Timer(KILL_AFTER_SECONDS, kill).start()
        return super().__reduce__()


def killed_while_sending(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """:func:`send_a_large_result`, whose worker is killed while it sends the result
    (:class:`_KilledWhileSending`)."""
    send_a_large_result(group, rounds, base_seed, **kwargs)  # (the record, and the wait)
    return [_KilledWhileSending()]
