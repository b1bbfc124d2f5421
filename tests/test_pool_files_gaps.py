"""Behaviour of ``minidl.experiments.pool`` and ``minidl._files`` that a second mutation audit
found untested: refusals of ``train_groups`` named in its words, the rows and timing of the
progress messages, how the workers are stopped and started, and the files and folders that
the savers make, check and name, each against exact expected values."""

from __future__ import annotations

import errno
import functools
import multiprocessing
import os
import signal
import socket
import stat
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from minidl import _files
from minidl.experiments import pool
from minidl.experiments.config import TABLE_II, Experiment
from minidl.experiments.training import RowResult
from minidl.train import EpochRecord
from tests.pool_helpers import report_at_exit, untrained

# -- helpers that a worker runs (importable: defined at the top level) -----------------------


def _on_epoch_given(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Whether the worker's train function was given an ``on_epoch``, one result per row."""
    return [kwargs["on_epoch"] is not None] * len(group)


def _sigterm_default(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[Any]:
    """Whether SIGTERM has its default action in the worker, one result per row."""
    return [signal.getsignal(signal.SIGTERM) is signal.SIG_DFL] * len(group)


# -- train_groups' refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            [[TABLE_II[0]], ["x"]],
            r"every group must be a non-empty sequence of Experiment, got \['x'\] at position 1",
        ),
        (
            [[TABLE_II[0], None]],
            r"every group must be a non-empty sequence of Experiment, got \[Experiment\(",
        ),
        (
            iter([[TABLE_II[0]]]),
            r"groups must be a sequence of groups of Experiment, got <list_iterator object",
        ),
        ({(TABLE_II[0],)}, r"groups must be a sequence of groups of Experiment, got \{\("),
    ],
    ids=["a str row", "None beside a row", "an iterator", "a set"],
)
def test_train_groups_refuses_rows_that_are_no_experiments_and_groups_that_are_no_sequence(
    groups: Any, message: str
) -> None:
    """A group holding something other than an Experiment (``["x"]``, ``None`` beside a row)
    and groups given as an iterator or a set are refused in train_groups' name before any
    worker starts (the rows would fail in a worker, an iterator in ``len``)."""
    with pytest.raises(TypeError, match=f"^train_groups: {message}"):
        pool.train_groups(groups, 1, 0, jobs=2, train=untrained)
    assert multiprocessing.active_children() == []


def test_train_groups_refuses_a_train_function_no_worker_can_import() -> None:
    """Called directly (not through run_experiments), train_groups refuses a function defined
    inside another, and a callable that cannot be pickled (a partial holding a lock), in its
    own name, a TypeError whose cause is pickle's error, before any worker starts."""

    def local(group: Sequence[Experiment], *args: Any, **kwargs: Any) -> list[RowResult]:
        return untrained(group, 1, 0)  # pragma: no cover (never run)

    holding_a_lock = functools.partial(untrained, lock=threading.Lock())
    for train, cause in ((local, AttributeError), (holding_a_lock, TypeError)):
        with pytest.raises(
            TypeError,
            match=r"^train_groups: the train function runs in worker processes, so it must be "
            r"importable \(a function defined at the top level of a module\), got ",
        ) as info:
            pool.train_groups([[TABLE_II[0]]], 1, 0, jobs=2, train=train)
        assert isinstance(info.value.__cause__, cause)
        assert multiprocessing.active_children() == []


# -- progress ---------------------------------------------------------------------------------


def test_on_epoch_is_called_with_the_row_of_the_group_that_trained() -> None:
    """Each progress record reaches ``on_epoch`` with its own row of a group of several rows
    (not the group's first row), in the order the worker reported them."""
    groups = [[TABLE_II[0], TABLE_II[1], TABLE_II[2]], [TABLE_II[3]]]
    calls: list[tuple[Experiment, int]] = []
    pool.train_groups(
        groups,
        1,
        0,
        jobs=1,
        train=report_at_exit,
        epochs=1,
        on_epoch=lambda experiment, index, record: calls.append((experiment, index)),
    )
    assert calls == [(TABLE_II[0], 0), (TABLE_II[1], 0), (TABLE_II[2], 0), (TABLE_II[3], 0)]


