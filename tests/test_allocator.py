"""minidl._allocator: glibc keeps freed memory, where minidl reproduce asks it to."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from minidl._allocator import keep_freed_memory
from minidl.cli import main

GLIBC = sys.platform.startswith("linux") and "musl" not in (ctypes.util.find_library("c") or "")


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_keep_freed_memory_applies_on_glibc_and_can_be_repeated() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True


def test_keep_freed_memory_does_nothing_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False


class _FakeMallopt:
    """Records the calls of ``mallopt`` and returns ``result``."""

    def __init__(self, result: int) -> None:
        self.result = result
        self.calls: list[tuple[int, int]] = []

    def __call__(self, option: int, value: int) -> int:
        self.calls.append((option, value))
        return self.result


@pytest.mark.parametrize("result", [1, 0])
def test_keep_freed_memory_sets_glibcs_two_thresholds(
    monkeypatch: pytest.MonkeyPatch, result: int
) -> None:
    """The options are glibc's <malloc.h> M_MMAP_THRESHOLD (-3) and M_TRIM_THRESHOLD (-1),
    set to 32 MiB and 256 MiB; a refusal by mallopt (0) is reported as False."""
    mallopt = _FakeMallopt(result)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: type("Libc", (), {"mallopt": mallopt})())
    assert keep_freed_memory() is bool(result)
    expected = [(-3, 32 * 2**20), (-1, 256 * 2**20)]
    assert mallopt.calls == (expected if result else expected[:1])


#: Page faults of a stacked training (5 models, validation sets of 1000 points: 500 KB tensors)
#: in a fresh process, with or without keep_freed_memory first.
FAULTS = """
import resource, sys, torch
from minidl._allocator import keep_freed_memory
from minidl import nn
from minidl.data import make_disk_data
from minidl.optim import SGD
from minidl.rounds import fit_rounds
torch.set_num_threads(1)
if sys.argv[1] == "on":
    assert keep_freed_memory()
data = [make_disk_data(seed=r) for r in range(5)]
def run(epochs):
    torch.manual_seed(0)
    fit_rounds([nn.mlp((2, 25, 25, 25, 2), "tanh") for _ in range(5)], nn.CrossEntropyLoss(),
        lambda s: SGD(s.parameters(), lr=0.01), [(d.train.x, d.train.y) for d in data],
        epochs=epochs, generators=[torch.Generator() for _ in data],
        validation_sets=[(d.validation.x, d.validation.y) for d in data])
run(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_blocks_are_reused_instead_of_mapped_afresh() -> None:
    """The effect itself, in fresh processes: glibc's defaults page-fault on every step of a
    stacked training; with keep_freed_memory, the freed blocks are reused. (glibc's defaults
    move their own mmap threshold as blocks are freed, and a process of them now and then
    faults a tenth as often as usual, 579 against 4226 to 5785: the defaults are measured up
    to three times, the most faults kept; keep_freed_memory's 122 do not vary.)"""

    def faults_of(mode: str) -> int:
        result = subprocess.run(
            [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(result.stdout.split()[-1])

    faults = {"on": faults_of("on"), "off": 0}
    for _ in range(3):
        faults["off"] = max(faults["off"], faults_of("off"))
        if faults["on"] * 5 < faults["off"]:
            break
    if faults["off"] == 0:
        pytest.skip("this kernel does not count minor page faults (getrusage's ru_minflt is 0)")
    assert faults["on"] * 5 < faults["off"], faults


def test_reproduce_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from minidl.experiments import runner

    calls: list[bool] = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: calls.append(True) or True)
    args = ["reproduce", "--quick", "--quiet", "--tables", "2", "--jobs", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert calls == [True]


def test_keep_freed_memory_without_mallopt_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Linux C library without ``mallopt`` (musl): ``False``, not an ``AttributeError``."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: type("Musl", (), {})())
    assert keep_freed_memory() is False
