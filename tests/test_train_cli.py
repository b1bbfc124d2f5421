"""The training loop (`minidl.train.fit`) and the `minidl train` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn, optim
from minidl.checkpoint import Checkpoint, read_checkpoint
from minidl.cli import build_parser, main
from minidl.data import BatchIterator, make_disk_data
from minidl.experiments.seeds import round_seeds
from minidl.train import EpochRecord, History, error_rate, eval_mode, fit, predict
from tests.helpers import free_port, run_python, tree_environment, unfolded

F64 = torch.float64
FLAGS = (
    "--activation",
    "--loss",
    "--optimizer",
    "--lr",
    "--momentum",
    "--rho",
    "--eps",
    "--max-grad-norm",
    "--scheduler",
    "--epochs",
    "--batch-size",
    "--hidden",
    "--seed",
    "--dtype",
    "--log-every",
    "--quiet",
)
VALID_ACTIVATIONS = "elu, gelu, gelutanh, leakyrelu, relu, selu, sigmoid, silu, tanh"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _start_cli(*arguments: str) -> subprocess.Popen[str]:
    """Start ``python -m minidl train ARGUMENTS`` (one intra-op thread: tiny tensors)."""
    return subprocess.Popen(
        [sys.executable, "-m", "minidl", "train", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=300)  # (a loaded machine is slow)
    finally:
        process.kill()
    return process.returncode, stdout, stderr


def _numbers(output: str) -> list[str]:
    """Every number of the output, except the wall-clock training time."""
    lines = [line for line in output.splitlines() if not line.startswith("training time")]
    return NUMBER.findall("\n".join(lines))


def test_train_command_runs_and_is_reproducible() -> None:
    arguments = ("--epochs", "3", "--seed", "1", "--hidden", "10,10")
    # Both runs at once: most of each is starting Python and importing torch.
    processes = [_start_cli(*arguments), _start_cli(*arguments)]
    first, second = (_finish(process) for process in processes)
    assert first[0] == 0, first[2]
    output = first[1]
    final = re.search(r"final train error: (\d+\.\d+)%\nfinal test error: (\d+\.\d+)%", output)
    assert final is not None, output
    assert all(0.0 <= float(value) <= 100.0 for value in final.groups())
    # The loss is logged every epoch.
    assert len(re.findall(r"^epoch +\d+/3 +loss \d+\.\d+", output, flags=re.MULTILINE)) == 3
    assert second[0] == 0, second[2]
    assert _numbers(second[1]) == _numbers(output)
    assert len(_numbers(output)) > 10


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    subcommands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    registered = {
        option
        for action in subcommands.choices["train"]._actions
        for option in action.option_strings
    }
    assert set(FLAGS) <= registered
    for flag in registered:
        assert flag in text, f"{flag} is missing from `minidl train --help`"
    for name in nn.ACTIVATIONS:
        assert name in text
    # --checkpoint needs the checkpoint extra (safetensors), which a plain install lacks.
    assert "needs safetensors: pip install 'minidl[checkpoint]'" in " ".join(text.split())


def test_help_of_log_every_names_its_metavar_and_what_it_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--log-every`` said "print the loss every N epochs" beside the metavar ``LOG_EVERY`` (no
    N named), of lines that give the validation error and the learning rate too, and did not say
    that the last epoch is printed whatever N is."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--log-every N print the loss, validation error and learning rate every N epochs, " in text
    )
    assert "and at the last; not with --quiet (default: 1)" in text
    assert "LOG_EVERY" not in text


@pytest.mark.parametrize("command", ["train", "reproduce"])
def test_help_writes_defaults_as_they_are_typed(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defaults as a user types them (``25,25,25``), none for flags and for options whose help
    states its own default, so that no ``(default: None)`` or ``(default: False)`` remains."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for wrong in ("(default: None)", "(default: False)", "(default: ("):
        assert wrong not in text
    expected = {
        "train": [
            "(default: 25,25,25)",
            "(default: tanh)",
            "(default: 400)",
            "else 60)",
            "epochs between checkpoints (default: 10)",
        ],
        "reproduce": [
            "(default: 1,2,3)",
            "(default: 5)",
            "(default: the CPUs available)",
            "base seed of every round, any integer (each round's seeds are derived from it by "
            "SHA-256) (default: 0)",
        ],
    }
    for fragment in expected[command]:
        assert fragment in text


@pytest.mark.parametrize("activation", ["softmax", "tanh,softplus,relu"])
def test_unknown_activation_lists_the_valid_names(
    activation: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--activation", activation, "--epochs", "0"])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert "unknown activation" in error
    assert VALID_ACTIVATIONS in error


@pytest.mark.parametrize(
    ("hidden", "layers"), [("5,5,5", "3 hidden layers"), ("5", "1 hidden layer")]
)
def test_wrong_number_of_activations_is_refused(
    hidden: str, layers: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """(One hidden layer was written "1 hidden layers".)"""
    assert main(["train", "--activation", "tanh,relu", "--hidden", hidden, "--epochs", "0"]) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: --activation gives 2 names for {layers}; give one name, "
        "or one per hidden layer\n"
    )


def test_a_learning_rate_beyond_float32_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was accepted, and the first step failed with a traceback; then it was refused in the
    optimizer's words (``SGD: lr=1e+39 ...``), not the flag's."""
    assert main(["train", "--lr", "1e39", "--momentum", "0.5", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        "minidl train: error: --lr 1e+39 is beyond the range of --dtype float32 (largest "
        "finite value 3.40282e+38)\n"
    )
    argv = ["train", "--lr", "1e39", "--dtype", "float64", "--epochs", "1", "--hidden", "3"]
    assert main([*argv, "--quiet"]) == 0  # (float64 holds it)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--lr", "nan"], "argument --lr: expected a finite number in [0, inf), got 'nan'"),
        (["--lr", "inf"], "argument --lr: expected a finite number in [0, inf), got 'inf'"),
        (["--lr", "-0.5"], "argument --lr: expected a finite number in [0, inf), got '-0.5'"),
        (["--lr", "fast"], "argument --lr: expected a finite number in [0, inf), got 'fast'"),
        (
            ["--optimizer", "adadelta", "--lr", "nan"],
            "argument --lr: expected a finite number in [0, inf), got 'nan'",
        ),
        (
            ["--scheduler", "clr", "--lr", "-1"],
            "argument --lr: expected a finite number in [0, inf), got '-1'",
        ),
        (["--momentum", "1"], "argument --momentum: expected a number in [0, 1), got '1'"),
        (["--momentum", "nan"], "argument --momentum: expected a number in [0, 1), got 'nan'"),
        (["--momentum", "-0.1"], "argument --momentum: expected a number in [0, 1), got '-0.1'"),
        (["--rho", "1.5"], "argument --rho: expected a number in [0, 1], got '1.5'"),
        (["--rho", "nan"], "argument --rho: expected a number in [0, 1], got 'nan'"),
        (["--eps", "0"], "argument --eps: expected a finite number in (0, inf), got '0'"),
        (["--eps", "inf"], "argument --eps: expected a finite number in (0, inf), got 'inf'"),
        (
            ["--max-grad-norm", "0"],
            "argument --max-grad-norm: expected a finite number in (0, inf), got '0'",
        ),
        (
            ["--max-grad-norm", "inf"],
            "argument --max-grad-norm: expected a finite number in (0, inf), got 'inf'",
        ),
    ],
)
def test_a_bad_optimizer_setting_is_refused_naming_its_flag(
    arguments: list[str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--lr nan`` was refused in the optimizer's words (``SGD: lr must be a finite number in
    [0, inf), got nan``), which name no flag: the flag is named, with the same rule."""
    _no_training(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "1", *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.endswith(f"minidl train: error: {expected}\n")
    assert "SGD" not in error and "Adadelta" not in error


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            ["train", "--lr", "-1e-3"],
            "argument --lr: expected a finite number in [0, inf), got '-1e-3'",
        ),
        (
            ["train", "--lr", "-inf"],
            "argument --lr: expected a finite number in [0, inf), got '-inf'",
        ),
        (
            ["train", "--lr", "-.5"],
            "argument --lr: expected a finite number in [0, inf), got '-.5'",
        ),
        (
            ["train", "--momentum", "-NaN"],
            "argument --momentum: expected a number in [0, 1), got '-NaN'",
        ),
        (
            ["train", "--epochs", "-Infinity"],
            "argument --epochs: expected an integer >= 0, got '-Infinity'",
        ),
        (["train", "--hidden", "-3,4"], "argument --hidden: expected positive widths, got '-3,4'"),
        (
            ["train", "--seed", "-1e3"],
            "argument --seed: expected an integer in [-9223372036854775808, 18446744073709551615], "
            "got '-1e3'",
        ),
        (
            ["reproduce", "--rounds", "-1e3"],
            "argument --rounds: expected a positive integer, got '-1e3'",
        ),
        (["reproduce", "--seed", "-inf"], "argument --seed: expected an integer, got '-inf'"),
    ],
)
def test_a_value_like_a_negative_number_is_judged_by_its_flags_type(
    arguments: list[str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """argparse takes ``-1`` and ``-0.5`` as values, but took ``-1e-3``, ``-inf`` or ``-3,4``
    for an unknown option and refused the flag as given no value (``argument --lr: expected
    one argument``), naming nothing of what was given: the flag's type judges them."""
    _no_training(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"usage: minidl {arguments[0]} ")
    assert lines[-1] == f"minidl {arguments[0]}: error: {expected}"


def test_a_value_like_an_option_that_is_no_number_is_still_an_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a value beginning with ``-`` and a number, ``inf`` or ``nan`` is taken as the
    flag's: one beginning with ``-`` and another letter is an option, as argparse has it, and
    the flag before it is refused as given no value."""
    _no_training(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--lr", "-x"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "minidl train: error: argument --lr: expected one argument"


@pytest.mark.parametrize("every", ["5", "10"])
def test_checkpoint_every_without_a_checkpoint_is_refused(
    every: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint-every N`` without ``--checkpoint`` or ``--resume`` was silently ignored
    (no checkpoint is written); it is refused as ``--momentum`` with ``--optimizer adadelta``
    is, also when N is the default, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "3", "--hidden", "3", "--checkpoint-every", every]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint-every {every} applies with --checkpoint PATH or "
        "--resume PATH only (without them no checkpoint is written)\n",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("every", ["1", "5"])
def test_log_every_with_quiet_is_refused(
    every: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--log-every N --quiet`` ran printing only the final errors, N ignored without a word
    (as ``--checkpoint-every`` without a checkpoint was): refused, naming both, also for N
    the default; nothing is written."""
    monkeypatch.chdir(tmp_path)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "3", "--hidden", "3", "--quiet", "--log-every", every]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --log-every {every} prints every N epochs and --quiet prints "
        "nothing but the final errors: give one of them\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_resumed_file_is_named_by_its_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--resume missing.ckpt`` said ``checkpoint 'missing.ckpt': cannot be read``, without
    the ``--resume`` of the other errors of a resumed file."""
    monkeypatch.chdir(tmp_path)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "3", "--resume", "missing.ckpt"]) == 2
    assert capsys.readouterr() == (
        "",
        "minidl train: error: --resume missing.ckpt: cannot be read (No such file or directory)\n",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--resume", ""], "--resume '': cannot be read (the path is empty)"),
        (
            ["--resume", "run\n.ckpt"],
            "--resume 'run\\n.ckpt': cannot be read (No such file or directory)",
        ),
        (
            ["--resume", "run.ckpt "],
            "--resume 'run.ckpt ': cannot be read (No such file or directory)",
        ),
        (
            ["--checkpoint", "new\nfolder/run.ckpt"],
            "--checkpoint 'new\\nfolder/run.ckpt': expected a file path in an existing folder",
        ),
    ],
    ids=["empty", "newline", "trailing-space", "folder-with-a-newline"],
)
def test_a_path_is_quoted_where_it_would_hide_or_split_the_error(
    arguments: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--resume ''`` was refused as ``--resume : cannot be read``, a path with a newline in
    two lines, one ending in a space with the space unseen: such a path is quoted, as ``repr``
    quotes it; the error is one line and nothing is written."""
    monkeypatch.chdir(tmp_path)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "1", *arguments]) == 2
    assert capsys.readouterr() == ("", f"minidl train: error: {expected}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["loop", "link", "fifo", "long name", "unwritable folder"])
def test_each_refusal_of_a_checkpoint_path_quotes_a_path_that_would_hide(
    where: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each refusal of a ``--checkpoint`` path before training quotes a path that ends in a
    space, and a link's target that holds a newline, as ``repr`` quotes them, in one line."""
    monkeypatch.chdir(tmp_path)
    _no_training(monkeypatch)
    path = "run.ckpt "
    if where == "loop":
        os.symlink(path, path)
        reason = "expected a file path, got a loop of symbolic links"
    elif where == "link":
        os.symlink(os.path.join("missing\nfolder", "run.ckpt"), path)
        target = os.path.join(os.path.realpath(tmp_path), "missing\nfolder", "run.ckpt")
        reason = f"expected a file path in an existing folder (it links to {target!r})"
    elif where == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(path)
        reason = "expected a file path, got a FIFO"
    elif where == "long name":
        longest = os.pathconf(tmp_path, "PC_NAME_MAX")
        path = "a" * longest + " "
        reason = (
            f"the file name is {longest + 1} bytes long, longer than its folder takes ({longest})"
        )
    else:
        folder = request.getfixturevalue("unwritable_folder")
        os.symlink(folder / "run.ckpt", path)
        reason = f"cannot write into the folder {folder} ("
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", path]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"minidl train: error: --checkpoint {path!r}: {reason}"), error
    assert error.count("\n") == 1


def test_the_refusals_naming_a_folder_or_the_optimizer_quote_a_path_that_would_hide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that takes no file, whose name holds a newline, is quoted with the path in it
    (a folder refusing files here as root: one made to refuse them); a checkpoint whose
    optimizer has other settings than the flags is named quoted too."""
    import minidl._files
    from minidl.cli import _check_checkpoint_path, _check_resume_hyperparameters

    def refuse(folder: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(minidl._files, "check_folder_takes_files", refuse)
    folder = tmp_path / "odd\nfolder"
    folder.mkdir()
    path = str(folder / "run.ckpt ")
    expected = (
        f"--checkpoint {path!r}: cannot write into the folder {os.path.realpath(folder)!r} "
        "(Permission denied)"
    )
    with pytest.raises(ValueError) as refusal:
        _check_checkpoint_path("--checkpoint", path, writes=True)
    assert str(refusal.value) == expected
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.01, momentum=0.9)
    saved = {"class": "SGD", "lr": 0.01, "hyperparameters": {"momentum": 0.5}}
    with pytest.raises(ValueError) as refusal:
        _check_resume_hyperparameters("run.ckpt ", saved, optimizer, 0.01)
    assert str(refusal.value).startswith(
        "--resume 'run.ckpt ': the checkpoint's optimizer has other settings than these flags"
    )


@pytest.mark.parametrize("case", ["past --epochs", "other settings", "not written by train"])
def test_each_refusal_of_a_resumed_checkpoint_quotes_a_path_that_would_hide(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each refusal of a ``--resume`` checkpoint that was read (at an epoch past
    ``--epochs``, made with other settings, not written by minidl train) quotes a path that
    ends in a space, in one line."""
    from minidl.checkpoint import save_checkpoint

    monkeypatch.chdir(tmp_path)
    path = "run.ckpt "
    if case == "not written by train":
        model = nn.mlp((2, 25, 25, 2))
        save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.01), epoch=1)
        arguments = ["--epochs", "2"]
        reason = "the checkpoint is for another architecture"
    else:
        argv = ["train", "--epochs", "2", "--hidden", "3", "--quiet", "--checkpoint", path]
        assert main(argv) == 0
        if case == "past --epochs":
            arguments = ["--epochs", "1", "--hidden", "3"]
            reason = "the checkpoint is at epoch 2, past --epochs 1"
        else:
            arguments = ["--epochs", "3", "--hidden", "4"]
            reason = "the checkpoint was made with other settings: --hidden 3 in the checkpoint"
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", path, *arguments]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"minidl train: error: --resume {path!r}: {reason}"), error
    assert error.count("\n") == 1


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("runs/a.ckpt", "runs/a.ckpt"),
        ("r\u00e9sultats/a b.ckpt", "r\u00e9sultats/a b.ckpt"),
        ("", "''"),
        (" a.ckpt", "' a.ckpt'"),
        ("a.ckpt\t", "'a.ckpt\\t'"),
        ("a\nb", "'a\\nb'"),
        ("a\x1b[2Jb", "'a\\x1b[2Jb'"),
    ],
)
def test_shown_path_quotes_only_what_would_hide_or_split_a_message(path: str, shown: str) -> None:
    from minidl._validate import shown_path

    assert shown_path(path) == shown
    if path:  # (Path("") is ".")
        assert shown_path(Path(path)) == shown


