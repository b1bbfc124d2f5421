"""Behaviour of ``minidl.cli`` that a fourth pass of mutation testing found unchecked
(2026-12-07): each test pins one result against its oracle (the flag's documented range, the
message it names, the state the run leaves)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from minidl import cli
from minidl.cli import build_parser, main


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last line of the usage error that ``argv`` gets (status 2)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


# -- flags' ranges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--momentum", "1", "a number in [0, 1)"),
        ("--eps", "0", "a finite number in (0, inf)"),
        ("--max-grad-norm", "0", "a finite number in (0, inf)"),
        ("--dist-timeout", "0", "a number of seconds > 0"),
        ("--dist-timeout", "nan", "a number of seconds > 0"),
        ("--dist-timeout", "-0", "a number of seconds > 0"),
    ],
)
def test_an_open_end_of_a_flags_range_is_refused_by_the_flag(
    flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The open ends of the ranges the help states (``--momentum`` in [0, 1), ``--eps`` and
    ``--max-grad-norm`` > 0, ``--dist-timeout`` > 0, NaN no number of seconds) are refused
    where the flag is read, naming it and the value as given."""
    assert _usage_error(["train", flag, value], capsys) == (
        f"minidl train: error: argument {flag}: expected {expected}, got {value!r}"
    )


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [("--momentum", "0", 0.0), ("--lr", "0", 0.0), ("--rho", "1", 1.0)],
)
def test_a_closed_end_of_a_flags_range_is_taken(flag: str, value: str, expected: float) -> None:
    args = build_parser().parse_args(["train", flag, value])
    assert getattr(args, flag[2:].replace("-", "_")) == expected


def test_the_seeds_ends_are_taken_and_one_past_either_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--seed`` takes [-2**63, 2**64 - 1], both ends included (the help says so)."""
    for seed in (-(2**63), 2**64 - 1):
        assert build_parser().parse_args(["train", "--seed", str(seed)]).seed == seed
    for seed in (-(2**63) - 1, 2**64):
        line = _usage_error(["train", "--seed", str(seed)], capsys)
        assert line == (
            "minidl train: error: argument --seed: expected an integer in "
            f"[{-(2**63)}, {2**64 - 1}] (a 64-bit seed, as torch's generators take: a negative s "
            f"is 2**64 + s), got {seed}"
        )


def test_activation_names_are_taken_with_spaces_around_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--activation "relu, tanh"`` (a space after the comma, as one writes a list) gives the
    names without their spaces; an unknown name is quoted as given, not as its key."""
    args = build_parser().parse_args(["train", "--activation", " relu, Leaky_ReLU ,tanh "])
    assert args.activation == ("relu", "leakyrelu", "tanh")
    assert _usage_error(["train", "--activation", "relu,Foo_Bar"], capsys) == (
        "minidl train: error: argument --activation: unknown activation 'Foo_Bar'; valid names "
        "are elu, gelu, gelutanh, leakyrelu, relu, selu, sigmoid, silu, tanh"
    )