def test_a_worker_is_given_on_epoch_only_where_the_caller_reads_the_progress() -> None:
    """The train function in a worker gets ``on_epoch=None`` where the caller gave no
    ``on_epoch`` (a train function may then skip the work of its records), a function where
    it gave one."""
    groups = [[TABLE_II[0]], [TABLE_II[1]]]
    none: list[Any] = pool.train_groups(groups, 1, 0, jobs=2, train=_on_epoch_given)
    assert none == [[False], [False]]
    given: list[Any] = pool.train_groups(
        groups, 1, 0, jobs=2, train=_on_epoch_given, on_epoch=lambda *record: None
    )
    assert given == [[True], [True]]


def test_a_worker_sends_its_records_once_per_flush_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker sends the records it has once ``_FLUSH_SECONDS`` (0.25 s) have passed since its
    last message, that long included, and the rest at the end: with a clock that advances
    0.125 s per epoch, 8 epochs go in 4 messages of 2 (not a message per epoch once the first
    was sent, nor 3 + 3 + 2)."""
    ticks = iter(range(100))
    monkeypatch.setattr(pool, "time", types.SimpleNamespace(monotonic=lambda: next(ticks) * 0.125))
    sent: list[tuple[int, list[tuple[int, int, EpochRecord]]]] = []

    def train(
        group: list[Experiment], rounds: int, base_seed: int, *, epochs: int, on_epoch: Any
    ) -> list[Any]:
        for epoch in range(epochs):
            on_epoch(group[0], 0, EpochRecord(epoch, 0.5, 0.1, 50.0))
        return []

    monkeypatch.setitem(pool._worker, "progress", types.SimpleNamespace(put=sent.append))
    assert pool._train_in_worker(5, train, [TABLE_II[0]], 1, 0, 8, True) == []
    assert [[record.epoch for _, _, record in records] for _, records in sent] == [
        [0, 1],
        [2, 3],
        [4, 5],
        [6, 7],
    ]
    assert {position for position, _ in sent} == {5}


# -- stopping and starting the workers ------------------------------------------------------


def test_stop_workers_kills_only_a_worker_still_running_after_ten_seconds() -> None:
    """Each worker is sent SIGTERM, then given 10 s to end; one still running then (it ignores
    SIGTERM) is killed and awaited, one that ended is left as it is; the results' pipe is
    closed last."""
    events: list[str] = []

    class Worker:
        def __init__(self, name: str, ends: bool) -> None:
            self.name, self.ends = name, ends
            self.exitcode: int | None = None

        def terminate(self) -> None:
            events.append(f"terminate {self.name}")

        def join(self, timeout: float | None = None) -> None:
            events.append(f"join {self.name} {timeout}")
            if self.ends:
                self.exitcode = -signal.SIGTERM

        def kill(self) -> None:
            events.append(f"kill {self.name}")
            self.ends = True

    class Writer:
        def close(self) -> None:
            events.append("close")

    stopped = types.SimpleNamespace(
        _processes={1: Worker("ends", True), 2: Worker("stays", False)},
        _result_queue=types.SimpleNamespace(_writer=Writer()),
    )
    pool._stop_workers(stopped)  # type: ignore[arg-type]
    assert events == [
        "terminate ends",
        "terminate stays",
        "join ends 10.0",
        "join stays 10.0",
        "kill stays",
        "join stays None",
        "close",
    ]


def test_a_worker_ended_is_read_from_the_sentinels() -> None:
    """``_a_worker_ended`` is False for a pool with no workers (none recorded yet, or
    ``None``) and while every sentinel is unready, True once one is ready."""
    read, write = os.pipe()
    try:
        running = types.SimpleNamespace(_processes={0: types.SimpleNamespace(sentinel=read)})
        assert pool._a_worker_ended(running) is False  # type: ignore[arg-type]
        assert pool._a_worker_ended(types.SimpleNamespace(_processes={})) is False  # type: ignore[arg-type]
        assert pool._a_worker_ended(types.SimpleNamespace(_processes=None)) is False  # type: ignore[arg-type]
        os.close(write)
        write = -1
        assert pool._a_worker_ended(running) is True  # type: ignore[arg-type]
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


def test_a_worker_has_sigterms_default_action_whatever_the_parents_handler() -> None:
    """A forked worker inherits the parent's SIGTERM handler (minidl's command line sets one
    that raises an exception); the worker restores the default action, so that SIGTERM ends
    it at once."""

    def handler(number: int, frame: Any) -> None:  # pragma: no cover (never called)
        pass

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        results: list[Any] = pool.train_groups(
            [[TABLE_II[0]]], 1, 0, jobs=1, train=_sigterm_default
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert results == [[True]]


# -- minidl._files ----------------------------------------------------------------------------


def test_make_folder_interrupted_removes_the_parents_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt (Ctrl-C, or SIGTERM raised by the command line) while ``make_folder``
    made ``new/deep`` removes the parents already made, as an error does, and is raised."""
    make = Path.mkdir

    def interrupted(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "deep":  # (once its parent "new" is made)
            make(self.parent, parents=True, exist_ok=True)
            raise KeyboardInterrupt
        make(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _files.make_folder(tmp_path / "new" / "deep")
    assert list(tmp_path.iterdir()) == []


def test_make_hidden_folder_tries_100_names_and_raises_another_error_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name taken: 100 names are drawn before the FileExistsError. Another error of
    ``os.mkdir`` (no permission) is raised at once, its name left in ``made`` (removing it
    removes nothing)."""
    drawn: list[int] = []

    def draw(nbytes: int) -> str:
        drawn.append(nbytes)
        return "t"

    monkeypatch.setattr("minidl._files.secrets.token_hex", draw)
    (tmp_path / ".x-t").mkdir()
    with pytest.raises(FileExistsError):
        _files.make_hidden_folder(tmp_path, ".x-", [])
    assert len(drawn) == 100

    def refuse(path: Any, mode: int = 0o777) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr("minidl._files.os.mkdir", refuse)
    drawn.clear()
    made: list[Path] = []
    with pytest.raises(PermissionError, match=r"^\[Errno 13\] Permission denied: "):
        _files.make_hidden_folder(tmp_path, ".y-", made)
    assert made == [tmp_path / ".y-t"] and len(drawn) == 1


def test_remove_if_empty_leaves_a_folder_that_holds_a_file_and_removes_the_others(
    tmp_path: Path,
) -> None:
    """A folder made by make_folder that holds a file is left (no error), its parent too; the
    empty folders beside it are removed, whatever their place in the list."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "kept").write_text("x")
    (tmp_path / "c" / "d").mkdir(parents=True)
    folders = [tmp_path / "a" / "b", tmp_path / "a", tmp_path / "c" / "d", tmp_path / "c"]
    _files.remove_if_empty(folders)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a",
        "a/b",
        "a/b/kept",
    ]


def test_naming_file_keeps_the_file_an_error_names_already() -> None:
    """An OSError that names its own file (a rename's source, say) keeps it, with no note;
    only one that names none is given ``path``."""
    with pytest.raises(FileNotFoundError) as info, _files.naming_file("runs/a.ckpt"):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "runs/.tmp-1")
    assert info.value.filename == "runs/.tmp-1"
    assert str(info.value) == "[Errno 2] No such file or directory: 'runs/.tmp-1'"
    assert getattr(info.value, "__notes__", None) is None


