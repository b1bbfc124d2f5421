"""The files and folders that minidl's commands and savers write: folders made and removed
again after a failure, errors that name their file, checks made before the work starts."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from minidl._validate import add_note, shown_path

__all__ = [
    "STANDARD_OUTPUT",
    "check_folder_takes_files",
    "is_link_loop",
    "make_folder",
    "make_hidden_folder",
    "naming_file",
    "remove_if_empty",
    "say",
    "special_file_kind",
]

#: The ``filename`` of an ``OSError`` that :func:`say` raises: the commands' standard output.
STANDARD_OUTPUT = "<standard output>"


def make_folder(out: Path) -> list[Path]:
    """``out.mkdir(parents=True, exist_ok=True)``, returning the folders it made: ``out`` and
    the parents that were missing (``new`` for ``new/deep``), deepest first, for
    :func:`remove_if_empty` to remove again after a run that fails. Where making one fails
    (a name too long), those made before it are removed again and the ``OSError`` raised."""
    missing = []
    folder = out
    while not os.path.lexists(folder) and folder != folder.parent:
        if folder.name != os.pardir:  # ("a/.." is a folder that was there, once "a" is made)
            missing.append(folder)
        folder = folder.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except BaseException:
        remove_if_empty(missing)
        raise
    return missing


def make_hidden_folder(folder: Path, prefix: str, made: list[Path]) -> Path:
    """Make a new folder ``<prefix><random>`` in ``folder``, private to its owner (as
    ``tempfile.mkdtemp`` makes one), and return its path, which is appended to ``made`` before
    the folder is made (and taken off again where the name is another's; a name whose folder
    could not be made, for another reason, stays: removing it removes nothing).

    The caller removes what ``made`` holds once it is done with the folder, or after an
    interrupt (Ctrl-C, or SIGTERM raised by minidl's command line). ``tempfile.mkdtemp``
    returns the name only once the folder is made: an interrupt raised just then left the
    folder with no one knowing its name.

    Raises:
        FileExistsError: 100 random names were all taken.
        OSError: the folder cannot be made (no permission, a full disk).
    """
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}"
        made.append(path)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # (another's: not ours to remove)
            made.pop()
            continue
        return path
    raise FileExistsError(errno.EEXIST, f"no free folder name {prefix}... in {os.fspath(folder)}")


def remove_if_empty(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (made by :func:`make_folder`, deepest first) that is empty;
    leave the others (and so their parents) as they are."""
    for folder in folders:
        with contextlib.suppress(OSError):  # (not empty, or gone)
            folder.rmdir()


@contextlib.contextmanager
def naming_file(path: str | os.PathLike[str]) -> Iterator[None]:
    """Give an ``OSError`` raised inside the block that names no file ``path`` as its
    ``filename``: a write or an ``fsync`` that fails (a full disk, a file size limit) raises
    one that names none, ``[Errno 28] No space left on device``, which told the user of a
    command neither which file nor which disk."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            error.filename = os.fspath(path)
        elif error.filename is None:  # (no errno: a filename would replace the message with
            # "[Errno None] None: 'path'"; io.UnsupportedOperation("not writable"), say)
            add_note(error, f"while writing {shown_path(path)}")
        raise


def say(text: str) -> None:
    """``print(text)`` to the standard output, whose write error (a full disk behind ``> file``,
    ``/dev/full``) names :data:`STANDARD_OUTPUT` as its file (see :func:`naming_file`)."""
    with naming_file(STANDARD_OUTPUT):
        print(text)


def check_folder_takes_files(folder: str | os.PathLike[str]) -> None:
    """Make a file in ``folder`` and remove it, or raise the ``OSError`` of making it.

    A folder that exists but takes no file (no permission, a read-only file system) would fail
    only when the results are written, after all the work: commands call this first.
    """
    descriptor, probe = tempfile.mkstemp(prefix=".minidl-write-test.", dir=folder)
    os.close(descriptor)
    os.unlink(probe)


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What the existing ``path`` is when it is neither a regular file nor a folder (a
    ``"character device"`` such as ``/dev/null``, a ``"block device"``, a ``"FIFO"``, a
    ``"socket"``), following symbolic links; ``None`` for a regular file, a folder, or nothing.

    A file written atomically (a temporary file renamed over ``path``) would replace such a
    file with a regular one, where writing into it would have written through it.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    for test, kind in (
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return None


def is_link_loop(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a symbolic link that leads, through links, back to itself (a link
    to itself, or two links to each other): it resolves to no file, so
    ``os.path.realpath`` gives it back unchanged, and a file written atomically (a temporary
    file renamed over it) would replace the link with a regular file."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    except ValueError:  # (a NUL in the path: refused where the path is checked)
        return False
    return False
