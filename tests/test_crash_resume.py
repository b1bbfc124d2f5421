"""Crash and resume: ``minidl train`` killed with SIGKILL at several moments (during a save, half
way through writing the temporary file and just before the rename; and at random moments
between epochs), then resumed with ``--resume``, ends with exactly the parameters, optimizer
state, generator states, history and printed errors of an uninterrupted run; and after every kill
the checkpoint on disk is loadable.

The hidden hook ``MINIDL_CHECKPOINT_TEST_DELAY`` makes every save sleep half-way through writing
its temporary file and again before the rename, which both slows the run down enough to kill it
mid-training and opens two windows in which a kill lands inside a save.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minidl.checkpoint import read_checkpoint
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


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate()


def _epoch_on_disk(path: Path) -> int:
    """The epoch of the checkpoint on disk (0 if none); it must always be loadable."""
    if not path.exists():
        return 0
    return read_checkpoint(path).training.epoch


@pytest.mark.slow
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
        ("during a save, half-way through writing the temporary file", 3, 0.0),
        ("during a save, after the fsync and before the rename", 4, DELAY * 1.5),
        ("at a random moment between epochs", None, None),
    ]
    epochs_on_disk = [0]
    kills = 0
    inside_a_save = 0
    for _, saves, after in crash_points:
        stale = set(_temporaries(path))
        process = _start(path)
        if saves is not None:
            if not _wait_for_save(process, path, saves):
                _kill(process)
                continue
            time.sleep(after or 0.0)
        else:
            # Wait for the first new checkpoint so the kill lands inside training.
            _wait_for_save(process, path, 1)
            time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            kills += 1
        _kill(process)
        # A temporary file left behind is the trace of a save that the kill interrupted.
        inside_a_save += saves is not None and bool(set(_temporaries(path)) - stale)
        epochs_on_disk.append(_epoch_on_disk(path))
        assert epochs_on_disk[-1] >= epochs_on_disk[-2]
    assert kills >= 2, "the runs finished before they could be killed"
    assert inside_a_save >= 1, "no kill landed inside a save"

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