class _PathOfOnesOwn(os.PathLike[str]):
    """A path-like object of one's own, whose ``str`` is not its path."""

    def __fspath__(self) -> str:
        return "run.ckpt "


def test_shown_path_names_a_path_like_object_by_its_path() -> None:
    from minidl._validate import shown_path

    assert shown_path(_PathOfOnesOwn()) == "'run.ckpt '"


@pytest.mark.parametrize(
    "arguments",
    [
        ["--loss", "mse", "--optimizer", "adadelta", "--scheduler", "step"],
        ["--activation", "relu,tanh", "--hidden", "6,6", "--scheduler", "clr", "--momentum", "0.9"],
        ["--dtype", "float64", "--activation", "selu", "--batch-size", "1000"],
    ],
    ids=["mse-adadelta-step", "mixed-clr-momentum", "float64-selu"],
)
def test_train_options_run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Each set of options runs, and builds what it names: the loss, the optimizer and its
    momentum, the schedule, the activations and widths of the layers, the dtype (the lines that
    ``minidl train`` prints before training); ``--quiet`` prints the final errors only."""
    assert main(["train", "--epochs", "2", "--quiet", *arguments]) == 0
    output = capsys.readouterr().out
    assert re.fullmatch(r"final train error: \d+\.\d\d%\nfinal test error: \d+\.\d\d%\n", output), (
        output
    )
    assert main(["train", "--epochs", "1", *arguments]) == 0
    output = capsys.readouterr().out
    expected = {
        "mse-adadelta-step": [
            "loss: MSELoss(",
            "optimizer: Adadelta(",
            "scheduler: StepDecay(",
            "(1): Tanh()",
            "dtype: float32",
        ],
        "mixed-clr-momentum": [
            "loss: CrossEntropyLoss(",
            "optimizer: SGD(lr=0.001, momentum=0.9)",  # (CLR starts at its lower bound)
            "scheduler: CyclicLR(",
            "(0): Linear(in_features=2, out_features=6",
            "(1): ReLU()",
            "(2): Linear(in_features=6, out_features=6",
            "(3): Tanh()",
            "(4): Linear(in_features=6, out_features=2",
        ],
        "float64-selu": ["(1): SELU()", "(3): SELU()", "(5): SELU()", "dtype: float64"],
    }[
        "mse-adadelta-step"
        if "adadelta" in arguments
        else "mixed-clr-momentum"
        if "clr" in arguments
        else "float64-selu"
    ]
    for text in expected:
        assert text in output, (text, output)


def test_train_measures_the_validation_error_on_the_validation_set(tmp_path: Path) -> None:
    """The validation error of each epoch (in the checkpoint's history) is the trained model's
    error on the validation set of ``--seed``'s data, not on another set."""
    from minidl.checkpoint import load_checkpoint

    path = tmp_path / "run.ckpt"
    argv = ["train", "--epochs", "2", "--hidden", "4", "--seed", "3", "--quiet"]
    assert main([*argv, "--checkpoint", str(path)]) == 0
    model = nn.mlp((2, 4, 2), "tanh")
    state = load_checkpoint(path, model)
    data = make_disk_data(seed=round_seeds(3, 0).data)
    validation = error_rate(model, data.validation.x, data.validation.y)
    assert state.history.validation_error[-1] == validation
    assert validation != error_rate(model, data.test.x, data.test.y)  # (the sets tell apart)


# -- fit -----------------------------------------------------------------------------------------


def _problem(seed: int = 0) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    data = make_disk_data(n_train=60, n_validation=10, n_test=10, seed=seed, dtype=F64)
    torch.manual_seed(seed)
    return nn.mlp((2, 6, 2), "tanh", dtype=F64), data.train.x, data.train.y


@pytest.mark.parametrize("folded", [False, True])
def test_fit_is_the_readme_loop(folded: bool) -> None:
    """Bit for bit the loop, or to 1e-12 with fit's folded step (``minidl.folded``)."""
    model, x, y = _problem()
    reference = nn.mlp((2, 6, 2), "tanh", dtype=F64)
    reference.load_state_dict(model.state_dict())
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    with contextlib.nullcontext() if folded else unfolded():
        history = fit(
            model,
            criterion,
            optimizer,
            x,
            y,
            epochs=3,
            batch_size=16,
            generator=torch.Generator().manual_seed(4),
        )
    reference_optimizer = optim.SGD(reference.parameters(), lr=0.1, momentum=0.5)
    batches = BatchIterator(x, y, 16, generator=torch.Generator().manual_seed(4))
    losses = []
    for _ in range(3):
        total = 0.0
        for x_batch, y_batch in batches:
            reference_optimizer.zero_grad()
            total += float(criterion(reference(x_batch), y_batch))
            reference.backward(criterion.backward())
            reference_optimizer.step()
        losses.append(total / len(batches))
    for parameter, expected in zip(model.parameters(), reference.parameters(), strict=True):
        if folded:
            assert torch.allclose(parameter.data, expected.data, rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(parameter.data, expected.data)
    assert history.train_loss == pytest.approx(losses, rel=1e-12)
    assert len(history.lr) == 3 and history.lr == [0.1] * 3


def test_fit_steps_step_decay_per_epoch() -> None:
    model, x, y = _problem(1)
    optimizer = optim.SGD(model.parameters(), lr=0.2)
    scheduler = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    history = fit(
        model, nn.MSELoss(), optimizer, x, y, epochs=7, batch_size=20, scheduler=scheduler
    )
    assert history.lr == [scheduler.lr_at(epoch) for epoch in range(7)]
    assert history.lr == [0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert history.batch_lr == []
    assert optimizer.lr == scheduler.lr_at(7) and scheduler.last_step == 7


def test_fit_steps_cyclic_lr_per_batch() -> None:
    model, x, y = _problem(2)
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    scheduler = optim.CyclicLR(optimizer, 0.01, 0.1, step_size_up=4, step_size_down=2)
    batches_per_epoch = 3  # 60 samples, batches of 25: 25, 25, 10
    history = fit(
        model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=5, batch_size=25, scheduler=scheduler
    )
    steps = 5 * batches_per_epoch
    assert history.batch_lr == [scheduler.lr_at(step) for step in range(steps)]
    assert history.lr == [scheduler.lr_at(epoch * batches_per_epoch) for epoch in range(5)]
    assert scheduler.last_step == steps and optimizer.lr == scheduler.lr_at(steps)
    assert len(set(history.batch_lr)) > 3  # the rate does cycle


def test_fit_records_validation_error_and_calls_on_epoch() -> None:
    model, x, y = _problem(3)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    records: list[EpochRecord] = []
    history = fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=2,
        batch_size=30,
        validation=(x[:10], y[:10]),
        on_epoch=records.append,
    )
    assert [r.epoch for r in records] == [0, 1]
    assert history.validation_error == [r.validation_error for r in records]
    assert history.validation_error[-1] == error_rate(model, x[:10], y[:10])
    assert model.training  # fit leaves the model in training mode


def test_error_rate_counts_wrong_predictions() -> None:
    layer = nn.Linear(1, 2, dtype=F64)
    layer.load_state_dict(
        {"weight": torch.tensor([[1.0], [-1.0]], dtype=F64), "bias": torch.zeros(2, dtype=F64)}
    )
    x = torch.tensor([[1.0], [2.0], [-1.0], [-3.0]], dtype=F64)  # predicted 0, 0, 1, 1
    assert error_rate(layer, x, torch.tensor([0, 0, 1, 1])) == 0.0
    assert error_rate(layer, x, torch.tensor([0, 1, 1, 1])) == 25.0
    assert error_rate(layer, x, torch.tensor([1, 1, 0, 0])) == 100.0
    # One sample, right and wrong; and fit's validation error of a one-sample set.
    assert error_rate(layer, x[:1], torch.tensor([0])) == 0.0
    assert error_rate(layer, x[:1], torch.tensor([1])) == 100.0
    history = fit(
        layer,
        nn.CrossEntropyLoss(),
        optim.SGD(layer.parameters(), lr=0.0),
        x,
        torch.tensor([0, 0, 1, 1]),
        epochs=1,
        validation=(x[2:3], torch.tensor([0])),
    )
    assert history.validation_error == [100.0]
    layer.train()
    error_rate(layer, x, torch.tensor([0, 0, 1, 1]))
    assert layer.training  # the mode is restored


@pytest.mark.slow
def test_default_configuration_reaches_the_papers_error() -> None:
    # `minidl train` with no argument: Table I's Tanh row, 400 epochs of SGD at 1e-2.
    data = make_disk_data(seed=0)
    torch.manual_seed(0)
    model = nn.mlp((2, 25, 25, 25, 2), "tanh")
    optimizer = optim.SGD(model.parameters(), lr=1e-2)
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        data.train.x,
        data.train.y,
        epochs=400,
        batch_size=100,
        generator=torch.Generator().manual_seed(0),
    )
    assert error_rate(model, data.test.x, data.test.y) < 3.0
    assert error_rate(model, data.train.x, data.train.y) < 3.0


def _noisy_model(seed: int) -> nn.Sequential:
    """A network whose training and evaluation modes compute different things."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 6, dtype=F64),
        nn.BatchNorm1d(6, dtype=F64),
        nn.Tanh(),
        nn.Dropout(0.3, generator=torch.Generator().manual_seed(seed)),
        nn.Linear(6, 2, dtype=F64),
    )


def test_fit_trains_in_training_mode_whatever_mode_the_model_was_left_in() -> None:
    """``fit`` puts the model in training mode (batch statistics in BatchNorm1d, masks in
    Dropout) even if it was left in evaluation mode: it trains exactly as on a twin put in
    training mode, and not as the evaluation-mode computation would. The model stays in
    training mode afterwards, as fit's docstring says."""
    _, x, y = _problem(5)
    results = []
    for mode in ("eval", "train"):
        model = _noisy_model(3)
        model.train(mode == "train")
        assert model.training == (mode == "train")
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=2,
            batch_size=16,
            generator=torch.Generator().manual_seed(4),
            validation=(x[:10], y[:10]),
        )
        assert model.training
        assert all(child.training for child in model)
        results.append((model.state_dict(), history))
    (left_in_eval, history), (in_training, expected_history) = results
    assert left_in_eval.keys() == in_training.keys()
    for name, value in left_in_eval.items():
        assert torch.equal(value, in_training[name]), name
    assert history == expected_history
    assert int(left_in_eval["1.num_batches_tracked"]) == 2 * 4  # 60 samples, batches of 16

    # The check can fail: the same steps in evaluation mode give other numbers.
    model = _noisy_model(3)
    model.eval()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    criterion = nn.CrossEntropyLoss()
    with torch.inference_mode():
        for x_batch, y_batch in BatchIterator(x, y, 16, generator=torch.Generator().manual_seed(4)):
            optimizer.zero_grad()
            criterion(model(x_batch), y_batch)
            model.backward_parameters(criterion.backward())
            optimizer.step()
    assert not torch.equal(model.state_dict()["0.weight"], in_training["0.weight"])


