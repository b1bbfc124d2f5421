"""Crash and resume: ``minidl train`` killed with SIGKILL at several moments (during a save, half
way through writing the temporary file and just before the rename; and at random moments
between epochs), then resumed with ``--resume``, ends with exactly the parameters, optimizer
state, generator states, history and printed errors of an uninterrupted run; and after every kill
the checkpoint on disk is loadable.

The hidden hook ``MINIDL_CHECKPOINT_TEST_DELAY`` makes every save sleep half-way through writing
its temporary file and again before the rename, which both slows the run down enough to kill it
mid-training and opens two windows in which a kill lands inside a save. The kills inside a save
are made at a known moment: the run is stopped (``SIGSTOP``) when its temporary file is seen,
the file is looked at while nothing changes it, and the run is killed there or let go on to its
next save (a loaded machine may keep this process from looking for longer than a window).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minidl.checkpoint import CheckpointError, read_checkpoint
from minidl.cli import main
from tests.helpers import tree_environment

ARGS = [
    "train",
    "--epochs",
    "30",
    "--hidden",
    "8,8",
    "--seed",
    "3",
    "--momentum",
    "0.9",
    "--scheduler",
    "step",
    "--checkpoint-every",
    "1",
    "--quiet",
]
DELAY = 0.1  # seconds, twice per save (long enough to be seen on a loaded machine)


def _env() -> dict[str, str]:
    return tree_environment(MINIDL_CHECKPOINT_TEST_DELAY=str(DELAY), OMP_NUM_THREADS="1")


def _start(path: Path) -> subprocess.Popen[str]:
    resume = ["--resume", str(path)] if path.exists() else ["--checkpoint", str(path)]
    return subprocess.Popen(
        [sys.executable, "-m", "minidl", *ARGS, *resume],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temporaries(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def _wait_for_save(process: subprocess.Popen[str], path: Path, saves: int) -> bool:
    """Wait until the ``saves``-th save of this process has its temporary file on disk (or,
    where this process looked too late to see it, has put its checkpoint in place)."""
    seen: set[str] = {p.name for p in _temporaries(path)}
    start = _epoch_on_disk(path)
    count = 0
    deadline = time.monotonic() + 300  # (a loaded machine takes a minute to start a run)
    while time.monotonic() < deadline and process.poll() is None:
        fresh = {p.name for p in _temporaries(path)} - seen
        seen |= fresh
        # (a save whose temporary file came and went while this process waited for a core
        # still moves the checkpoint's epoch on: one epoch a save, --checkpoint-every 1)
        count = max(count + len(fresh), _epoch_on_disk(path) - start)
        if count >= saves:
            return True
        time.sleep(0.002)
    return False


def _whole(temporary: Path) -> bool:
    """Whether ``temporary`` holds a whole checkpoint (it may be part of one, or gone)."""
    try:
        read_checkpoint(temporary)
    except (CheckpointError, OSError):
        return False
    return True


def _at_the_moment(temporary: Path, written: bool) -> bool:
    """Whether the save of ``temporary`` is at the moment sought: the file whole (``written``),
    before its rename; or part of a checkpoint, half-way through its writing."""
    if written:
        return _whole(temporary)
    try:
        return temporary.stat().st_size > 0 and not _whole(temporary)
    except OSError:  # (renamed meanwhile)
        return False


def _stop_inside_a_save(process: subprocess.Popen[str], path: Path, *, written: bool) -> bool:
    """Stop ``process`` (``SIGSTOP``) inside one of its next saves, at the moment of
    :func:`_at_the_moment`; whether it could (not where it ended first, or after 300 s).

    A temporary file that looks to be at that moment while the process runs is looked at again
    once it is stopped, when nothing changes it any more: the process is then killed inside
    that save, whatever the time this process takes to send the kill. A save whose moment has
    passed lets the process go on (``SIGCONT``) to the next one."""
    passed = {p.name for p in _temporaries(path)}  # (older runs', and a save under way)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        for temporary in _temporaries(path):
            if temporary.name in passed or not _at_the_moment(temporary, written):
                continue
            process.send_signal(signal.SIGSTOP)
            # (until it has stopped: a signal is taken at the process's next entry to the kernel)
            os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
            if _at_the_moment(temporary, written):
                return True
            process.send_signal(signal.SIGCONT)
            passed.add(temporary.name)
        time.sleep(0.002)
    return False


def _kill(process: subprocess.Popen[str]) -> str:
    """Kill ``process`` (stopped or not) if it runs; what it wrote to its standard error."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.communicate()[1]


def _epoch_on_disk(path: Path) -> int:
    """The epoch of the checkpoint on disk (0 if none); it must always be loadable."""
    if not path.exists():
        return 0
    return read_checkpoint(path).training.epoch


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "waitid"), reason="os.waitid, to see the run stopped")
def test_killed_runs_resume_to_the_uninterrupted_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference.ckpt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): same kernels, and fast
    try:
        assert main([*ARGS, "--checkpoint", str(reference)]) == 0
    finally:
        torch.set_num_threads(threads)
    expected_output = capsys.readouterr().out

    path = tmp_path / "run.ckpt"
    rng = random.Random(20261128)
    crash_points = [
        ("during a save, half-way through writing the temporary file", 3, False),
        ("during a save, after the file is written and before the rename", 4, True),
        ("at a random moment between epochs", None, None),
    ]
    epochs_on_disk = [0]
    kills = 0
    inside_a_save = 0
    for moment, saves, written in crash_points:
        stale = set(_temporaries(path))
        process = _start(path)
        stopped = True
        try:
            if saves is not None and written is not None:
                # (its first saves, then stopped inside the next one, or a later one)
                _wait_for_save(process, path, saves - 1)
                stopped = _stop_inside_a_save(process, path, written=written)
            else:
                # Wait for the first new checkpoint so the kill lands inside training.
                _wait_for_save(process, path, 1)
                time.sleep(rng.uniform(0.0, 0.4))
            if process.poll() is None:
                kills += 1
        finally:
            errors = _kill(process)
        assert stopped, f"not stopped {moment}: status {process.returncode}, {errors!r}"
        # A temporary file left behind is the trace of a save that the kill interrupted.
        inside_a_save += saves is not None and bool(set(_temporaries(path)) - stale)
        epochs_on_disk.append(_epoch_on_disk(path))
        assert epochs_on_disk[-1] >= epochs_on_disk[-2]
    assert kills >= 2, "the runs finished before they could be killed"
    assert inside_a_save == 2, "a kill meant for a save landed outside it"

    final = _start(path)
    output, errors = final.communicate(timeout=600)
    assert final.returncode == 0, errors
    assert output == expected_output  # the final train and test errors

    got, want = read_checkpoint(path), read_checkpoint(reference)
    assert got.training.epoch == want.training.epoch == 30
    assert got.training.step == want.training.step
    assert got.training.history == want.training.history
    assert got.tensors.keys() == want.tensors.keys()
    for name, tensor in want.tensors.items():
        assert torch.equal(got.tensors[name], tensor), name
    assert got.header["optimizer"] == want.header["optimizer"]
    assert got.header["scheduler"] == want.header["scheduler"]
