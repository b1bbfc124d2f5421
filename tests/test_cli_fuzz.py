"""The command line against any argument vector that hypothesis writes.

``minidl`` (``train``, ``reproduce``, no command, ``--help``, ``--version``) is given argument
vectors built from its real options, with valid values and invalid ones (huge, negative, NaN and
infinite numbers, empty, non-ASCII and very long texts, values that look like options, paths
that are folders, missing, unwritable, special files or files that are no checkpoint), options
repeated, unknown options and stray arguments. Whatever it is given, it either does its job
(status 0) or stops with status 2 (a usage error: the usage, then one line) or 1 (the run
failed: one line), its error one line that names the command, and short: never a traceback,
never a message that quotes a text of a million characters whole. And it leaves no file
half-written: a refused run writes nothing; a run that writes a checkpoint leaves one that
reads back, and no temporary file beside it.

Runs are kept cheap: a training of more than a few dozen steps is stopped where it would start
(``fit`` replaced by one that raises :class:`_Started`, which the test takes as the run
accepted: nothing may have been written by then), and ``minidl reproduce`` trains nothing (its
run, given the settings that the command line makes, is replaced by one that records them).
The examples are drawn alike on every run (see ``conftest.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import minidl.experiments.runner
import minidl.train
from minidl.checkpoint import read_checkpoint
from minidl.cli import main

#: The options of ``minidl train`` whose value is a path, in a folder that the test makes.
_PATH_OPTIONS = ("--checkpoint", "--resume")
#: The cheap run that every ``minidl train`` vector starts from (later options override it):
#: 10 steps an epoch, a network of 23 parameters; the checkpoint ``run.ckpt`` is of it.
_BASE = ["--hidden", "3", "--batch-size", "100", "--epochs", "1", "--quiet"]
#: The most steps a run may take in a test (more: it is stopped where training starts).
_MOST_STEPS = 40
#: The longest error line and the most characters of standard error and output.
_LONGEST_LINE = 1000
_MOST_ERRORS = 2500
_MOST_OUTPUT = 10_000


class _Started(BaseException):
    """Raised by the replaced ``fit`` where a run of more than :data:`_MOST_STEPS` would start
    training (a BaseException: no handler of the command takes it)."""


# -- values ----------------------------------------------------------------------------------

#: Texts as a command line gives them (no NUL; a byte that is no UTF-8 as Python decodes it).
_TEXT = st.binary(max_size=12).map(lambda data: os.fsdecode(data.replace(b"\0", b""))) | st.text(
    st.characters(codec="utf-8", exclude_characters="\0"), max_size=12
)
#: Long texts, written ``<LONG x*5001>`` in the vectors that hypothesis shows (see _expanded).
_LONG = st.sampled_from(["x*5001", "1*5001", "-*3000", "é*200000", ",*5000", "a,*3000"]).map(
    "<LONG {}>".format
)
_NUMBERS = st.sampled_from(
    [
        "0",
        "-0",
        "1",
        "-1",
        "0.5",
        "1e-320",
        "1e30",
        "1e300",
        "-1e-3",
        "nan",
        "-nan",
        "inf",
        "-inf",
        "Infinity",
        "1_000",
        "0x10",
        "٣",
        " 2 ",
        "",
        "+",
        str(2**63),
        str(2**64),
        str(-(2**63) - 1),
        str(10**30),
        "9" * 4301,
    ]
)
_JUNK = _TEXT | _LONG | _NUMBERS | st.sampled_from(["--epochs", "-h", "--", "-", "=", "--lr=1"])

_WIDTHS = st.integers(1, 5).map(str) | st.sampled_from(["0", "-2", str(10**12), str(2**64), ""])
_ACTIVATIONS = st.sampled_from(
    ["tanh", "ReLU", "leaky_relu", "GELU-tanh", "silu", "sigmoid", "elu", "selu", "gelu", "relu6"]
)
_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--activation": st.lists(_ACTIVATIONS, min_size=1, max_size=4).map(",".join),
    "--loss": st.sampled_from(["cross-entropy", "mse", "MSE", "nll"]),
    "--optimizer": st.sampled_from(["sgd", "adadelta", "adam"]),
    "--lr": st.sampled_from(["0", "0.01", "1", "1e30", "3e38", "1e300", "1e-320"]),
    "--momentum": st.sampled_from(["0", "0.5", "0.99", "1", "-0.1"]),
    "--rho": st.sampled_from(["0", "0.95", "1", "1.5", "nan"]),
    "--eps": st.sampled_from(["1e-6", "1e-46", "1e39", "0", "-1"]),
    "--max-grad-norm": st.sampled_from(["1", "1e-30", "1e-320", "0", "1e300"]),
    "--scheduler": st.sampled_from(["none", "step", "clr", "cosine"]),
    "--epochs": st.sampled_from(["0", "1", "2", "3", str(10**30)]),
    "--batch-size": st.sampled_from(["1", "100", "999", "1000", "5000", str(2**63), str(10**30)]),
    "--hidden": st.lists(_WIDTHS, min_size=1, max_size=3).map(",".join)
    | st.sampled_from([",".join(["2"] * 200), ",".join([str(10**12)] * 100)]),
    "--seed": st.sampled_from(["0", "1", "-1", str(2**64 - 1), str(-(2**63))]),
    "--dtype": st.sampled_from(["float32", "float64", "float16", "int8"]),
    "--log-every": st.sampled_from(["1", "2", str(10**30)]),
    "--checkpoint-every": st.sampled_from(["1", "2", str(10**30)]),
    "--dist-timeout": st.sampled_from(["1", "0.5", "1e10"]),
    "--checkpoint": st.just(""),  # (a path of the folder's, see _PATHS)
    "--resume": st.just(""),
}
_FLAGS = ("--quiet", "--detect-anomaly")

#: The paths that the path options are given, in the test's folder (made by _folder).
_PATHS = [
    "run.ckpt",  # a checkpoint of _BASE, at epoch 1
    "new.ckpt",
    "text.ckpt",  # a file of text
    "empty.ckpt",  # a file of 0 bytes
    "folder",
    "folder/",
    "folder/.",
    "missing/x.ckpt",
    "text.ckpt/x.ckpt",
    "loop",  # a symbolic link to itself
    "dangling",  # a symbolic link to missing/x.ckpt
    "link",  # a symbolic link to folder/linked.ckpt (not there)
    "run-link",  # a symbolic link to run.ckpt
    "fifo",
    "/sys/x.ckpt",  # a folder that takes no file
    "",
    " ",
    "n" * 300,
    "-",
    "--resume",
    os.fsdecode(b"\xff\xfe.ckpt"),
    "new\nline.ckpt",
    "<LONG é*200000>",
]


def _good(name: str) -> st.SearchStrategy[list[str]]:
    """An option of ``minidl train`` with a value of its own (valid, or near: ``--hidden 0``)."""
    values = st.sampled_from(_PATHS) if name in _PATH_OPTIONS else _VALUES[name]
    return values.map(lambda value: [name, value]) | values.map(lambda value: [f"{name}={value}"])


#: Unknown options, and options given a value that they take none of or cannot tell apart.
_ODD = ["--quiet=1", "--quick=1", "--verbose", "-x", "--hid", "--e", "--", "-", "-hh"]
_ODD += ["-h<LONG x*5001>", "--quiet=<LONG \n*200>", "--d=<LONG é*3000>", "-x<LONG y*999>"]


def _bad(names: tuple[str, ...]) -> st.SearchStrategy[list[str]]:
    """An option of ``names`` with junk or with no value (at the end, or before another option),
    or an unknown option, or a stray argument."""
    return st.one_of(
        st.tuples(st.sampled_from(names), _JUNK).map(list),
        st.sampled_from(names).map(lambda name: [name]),
        st.sampled_from(_ODD).map(lambda text: [text]),
        _JUNK.map(lambda text: [text]),
    )


def _argv(
    command: str, base: list[str], good: st.SearchStrategy[list[str]], names: tuple[str, ...]
) -> st.SearchStrategy[list[str]]:
    """``minidl COMMAND BASE`` and up to 4 options of ``good``, with one of :func:`_bad` among
    them in a third of the vectors."""

    @st.composite
    def draw(draw: st.DrawFn) -> list[str]:
        parts = draw(st.lists(good, max_size=4))
        if draw(st.integers(0, 2)) == 0:
            parts.insert(draw(st.integers(0, len(parts))), draw(_bad(names)))
        return [command, *base, *(item for part in parts for item in part)]

    return draw()


#: Values that ``minidl train`` takes (with _BASE, a run of 10 steps an epoch at most, or a
#: run stopped where it starts), and the paths of checkpoints that it can write or resume.
_VALID: dict[str, st.SearchStrategy[str]] = {
    "--activation": st.sampled_from(["tanh", "ReLU", "leaky_relu", "GELU-tanh", "relu,tanh"]),
    "--loss": st.sampled_from(["cross-entropy", "mse"]),
    "--optimizer": st.sampled_from(["sgd", "adadelta"]),
    "--lr": st.sampled_from(["0", "0.01", "1", "1e30", "3e38", "1e-320"]),
    "--momentum": st.sampled_from(["0", "0.5"]),
    "--rho": st.sampled_from(["0.5", "1"]),
    "--eps": st.sampled_from(["1e-6", "1e-30"]),
    "--max-grad-norm": st.sampled_from(["1", "1e-320", "1e300"]),
    "--scheduler": st.sampled_from(["none", "step", "clr"]),
    "--epochs": st.sampled_from(["0", "1", "2", "3", str(10**30)]),
    "--batch-size": st.sampled_from(["100", "999", str(10**30)]),
    "--hidden": st.sampled_from(["3", "2,2", "1,1,1", ",".join(["1"] * 50)]),
    "--seed": st.sampled_from(["0", "1", str(2**64 - 1), str(-(2**63))]),
    "--dtype": st.sampled_from(["float32", "float64"]),
    "--log-every": st.sampled_from(["1", str(10**30)]),
    "--checkpoint-every": st.sampled_from(["1", "2"]),
    "--checkpoint": st.sampled_from(["new.ckpt", "run.ckpt", "folder/new.ckpt", "link"]),
    "--resume": st.sampled_from(["run.ckpt", "new.ckpt", "run-link"]),
}
#: How a run of _VALID_ARGV saves or resumes (before its other options).
_SAVES = st.sampled_from(
    [
        [],
        ["--checkpoint", "new.ckpt"],
        ["--checkpoint", "run.ckpt", "--epochs", "2", "--checkpoint-every", "1"],
        ["--resume", "run.ckpt", "--epochs", "2"],
        ["--resume", "run.ckpt", "--epochs", "3", "--checkpoint", "new.ckpt"],
    ]
)
_VALID_ARGV = st.tuples(
    _SAVES,
    st.lists(
        st.one_of(
            *(st.tuples(st.just(name), values).map(list) for name, values in _VALID.items()),
            st.sampled_from([*_FLAGS, "--quiet"]).map(lambda flag: [flag]),
        ),
        max_size=3,
    ),
).map(lambda drawn: ["train", *_BASE, *drawn[0], *(item for part in drawn[1] for item in part)])

_TRAIN_ARGV = _argv(
    "train",
    _BASE,
    st.one_of(*(_good(name) for name in _VALUES), st.sampled_from(_FLAGS).map(lambda f: [f])),
    tuple(_VALUES),
)

_REPRODUCE_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--rounds": st.sampled_from(["1", "5", "0", str(10**6), str(10**30)]),
    "--tables": st.sampled_from(["1", "2,3", "I,II,III", "1, 3", "4", "", ",", "1,1"]),
    "--out": st.sampled_from(["out", "out/deep/er", "text.ckpt", "text.ckpt/x", "folder", *_PATHS]),
    "--seed": st.sampled_from(["0", "-1", str(10**30)]),
    "--jobs": st.sampled_from(["1", "2", "0", str(10**30)]),
}
_REPRODUCE_ARGV = _argv(
    "reproduce",
    ["--out", "out"],
    st.one_of(
        *(st.tuples(st.just(name), values).map(list) for name, values in _REPRODUCE_VALUES.items()),
        st.sampled_from(["--quick", "--quiet"]).map(lambda flag: [flag]),
    ),
    tuple(_REPRODUCE_VALUES),
)

_TOP = st.lists(
    st.sampled_from(["--version", "--help", "-h", "train", "reproduce", "--quiet", "help"]) | _JUNK,
    max_size=3,
)


# -- the folder, the run and the contract ----------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a run of :data:`_BASE`."""
    path = tmp_path_factory.mktemp("base") / "run.ckpt"
    assert main(["train", *_BASE, "--checkpoint", str(path)]) == 0
    return path


