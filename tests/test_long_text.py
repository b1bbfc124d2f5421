"""Messages that quote a user-given text (an environment variable, a command-line flag, a name)
quote one of more than 100 characters (``minidl._validate.LONGEST_TEXT``) by its first 40 and
its length, as :func:`minidl._validate.shown` names a huge integer by its number of digits:
they quoted it whole (a 5001-digit ``WORLD_SIZE``, 5000 characters given to ``--lr``). A short
text is quoted exactly as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from minidl import nn
from minidl._validate import shown, shown_path
from minidl.cli import main
from minidl.distributed import launch_from_env, timeout_from_env
from minidl.experiments.config import experiments_for_tables
from minidl.experiments.seeds import derive_seed

LONG = "x" * 5001
DIGITS = "1" * 5001
#: How a message quotes LONG (and DIGITS).
QUOTED = f"{'x' * 40!r}... (a str of 5001 characters)"
QUOTED_DIGITS = f"{'1' * 40!r}... (a str of 5001 characters)"


def test_shown_quotes_a_long_text_by_its_start_and_length() -> None:
    assert shown("x" * 100) == repr("x" * 100)  # (whole up to 100 characters)
    assert shown("x" * 101) == f"{'x' * 40!r}... (a str of 101 characters)"
    assert shown(LONG) == QUOTED
    assert shown(("a", LONG)) == f"('a', {QUOTED})"


def test_shown_writes_a_long_list_by_its_first_items_and_length() -> None:
    """A list or tuple of more than 20 items (a checkpoint's list of 100 000 numbers where
    names were expected) by its first 20 and its length: it was written whole."""
    assert shown(list(range(20))) == repr(list(range(20)))
    assert shown(tuple(range(20))) == repr(tuple(range(20)))
    first = ", ".join(map(str, range(20)))
    assert shown(list(range(100_000))) == f"[{first}, ... (100000 items)]"
    assert shown(tuple(range(21))) == f"({first}, ... (21 items))"
    assert shown([LONG] * 30).startswith(f"[{QUOTED}, {QUOTED}")


def _module_with(name: Any) -> Callable[[], object]:
    return lambda: nn.Identity().register_parameter(name, nn.Parameter(torch.zeros(1)))


CASES: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    (
        "WORLD_SIZE of 5001 digits",
        lambda: launch_from_env({"WORLD_SIZE": DIGITS, "RANK": "0"}),
        ValueError,
        f"environment variable WORLD_SIZE must be an integer, got {QUOTED_DIGITS}",
    ),
    (
        "WORLD_SIZE no integer",
        lambda: launch_from_env({"WORLD_SIZE": LONG, "RANK": "0"}),
        ValueError,
        f"environment variable WORLD_SIZE must be an integer, got {QUOTED}",
    ),
    (
        "RANK out of range",
        lambda: launch_from_env({"WORLD_SIZE": "2", "RANK": "1" * 4000}),
        ValueError,
        f"RANK must be an integer in [0, 1], got {'1' * 40!r}... (a str of 4000 characters)",
    ),
    (
        "MINIDL_DIST_TIMEOUT",
        lambda: timeout_from_env({"MINIDL_DIST_TIMEOUT": LONG}),
        ValueError,
        f"MINIDL_DIST_TIMEOUT must be a number of seconds > 0, got {QUOTED}",
    ),
    (
        "activation",
        lambda: nn.activation(LONG),
        ValueError,
        f"activation: unknown activation {QUOTED}; valid names are elu",
    ),
    (
        "mlp",
        lambda: nn.mlp((2, 3, 2), LONG),
        ValueError,
        f"mlp: unknown activation {QUOTED}; valid names are elu",
    ),
    (
        "GELU",
        lambda: nn.GELU(LONG),
        ValueError,
        f"GELU: approximate must be 'none' or 'tanh', got {QUOTED}",
    ),
    (
        "HuberLoss",
        lambda: nn.HuberLoss(LONG),  # type: ignore[arg-type]
        TypeError,
        f"HuberLoss: delta, its first argument, must be a number, got {QUOTED};",
    ),
    (
        "register_parameter, a dotted name",
        _module_with(LONG + "."),
        KeyError,
        f"register_parameter: parameter name {'x' * 40!r}... (a str of 5002 characters) refused",
    ),
    (
        # (repr raised its own ValueError past 4300 digits, in place of the message)
        "register_parameter, a huge int as name",
        _module_with(10**5000),
        TypeError,
        "register_parameter: parameter name must be a str, got int an int of 5001 digits",
    ),
    (
        "experiments_for_tables",
        lambda: experiments_for_tables(LONG),
        ValueError,
        f"I,II,III), got {QUOTED}",
    ),
    (
        "derive_seed",
        lambda: derive_seed(LONG, 0, "data"),  # type: ignore[arg-type]
        TypeError,
        f"derive_seed: base_seed must be an int, got {QUOTED}",
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_message_quotes_a_long_text_by_its_start_and_length(
    call: Callable[[], object], kind: type[Exception], fragment: str
) -> None:
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert fragment in message, message[:1000]
    assert len(message) < 700, len(message)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--lr", DIGITS], "argument --lr: expected a finite number in [0, inf), got "),
        (["train", "--lr", LONG], "argument --lr: expected a finite number in [0, inf), got "),
        (["train", "--momentum", LONG], "argument --momentum: expected a number in [0, 1), got "),
        (["train", "--max-grad-norm", DIGITS], "argument --max-grad-norm: expected a finite"),
        (["train", "--dist-timeout", DIGITS], "argument --dist-timeout: expected a number of"),
        (["train", "--dist-timeout", LONG], "argument --dist-timeout: expected a number of"),
        (["train", "--epochs", LONG], "argument --epochs: expected an integer >= 0, got "),
        (["train", "--hidden", "25," + LONG], "argument --hidden: expected comma-separated"),
        (["train", "--activation", LONG], "argument --activation: unknown activation "),
        (["reproduce", "--tables", LONG], "--tables "),
        (["train", "--loss", LONG], "argument --loss: invalid choice: "),
        ([LONG], "argument COMMAND: invalid choice: "),
        (["train", "--" + LONG], "unrecognized arguments: '--xxx"),
        (["reproduce", "--rounds", "1", LONG], "unrecognized arguments: 'xxx"),
        (["train", "--quiet=" + LONG], "argument --quiet: ignored explicit argument 'xxx"),
        (["train", "--d=" + LONG], "ambiguous option: '--d=xxx"),
        (["train", "-h" + LONG], "argument -h/--help: ignored explicit argument 'xxx"),
        (["train", "--checkpoint", LONG], "--checkpoint 'xxx"),
        (["train", "--checkpoint", LONG + "/"], "--checkpoint 'xxx"),
        (["train", "--resume", LONG], "--resume 'xxx"),
        (["reproduce", "--out", LONG], "--out 'xxx"),
    ],
    ids=[
        "--lr digits",
        "--lr text",
        "--momentum",
        "--max-grad-norm",
        "--dist-timeout digits",
        "--dist-timeout text",
        "--epochs",
        "--hidden",
        "--activation",
        "--tables",
        "--loss",
        "the command",
        "an unknown option",
        "a stray argument",
        "--quiet=",
        "an ambiguous option",
        "-hTEXT",
        "--checkpoint",
        "--checkpoint ending in /",
        "--resume",
        "--out",
    ],
)
def test_the_command_line_quotes_a_long_flag_by_its_start_and_length(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main([*argv, "--quiet"])
    except SystemExit as exit_info:
        status = exit_info.code  # type: ignore[assignment]
    assert status == 2
    errors = capsys.readouterr().err
    assert fragment in errors, errors[-1000:]
    assert "... (a str of 50" in errors, errors[-1000:]
    assert len(errors) < 1500, len(errors)  # (the usage line, then the message)


@pytest.mark.parametrize(
    ("count", "named"),
    [(100_000, "0 1 2 3 4 5 6 7 8 9 (and 99990 more)"), (10, "0 1 2 3 4 5 6 7 8 9")],
)
def test_unrecognized_arguments_are_named_up_to_ten(
    count: int, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hundred thousand unknown arguments: the first ten are named, then how many more (all
    were named, a message as long as the command line); ten are named as before."""
    with pytest.raises(SystemExit) as info:
        main(["train", *(str(number) for number in range(count))])
    assert info.value.code == 2
    assert capsys.readouterr().err.endswith(f"minidl: error: unrecognized arguments: {named}\n")