def test_fit_resuming_a_finished_run_trains_nothing() -> None:
    """``start_epoch == epochs`` (resuming a run that has finished) is accepted and runs no
    epoch: parameters, optimizer, scheduler, generator and history stay as they were, and the
    same History object is returned. One epoch further is refused."""
    model, x, y = _problem(6)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    scheduler = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    generator = torch.Generator().manual_seed(2)
    settings = {"epochs": 3, "batch_size": 16, "scheduler": scheduler, "generator": generator}
    history = fit(model, nn.MSELoss(), optimizer, x, y, **settings)
    model_before, optimizer_before = model.state_dict(), optimizer.state_dict()
    scheduler_before, generator_before = scheduler.state_dict(), generator.get_state()
    recorded = History(**{k: list(v) for k, v in vars(history).items()})
    records: list[EpochRecord] = []
    returned = fit(
        model,
        nn.MSELoss(),
        optimizer,
        x,
        y,
        **settings,
        start_epoch=3,
        history=history,
        on_epoch=records.append,
    )
    assert returned is history
    assert history == recorded
    assert records == []
    for name, value in model.state_dict().items():
        assert torch.equal(value, model_before[name]), name
    after = optimizer.state_dict()
    assert after["step_count"] == optimizer_before["step_count"] == 3 * 4
    assert after["lr"] == optimizer_before["lr"]
    assert torch.equal(
        after["state"]["momentum_buffer"], optimizer_before["state"]["momentum_buffer"]
    )
    assert scheduler.state_dict() == scheduler_before
    assert torch.equal(generator.get_state(), generator_before)
    with pytest.raises(ValueError, match="fit: start_epoch 4 is past epochs 3"):
        fit(model, nn.MSELoss(), optimizer, x, y, epochs=3, start_epoch=4, history=history)


# -- `minidl train`: flags and what they do ----------------------------------------------------


def _train_checkpoint(tmp_path: Path, *arguments: str) -> Checkpoint:
    """Run ``minidl train --quiet ARGUMENTS --checkpoint tmp_path/run.ckpt`` in-process (a
    4-unit hidden layer, batches of 400: 3 batches an epoch) and read the checkpoint back."""
    path = tmp_path / "run.ckpt"
    argv = ["train", "--quiet", "--hidden", "4", "--batch-size", "400", *arguments]
    assert main([*argv, "--checkpoint", str(path)]) == 0
    return read_checkpoint(path)


def test_rho_and_eps_are_adadeltas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ADADELTA's rho and epsilon had no flag (the reproduction's rows take them now): --rho
    and --eps build it with them, are refused with SGD and where --dtype would round --eps to
    0 or past its range, and a resumed run of other ones is refused naming the flag."""
    path = tmp_path / "run.ckpt"
    base = ["train", "--quiet", "--epochs", "1", "--hidden", "3", "--optimizer", "adadelta"]
    assert main([*base, "--rho", "0.5", "--eps", "1e-3", "--checkpoint", str(path)]) == 0
    saved = read_checkpoint(path).header["optimizer"]["hyperparameters"]
    assert (saved["rho"], saved["eps"]) == (0.5, 1e-3)
    capsys.readouterr()
    refused = [
        (["--rho", "0.5"], "--rho applies to --optimizer adadelta only"),
        (["--eps", "1e-3"], "--eps applies to --optimizer adadelta only"),
        (
            ["--optimizer", "adadelta", "--eps", "1e-46"],
            "--eps 1e-46 rounds to 0 in --dtype float32, and ADADELTA's denominators with it; "
            "give --eps >= 7.006492321624087e-46",
        ),
        (
            ["--optimizer", "adadelta", "--eps", "1e39"],
            "--eps 1e+39 is beyond the range of --dtype float32 (largest finite value 3.40282e+38)",
        ),
    ]
    for arguments, message in refused:
        assert main(["train", "--quiet", "--epochs", "1", "--hidden", "3", *arguments]) == 2
        assert capsys.readouterr().err == f"minidl train: error: {message}\n"
    resumed = [*base, "--epochs", "2", "--rho", "0.6", "--eps", "1e-3", "--resume", str(path)]
    assert main(resumed[:2] + resumed[4:]) == 2
    assert "rho 0.5 in the checkpoint's Adadelta, --rho 0.6 now" in capsys.readouterr().err


def test_seed_sets_the_initial_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--seed`` seeds the initial weights: the network `minidl train --seed S` starts from is,
    bit for bit, ``mlp((2, 25, 25, 25, 2), "tanh")`` built after
    ``torch.manual_seed(round_seeds(S, 0).init)``; the same seed gives the same weights and
    another seed other weights."""
    built: list[nn.Sequential] = []
    real_mlp = nn.mlp

    def recording_mlp(*args, **kwargs):  # type: ignore[no-untyped-def]
        model = real_mlp(*args, **kwargs)
        built.append(model)
        return model

    monkeypatch.setattr(nn, "mlp", recording_mlp)
    for seed in ("3", "3", "4"):
        assert main(["train", "--epochs", "0", "--quiet", "--seed", seed]) == 0
    first, again, other = (model.state_dict() for model in built)
    torch.manual_seed(round_seeds(3, 0).init)
    expected = real_mlp((2, 25, 25, 25, 2), "tanh").state_dict()
    assert first.keys() == again.keys() == other.keys() == expected.keys()
    for name, value in first.items():
        assert torch.equal(value, expected[name]), name
        assert torch.equal(value, again[name]), name
    assert not torch.equal(first["0.weight"], other["0.weight"])


def test_step_scheduler_halves_the_rate_every_10_epochs(tmp_path: Path) -> None:
    """``--scheduler step`` is what --help says: the rate is halved every 10 epochs (per
    epoch, not per batch): lr 0.1 for epochs 1-10, 0.05 for 11-20, 0.025 for 21."""
    checkpoint = _train_checkpoint(tmp_path, "--epochs", "21", "--lr", "0.1", "--scheduler", "step")
    history = checkpoint.training.history
    assert history.lr == [0.1] * 10 + [0.05] * 10 + [0.025]
    assert history.batch_lr == []


def test_clr_scheduler_cycles_between_lr_over_10_and_lr(tmp_path: Path) -> None:
    """``--scheduler clr`` is what --help says: a triangular cycle, per batch, from lr/10 up to
    lr in 2 epochs and back down in 2 (1000 samples in batches of 400: 3 batches an epoch, so
    6 batches up and 6 down; lr 0.1: from 0.01 by steps of 0.015)."""
    checkpoint = _train_checkpoint(tmp_path, "--epochs", "5", "--lr", "0.1", "--scheduler", "clr")
    history = checkpoint.training.history
    expected = [
        *(0.01, 0.025, 0.04, 0.055, 0.07, 0.085),  # epochs 1-2: up
        *(0.1, 0.085, 0.07, 0.055, 0.04, 0.025),  # epochs 3-4: down
        *(0.01, 0.025, 0.04),  # epoch 5: up again
    ]
    assert len(history.batch_lr) == 15
    assert history.batch_lr == pytest.approx(expected, rel=1e-12, abs=0)
    assert history.lr == pytest.approx([0.01, 0.055, 0.1, 0.055, 0.01], rel=1e-12, abs=0)