def test_check_folder_takes_files_raises_for_a_missing_folder_and_leaks_no_descriptor(
    tmp_path: Path,
) -> None:
    """The probe file is made in the folder given: a folder that is not there raises
    FileNotFoundError naming a file in it. Checking a folder that takes files leaves no file
    descriptor open (here 20 checks)."""
    with pytest.raises(FileNotFoundError) as info:
        _files.check_folder_takes_files(tmp_path / "missing")
    assert str(info.value.filename).startswith(str(tmp_path / "missing" / ".minidl-write-test."))
    before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    for _ in range(20):
        _files.check_folder_takes_files(tmp_path)
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
    assert list(tmp_path.iterdir()) == []


def test_special_file_kind_follows_links_and_names_sockets_and_block_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symbolic link to a FIFO is a FIFO (written through, a save would replace the link's
    target's kind); a Unix socket is a ``"socket"``; a block device a ``"block device"``."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    assert _files.special_file_kind(tmp_path / "link") == "FIFO"
    monkeypatch.chdir(tmp_path)  # (a socket's path is short)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("s")
        assert _files.special_file_kind(tmp_path / "s") == "socket"
    try:
        os.mknod(tmp_path / "block", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    except (PermissionError, AttributeError):
        pytest.skip("no block device can be made here")
    assert _files.special_file_kind(tmp_path / "block") == "block device"