def _folder(root: Path, checkpoint: Path) -> Path:
    """A new folder under ``root`` holding the files that :data:`_PATHS` name."""
    folder = root / f"example-{len(list(root.iterdir()))}"
    folder.mkdir()
    (folder / "run.ckpt").write_bytes(checkpoint.read_bytes())
    (folder / "text.ckpt").write_text("no checkpoint\n")
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "folder").mkdir()
    (folder / "loop").symlink_to("loop")
    (folder / "dangling").symlink_to("missing/x.ckpt")
    (folder / "link").symlink_to("folder/linked.ckpt")
    (folder / "run-link").symlink_to("run.ckpt")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: a file's bytes, else ``None``."""
    entries: dict[str, bytes | None] = {}
    for where, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            path = Path(where, name)
            regular = path.is_file() and not path.is_symlink()
            entries[os.path.relpath(path, folder)] = path.read_bytes() if regular else None
    return entries


class _Calls(list[object]):
    """The runs of ``minidl reproduce`` started (shown by their number)."""

    def __repr__(self) -> str:
        return f"<{len(self)} runs>"


@pytest.fixture
def cheap(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """``fit`` that trains a run of :data:`_MOST_STEPS` steps at most, and raises
    :class:`_Started` for a longer one; ``minidl reproduce``'s run (``runner.reproduce``, given
    the settings that the command line makes) replaced by one that records its arguments (in
    the list given)."""
    fit = minidl.train.fit
    calls = _Calls()

    def cheap_fit(model: Any, criterion: Any, optimizer: Any, x: Any, y: Any, **kwargs: Any) -> Any:
        batches = -(-len(x) // kwargs["batch_size"])
        steps = (kwargs["epochs"] - kwargs.get("start_epoch", 0)) * batches
        if steps > _MOST_STEPS or sum(p.numel() for p in model.parameters()) > 10_000:
            raise _Started
        return fit(model, criterion, optimizer, x, y, **kwargs)

    monkeypatch.setattr(minidl.train, "fit", cheap_fit)
    monkeypatch.setattr(
        minidl.experiments.runner, "reproduce", lambda *args, **kwargs: calls.append(args)
    )
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    yield calls


def _expanded(text: str) -> str:
    """``text``, where ``<LONG x*5001>`` is the long text it writes (``x`` 5001 times)."""
    return re.sub(
        r"<LONG (.+?)\*(\d+)>", lambda found: found[1] * int(found[2]), text, flags=re.DOTALL
    )


def _check(drawn: list[str], folder: Path, capsys: pytest.CaptureFixture[str]) -> int | None:
    """Run ``minidl ARGV`` (``drawn``, its long texts expanded) in ``folder`` and check the
    contract; the status, or ``None`` for a run stopped where its training started."""
    argv = [_expanded(text) for text in drawn]
    capsys.readouterr()
    # A byte of the command line that is no UTF-8 is written escaped, as Python's stderr writes
    # it (the capture's would refuse it).
    getattr(sys.stderr, "reconfigure", lambda **_: None)(errors="backslashreplace")
    before = _snapshot(folder)
    try:
        status: object = main(argv)
    except SystemExit as stop:  # (argparse: a usage error, --help, --version)
        status = stop.code
    except _Started:
        status = None
    output, errors = capsys.readouterr()
    event(f"status {status}")
    shown = f"{drawn}: status {status}, errors {errors[:200]!r}...{errors[-300:]!r}"
    assert status in (None, 0, 1, 2), shown
    assert "Traceback" not in errors, shown
    assert len(errors) <= _MOST_ERRORS and len(output) <= _MOST_OUTPUT, shown
    lines = errors.splitlines()
    if status in (1, 2):
        # The usage (status 2, from argparse), then one line that names the command.
        assert lines and lines[-1].startswith("minidl"), shown
        assert ": error: " in lines[-1] or ": anomaly detected: " in lines[-1], shown
        assert len(lines[-1]) <= _LONGEST_LINE, shown
        assert all(line.startswith(("usage: ", " ")) for line in lines[:-1]), shown
        assert status == 1 or output == "", shown  # (a refused run prints its error alone)
    else:  # (a diverged run warns in one line)
        assert len(lines) <= 1, shown
        assert not lines or lines[0].startswith("minidl train: warning: "), shown
    after = _snapshot(folder)
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    if status is None or status == 2:
        assert not changed, (shown, changed)  # (refused, or stopped before training)
    if changed:
        event(f"status {status}, wrote {'a checkpoint' if 'train' in argv else 'a folder'}")
    for name in changed:  # (status 0 or 1: a checkpoint, or the report's folder)
        assert name in after, (shown, name)
        if after[name] is not None:
            read_checkpoint(folder / name)
    assert status is None or isinstance(status, int)
    return status


_FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _train(*argv: str) -> list[str]:
    return ["train", *_BASE, *argv]


@_FUZZ
@given(argv=_TRAIN_ARGV)
@example(argv=_train("--epochs", str(10**30))).via("a run stopped where it starts")
@example(argv=_train("--resume", "run.ckpt", "--epochs", "2")).via("resumed")
@example(argv=_train("--resume", "run.ckpt", "--epochs", "3", "--checkpoint", "new.ckpt"))
@example(argv=_train("--checkpoint", "new\nline.ckpt", "--checkpoint-every", "1", "--epochs", "2"))
@example(
    argv=_train("--lr", "1e30", "--detect-anomaly", "--checkpoint", "new.ckpt", "--epochs", "2")
)
@example(argv=_train("--lr", "3e38", "--loss", "mse", "--activation", "relu"))
@example(argv=_train("--lr", "1e30", "--loss", "mse", "--activation", "relu", "--detect-anomaly"))
@example(
    argv=_train("--batch-size", str(10**30), "--scheduler", "clr", "--max-grad-norm", "1e-320")
)
@example(argv=_train("--resume", "run.ckpt", "--epochs", "0"))
@example(argv=_train("--resume", "text.ckpt"))
@example(argv=_train("--checkpoint", "fifo"))
@example(argv=_train("--checkpoint", "dangling"))
def test_minidl_train_does_its_job_or_refuses_in_one_line(
    argv: list[str],
    checkpoint: Path,
    tmp_path: Path,
    cheap: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _folder(tmp_path, checkpoint)
    monkeypatch.chdir(folder)
    _check(argv, folder, capsys)


@settings(_FUZZ, max_examples=150)
@given(argv=_VALID_ARGV)
def test_minidl_train_of_valid_options_trains_or_refuses_in_one_line(
    argv: list[str],
    checkpoint: Path,
    tmp_path: Path,
    cheap: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Options that ``minidl train`` takes, alone: the run trains (status 0, or 1 for an
    anomaly under --detect-anomaly) and leaves the checkpoints it writes readable, or it refuses
    a combination (a --resume of other settings, --momentum with adadelta) in one line."""
    folder = _folder(tmp_path, checkpoint)
    monkeypatch.chdir(folder)
    _check(argv, folder, capsys)


@settings(_FUZZ, max_examples=150)
@given(argv=_REPRODUCE_ARGV)
def test_minidl_reproduce_starts_or_refuses_in_one_line(
    argv: list[str],
    checkpoint: Path,
    tmp_path: Path,
    cheap: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = _folder(tmp_path, checkpoint)
    monkeypatch.chdir(folder)
    started = len(cheap)
    status = _check(argv, folder, capsys)
    helped = "-h" in argv or "--help" in argv  # (the help printed, with status 0)
    assert (status == 0 and not helped) == (len(cheap) == started + 1), argv


@settings(_FUZZ, max_examples=40)
@given(argv=_TOP)
def test_minidl_without_a_command_or_with_any_word_refuses_in_one_line(
    argv: list[str],
    tmp_path: Path,
    cheap: list[object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / f"example-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    monkeypatch.chdir(folder)
    _check(argv, folder, capsys)


@pytest.mark.parametrize("how", ["python -m minidl", "minidl"])
def test_the_version_and_a_usage_error_from_the_installed_commands(how: str) -> None:
    """``python -m minidl`` and the ``minidl`` script: ``--version`` prints the version with
    status 0, no command is a usage error (status 2, the usage and one line)."""
    script = Path(sys.executable).with_name("minidl")
    command = [sys.executable, "-m", "minidl"] if how != "minidl" else [str(script)]
    if how == "minidl" and not script.exists():
        pytest.skip("no minidl script beside this Python")
    version = subprocess.run(
        [*command, "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    assert (version.returncode, version.stderr) == (0, "")
    assert version.stdout.startswith("minidl ") and version.stdout.count("\n") == 1
    bare = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert (bare.returncode, bare.stdout) == (2, "")
    assert bare.stderr.endswith("minidl: error: give a command (minidl --help lists them)\n")