def test_the_last_epoch_is_logged_even_when_log_every_does_not_divide_epochs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--log-every 2 --epochs 5`` prints epochs 2 and 4, every 2nd, and epoch 5, the last;
    ``--log-every 7 --epochs 5`` prints epoch 5 alone."""
    argv = ["train", "--epochs", "5", "--log-every", "2", "--hidden", "4", "--batch-size", "500"]
    assert main(argv) == 0
    output = capsys.readouterr().out
    logged = re.findall(r"^epoch +(\d+)/5 +loss \d+\.\d{6} ", output, flags=re.MULTILINE)
    assert logged == ["2", "4", "5"], output
    argv = ["train", "--epochs", "5", "--log-every", "7", "--hidden", "4", "--batch-size", "500"]
    assert main(argv) == 0  # --log-every past --epochs: the last epoch only
    output = capsys.readouterr().out
    assert re.findall(r"^epoch +(\d+)/5 ", output, flags=re.MULTILINE) == ["5"], output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ReLU", ("relu",)),
        ("RELU", ("relu",)),
        ("Tanh, ReLU ,SeLU", ("tanh", "relu", "selu")),
        ("leaky_relu", ("leakyrelu",)),
        ("GELU-tanh,Leaky-ReLU", ("gelutanh", "leakyrelu")),
    ],
)
def test_activation_names_are_case_insensitive(
    text: str, expected: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--activation`` accepts any case, ``_`` and ``-`` (as ``nn.activation`` does) and
    spaces around the commas: ``ReLU`` is relu, ``leaky_relu`` leakyrelu."""
    args = build_parser().parse_args(["train", "--activation", text])
    assert args.activation == expected
    hidden = ",".join(["3"] * len(expected))
    argv = ["train", "--activation", text, "--hidden", hidden, "--epochs", "1"]
    assert main([*argv, "--batch-size", "1000"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    built = re.findall(r"\(\d+\): (\w+)\(", captured.out)
    names = {"leakyrelu": "LeakyReLU", "gelutanh": "GELU"}
    activations = [names.get(name, name) for name in expected]
    assert [name.lower() for name in built[1::2]] == [name.lower() for name in activations]


@pytest.mark.parametrize(
    "text", ["inf", "Infinity", "1e400", "2e9", "nan", "0", "-0", "-5", "soon"]
)
def test_dist_timeout_must_be_a_finite_positive_number(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dist-timeout`` refuses infinity, NaN, zero, negatives and non-numbers with an
    argparse usage error (exit code 2) that names the flag and the value: infinity, as a
    timeout too long (it was said not to be above 0)."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--dist-timeout", text])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    expected = (
        "expected a number of seconds <= 1e+09 (about 31 years: torch's timeouts overflow beyond "
        "9.2e9)"
        if text in ("inf", "Infinity", "1e400", "2e9")
        else "expected a number of seconds > 0"
    )
    assert f"argument --dist-timeout: {expected}, got {text!r}" in error, error


def test_dist_timeout_accepts_positive_seconds() -> None:
    """A finite positive ``--dist-timeout`` is kept as a float, and the default is None."""
    assert build_parser().parse_args(["train", "--dist-timeout", "2.5"]).dist_timeout == 2.5
    assert build_parser().parse_args(["train", "--dist-timeout", "1e-3"]).dist_timeout == 1e-3
    assert build_parser().parse_args(["train"]).dist_timeout is None


@pytest.mark.parametrize(("text", "shown"), [("30", "30"), ("2.5", "2.5"), ("1e-3", "0.001")])
def test_dist_timeout_outside_torchrun_is_refused_before_anything_runs(
    text: str, shown: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--dist-timeout`` without torchrun (no ``WORLD_SIZE``: one process, no rank to wait
    for) was silently ignored, as if in force; it is refused in one line, exit status 2,
    nothing trained or printed, as ``--checkpoint-every`` without a checkpoint is.
    ``$MINIDL_DIST_TIMEOUT``, an environment's setting for every run, is still left unread."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("MINIDL_DIST_TIMEOUT", "7")
    argv = ["train", "--hidden", "4", "--epochs", "0", "--quiet"]
    assert main([*argv, "--dist-timeout", text]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --dist-timeout {shown} applies under torchrun only (WORLD_SIZE is "
        "not set: this run is a single process, with no rank to wait for)\n",
    )
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def _two_ranks(argv: list[str], folders: list[Path]) -> list[tuple[int, str, str]]:
    """``python -m minidl *argv`` launched as 2 ranks (gloo over 127.0.0.1, started by hand as
    torchrun would), rank r in ``folders[r]``: each one's exit status, stdout and stderr."""
    port = str(free_port())
    # (their start-ups may differ by a minute on a busy machine)
    argv = [*argv, "--dist-timeout", "300"]
    ranks = []
    for rank, folder in enumerate(folders):
        env = tree_environment(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            GLOO_SOCKET_IFNAME="lo",
            OMP_NUM_THREADS="1",
            WORLD_SIZE=str(len(folders)),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
        )
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-m", "minidl", *argv],
                env=env,
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return [_finish(process) for process in ranks]


def test_only_rank_0_writes_the_checkpoint(tmp_path: Path) -> None:
    """Launched as 2 ranks (gloo over 127.0.0.1, started by hand as torchrun would), each in its
    own folder with the same relative ``--checkpoint run.ckpt``: rank 0 writes it (at the last
    epoch) and rank 1 writes nothing at all, not even a temporary file."""
    argv = ["train", "--epochs", "2", "--hidden", "4", "--batch-size", "500"]
    folders = [tmp_path / f"rank{rank}" for rank in range(2)]
    for folder in folders:
        folder.mkdir()
    results = _two_ranks([*argv, "--checkpoint", "run.ckpt"], folders)
    for code, _, stderr in results:
        assert code == 0, stderr
    assert os.listdir(tmp_path / "rank1") == []
    assert os.listdir(tmp_path / "rank0") == ["run.ckpt"]
    checkpoint = read_checkpoint(tmp_path / "rank0" / "run.ckpt")
    assert checkpoint.training.epoch == 2
    assert len(checkpoint.training.history.train_loss) == 2


def test_log_every_trains_under_torchrun_and_rank_0_alone_prints_it(tmp_path: Path) -> None:
    """Launched as 2 ranks with ``--log-every 2``: the ranks other than 0 print no epoch lines,
    which the launcher did by setting their --quiet, so that the refusal of --log-every with
    --quiet refused the user's --log-every on rank 1 (exit 2, and rank 0 stopped with it).
    Both train; rank 0 prints epochs 2 and 3 (the last), rank 1 no epoch line."""
    argv = ["train", "--epochs", "3", "--hidden", "4", "--batch-size", "500", "--log-every", "2"]
    results = _two_ranks(argv, [tmp_path, tmp_path])
    for code, _, stderr in results:
        assert code == 0, stderr
    epochs = [
        [line.split()[1] for line in stdout.splitlines() if line.startswith("epoch ")]
        for _, stdout, _ in results
    ]
    assert epochs == [["2/3", "3/3"], []], [stdout for _, stdout, _ in results]


@pytest.mark.parametrize("batch_size", [1, 3, 59, 60, 4096])
@pytest.mark.parametrize("training", [True, False])
def test_predict_in_batches_equals_one_pass(batch_size: int, training: bool) -> None:
    """Predictions in batches of any size (a last batch of one sample included: 60 = 3 * 19 +
    3, = 59 + 1) are those of one pass over the whole set in evaluation mode; the model's mode
    is restored."""
    model, x, _ = _problem(7)
    model.train(training)
    expected = model.eval()(x).argmax(dim=1)
    model.train(training)
    predicted = predict(model, x, batch_size=batch_size)
    assert torch.equal(predicted, expected)
    assert model.training is training


@pytest.mark.parametrize(("batch_size", "kind"), [(0, ValueError), (True, TypeError)])
def test_predict_refuses_a_batch_size_that_is_not_a_positive_int(
    batch_size: object, kind: type[Exception]
) -> None:
    model, x, _ = _problem(7)
    with pytest.raises(kind, match=r"^predict: batch_size must be an integer >= 1, got "):
        predict(model, x, batch_size=batch_size)  # type: ignore[arg-type]


def test_predict_refuses_what_is_not_a_set_of_samples() -> None:
    """An empty set used to fail in torch.cat, a non-tensor with an AttributeError."""
    model, x, _ = _problem(7)
    with pytest.raises(ValueError, match=r"^predict: x must hold at least one sample, got shape"):
        predict(model, x[:0])
    with pytest.raises(
        ValueError, match=r"^predict: x must hold at least one sample, got shape \(\)"
    ):
        predict(model, torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"^predict: x must be a torch.Tensor, got str"):
        predict(model, "x")  # type: ignore[arg-type]
    assert model.training


def test_evaluation_gives_every_module_back_its_own_mode() -> None:
    """predict and error_rate used to restore the model's mode with a recursive train(), which
    put a batch norm kept in evaluation mode (frozen) back in training mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    model[1].eval()
    modes = [module.training for _, module in model.named_modules()]
    assert modes == [True, True, False, True, True]
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    predict(model, x)
    error_rate(model, x, y)
    assert [module.training for _, module in model.named_modules()] == modes
    with eval_mode(model) as same:
        assert same is model
        assert not any(module.training for _, module in model.named_modules())
    assert [module.training for _, module in model.named_modules()] == modes
    with pytest.raises(KeyboardInterrupt), eval_mode(model):
        raise KeyboardInterrupt
    assert [module.training for _, module in model.named_modules()] == modes


def test_evaluation_gives_a_module_its_mode_back_through_its_own_train() -> None:
    """A module whose train() does more than set its flag (noise on in training) went back by
    its flag alone: after predict, error_rate or fit's validation pass it trained with the
    noise off, as in evaluation, where model.train() would have run its method. Its train()
    runs now, with its mode, and its children keep their own (a frozen one stays frozen)."""

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = self.register_module(
                "inner", nn.Sequential(nn.Linear(3, 3, dtype=torch.float64), nn.Tanh())
            )
            self.noise_on = True
            self.seen: list[bool] = []

        def train(self, mode: bool = True) -> Noisy:
            super().train(mode)
            self.noise_on = mode
            return self

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                self.seen.append(self.noise_on)
            return self.inner(x)

        def backward(self, grad: torch.Tensor) -> torch.Tensor:
            return self.inner.backward(grad)

    torch.manual_seed(0)
    noisy = Noisy()
    model = nn.Sequential(nn.Linear(2, 3, dtype=torch.float64), noisy)
    noisy.inner[1].eval()  # (a child of the module kept in evaluation mode)
    modes = [module.training for module in model.modules()]
    x, y = torch.randn(20, 2, dtype=torch.float64), torch.randint(0, 3, (20,))
    predict(model, x)
    error_rate(model, x, y)
    with eval_mode(model):
        assert not noisy.noise_on
    assert noisy.noise_on and [module.training for module in model.modules()] == modes
    fit(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), x, y, epochs=3,
        batch_size=10, validation=(x, y))  # fmt: skip
    assert noisy.seen == [True] * 6  # (fit put the model in training mode, then validated)


@pytest.mark.parametrize("folded", [True, False], ids=["folded", "step-by-step"])
@pytest.mark.parametrize(("start", "switch"), [("epoch", "batch"), ("batch", "epoch")])
def test_a_schedules_interval_set_by_on_epoch_holds_from_the_next_epoch(
    start: str, switch: str, folded: bool
) -> None:
    """fit read the interval once for the epochs' ends and at every epoch for the batches: set
    from "epoch" to "batch" by on_epoch, the schedule stepped after every batch and at every
    epoch's end (7 steps an epoch of 6 batches); from "batch" to "epoch", never again. It is
    read once an epoch now, for both: 1, 7, 13 and 6, 7, 8 steps after each epoch. fit_rounds
    the same."""
    from minidl.rounds import fit_rounds

    x, y = torch.randn(60, 2, dtype=F64), torch.randint(0, 2, (60,))
    expected = [1, 7, 13] if start == "epoch" else [6, 7, 8]
    models = [nn.mlp((2, 4, 2), "tanh", dtype=F64) for _ in range(2)]
    seen: list[int] = []
    schedules: list[optim.LRScheduler] = []

    def on_epoch(record: EpochRecord) -> None:
        seen.append(schedules[0].last_step)
        schedules[0].interval = switch  # type: ignore[assignment]

    optimizer = optim.SGD(models[0].parameters(), lr=0.1)
    schedules.append(optim.ExponentialDecay(optimizer, 0.9, interval=start))  # type: ignore[arg-type]
    context = contextlib.nullcontext() if folded else unfolded()
    with context:
        history = fit(models[0], nn.CrossEntropyLoss(), optimizer, x, y, epochs=3, batch_size=10,
                      scheduler=schedules[0], on_epoch=on_epoch)  # fmt: skip
    assert seen == expected
    assert len(history.batch_lr) == {"epoch": 12, "batch": 6}[start]
    assert history.lr == pytest.approx([0.1 * 0.9**steps for steps in [0, *expected[:2]]])

    seen.clear()
    schedules.clear()

    def make_scheduler(optimizer: optim.Optimizer) -> optim.LRScheduler:
        schedules.append(optim.ExponentialDecay(optimizer, 0.9, interval=start))  # type: ignore[arg-type]
        return schedules[-1]

    (history,) = fit_rounds(
        [models[1]], nn.CrossEntropyLoss(), lambda stack: optim.SGD(stack.parameters(), lr=0.1),
        [(x, y)], epochs=3, batch_size=10, generators=[torch.Generator().manual_seed(0)],
        make_scheduler=make_scheduler, on_epoch=lambda epoch, records: on_epoch(records[0]),
    )  # fmt: skip
    assert seen == expected
    assert len(history.batch_lr) == {"epoch": 12, "batch": 6}[start]


def test_stacked_error_rates_gives_every_module_back_its_own_mode() -> None:
    from minidl.rounds import stacked_error_rates

    stack = nn.stack_models([nn.mlp((2, 3, 2), "tanh") for _ in range(2)])
    stack[1].eval()
    modes = [module.training for _, module in stack.named_modules()]
    stacked_error_rates(stack, torch.randn(2, 5, 2), torch.zeros(2, 5, dtype=torch.int64))
    assert [module.training for _, module in stack.named_modules()] == modes


def test_checkpoints_are_written_every_n_epochs_and_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import minidl.checkpoint

    saved: list[int] = []
    save = minidl.checkpoint.save_checkpoint

    def record(*args: object, **kwargs: object) -> None:
        saved.append(int(kwargs["epoch"]))  # type: ignore[call-overload]
        save(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(minidl.checkpoint, "save_checkpoint", record)
    path = tmp_path / "run.ckpt"
    argv = ["train", "--epochs", "5", "--hidden", "3", "--checkpoint-every", "2"]
    assert main([*argv, "--checkpoint", str(path)]) == 0
    assert saved == [2, 4, 5]
    assert read_checkpoint(path).training.epoch == 5
    output = capsys.readouterr().out
    assert "final test error" in output and "training time:" in output
    saved.clear()  # without --checkpoint-every: every 10 epochs, as --help says
    argv = ["train", "--epochs", "12", "--hidden", "3", "--batch-size", "1000", "--quiet"]
    assert main([*argv, "--checkpoint", str(path)]) == 0
    assert saved == [10, 12]


# -- `minidl train`: checkpoint paths, seeds, the end's checkpoint, Ctrl-C ------------------------


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import minidl.train

    def fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(minidl.train, "fit", fit)


@pytest.mark.parametrize(
    "where",
    ["unwritable folder", "empty", "ends with a separator", "ends with a dot", "file", "fifo"],
)
def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_training(
    where: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--checkpoint`` in a folder that takes no file (``/sys/x.ckpt``), empty, or naming a
    folder used to fail with a traceback (or at the first save) after training had started;
    it is refused at once with a usage error naming the path, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("kept")
    if where == "unwritable folder":
        folder = request.getfixturevalue("unwritable_folder")
        path = str(folder / "x.ckpt")
        expected = f"--checkpoint {path}: cannot write into the folder {folder} ("
    elif where == "fifo":  # (each save renamed a file over it: the FIFO became that file)
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(tmp_path / "pipe")
        path, expected = "pipe", "--checkpoint pipe: expected a file path, got a FIFO"
    else:
        path = {
            "empty": "",
            "ends with a separator": "newdir" + os.sep,
            "ends with a dot": os.path.join("newdir", "."),  # (wrote the file newdir)
            "file": "a-file/x",
        }[where]
        shown = path if where == "file" else repr(path)
        expected = f"--checkpoint {shown}: expected a file path in an existing folder"
    _no_training(monkeypatch)
    argv = ["train", "--epochs", "3", "--hidden", "3", "--quiet", "--checkpoint", path]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(f"minidl train: error: {expected}")
    kept = ["a-file", "pipe"] if where == "fifo" else ["a-file"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "read-only") == kept
    assert (tmp_path / "a-file").read_text() == "kept"
    if where == "fifo":
        assert (tmp_path / "pipe").is_fifo()
    if (tmp_path / "read-only").exists():
        assert list((tmp_path / "read-only").iterdir()) == []


@pytest.mark.parametrize(
    ("hidden", "count"),
    [
        ("1000000000000000", 5 * 10**15 + 2),
        ("25," + str(2**62), 3 * 25 + 26 * 2**62 + (2**62 + 1) * 2),
        ("99999999999999999999999", 5 * 10**23 - 3),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_hidden_widths_that_do_not_fit_in_memory_are_refused_in_one_line(
    hidden: str, count: int, dtype: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--hidden 1000000000000000`` ended in torch's allocation error with a traceback, and
    widths beyond 64 bits in a message holding a C++ stack; the size the parameters need is
    compared with the machine's memory before anything is made."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    size = 2 * count * (4 if dtype == "float32" else 8)  # (and the gradients)
    assert main(["train", "--hidden", hidden, "--dtype", dtype, "--epochs", "0"]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --hidden {hidden}: the network's {count} parameters and their "
        f"gradients take {size} bytes ({dtype}), more than this machine's memory ({memory} "
        "bytes)\n",
    )


@pytest.mark.parametrize(("memory", "refused"), [(135, True), (136, False)])
def test_hidden_widths_whose_gradients_do_not_fit_in_memory_are_refused(
    memory: int,
    refused: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--hidden 3``'s 17 float32 parameters take 68 bytes, and their gradients, which the
    network holds once made, as many again: on a machine of 135 bytes it is refused, on one of
    136 it starts (the parameters alone were weighed: a network whose parameters took 60% of
    the memory was made, and the system ended the process as its gradients filled it, or
    torch's allocator failed)."""
    _no_training(monkeypatch)
    sysconf = os.sysconf
    given = {"SC_PAGE_SIZE": 1, "SC_PHYS_PAGES": memory}
    monkeypatch.setattr(os, "sysconf", lambda name: given.get(name) or sysconf(name))
    argv = ["train", "--hidden", "3", "--epochs", "1", "--quiet"]
    if not refused:
        with pytest.raises(AssertionError, match="training started"):
            main(argv)
        return
    assert main(argv) == 2
    assert capsys.readouterr() == (
        "",
        "minidl train: error: --hidden 3: the network's 17 parameters and their gradients take "
        "136 bytes (float32), more than this machine's memory (135 bytes)\n",
    )


@pytest.mark.parametrize("scheduler", ["none", "clr"])
def test_a_batch_size_beyond_64_bits_is_one_batch_of_the_whole_set(
    scheduler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--batch-size 100000000000000000000000`` ended in "minidl train: error: Overflow when
    unpacking long long"; it trains as ``--batch-size 1000`` (the whole training set)."""
    argv = ["train", "--epochs", "2", "--hidden", "5", "--scheduler", scheduler]
    assert main([*argv, "--batch-size", "100000000000000000000000"]) == 0
    huge = capsys.readouterr()
    assert main([*argv, "--batch-size", "1000"]) == 0
    whole = capsys.readouterr()
    assert huge.err == whole.err == ""
    assert _numbers(huge.out) == _numbers(whole.out)
    assert "final test error" in huge.out


def test_a_checkpoint_link_into_a_missing_folder_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A symbolic link whose target is in a missing folder passed the check (the link's own
    folder exists), trained, and failed at the first save naming a temporary file."""
    link = tmp_path / "run.ckpt"
    target = tmp_path / "missing" / "run.ckpt"
    link.symlink_to(target)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(link)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {link}: expected a file path in an existing folder "
        f"(it links to {target})\n",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_a_checkpoint_path_that_is_a_loop_of_links_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link to itself passed the check (realpath gives it back, in an existing folder); the
    run trained and its save replaced the link with a regular file."""
    link = tmp_path / "run.ckpt"
    link.symlink_to(link.name)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(link)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {link}: expected a file path, got a loop of "
        "symbolic links\n",
    )
    assert link.is_symlink() and os.readlink(link) == link.name
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_resuming_a_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """``--resume PIPE`` hung, waiting for a writer of the pipe."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    process = _start_cli("--epochs", "1", "--quiet", "--resume", str(pipe))
    try:
        # (as long as _finish waits: a loaded machine took more than a minute to start it)
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):  # (ENXIO: it had not opened the pipe yet)
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # (let it go)
        pytest.fail("minidl train --resume PIPE did not end: it waited for a writer")
    finally:
        process.kill()
    assert (process.returncode, stdout) == (2, "")
    assert stderr == (f"minidl train: error: --resume {pipe}: is a FIFO, not a regular file\n")


@pytest.mark.parametrize("seed", [str(2**64), str(-(2**63) - 1), "99999999999999999999999", "x"])
def test_a_seed_out_of_torchs_range_is_refused_naming_the_flag_and_the_range(
    seed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seed 99999999999999999999999`` used to end in "Overflow when unpacking long long";
    it is a usage error naming ``--seed`` and the range torch's generators accept."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "0", "--seed", seed])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert (
        "minidl train: error: argument --seed: expected an integer in "
        "[-9223372036854775808, 18446744073709551615]"
    ) in error
    assert error.endswith(f", got {repr(seed) if seed == 'x' else seed}\n")


def test_a_negative_seed_trains_as_its_64_bit_twin(tmp_path: Path) -> None:
    """``--seed -1`` is ``--seed 2**64 - 1``, as for torch's generators (the help says so):
    derived by their text, the two gave other runs (review)."""
    states = []
    for seed in ("-1", str(2**64 - 1), "1"):
        path = tmp_path / f"{seed}.ckpt"
        argv = ["train", "--epochs", "1", "--quiet", "--hidden", "3", "--seed", seed]
        assert main([*argv, "--checkpoint", str(path)]) == 0
        states.append(read_checkpoint(path).model_state)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_the_seeds_at_the_ends_of_torchs_range_train() -> None:
    for seed in (str(2**64 - 1), str(-(2**63))):
        argv = ["train", "--epochs", "1", "--quiet", "--hidden", "3", "--seed", seed]
        assert main([*argv, "--batch-size", "1000"]) == 0


@pytest.mark.parametrize(
    ("seed", "given"),
    [
        ("x", "'x'"),
        ("1.5", "'1.5'"),
        ("9" * 5000, "an int of 5000 digits (more than Python converts from text: 4300)"),
    ],
)
def test_reproduce_refuses_a_seed_that_is_no_integer_as_train_does(
    seed: str, given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """In one line, in train's words (it was argparse's ``invalid int value``, which quoted an
    integer too long to convert whole, 5000 digits, and called it no int)."""
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--quick", "--seed", seed])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert error.endswith(
        f"minidl reproduce: error: argument --seed: expected an integer, got {given}\n"
    )
    assert error.count("\n") == 3  # (argparse's usage, in two lines, and the error)


def test_reproduce_takes_any_integer_seed_as_it_hashes_it() -> None:
    """``minidl reproduce --seed`` is not bound by torch's range: each round's seeds are derived
    from it by SHA-256, into [0, 2**63), which torch accepts."""
    from minidl.experiments.seeds import round_seeds

    seed = build_parser().parse_args(["reproduce", "--seed", "99999999999999999999999"]).seed
    assert seed == 99999999999999999999999
    for round_index in range(3):
        seeds = round_seeds(seed, round_index)
        for value in (seeds.data, seeds.init, seeds.shuffle):
            assert 0 <= value < 2**63
            torch.Generator().manual_seed(value)


def test_a_run_with_no_epoch_left_still_writes_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints are written "at the end" also when no epoch runs: ``--epochs 0`` writes the
    initial state (resumed, it gives the uninterrupted run bit for bit), and a finished run
    resumed with ``--checkpoint`` another file writes its state there. Resumed without it, the
    resumed file, which already holds that state, is not rewritten."""
    import minidl.checkpoint

    argv = ["train", "--quiet", "--hidden", "4", "--batch-size", "400"]
    start, resumed, whole, copy = (tmp_path / f"{n}.ckpt" for n in ("e0", "r", "whole", "copy"))
    assert main([*argv, "--epochs", "0", "--checkpoint", str(start)]) == 0
    assert read_checkpoint(start).training.epoch == 0
    assert main([*argv, "--epochs", "3", "--resume", str(start), "--checkpoint", str(resumed)]) == 0
    assert main([*argv, "--epochs", "3", "--checkpoint", str(whole)]) == 0
    got, want = read_checkpoint(resumed), read_checkpoint(whole)
    assert got.training == want.training and got.training.epoch == 3
    assert got.tensors.keys() == want.tensors.keys()
    for name, tensor in want.tensors.items():
        assert torch.equal(got.tensors[name], tensor), name

    assert main([*argv, "--epochs", "3", "--resume", str(whole), "--checkpoint", str(copy)]) == 0
    assert copy.read_bytes() == whole.read_bytes()
    saved: list[object] = []
    monkeypatch.setattr(minidl.checkpoint, "save_checkpoint", lambda *a, **k: saved.append(a))
    assert main([*argv, "--epochs", "3", "--resume", str(whole)]) == 0
    assert saved == []
    capsys.readouterr()


def test_max_grad_norm_clips_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--max-grad-norm`` reaches fit, is saved with the run's settings, and a clipped run
    resumed gives the uninterrupted one bit for bit (and not the unclipped one)."""
    import minidl.train

    argv = ["train", "--quiet", "--hidden", "4", "--batch-size", "200", "--max-grad-norm", "0.05"]
    start, resumed, whole, plain = (tmp_path / f"{n}.ckpt" for n in ("e2", "r", "whole", "plain"))
    assert main([*argv, "--epochs", "2", "--checkpoint", str(start)]) == 0
    assert main([*argv, "--epochs", "4", "--resume", str(start), "--checkpoint", str(resumed)]) == 0
    assert main([*argv, "--epochs", "4", "--checkpoint", str(whole)]) == 0
    assert main([*argv[:-2], "--epochs", "4", "--checkpoint", str(plain)]) == 0
    got, want = read_checkpoint(resumed), read_checkpoint(whole)
    assert got.training == want.training
    assert want.training.extra["settings"]["max_grad_norm"] == 0.05
    for name, tensor in want.tensors.items():
        assert torch.equal(got.tensors[name], tensor), name
    unclipped = read_checkpoint(plain).tensors
    assert any(not torch.equal(unclipped[name], want.tensors[name]) for name in unclipped)
    received: list[object] = []
    real_fit = minidl.train.fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        received.append(kwargs["max_grad_norm"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(minidl.train, "fit", fit)
    assert main([*argv, "--epochs", "1"]) == 0
    assert main([*argv[:-2], "--epochs", "1"]) == 0
    assert received == [0.05, None]
    capsys.readouterr()


def _interrupting_fit(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Make ``minidl train``'s fit raise KeyboardInterrupt (Ctrl-C) once epoch ``after`` is
    done (and checkpointed, if it is an epoch to save)."""
    import minidl.train

    real_fit = minidl.train.fit

    def fit(*args: object, on_epoch: object, **kwargs: object) -> object:
        def interrupt(record: EpochRecord) -> None:
            on_epoch(record)  # type: ignore[operator]
            if record.epoch + 1 == after:
                raise KeyboardInterrupt

        return real_fit(*args, on_epoch=interrupt, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(minidl.train, "fit", fit)


@pytest.mark.parametrize("case", ["saved", "resumed", "none yet", "no checkpoint"])
def test_an_interrupted_run_says_where_its_last_checkpoint_is(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C during ``minidl train`` used to print a KeyboardInterrupt traceback; it exits
    with status 130 and one line saying where the last checkpoint is, and at which epoch."""
    argv = ["train", "--quiet", "--hidden", "4", "--batch-size", "400", "--epochs", "9"]
    path, other = tmp_path / "run.ckpt", tmp_path / "other.ckpt"
    if case == "resumed":  # interrupted before its first save into another file
        assert main([*argv, "--epochs", "2", "--checkpoint", str(other)]) == 0
        argv += ["--resume", str(other)]
    capsys.readouterr()
    _interrupting_fit(monkeypatch, after=5 if case != "resumed" else 3)
    if case != "no checkpoint":
        argv += ["--checkpoint", str(path), "--checkpoint-every", "2" if case == "saved" else "6"]
    try:
        code = main(argv)
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped main")
    assert code == 130
    output = capsys.readouterr()
    last = {"saved": (path, 4), "resumed": (other, 2)}.get(case)
    if last is not None:
        assert read_checkpoint(last[0]).training.epoch == last[1]
        expected = (
            f"minidl train: interrupted; the last checkpoint is {last[0]} (epoch {last[1]}); "
            f"continue with the same options and --resume {last[0]}\n"
        )
    elif case == "none yet":
        expected = f"minidl train: interrupted; no checkpoint was written to {path} yet\n"
    else:
        expected = "minidl train: interrupted; no checkpoint (--checkpoint PATH saves one)\n"
    assert output.err == expected
    assert output.out == ""
    assert path.exists() == (case == "saved")


def test_an_interrupt_outside_training_exits_with_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import minidl.experiments.runner

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(minidl.experiments.runner, "run_from_cli", interrupted)
    try:
        code = main(["reproduce", "--quick"])
    except KeyboardInterrupt:
        pytest.fail("the KeyboardInterrupt escaped main")
    assert code == 130
    assert capsys.readouterr().err == "minidl reproduce: interrupted\n"


#: A program that runs ``minidl`` with the arguments ARGUMENTS, as the console script does
#: (ENTRY "script") or as ``python -m minidl`` (ENTRY "module"), where importing the module
#: NAME is stopped by Ctrl-C: KeyboardInterrupt, or (RAISED "ImportError") the ImportError
#: that a compiled module raises when an interrupt stops its initialisation.
_INTERRUPTED_IMPORT = """
import importlib.abc, runpy, sys

def stop():
    try:
        raise KeyboardInterrupt
    finally:
        if RAISED == "ImportError":
            raise ImportError("initialization failed")

class Interrupted(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == NAME:
            stop()

sys.meta_path.insert(0, Interrupted())
sys.argv = ["minidl", *ARGUMENTS]
if ENTRY == "module":
    runpy.run_module("minidl", run_name="__main__", alter_sys=True)
else:
    from minidl.cli import main
    sys.exit(main())
"""


@pytest.mark.parametrize("entry", ["script", "module"])
@pytest.mark.parametrize(
    ("name", "raised"),
    [
        ("torch", "KeyboardInterrupt"),
        ("torch._C", "KeyboardInterrupt"),
        ("torch._C", "ImportError"),
    ],
)
@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["train", "--epochs", "0", "--quiet"], "minidl train: interrupted"),
        (["train", "--lr", "0.1"], "minidl: interrupted"),  # (--lr's type imports torch)
    ],
    ids=["the command", "a flag's type"],
)
def test_ctrl_c_while_torch_is_imported_exits_with_130_and_one_line(
    entry: str, name: str, raised: str, arguments: list[str], line: str
) -> None:
    """Ctrl-C while torch is imported, a second or so of every start: the package imported it
    before the command line's first line ran (the console script and ``python -m minidl``
    import the package first), and the run ended with a traceback of the import. Torch is now
    imported inside :func:`main`, as the command or a flag's type first needs it: one line,
    naming the command once it is known, and the status 130, at the start of torch's import
    and half-way (its compiled core), the interrupt raised or behind an ImportError."""
    program = (
        _INTERRUPTED_IMPORT.replace("ARGUMENTS", repr(arguments))
        .replace("RAISED", repr(raised))
        .replace("NAME", repr(name))
        .replace("ENTRY", repr(entry))
    )
    done = run_python(program)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", line + "\n")


#: A program that runs ``minidl`` with the arguments ARGUMENTS and, as torch's import begins,
#: writes whether SIGINT and SIGTERM are blocked and sends itself the signal SIGNAL.
_SIGNALLED_IMPORT = """
import importlib.abc, os, signal, sys

class Signalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            held = {signal.SIGINT, signal.SIGTERM} <= blocked
            sys.stdout.write("held\\n" if held else "not held\\n")
            os.kill(os.getpid(), SIGNAL)
            sys.stdout.write("torch imported on\\n")

sys.meta_path.insert(0, Signalled())
from minidl.cli import main
sys.exit(main(ARGUMENTS))
"""


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
@pytest.mark.parametrize(
    ("arguments", "number", "status", "line"),
    [
        (["train", "--epochs", "0", "--quiet"], "SIGINT", 130, "minidl train: interrupted"),
        (["train", "--epochs", "0", "--quiet"], "SIGTERM", 143, "minidl train: terminated"),
        (["train", "--lr", "0.1", "--epochs", "0"], "SIGINT", 130, "minidl: interrupted"),
    ],
    ids=["the command, Ctrl-C", "the command, SIGTERM", "a flag's type, Ctrl-C"],
)
def test_a_signal_while_torch_is_imported_waits_for_the_import(
    arguments: list[str], number: str, status: int, line: str
) -> None:
    """A real Ctrl-C or SIGTERM as torch's import begins is held back until torch is imported,
    then stops the run with its one line. Raised inside the import, in the initialisation of
    a compiled module (numpy's), a real one left it half made: of 60 signals sent in the
    first 0.7 s of ``minidl train``, one was lost (the run went on to its end, status 0) and one
    stopped the run with numpy's ``ImportError: cannot load module more than once per process``
    and its traceback."""
    program = _SIGNALLED_IMPORT.replace("ARGUMENTS", repr(arguments)).replace(
        "SIGNAL", f"signal.{number}"
    )
    done = run_python(program)
    assert (done.returncode, done.stdout, done.stderr) == (
        status,
        "held\ntorch imported on\n",
        line + "\n",
    )


def _start_until_checkpoint(path: Path) -> subprocess.Popen[str]:
    """Start a long ``minidl train`` that saves a checkpoint to ``path`` every epoch, and
    return it once the first is on disk (killed if none comes before the deadline)."""
    arguments = ["--epochs", "1000000", "--hidden", "4", "--batch-size", "1000", "--quiet"]
    process = _start_cli(*arguments, "--checkpoint-every", "1", "--checkpoint", str(path))
    deadline = time.monotonic() + 300
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if process.poll() is not None or not path.exists():
        _finish(process)
        pytest.fail("no checkpoint before the deadline")
    return process


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_ctrl_c_exits_with_130_and_names_the_last_checkpoint(tmp_path: Path) -> None:
    """A real SIGINT (what Ctrl-C sends) to ``minidl train`` once its first checkpoint is on
    disk: exit status 130, no traceback, and one line naming the checkpoint and its epoch, which
    is the epoch of the file on disk (where ever the signal lands, a save included)."""
    path = tmp_path / "run.ckpt"
    process = _start_until_checkpoint(path)
    try:
        process.send_signal(signal.SIGINT)
    finally:
        code, stdout, stderr = _finish(process)
    assert code == 130, stderr
    epoch = read_checkpoint(path).training.epoch
    assert epoch >= 1
    assert stderr == (
        f"minidl train: interrupted; the last checkpoint is {path} (epoch {epoch}); "
        f"continue with the same options and --resume {path}\n"
    )
    assert stdout == ""


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_a_second_ctrl_c_or_sigterm_after_the_line_changes_nothing(tmp_path: Path) -> None:
    """An impatient second Ctrl-C, then a SIGTERM, once the run's one line is printed: still
    that one line, no traceback, the status of the first (a second line, "minidl train:
    interrupted", came every time; a traceback from the interpreter's exit at times)."""
    path = tmp_path / "run.ckpt"
    process = _start_until_checkpoint(path)
    try:
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        line = process.stderr.readline()
        for signum in (signal.SIGINT, signal.SIGTERM):
            if process.poll() is None:
                process.send_signal(signum)
    finally:
        code, stdout, stderr = _finish(process)
    assert line.startswith("minidl train: interrupted; the last checkpoint is ")
    assert (code, stdout, stderr) == (130, "", "")


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_sigterm_during_a_save_leaves_no_temporary_file_and_names_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    """SIGTERM (``kill``, systemd, a batch scheduler) to ``minidl train`` while it writes a
    checkpoint: it killed the process at once, leaving the half-written temporary file beside
    the checkpoint. It now stops the run as Ctrl-C does: the temporary file is removed, the
    previous checkpoint is intact and named, and the exit status is the shells' 143."""
    path = tmp_path / "run.ckpt"
    arguments = ["--epochs", "1000000", "--hidden", "4", "--batch-size", "1000", "--quiet"]
    arguments += ["--checkpoint-every", "1", "--checkpoint", str(path)]
    process = subprocess.Popen(
        [sys.executable, "-m", "minidl", "train", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # (every save sleeps half-way through its temporary file, and before the rename)
        env={**os.environ, "OMP_NUM_THREADS": "1", "MINIDL_CHECKPOINT_TEST_DELAY": "0.5"},
    )
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if path.exists() and list(tmp_path.glob(".run.ckpt.*.tmp")):
                break  # (a save after the first)
            time.sleep(0.01)
        assert process.poll() is None and path.exists(), "no second save before the deadline"
        process.send_signal(signal.SIGTERM)
    finally:
        code, stdout, stderr = _finish(process)
    assert code == 143, stderr
    assert sorted(tmp_path.iterdir()) == [path]
    epoch = read_checkpoint(path).training.epoch
    assert epoch >= 1
    assert stderr == (
        f"minidl train: terminated; the last checkpoint is {path} (epoch {epoch}); "
        f"continue with the same options and --resume {path}\n"
    )
    assert stdout == ""


def _run_main_with(run: str) -> subprocess.CompletedProcess[str]:
    """Run ``minidl reproduce`` in a new process, its ``run_from_cli`` replaced by the function
    ``run(args)`` defined in ``run`` (Python source, which may use os, signal, sys, time)."""
    root = str(Path(__file__).resolve().parent.parent)
    script = (
        f"import os, signal, sys, time; sys.path.insert(0, {root!r})\n"
        "import minidl.experiments.runner\n"
        "from minidl.cli import main\n"
        f"{run}\n"
        "minidl.experiments.runner.run_from_cli = run\n"
        "sys.exit(main(['reproduce']))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_a_second_sigterm_does_not_cut_the_clean_up_short() -> None:
    """A SIGTERM that comes while the first one's clean-up runs (``finally``, ``__exit__``) is
    ignored: raised there, it would leave the rest of the clean-up undone."""
    run = (
        "def run(args):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(30)\n"
        "    finally:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(0.1)\n"
        "        print('cleaned up')\n"
    )
    done = _run_main_with(run)
    assert (done.returncode, done.stdout, done.stderr) == (
        143,
        "cleaned up\n",
        "minidl reproduce: terminated\n",
    )


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
def test_a_sigterm_ignored_by_the_starting_process_stays_ignored() -> None:
    """A run started with SIGTERM ignored (``trap '' TERM`` in a wrapper script) was stopped by
    it all the same: the handler replaced the inherited SIG_IGN (Python leaves an ignored
    SIGINT as it found it). It runs to its end now, and SIGTERM is still ignored after it
    (review)."""
    run = (
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def run(args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.2)\n"
        "    print('went on to the end')\n"
        "    return 0\n"
    )
    done = _run_main_with(run)
    assert (done.returncode, done.stdout, done.stderr) == (0, "went on to the end\n", "")


def test_main_leaves_torchs_global_generator_as_it_was(tmp_path: Path) -> None:
    """``main(["train", ...])`` seeded torch's global generator with the initial weights' seed,
    also where it was refused (a --checkpoint in a missing folder), and set it to the saved one
    when resuming, changing the random numbers of the program that called it (review). The run
    still seeds it (its checkpoints record it), and puts the caller's back when it ends."""
    path = str(tmp_path / "run.ckpt")
    assert main(["train", "--epochs", "1", "--hidden", "4", "--quiet", "--checkpoint", path]) == 0
    torch.manual_seed(123)
    before = torch.get_rng_state()
    missing = str(tmp_path / "missing" / "run.ckpt")
    assert main(["train", "--epochs", "1", "--hidden", "4", "--checkpoint", missing]) == 2
    assert main(["train", "--epochs", "1", "--hidden", "4", "--quiet"]) == 0
    assert main(["train", "--epochs", "2", "--hidden", "4", "--quiet", "--resume", path]) == 0
    assert torch.equal(torch.get_rng_state(), before)


CPUS = os.cpu_count() or 1


@pytest.mark.parametrize(
    ("flags", "threads"), [((), 1), (("--threads", str(CPUS)), CPUS)], ids=["default", "all"]
)
def test_train_runs_on_its_threads_and_puts_the_callers_count_back(
    monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...], threads: int
) -> None:
    """``minidl train`` trained on torch's default thread pool, where intra-op threads only
    add synchronisation for the paper's network: ten times slower and more with other
    processes on the cores (review; ``minidl reproduce`` trains on one). It trains on
    ``--threads`` (default 1), and leaves the caller's count as it was, also when refused."""
    import minidl.train

    seen: list[int] = []
    real_fit = minidl.train.fit

    def fit_noting_threads(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(minidl.train, "fit", fit_noting_threads)
    callers = torch.get_num_threads()
    try:
        torch.set_num_threads(CPUS + 1)  # (neither 1 nor the CPUs)
        assert main(["train", "--epochs", "1", "--hidden", "4", "--quiet", *flags]) == 0
        assert seen == [threads]
        assert torch.get_num_threads() == CPUS + 1
        assert main(["train", "--epochs", "1", "--quiet", "--log-every", "1", *flags]) == 2
        assert torch.get_num_threads() == CPUS + 1
    finally:
        torch.set_num_threads(callers)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0", "a positive integer, got 0"),
        ("-1", "a positive integer, got -1"),
        ("1.5", "a positive integer, got '1.5'"),
        ("two", "a positive integer, got 'two'"),
        (str(CPUS + 1), f"at most this machine's {CPUS} CPUs, got {CPUS + 1}"),
        ("1" + "0" * 30, f"at most this machine's {CPUS} CPUs, got 1" + "0" * 30),
    ],
)
def test_threads_that_are_no_positive_integer_up_to_the_cpus_are_refused(
    given: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """(Many thousands of threads crashed the process in torch's thread library, and a number
    past 64 bits failed in torch's words, after the data set was made.)"""
    with pytest.raises(SystemExit) as ended:
        main(["train", "--threads", given])
    assert ended.value.code == 2
    assert capsys.readouterr().err.endswith(f"argument --threads: expected {expected}\n")


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    ("number", "status", "line"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")]
)
def test_an_interrupt_raised_where_python_drops_exceptions_still_ends_the_run(
    number: str, status: int, line: str
) -> None:
    """A SIGTERM or a Ctrl-C handled while a weak reference's callback runs (as a garbage
    collection may run one at any moment, matplotlib's often) raised its exception there, where
    Python prints and drops it: the run went on to its end, as if no signal had come. It is
    sent again, and ends the run as any other."""
    done = _run_main_with(_signal_in_a_weakref_callback(number, hook=""))
    assert (done.returncode, done.stdout, done.stderr) == (
        status,
        "",
        f"minidl reproduce: {line}\n",
    )


def _signal_in_a_weakref_callback(number: str, hook: str) -> str:
    """A ``run`` that sends itself the signal ``number`` from a weak reference's callback, where
    Python drops what is raised, with the lines ``hook`` (indented for ``run``'s body) run first,
    then sleeps 30 s and prints 'went on to the end'."""
    return (
        "import weakref\n"
        "class Thing: pass\n"
        "def dropped(_):\n"
        f"    os.kill(os.getpid(), signal.{number})\n"
        "def run(args):\n"
        f"{hook}"
        "    thing = Thing()\n"
        "    reference = weakref.ref(thing, dropped)\n"
        "    del thing\n"
        "    for _ in range(300):\n"
        "        time.sleep(0.1)\n"
        "    print('went on to the end')\n"
        "    return 0\n"
    )


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    ("number", "status", "line"), [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")]
)
def test_an_interrupt_sent_again_is_sent_once_the_hook_has_returned(
    number: str, status: int, line: str
) -> None:
    """The interrupt dropped is sent again once the unraisable hook has returned: sent while the
    hook still ran (10 ms after it was called, where a loaded machine had taken the main thread
    off its core in the hook, or another library's hook around minidl's ran on), it was raised
    in the hook, where Python drops it again (to its default hook, which prints it), and the
    run went on to its end with status 0. Here a hook around minidl's takes 0.2 s to return."""
    slow_hook = (
        "    inner = sys.unraisablehook\n"
        "    def slow(unraisable):\n"
        "        inner(unraisable)\n"
        "        time.sleep(0.2)\n"
        "    sys.unraisablehook = slow\n"
    )
    done = _run_main_with(_signal_in_a_weakref_callback(number, hook=slow_hook))
    assert (done.returncode, done.stdout, done.stderr) == (
        status,
        "",
        f"minidl reproduce: {line}\n",
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_an_interrupt_dropped_in_a_forked_process_is_not_sent_to_the_run() -> None:
    """A process forked during the run (``minidl reproduce``'s workers) inherits the hook that
    sends a dropped interrupt again: there it is not sent to the run's process (the parent,
    whose pid the hook holds), which goes on to its end; the child's Python prints it as it
    prints any exception it drops."""
    run = (
        "import weakref\n"
        "class Thing: pass\n"
        "def dropped(_):\n"
        "    raise KeyboardInterrupt\n"
        "def run(args):\n"
        "    child = os.fork()\n"
        "    if child == 0:\n"
        "        thing = Thing()\n"
        "        reference = weakref.ref(thing, dropped)\n"
        "        del thing\n"
        "        time.sleep(0.2)\n"
        "        os._exit(0)\n"
        "    os.waitpid(child, 0)\n"
        "    time.sleep(0.2)\n"
        "    print('went on to the end')\n"
        "    return 0\n"
    )
    done = _run_main_with(run)
    assert (done.returncode, done.stdout) == (0, "went on to the end\n"), done.stderr
    assert "KeyboardInterrupt" in done.stderr


def test_main_restores_the_previous_sigterm_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """main turns SIGTERM into an exception while a command runs (in the main thread), and
    gives the handler back afterwards, as it found it; not under torchrun, whose launcher stops
    the ranks with SIGTERM."""
    import threading

    import minidl.experiments.runner

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    handlers: list[object] = []

    def run(args: argparse.Namespace) -> int:
        handlers.append(signal.getsignal(signal.SIGTERM))
        return 0

    def previous(signum: int, frame: object) -> None:
        pass

    monkeypatch.setattr(minidl.experiments.runner, "run_from_cli", run)
    monkeypatch.setattr("minidl.cli._run_train_launched", run)
    before = signal.signal(signal.SIGTERM, previous)
    try:
        assert main(["reproduce"]) == 0
        assert signal.getsignal(signal.SIGTERM) is previous
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["train"]) == 0
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)
    assert len(handlers) == 2
    assert callable(handlers[0]) and handlers[0] is not previous
    assert handlers[1] is previous


def test_a_resumed_file_in_a_folder_that_takes_no_file_is_refused(unwritable_folder: Path) -> None:
    """Checkpoints go on to the resumed file unless --checkpoint names another: its folder is
    checked too, and the message says how to save elsewhere. Ranks other than 0, which write
    nothing, do not try."""
    from minidl.cli import _check_checkpoint_path

    path = str(unwritable_folder / "run.ckpt")
    expected = f"--resume {path}: cannot write into the folder {unwritable_folder} ("
    with pytest.raises(ValueError, match=re.escape(expected) + ".*; give --checkpoint PATH to"):
        _check_checkpoint_path("--resume", path, writes=True)
    _check_checkpoint_path("--resume", path, writes=False)


@pytest.mark.parametrize("flag", ["--checkpoint", "--resume"])
def test_a_checkpoint_folder_that_cannot_be_searched_is_named_so(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder behind one that cannot be searched (mode 700, another user's) was said not to
    exist ("expected a file path in an existing folder"): its permission is the cause. (Its
    lookup is refused here by hand, which works as root too.)"""
    import errno

    from minidl.cli import _check_checkpoint_path

    folder = tmp_path / "locked" / "sub"
    folder.mkdir(parents=True)
    real_stat = os.stat

    def refusing_stat(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(target) == str(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(target))
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", refusing_stat)
    path = str(folder / "x.ckpt")
    hint = "; give --checkpoint PATH to save elsewhere" if flag == "--resume" else ""
    with pytest.raises(ValueError) as error:
        _check_checkpoint_path(flag, path, writes=True)
    assert str(error.value) == (
        f"{flag} {path}: cannot write into the folder {folder} (Permission denied){hint}"
    )


def test_a_checkpoint_path_is_only_looked_up_by_the_rank_that_writes_it(tmp_path: Path) -> None:
    """Rank 0 alone writes --checkpoint, possibly on another machine than the other ranks: a
    folder that exists on rank 0's machine alone was refused by the others ('expected a file
    path in an existing folder'), which closed the group. They check the path's form alone."""
    from minidl.cli import _check_checkpoint_path

    elsewhere = str(tmp_path / "only-on-rank-0" / "run.ckpt")
    with pytest.raises(ValueError, match="expected a file path in an existing folder"):
        _check_checkpoint_path("--checkpoint", elsewhere, writes=True)
    _check_checkpoint_path("--checkpoint", elsewhere, writes=False)
    for malformed in ("", str(tmp_path) + os.sep, str(tmp_path / "..")):
        with pytest.raises(ValueError, match="expected a file path in an existing folder"):
            _check_checkpoint_path("--checkpoint", malformed, writes=False)


@pytest.mark.parametrize(
    ("hidden", "reason"),
    [
        ((25, 25), "the checkpoint is for another architecture: '4.weight' has shape (2, 25)"),
        ((25, 25, 25), "the checkpoint holds no data-generator state"),
    ],
)
def test_resuming_a_checkpoint_not_written_by_train_is_refused_in_one_line(
    hidden: tuple[int, ...], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint of save_checkpoint: the message was load_checkpoint's, without the file's
    name, and for another architecture some 20 lines (two model reprs, a hint for Python)."""
    from minidl.checkpoint import save_checkpoint

    model = nn.mlp((2, *hidden, 2))
    path = tmp_path / "api.ckpt"
    save_checkpoint(path, model, optim.SGD(model.parameters(), lr=0.01), epoch=1)
    assert main(["train", "--resume", str(path), "--epochs", "2", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"minidl train: error: --resume {path}: {reason}")
    assert error.endswith(
        "; this checkpoint was not written by minidl train (it holds none of its settings)\n"
    )
    assert error.count("\n") == 1


def test_a_checkpoint_name_longer_than_the_folder_takes_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    path = tmp_path / ("a" * longest + ".ckpt")
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(path)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {path}: the file name is {longest + 5} bytes long, "
        f"longer than its folder takes ({longest})\n",
    )


def test_a_diverged_run_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """It printed error rates of about 50% (NaN outputs counted as class 0) and nothing else."""
    argv = ["train", "--lr", "1e20", "--activation", "relu", "--loss", "mse", "--epochs", "2"]
    assert main([*argv, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "final train error: 100.00%\nfinal test error: 100.00%\n"
    assert err == (
        "minidl train: warning: the training diverged (the loss was nan at epoch 1); a model "
        "whose outputs are NaN errs on every sample (try a smaller --lr, or --detect-anomaly to "
        "see where it started)\n"
    )


@pytest.mark.parametrize(
    ("arguments", "dtype"), [([], "float32"), (["--dtype", "float64"], "float64")]
)
def test_the_settings_line_names_the_dtype_as_the_flag_takes_it(
    arguments: list[str], dtype: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's settings named the loss, the optimizer and the scheduler, not the dtype it
    trained in (``--dtype``, float32 without it): it ends their line, in ``--dtype``'s words."""
    argv = ["train", "--epochs", "1", "--hidden", "3", "--scheduler", "step", *arguments]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    settings = [line for line in lines if line.startswith("loss: ")]
    assert len(settings) == 1, lines
    assert settings[0].endswith(
        f"   scheduler: StepDecay(step_size=10, gamma=0.5, base_lr=0.01)   dtype: {dtype}"
    )


#: A loss as ``.4g`` writes one of 1e6 or more, and as ``.6f`` writes one below.
SCIENTIFIC = r"[1-9](?:\.\d{1,3})?e\+\d\d\d?"
FIXED = r"\d{1,6}\.\d{6}"


@pytest.mark.parametrize(
    ("arguments", "losses"),
    [
        # (losses of about 6e30 in float32; in float64, about 4e44, then 1e98)
        (["--lr", "1e30"], [SCIENTIFIC, SCIENTIFIC]),
        (["--lr", "10", "--loss", "mse", "--dtype", "float64"], [SCIENTIFIC, SCIENTIFIC]),
        (["--lr", "10", "--loss", "mse"], ["inf", "nan"]),
        (["--lr", "1e4"], [FIXED, FIXED]),  # (about 6e4: as before)
    ],
    ids=["huge-float32", "huge-float64", "inf-nan", "large"],
)
def test_a_diverging_runs_losses_are_printed_readably(
    arguments: list[str], losses: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A loss of 6e30 was printed as ``.6f`` writes it, 31 digits and 6 decimals: from 1e6 on
    it is written as ``.4g`` does (``6.244e+30``), an infinity and a NaN as ``inf`` and ``nan``,
    and a loss below 1e6 as before; no number of the output has more than 7 digits in a row."""
    assert main(["train", "--epochs", "2", "--hidden", "25,25,25", *arguments]) == 0
    out = capsys.readouterr().out
    logged = re.findall(r"^epoch \d/2  loss (\S+)  validation error", out, flags=re.MULTILINE)
    assert len(logged) == 2, out
    for text, expected in zip(logged, losses, strict=True):
        assert re.fullmatch(expected, text), logged
    assert re.search(r"\d{8}", out) is None, out


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.693147, "0.693147"),
        (999999.25, "999999.250000"),
        (-999999.25, "-999999.250000"),
        (1e6, "1e+06"),
        (-6.2440166e30, "-6.244e+30"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (float("nan"), "nan"),
    ],
)
def test_a_loss_is_written_readably_from_1e6_on(value: float, text: str) -> None:
    from minidl.cli import _readable

    assert _readable(value, ".6f") == text


def test_a_number_below_1e6_is_written_in_the_form_given() -> None:
    from minidl.cli import _readable

    assert _readable(0.693147, ".3f") == "0.693"
    assert _readable(-12.5, "8.2f") == "  -12.50"
    assert _readable(2.5e6, ".3f") == "2.5e+06"


def test_a_path_the_output_cannot_encode_is_printed_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an ASCII standard output (PYTHONIOENCODING=ascii, a C locale), ``--resume ü.ckpt``
    failed before training with "minidl train: error: 'ascii' codec can't encode character"
    (and ``minidl reproduce --out résultats`` after the whole run); the path is printed
    escaped, as stderr does."""
    import io

    path = tmp_path / "ü.ckpt"
    argv = ["train", "--epochs", "1", "--hidden", "3", "--batch-size", "1000"]
    assert main([*argv, "--quiet", "--checkpoint", str(path)]) == 0
    capsys.readouterr()
    output = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(output, encoding="ascii", newline="\n"))
    assert main([*argv, "--resume", str(path)]) == 0
    sys.stdout.flush()
    escaped = str(path).encode("ascii", "backslashreplace")
    assert b"\nresumed from " + escaped + b" at epoch 1\n" in output.getvalue()
    assert b"final test error: " in output.getvalue()
    assert capsys.readouterr().err == ""


def test_the_resumed_line_quotes_a_path_that_would_hide_or_split_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``resumed from ...`` names the ``--resume`` file as the refusals do: a path ending in a
    space, or holding a newline, quoted (printed as it was, the space could not be seen and the
    newline split the line)."""
    argv = ["train", "--epochs", "1", "--hidden", "3", "--batch-size", "1000"]
    for name in ("ends in a space.ckpt ", "two\nlines.ckpt"):
        path = str(tmp_path / name)
        assert main([*argv, "--quiet", "--checkpoint", path]) == 0
        capsys.readouterr()
        assert main([*argv, "--epochs", "2", "--resume", path]) == 0
        out = capsys.readouterr().out
        assert f"\nresumed from {path!r} at epoch 1\n" in out


def test_version_prints_the_installed_distributions_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``minidl --version`` prints ``minidl`` and the version in the installed distribution's
    metadata on stdout and exits 0 (it was an unrecognised argument, exit status 2), also
    before a command's name; from a source folder with no distribution installed, the
    package's ``__version__``."""
    import importlib.metadata

    import minidl

    installed = importlib.metadata.version("minidl")
    for argv in (["--version"], ["--version", "train"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        assert capsys.readouterr() == (f"minidl {installed}\n", "")

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(minidl, "__version__", "9.8.7")
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr() == ("minidl 9.8.7\n", "")


def test_the_version_is_the_same_in_pyproject_and_the_package() -> None:
    """pyproject.toml's version (the distribution's metadata, which ``minidl --version``
    prints) and ``minidl.__version__`` (which a checkpoint records) are one."""
    import minidl

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text("utf-8")
    versions = re.findall(r'^version = "([^"]*)"$', pyproject, flags=re.MULTILINE)
    assert versions == [minidl.__version__]


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: minidl [-h]")
    assert err.endswith("\nminidl: error: give a command (minidl --help lists them)\n")


@pytest.mark.parametrize("flag", ["--checkpoint", "--resume"])
def test_train_without_safetensors_refuses_a_checkpoint_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    """Without safetensors (the checkpoint extra), --checkpoint and --resume are refused with
    one line naming the flag and what to install, before any epoch (a run trained until its
    first save, then failed with a traceback)."""
    path = tmp_path / "run.ckpt"
    if flag == "--resume":
        assert main(["train", "--epochs", "0", "--quiet", "--checkpoint", str(path)]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "safetensors", None)  # (import raises ModuleNotFoundError)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    assert main(["train", "--epochs", "1", flag, str(path)]) == 2
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err == (
        f"minidl train: error: {flag} {path}: a checkpoint is a safetensors file, and the "
        "safetensors package is not installed; install minidl's checkpoint extra: pip install "
        "'minidl[checkpoint]' (or pip install safetensors)\n"
    )


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--checkpoint", ""], "--checkpoint ''"),
        (["--resume", ""], "--resume ''"),
        (["--checkpoint", "saved.ckpt", "--resume", "run.ckpt"], "--checkpoint saved.ckpt"),
    ],
)
def test_train_without_safetensors_names_an_empty_path_of_its_flag(
    arguments: list[str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty ``--checkpoint`` was named by the other flag's path (``--checkpoint None``), an
    empty ``--resume`` with nothing after the flag: each is named as its flag gave it, and
    ``--checkpoint`` by its own path when both are given."""
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    _no_training(monkeypatch)
    assert main(["train", "--epochs", "1", *arguments]) == 2
    assert capsys.readouterr().err.startswith(
        f"minidl train: error: {named}: a checkpoint is a safetensors file, and the safetensors "
        "package is not installed;"
    )


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs a file size limit (POSIX)")
def test_a_checkpoint_beyond_the_file_size_limit_is_named(tmp_path: Path) -> None:
    """Under a file size limit (``ulimit -f``) the kernel refuses the checkpoint's write with
    EFBIG, whose ``OSError`` names no file: the run said ``[Errno 27] File too large``. It
    names the checkpoint, and leaves no temporary file."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    done = subprocess.run(
        [sys.executable, "-m", "minidl", "train", "--epochs", "1", "--checkpoint", "run.ckpt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=tree_environment(),
        preexec_fn=limited,
    )
    path = tmp_path / "run.ckpt"
    assert (done.returncode, done.stderr) == (
        1,
        f"minidl train: error: {path}: File too large\n",
    )
    assert list(tmp_path.iterdir()) == []