def test_a_negative_integer_past_pythons_digits_is_named_negative(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = _usage_error(["reproduce", "--seed", "-" + "9" * 5000], capsys)
    assert line == (
        "minidl reproduce: error: argument --seed: expected an integer, got a negative int of "
        "5000 digits (more than Python converts from text: 4300)"
    )


def test_a_part_of_hidden_that_is_no_integer_quotes_the_whole_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _usage_error(["train", "--hidden", "3,x"], capsys) == (
        "minidl train: error: argument --hidden: expected comma-separated positive integers "
        "such as 25,25,25, got '3,x'"
    )


# -- the parser ------------------------------------------------------------------------------


def test_the_parsers_usage_goes_to_the_standard_error_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``build_parser().print_usage()``: to the standard error, as its docstring says."""
    build_parser().print_usage()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: minidl [-h] [--version] COMMAND")


def test_a_long_unknown_option_with_a_long_value_is_quoted_whole_by_its_start_and_length(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--xxx...=yyy...`` (both parts over 100 characters), unknown: the whole argument is
    quoted by its start and length, not its value inside it (the longest text first)."""
    given = "--" + "x" * 150 + "=" + "y" * 150
    line = _usage_error(["train", given], capsys)
    assert line == (
        f"minidl: error: unrecognized arguments: {given[:40]!r}... (a str of 303 characters)"
    )


def test_a_help_that_states_its_default_is_not_given_a_second(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 1: the paper's network" in text
    assert "a resumed run may take another --log-every N" in text  # (no "(default: 1)" added)


# -- train's refusals ------------------------------------------------------------------------


def test_too_many_activations_name_the_hidden_layers_in_the_plural(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["train", "--hidden", "3,3", "--activation", "relu,tanh,relu", "--epochs", "0"]
    assert main(argv) == 2
    assert capsys.readouterr() == (
        "",
        "minidl train: error: --activation gives 3 names for 2 hidden layers; give one name, "
        "or one per hidden layer\n",
    )


@pytest.mark.parametrize("flag", ["--rho", "--eps"])
def test_adadeltas_flags_are_refused_with_sgd(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--epochs", "0", "--hidden", "3", flag, "0.5"]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: {flag} applies to --optimizer adadelta only\n",
    )


def test_momentum_is_refused_with_adadelta(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--epochs", "0", "--hidden", "3", "--optimizer", "adadelta"]
    assert main([*argv, "--momentum", "0.5"]) == 2
    assert capsys.readouterr() == (
        "",
        "minidl train: error: --momentum applies to --optimizer sgd only\n",
    )


@pytest.mark.parametrize(
    ("flags", "scheduler"),
    [
        (["--scheduler", "step"], "StepDecay(step_size=10, gamma=0.5, base_lr=0.01)"),
        # 1000 training samples in batches of 300: 4 batches an epoch (the last short), 2 epochs
        # up from lr / 10.
        (
            ["--scheduler", "clr", "--batch-size", "300"],
            "CyclicLR(base_lr=0.001, max_lr=0.01, step_size_up=8, step_size_down=8, "
            "mode='triangular', gamma=1.0)",
        ),
    ],
)
def test_the_schedules_are_the_ones_the_help_states(
    flags: list[str], scheduler: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``step`` halves every 10 epochs; ``clr`` cycles between lr/10 and lr, 2 epochs up and
    2 down, an epoch's batches counting its short last one."""
    from minidl.data import make_disk_data

    assert len(make_disk_data(seed=0).train) == 1000
    assert main(["train", "--hidden", "3", "--epochs", "0", *flags]) == 0
    assert f"   scheduler: {scheduler}   dtype: float32\n" in capsys.readouterr().out


def test_a_checkpoint_path_ending_in_dot_dot_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``new/..`` would write the folder above ``new``: refused as ``new/.`` is."""
    path = str(tmp_path / "new" / "..")
    assert main(["train", "--hidden", "3", "--epochs", "0", "--checkpoint", path]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {path!r}: expected a file path in an existing folder\n",
    )
    assert not (tmp_path / "new").exists()


def test_a_path_of_the_longest_length_is_quoted_whole(tmp_path: Path) -> None:
    """A refused path of 4096 characters (``LONGEST_PATH``, Linux's ``PATH_MAX``) is quoted
    whole, with ``repr``; one of 4097 by its start and length."""
    from minidl._validate import LONGEST_PATH

    longest = "a" * (LONGEST_PATH - 1) + "/"
    with pytest.raises(ValueError) as info:
        cli._check_checkpoint_path("--checkpoint", longest, writes=True)
    assert str(info.value) == (
        f"--checkpoint {longest!r}: expected a file path in an existing folder"
    )
    with pytest.raises(ValueError) as info:
        cli._check_checkpoint_path("--checkpoint", "a" + longest, writes=True)
    assert str(info.value) == (
        f"--checkpoint {'a' * 40!r}... (a str of 4097 characters): expected a file path in an "
        "existing folder"
    )


# -- resume ----------------------------------------------------------------------------------

_RUN = ["train", "--hidden", "3", "--batch-size", "500", "--quiet"]


@pytest.mark.parametrize(
    ("first", "second", "difference"),
    [
        (
            ["--max-grad-norm", "1"],
            [],
            "--max-grad-norm 1.0 in the checkpoint, none (no clipping) now",
        ),
        (["--batch-size", "250"], [], "--batch-size 250 in the checkpoint, 500 now"),
    ],
)
def test_resuming_with_another_setting_is_refused_naming_it(
    first: list[str],
    second: list[str],
    difference: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "run.ckpt"
    assert main([*_RUN, "--epochs", "1", "--checkpoint", str(path), *first]) == 0
    saved = path.read_bytes()
    capsys.readouterr()
    assert main([*_RUN, "--epochs", "2", "--resume", str(path), *second]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --resume {path}: the checkpoint was made with other "
        f"settings: {difference}\n",
    )
    assert path.read_bytes() == saved


def test_one_activation_resumes_a_run_of_as_many_of_it(tmp_path: Path) -> None:
    """``--activation tanh`` is ``tanh,tanh`` for two hidden layers: the same setting."""
    path = tmp_path / "run.ckpt"
    run = [*_RUN, "--hidden", "3,3", "--checkpoint", str(path)]
    assert main([*run, "--epochs", "1", "--activation", "tanh,tanh"]) == 0
    assert main([*run, "--epochs", "2", "--activation", "tanh", "--resume", str(path)]) == 0


def test_a_finished_run_resumed_into_its_own_file_neither_saves_nor_checks_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed at its last epoch into the file it came from, a run has nothing to save: it
    does not rewrite the file, nor try a file in its folder (which may be read-only now)."""
    import minidl._files
    import minidl.checkpoint

    path = tmp_path / "run.ckpt"
    assert main([*_RUN, "--epochs", "1", "--checkpoint", str(path)]) == 0
    saved = path.read_bytes()
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append("called")
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(minidl._files, "check_folder_takes_files", refuse)
    monkeypatch.setattr(minidl.checkpoint, "save_checkpoint", refuse)
    assert main([*_RUN, "--epochs", "1", "--resume", str(path)]) == 0
    assert calls == []
    assert path.read_bytes() == saved


def test_an_interrupted_run_names_its_own_checkpoint_before_the_resumed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resumed from ``a.ckpt`` into ``b.ckpt`` and stopped after a save into ``b.ckpt``: the
    last checkpoint is ``b.ckpt``'s (epoch 2), not the file it resumed (epoch 1)."""
    import minidl.train

    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    assert main([*_RUN, "--epochs", "1", "--checkpoint", str(a)]) == 0
    fit = minidl.train.fit

    def fit_then_interrupt(*args: Any, **kwargs: Any) -> Any:
        kwargs["epochs"] = 2
        fit(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(minidl.train, "fit", fit_then_interrupt)
    capsys.readouterr()
    argv = [*_RUN, "--epochs", "3", "--checkpoint-every", "1", "--resume", str(a)]
    assert main([*argv, "--checkpoint", str(b)]) == 130
    assert capsys.readouterr().err == (
        f"minidl train: interrupted; the last checkpoint is {b} (epoch 2); continue with "
        f"the same options and --resume {b}\n"
    )


def test_an_unreadable_saved_file_falls_back_to_the_resumed_one(tmp_path: Path) -> None:
    """The interrupted line reads the saved file first; one that is no checkpoint (a save cut
    short by the filesystem) passes on to the resumed file."""
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    assert main([*_RUN, "--epochs", "1", "--checkpoint", str(a)]) == 0
    b.write_bytes(b"not a checkpoint")
    assert cli._interrupted(str(b), str(a), str(b)) == (
        f"minidl train: interrupted; the last checkpoint is {a} (epoch 1); continue with "
        f"the same options and --resume {a}"
    )


# -- file errors -----------------------------------------------------------------------------


def test_a_file_error_names_both_files_of_a_rename_and_its_notes() -> None:
    error = OSError(28, "No space left on device", "run.ckpt.tmp", 5, "run.ckpt")
    error.add_note("the earlier run's files are in 'old'")
    assert cli._file_error(error) == (
        "run.ckpt.tmp -> run.ckpt: No space left on device; the earlier run's files are in 'old'"
    )


def test_a_file_error_naming_the_standard_output_and_a_file_names_both() -> None:
    from minidl._files import STANDARD_OUTPUT

    error = OSError(28, "No space left on device", STANDARD_OUTPUT, 5, "run.ckpt")
    assert cli._file_error(error) == (
        f"{cli._shown_path(STANDARD_OUTPUT)} -> run.ckpt: No space left on device"
    )
    alone = OSError(28, "No space left on device", STANDARD_OUTPUT)
    assert cli._file_error(alone) == (
        "cannot write to the standard output (No space left on device)"
    )


# -- torchrun --------------------------------------------------------------------------------


def test_a_batch_whose_last_is_short_of_the_processes_is_refused_by_its_flag() -> None:
    """1000 samples in batches of 6 on 3 processes: the last batch holds 4 (1000 = 166 * 6 +
    4), at least one per process, taken; in batches of 9 on 9 processes: 1 sample for 9
    processes, refused."""
    cli._check_batches_split(6, 1000, 3)
    with pytest.raises(ValueError) as info:
        cli._check_batches_split(9, 1000, 9)
    assert str(info.value) == (
        "--batch-size 9 ends every epoch with a batch of 1 of the 1000 training samples, fewer "
        "than the 9 processes of the launch (WORLD_SIZE), which take one sample each at least: "
        "choose another --batch-size"
    )


def test_a_finished_run_resumed_into_another_file_checks_that_files_folder_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resumed at its last epoch with ``--checkpoint`` naming another file, the run saves its
    state there at the end: a missing folder is refused before anything, by the flag."""
    a = tmp_path / "a.ckpt"
    assert main([*_RUN, "--epochs", "1", "--checkpoint", str(a)]) == 0
    capsys.readouterr()
    b = tmp_path / "missing" / "b.ckpt"
    assert main([*_RUN, "--epochs", "1", "--resume", str(a), "--checkpoint", str(b)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {b}: expected a file path in an existing folder\n",
    )


def test_dist_timeout_outside_torchrun_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", "--epochs", "0", "--hidden", "3", "--dist-timeout", "5"]) == 2
    assert capsys.readouterr() == (
        "",
        "minidl train: error: --dist-timeout 5 applies under torchrun only (WORLD_SIZE is not "
        "set: this run is a single process, with no rank to wait for)\n",
    )


# -- signals ---------------------------------------------------------------------------------


def test_a_sigterm_ignored_when_the_run_starts_stays_ignored() -> None:
    """``trap '' TERM``: the run does not take ``SIGTERM`` back (and leaves it ignored)."""
    import signal

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with cli._sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_while_one_is_handled_does_not_cut_the_clean_up_short() -> None:
    """A second ``SIGTERM`` that comes while the first's ``_Terminated`` is handled (the
    clean-up runs) is ignored; the handler is put back afterwards."""
    import signal
    import time

    before = signal.getsignal(signal.SIGTERM)
    cleaned = False
    with pytest.raises(cli._Terminated), cli._sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the handler runs here, and raises)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # (while the first is handled)
            time.sleep(0.05)
            cleaned = True
    assert cleaned
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("hidden", ["0", "3,0", "-0"])
def test_a_hidden_width_of_0_is_refused_by_the_flag(
    hidden: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--hidden`` takes positive widths: a layer of 0 units is refused where the flag is
    read (not left to ``mlp`` or to the training)."""
    assert _usage_error(["train", "--hidden", hidden], capsys) == (
        f"minidl train: error: argument --hidden: expected positive widths, got {hidden!r}"
    )


def test_a_checkpoint_path_naming_an_existing_folder_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--checkpoint runs`` where ``runs`` is a folder (no separator at its end): refused by
    the flag before training, the folder left as it was."""
    import minidl.train

    def fit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(minidl.train, "fit", fit)
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "kept").write_bytes(b"kept")
    assert main(["train", "--hidden", "3", "--epochs", "1", "--checkpoint", str(folder)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {folder}: expected a file path in an existing folder\n",
    )
    assert sorted(os.listdir(folder)) == ["kept"]


def test_a_checkpoint_path_holding_a_foreign_file_is_refused_and_the_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped ``--checkpoint`` naming a file that is no checkpoint: refused before
    training (the first save would replace it), the file left as it was."""
    import minidl.train

    def fit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(minidl.train, "fit", fit)
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my notes\n" * 10)
    assert main(["train", "--hidden", "3", "--epochs", "1", "--checkpoint", str(path)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --checkpoint {path}: a file of 90 bytes is there that is no "
        "minidl checkpoint, and a save would replace it; give another path, or remove the file\n",
    )
    assert path.read_bytes() == b"my notes\n" * 10
