"""Behaviour of the ``minidl`` command line that a second mutation audit of ``minidl.cli``
found untested.

Each test pins one observable result against its oracle: the line of a run interrupted before
its first save into a ``--checkpoint`` file that an earlier run left there, the output of
``--quiet``, the quoting of a long argument after ``-hh``, an integer of Python's most digits
after a leading zero, the bounds of ``--lr``, ``--dist-timeout`` and ``--rho`` taken, the signal
handlers of ``main`` called from a program, the one stop line of a run interrupted again while
it cleans up, the checkpoint path that a rank other than 0 does not look up, ``minidl
reproduce`` out of memory, ``--checkpoint-every`` with ``--resume`` alone, and the refusal of
a resume under another ``--detect-anomaly``. A third audit added a ``--checkpoint`` file name
measured in bytes, a checkpoint past ``--epochs 0`` refused by ``--resume``, and an interrupt
behind an error chain that loops."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from minidl import cli
from minidl.cli import main


def test_a_run_interrupted_before_its_first_save_names_no_earlier_runs_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``--checkpoint`` file that an earlier run wrote is no checkpoint of this run: stopped
    before its first save, the run says that none was written yet (status 130), rather than
    offer to continue from the earlier run's epoch with ``--resume``, which would refuse it or
    train on from another run's state."""
    import minidl.train

    path = tmp_path / "run.ckpt"
    base = ["train", "--hidden", "3", "--batch-size", "1000", "--quiet", "--checkpoint", str(path)]
    assert main([*base, "--epochs", "2"]) == 0  # (the earlier run: a checkpoint at epoch 2)
    assert path.exists()
    capsys.readouterr()

    def interrupted_fit(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(minidl.train, "fit", interrupted_fit)
    assert main([*base, "--epochs", "5", "--seed", "1"]) == 130
    assert capsys.readouterr().err == (
        f"minidl train: interrupted; no checkpoint was written to {path} yet\n"
    )


def test_quiet_prints_only_the_final_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """``--quiet`` prints only the final errors, as its help says: no model, no epoch and no
    training time (whose seconds differ from run to run, and would spoil a results file)."""
    assert main(["train", "--hidden", "3", "--batch-size", "1000", "--epochs", "2", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["final train error", "final test error"]
    assert all(re.fullmatch(r"final (train|test) error: \d+\.\d\d%", line) for line in lines)


def test_a_long_explicit_argument_after_two_short_flags_is_quoted_by_its_start_and_length(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``-hhTEXT`` is ``-h -h`` given ``TEXT``, which argparse quotes whole ("ignored explicit
    argument"): a long one is quoted by its start and length, as after one flag (``-hTEXT``),
    not written whole into the error."""
    quoted = "'" + "x" * 40 + "'... (a str of 200 characters)"
    with pytest.raises(SystemExit) as ended:
        main(["train", "-hh" + "x" * 200])
    assert ended.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == f"minidl train: error: argument -h/--help: ignored explicit argument {quoted}"


def test_an_integer_of_python_s_most_digits_after_a_leading_zero_is_read() -> None:
    """A leading zero makes ``int`` refuse a literal of Python's most digits (4300: it counts
    the zeros); the flag reads it as the integer of those digits, as without the zero."""
    import sys

    from minidl.cli import build_parser

    limit = sys.get_int_max_str_digits()
    digits = "1" * limit
    parser = build_parser()
    assert parser.parse_args(["reproduce", "--seed", "0" + digits]).seed == int(digits)
    assert parser.parse_args(["reproduce", "--seed", "-00" + digits]).seed == -int(digits)


def test_the_largest_finite_rate_of_the_dtype_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    """``--lr`` is refused beyond the range of ``--dtype``; its largest finite value itself is
    in it, and taken (float32's, as ``torch.finfo`` gives it)."""
    import torch

    largest = torch.finfo(torch.float32).max
    argv = ["train", "--epochs", "0", "--hidden", "3", "--quiet", "--lr", repr(largest)]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("flag", ["--lr", "--eps"])
def test_a_value_just_past_the_largest_is_named_in_its_own_digits(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """3.4028235e38 (float32's largest as NumPy prints it) is just past it, and refused; the
    message gave both numbers as 3.40282e+38 (``:g``), the same, which said nothing of why: the
    value given is written in its own digits."""
    argv = ["train", "--optimizer", "adadelta", "--epochs", "0", flag, "3.4028235e38"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: {flag} 3.4028235e+38 is beyond the range of --dtype float32 "
        "(largest finite value 3.40282e+38)\n"
    )


def _raise_interrupt(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


def test_main_called_from_a_program_leaves_its_signal_handlers_after_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``minidl`` command ignores Ctrl-C and ``SIGTERM`` once its stop line is out (it is
    about to exit); ``main(argv)`` called from a program returns 130 and leaves the program's
    handlers as they were, so that its next Ctrl-C still stops it."""
    import signal

    import minidl.train

    def programs_handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(minidl.train, "fit", _raise_interrupt)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, programs_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert main(["train", "--hidden", "3", "--epochs", "1", "--quiet"]) == 130
        after = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    assert after == (programs_handler, signal.SIG_DFL)
    assert capsys.readouterr().err == (
        "minidl train: interrupted; no checkpoint (--checkpoint PATH saves one)\n"
    )


def test_reproduce_out_of_memory_is_one_line_without_trains_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Out of memory, ``minidl reproduce`` ends with one line and status 1; the hint of
    ``minidl train``'s flags (``--hidden``, ``--batch-size``), which reproduce does not take,
    is not given."""
    import minidl.experiments.runner

    def out_of_memory(args: Any) -> int:
        raise MemoryError

    monkeypatch.setattr(minidl.experiments.runner, "run_from_cli", out_of_memory)
    assert main(["reproduce", "--quick", "--quiet"]) == 1
    assert capsys.readouterr().err == "minidl reproduce: error: out of memory: MemoryError\n"


def test_dist_timeout_takes_its_bound_and_refuses_just_past_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--dist-timeout`` is in ``(0, MAX_TIMEOUT]``: the bound itself (1e9 seconds, which
    torch's timeouts hold) is taken; the next float past it is refused, naming the bound."""
    import math

    from minidl.cli import build_parser
    from minidl.distributed import MAX_TIMEOUT

    parser = build_parser()
    assert parser.parse_args(["train", "--dist-timeout", "1e9"]).dist_timeout == MAX_TIMEOUT
    past = repr(math.nextafter(MAX_TIMEOUT, math.inf))
    with pytest.raises(SystemExit) as ended:
        parser.parse_args(["train", "--dist-timeout", past])
    assert ended.value.code == 2
    assert capsys.readouterr().err.endswith(
        "argument --dist-timeout: expected a number of seconds <= 1e+09 (about 31 years: "
        f"torch's timeouts overflow beyond 9.2e9), got {past!r}\n"
    )


def test_rho_takes_both_ends_of_its_closed_range(capsys: pytest.CaptureFixture[str]) -> None:
    """``--rho`` is in ``[0, 1]``, as its help says and Adadelta takes it: 0 and 1 both run,
    and 1 is named in the optimizer's line; just past 1 is refused by the flag."""
    import math

    base = ["train", "--optimizer", "adadelta", "--epochs", "0", "--hidden", "3"]
    for rho in ("0", "1"):
        assert main([*base, "--rho", rho]) == 0
        assert f"rho={float(rho)}" in capsys.readouterr().out
    past = repr(math.nextafter(1.0, 2.0))
    with pytest.raises(SystemExit) as ended:
        main([*base, "--rho", past])
    assert ended.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"argument --rho: expected a number in [0, 1], got {past!r}\n"
    )


def test_checkpoint_every_applies_to_a_resumed_run(tmp_path: Path) -> None:
    """``--checkpoint-every`` applies with ``--resume`` alone too (its help says so: the
    checkpoints keep going to the resumed file): taken, every epoch is saved there."""
    import minidl.checkpoint
    from minidl.checkpoint import read_checkpoint

    path = tmp_path / "run.ckpt"
    base = ["train", "--hidden", "3", "--batch-size", "1000", "--quiet"]
    assert main([*base, "--epochs", "1", "--checkpoint", str(path)]) == 0
    epochs: list[int] = []
    real_save = minidl.checkpoint.save_checkpoint

    def noting_save(*args: Any, epoch: int, **kwargs: Any) -> Any:
        epochs.append(epoch)
        return real_save(*args, epoch=epoch, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(minidl.checkpoint, "save_checkpoint", noting_save)
        resumed = [*base, "--epochs", "3", "--checkpoint-every", "1", "--resume", str(path)]
        assert main(resumed) == 0
    assert epochs == [2, 3]
    assert read_checkpoint(path).training.epoch == 3


def test_resuming_under_another_detect_anomaly_says_why_it_matters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run resumed with ``--detect-anomaly`` from one saved without it is refused, naming the
    flag's two values and why it is a setting of the run (its steps round otherwise)."""
    path = tmp_path / "run.ckpt"
    base = ["train", "--hidden", "3", "--batch-size", "1000", "--quiet"]
    assert main([*base, "--epochs", "1", "--checkpoint", str(path)]) == 0
    assert main([*base, "--epochs", "2", "--detect-anomaly", "--resume", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: --resume {path}: the checkpoint was made with other settings: "
        "--detect-anomaly off in the checkpoint, on now (a run under --detect-anomaly takes its "
        "steps in fit's loop, not folded: they round otherwise, and the resumed run would not "
        "give the numbers of the uninterrupted one)\n"
    )


def test_a_second_interrupt_during_the_clean_up_keeps_the_first_line_and_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run terminated (``SIGTERM``, 143) prints its one line; a Ctrl-C that comes while it
    cleans up (torch's generator put back) neither prints a second line nor changes the
    status to its own (130)."""
    import torch

    import minidl.train
    from minidl.cli import _Terminated

    def terminated(*args: Any, **kwargs: Any) -> Any:
        raise _Terminated

    real_set_rng_state = torch.set_rng_state

    def set_rng_state_then_interrupt(state: torch.Tensor) -> None:
        real_set_rng_state(state)
        raise KeyboardInterrupt

    monkeypatch.setattr(minidl.train, "fit", terminated)
    monkeypatch.setattr(torch, "set_rng_state", set_rng_state_then_interrupt)
    assert main(["train", "--hidden", "3", "--epochs", "1", "--quiet"]) == 143
    assert capsys.readouterr().err == (
        "minidl train: terminated; no checkpoint (--checkpoint PATH saves one)\n"
    )


def test_a_rank_other_than_0_does_not_look_up_the_checkpoint_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun rank 0 alone writes ``--checkpoint``, maybe on another machine: a rank
    other than 0 trains without looking up its folder (missing on its own machine), where
    rank 0 refuses it before training."""
    import types

    import minidl.distributed
    from minidl.cli import _run_train, build_parser

    monkeypatch.setattr(minidl.distributed, "DataParallel", lambda model, group: None)
    missing = str(tmp_path / "only-on-rank-0" / "run.ckpt")
    argv = ["train", "--hidden", "3", "--epochs", "0", "--quiet", "--checkpoint", missing]
    for rank in (1, 0):
        args = build_parser().parse_args(argv)
        args.process_group = types.SimpleNamespace(rank=rank, world_size=1)
        if rank:
            assert _run_train(args) == 0
        else:
            with pytest.raises(ValueError, match="expected a file path in an existing folder"):
                _run_train(args)
    assert not (tmp_path / "only-on-rank-0").exists()


def test_the_command_keeps_sigterm_ignored_once_its_stop_line_is_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``minidl`` command (``main()`` without arguments) stopped by ``SIGTERM`` prints its
    line and ignores Ctrl-C and ``SIGTERM`` from then on, up to its exit: the handler that the
    run put back at its end is not the default's, which would end the exiting process with
    the signal's status instead of 143."""
    import signal

    import minidl.train
    from minidl.cli import _Terminated

    def terminated(*args: Any, **kwargs: Any) -> Any:
        raise _Terminated

    monkeypatch.setattr(minidl.train, "fit", terminated)
    monkeypatch.setattr("sys.argv", ["minidl", "train", "--hidden", "3", "--epochs", "1"])
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        assert main() == 143
        after = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    assert after == (signal.SIG_IGN, signal.SIG_IGN)
    assert capsys.readouterr().err == (
        "minidl train: terminated; no checkpoint (--checkpoint PATH saves one)\n"
    )


def test_main_puts_back_the_programs_unraisable_hook(capsys: pytest.CaptureFixture[str]) -> None:
    """During the command ``main`` replaces ``sys.unraisablehook`` (to send again an interrupt
    dropped there); called from a program, it puts the program's own hook back, so that later
    errors of a ``__del__`` are reported as the program chose."""
    import sys

    before = sys.unraisablehook
    assert main(["train", "--hidden", "3", "--epochs", "0", "--quiet"]) == 0
    assert sys.unraisablehook is before
    capsys.readouterr()


def test_a_checkpoints_setting_of_100_characters_is_named_whole() -> None:
    """A resume refused for a setting of the checkpoint's (written by another program) names
    a text of up to 100 characters whole, as every message quotes one, and a longer one by its
    start and length."""
    from minidl.cli import _check_resume_settings, _train_settings, build_parser

    settings = _train_settings(build_parser().parse_args(["train"]))
    for loss, shown in [
        ("x" * 100, "x" * 100),
        ("x" * 101, "'" + "x" * 40 + "'... (a str of 101 characters)"),
    ]:
        with pytest.raises(ValueError) as refused:
            _check_resume_settings("run.ckpt", {**settings, "loss": loss}, settings)
        assert str(refused.value) == (
            "--resume run.ckpt: the checkpoint was made with other settings: "
            f"--loss {shown} in the checkpoint, cross-entropy now"
        )


# -- a third audit: a file name in bytes, --epochs 0, an error chain that loops ---------------------


def test_a_checkpoint_name_is_measured_in_bytes_not_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``PC_NAME_MAX`` counts bytes: a name of two-byte characters (``é``) that has fewer
    characters than the folder takes but more bytes is refused before training, by its flag
    and its length in bytes, and no file is left (a count of characters let it through, and
    the first save failed on the file system's ``File name too long``)."""
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "é" * (longest // 2 + 1)  # (fewer characters than longest, more bytes)
    assert len(name) <= longest < len(name.encode())
    path = tmp_path / name
    argv = ["train", "--epochs", "0", "--quiet", "--hidden", "3", "--checkpoint", str(path)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"minidl train: error: --checkpoint {path}: the file name is {len(name.encode())} bytes "
        f"long, longer than its folder takes ({longest})\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_past_epochs_0_is_refused_by_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint at epoch 1 resumed with ``--epochs 0`` is past the run's end, as one at
    epoch 3 is past ``--epochs 2``: refused by ``--resume`` with both numbers (status 2), and
    the file left as it was."""
    path = tmp_path / "run.ckpt"
    argv = ["train", "--quiet", "--hidden", "3", "--batch-size", "1000"]
    assert main([*argv, "--epochs", "1", "--checkpoint", str(path)]) == 0
    before = path.read_bytes()
    capsys.readouterr()
    assert main([*argv, "--epochs", "0", "--resume", str(path)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl train: error: --resume {path}: the checkpoint is at epoch 1, past --epochs 0\n",
    )
    assert path.read_bytes() == before


def test_an_interrupt_behind_an_error_chain_that_loops_still_ends_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ImportError raised while a Ctrl-C was handled (its ``__context__``) whose cause was
    set by hand to itself: the walk meets the error again before the interrupt, and goes on to
    it, so the run ends as the interrupt does, one line and 130, not with the ImportError's
    traceback (a walk that stopped at the first error seen found no interrupt)."""
    error = ImportError("initialization failed")
    error.__context__ = KeyboardInterrupt()
    error.__cause__ = error

    def stopped_in_an_import(args: object) -> int:
        raise error

    monkeypatch.setattr(cli, "_run_reproduce", stopped_in_an_import)
    assert main(["reproduce", "--quick"]) == 130
    assert capsys.readouterr() == ("", "minidl reproduce: interrupted\n")
