"""minidl's small internals (_files, _frozen, _memory) as a mutation audit of them (and of
_interrupts and _allocator) found them untested: each test fails on a small change that the
existing tests let through."""

from __future__ import annotations

import errno
import io
import os
import sys
from pathlib import Path

import pytest

# -- minidl._files -----------------------------------------------------------------------------


def test_make_hidden_folder_refusal_names_the_whole_folder_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every name taken: the FileExistsError names the prefix and the folder by its whole path
    (not its last name alone), errno EEXIST, and ``made`` is left as it was given."""
    from minidl import _files

    monkeypatch.setattr(_files.secrets, "token_hex", lambda nbytes: "taken")
    (tmp_path / ".x-taken").mkdir()
    made: list[Path] = []
    with pytest.raises(FileExistsError) as info:
        _files.make_hidden_folder(tmp_path, ".x-", made)
    assert info.value.errno == errno.EEXIST
    assert str(info.value) == f"[Errno 17] no free folder name .x-... in {os.fspath(tmp_path)}"
    assert made == []


def test_say_names_the_standard_output_when_its_write_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write to the standard output that fails with an errno and no file (a full disk behind
    ``> file``) is raised naming ``<standard output>`` as its file."""
    from minidl import _files

    class _Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", _Full())
    with pytest.raises(OSError) as info:
        _files.say("hello")
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == _files.STANDARD_OUTPUT == "<standard output>"
    assert str(info.value) == "[Errno 28] No space left on device: '<standard output>'"


def test_check_folder_takes_files_closes_the_descriptor_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The descriptor of the probe file is closed (each one mkstemp gave, once), and the
    probe removed."""
    from minidl import _files

    opened: list[int] = []
    closed: list[int] = []
    mkstemp, close = _files.tempfile.mkstemp, os.close

    def recording_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        descriptor, name = mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        opened.append(descriptor)
        return descriptor, name

    def recording_close(descriptor: int) -> None:
        closed.append(descriptor)
        close(descriptor)

    monkeypatch.setattr(_files.tempfile, "mkstemp", recording_mkstemp)
    monkeypatch.setattr(_files.os, "close", recording_close)
    _files.check_folder_takes_files(tmp_path)
    assert len(opened) == 1 and closed == opened
    assert list(tmp_path.iterdir()) == []


# -- minidl._frozen ----------------------------------------------------------------------------


def test_frozen_keeps_a_tuple_as_it_is() -> None:
    """Only dicts and lists are frozen; any other value (a tuple, which cannot change) is kept
    as it is, the very object."""
    from minidl._frozen import FrozenDict, frozen

    pair = (1, [2])
    tree = frozen({"pair": pair, "n": 1}, "read-only")
    assert type(tree) is FrozenDict
    assert tree["pair"] is pair and type(tree["pair"]) is tuple


# -- minidl._memory ----------------------------------------------------------------------------


def test_out_of_memory_keeps_an_enforce_text_that_is_not_at_the_start() -> None:
    """Only a leading ``[enforce fail at ...]`` prefix is dropped: the same words further on
    in the line (quoted in another message) are kept as they are."""
    from minidl._memory import out_of_memory

    text = (
        "while loading: [enforce fail at alloc_cpu.cpp:127] err == 0. "
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes."
    )
    assert out_of_memory(RuntimeError(text)) == text


def test_out_of_memory_names_a_memory_errors_own_type() -> None:
    """A subclass of MemoryError is named by its own type's name."""
    from minidl._memory import out_of_memory

    class PoolMemoryError(MemoryError):
        pass

    assert out_of_memory(PoolMemoryError("pool full")) == "PoolMemoryError pool full"


def test_naming_file_notes_the_path_of_an_error_without_errno() -> None:
    """An OSError with no errno (``io.UnsupportedOperation("not writable")``) is not given a
    filename (which would turn its message into ``[Errno None] None: 'path'``): its message is
    kept and the path is added as a note."""
    from minidl import _files

    with pytest.raises(io.UnsupportedOperation) as info, _files.naming_file(Path("runs/a.ckpt")):
        raise io.UnsupportedOperation("not writable")
    assert info.value.filename is None and info.value.errno is None
    assert str(info.value) == "not writable"
    assert info.value.__notes__ == ["while writing runs/a.ckpt"]


def test_a_deep_copy_keeps_a_list_held_in_a_frozen_list_shared_as_for_plain_values() -> None:
    """``copy.deepcopy`` of a structure holding a frozen tree and a list inside one of its
    frozen lists gives one plain list for both places, as for the plain tree (the memo is
    passed down through a FrozenList's items too)."""
    import copy

    from minidl._frozen import frozen

    plain = {"history": [[1.0], [2.0]]}
    tree = frozen(plain, "read-only")
    for value in (plain, tree):
        pair = copy.deepcopy([value, value["history"][0]])
        assert pair[1] is pair[0]["history"][0] and type(pair[1]) is list
        assert pair[0] == plain
