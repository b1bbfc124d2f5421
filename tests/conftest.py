"""Shared fixtures: every test starts from torch's default state and leaves it as it found it;
an existing folder that takes no new file, for the commands that must refuse one."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from minidl._files import check_folder_takes_files

# The property tests draw the same examples on every run, so that `make test` passes or fails
# alike on every run of one commit; HYPOTHESIS_PROFILE=explore draws new ones on every run, to
# look for failures (as many as each test's settings say).
settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# A process started in the background by a shell without job control (`pytest &` in a script,
# nohup, a CI step) starts with SIGINT ignored, and Python leaves it so: the tests of Ctrl-C,
# which send SIGINT to this process or to the commands it starts (which inherit it), saw nothing
# raised. Python's own handler is set, as Python sets it where SIGINT is not ignored.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The tests use small tensors, for which intra-op threads only add contention (a training step
# can run 50x slower on a busy machine); one thread also makes every run sum in the same order.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_of_started_processes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """Give the processes the tests start (``TMPDIR``) a folder of pytest's own temporary one.

    What such a process leaves behind when a test kills it (a killed parent's or worker's
    ``pymp-*`` folder) or by design (torchrun's ``torchelastic_*`` logs) then goes with pytest's
    folders of old runs, where it stayed in the system's temporary folder for good: four
    folders a run of the suite. (Short, for the sockets that multiprocessing makes there.)
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmp")))
        yield


@pytest.fixture(autouse=True)
def _torch_state() -> Iterator[None]:
    """Seed torch's global generator and set one intra-op thread (whatever a test before set);
    restore the default dtype and grad mode afterwards.

    Tests never change the default dtype globally; a test that wants float64 by default uses the
    ``float64_default`` fixture, which this one undoes.
    """
    dtype = torch.get_default_dtype()
    grad_enabled = torch.is_grad_enabled()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad_enabled)


@pytest.fixture
def float64_default() -> Iterator[None]:
    """Make float64 the default dtype for one test only."""
    torch.set_default_dtype(torch.float64)
    yield


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """An existing folder that takes no new file: a read-only folder where permissions apply
    (not as root), else ``/sys`` (sysfs refuses new files even to root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        for candidate in (folder, Path("/sys")):
            try:
                check_folder_takes_files(candidate)
            except OSError:
                yield candidate
                return
        pytest.skip("no folder here refuses new files")
    finally:
        folder.chmod(0o700)