def test_a_path_that_can_name_a_file_is_named_whole() -> None:
    """A path of up to 4096 characters (Linux's ``PATH_MAX``) is named whole, a longer one,
    which names no file, by its start and length."""
    longest = "/".join(["n" * 255] * 17)[:4096]
    assert shown_path(longest) == longest
    assert shown_path(longest + "n") == f"{'n' * 40!r}... (a str of 4097 characters)"
    assert shown_path(" " + longest[1:]) == repr(" " + longest[1:])


def test_a_short_text_is_quoted_whole_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"WORLD_SIZE must be an integer, got 'two'$"):
        launch_from_env({"WORLD_SIZE": "two", "RANK": "0"})
    with pytest.raises(SystemExit):
        main(["train", "--lr", "fast"])
    assert "argument --lr: expected a finite number in [0, inf), got 'fast'\n" in (
        capsys.readouterr().err
    )
    short = "x" * 100
    for argv, message in [
        (["train", "--loss", short], f"argument --loss: invalid choice: {short!r} (choose from"),
        (["train", "--quiet", short], f"unrecognized arguments: {short}\n"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_the_command_line_knows_the_longest_text_quoted_whole() -> None:
    """The command line's own copy of ``LONGEST_TEXT`` (its usage errors import no torch)."""
    from minidl import _validate, cli

    assert cli._LONGEST_TEXT == _validate.LONGEST_TEXT
