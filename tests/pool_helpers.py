"""Train functions for the tests of worker processes (importable, so that a worker can run them)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import Experiment
from minidl.experiments.training import RowResult

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
