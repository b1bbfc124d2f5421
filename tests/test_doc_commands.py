"""The command lines that the documentation gives a user to copy, parsed as the programs they
name parse them (nothing runs: the file takes about a second once torch is imported).

Collected from the README and docs/*.md (their ``sh`` blocks, a ``$ `` prompt's line in other
blocks, backslash continuations joined, and their code spans), from the Makefile's recipes, from
the strings and comments of the package's modules (their code spans) and from the help texts of
``minidl`` and its commands:

- every ``minidl ...`` command (``python -m minidl``, ``.venv/bin/minidl`` and ``torchrun ...
  -m minidl`` among them) parses under :func:`minidl.cli.build_parser`: its command exists, every
  flag is one of that command's, spelt in full (argparse would take ``--epoch`` for
  ``--epochs``), and every value is one the flag's type accepts; a flag given last without its
  value (``minidl reproduce --jobs``) or with its metavar (``--jobs N``) names the flag, which
  must exist; ``minidl train: error: ...`` is the command's message, not a command line;
- every ``torchrun`` line parses under the launcher's own parser, its flags spelt in full;
- every ``make`` target named is one of the Makefile's, and every extra that a ``pip install``
  line or a ``minidl[...]`` span names is one of pyproject.toml's;
- every flag that a code span of the pages names alone (``--resume``, ``--jobs N``) is a flag of
  ``minidl train`` or ``minidl reproduce``, of ``torchrun``, or of a script the pages document
  (``benchmarks/*.py``, ``examples/digits.py``, ``scripts/gpu-check``);
- every flag that a help text of ``minidl`` names is one of its own command's, and every
  ``minidl COMMAND`` it names exists; every flag that the package's messages, docstrings and
  comments name (``try a smaller --lr``) is one of minidl's.

A misspelt flag or command in any of them fails these tests (checked on lines made so, below).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import io
import re
import shlex
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser as torchrun_parser

from minidl.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The scripts whose flags the pages name in code spans of their own (``--only``, ``--quick``).
SCRIPTS = [*sorted((ROOT / "benchmarks").glob("*.py")), ROOT / "examples" / "digits.py"]

#: A code block, indented too (in a list item).
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", flags=re.DOTALL | re.MULTILINE)
#: A code span of Markdown or reStructuredText (``x`` before `x`, so that ``x`` is one span).
SPAN = re.compile(r"``([^`]+)``|`([^`]+)`")
#: The words that run minidl's command line (``python -m minidl``, ``torchrun -m minidl`` too).
MINIDL = {"minidl", ".venv/bin/minidl", "$(BIN)/minidl"}
#: The words that end a command in a shell line.
SEPARATORS = {"|", "||", "&&", ";", "&", "..."}
#: The start of a code span that may hold a command (a module of the package with neither one
#: nor a flag is not parsed).
COMMAND_SPAN = re.compile(r"`\s*(?:minidl|\.venv/bin/minidl|python -m minidl|make|pip install)[ `]")
#: A flag, in a span, in prose or in a message.
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
#: A flag's value written as its metavar (``--jobs N``, ``--checkpoint PATH``).
METAVAR = re.compile(r"[A-Z][A-Z_]*")


def shell_lines(text: str) -> list[str]:
    """The command lines of a page's code blocks: every line of a ``sh``, ``bash`` or ``shell``
    block, and the lines after a ``$ `` prompt in any block (the others are output); a line
    ending with a backslash is joined with the next."""
    lines = []
    for language, block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("$ "):
                lines.append(line[2:])
            elif language in {"sh", "bash", "shell"}:
                lines.append(line)
    return lines


def code_spans(text: str) -> list[str]:
    """The code spans of a text (outside its code blocks), each on one line."""
    prose = FENCE.sub("", text)
    return [" ".join((double or single).split()) for double, single in SPAN.findall(prose)]


def source_texts(source: str) -> Iterator[str]:
    """The strings (docstrings, help texts, messages: implicit concatenations joined) and the
    comments of a Python module's source."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.string


@functools.cache
def package_texts() -> tuple[tuple[str, str], ...]:
    """``(module, text)`` for the strings and comments of the package's modules that hold a
    command's code span or a flag."""
    found = []
    for module in sorted((ROOT / "src" / "minidl").rglob("*.py")):
        source = module.read_text(encoding="utf-8")
        if COMMAND_SPAN.search(source) or FLAG.search(source):
            name = str(module.relative_to(ROOT))
            found += [(name, text) for text in source_texts(source)]
    return tuple(found)


def words(line: str) -> list[str]:
    """``line`` split as a shell splits it (its ``#`` comment dropped), or at spaces where its
    quotes do not pair (a span of prose such as ``minidl reproduce's``)."""
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


def minidl_commands(line: str) -> list[list[str]]:
    """The arguments of each ``minidl`` command in ``line``, up to a shell separator, a
    redirection or an ellipsis; none for ``minidl train: ...``, the command's own message."""
    split = words(line)
    commands = []
    for index, word in enumerate(split):
        before = split[index - 1] if index else None
        # (the first word, or after python's or torchrun's -m, or after a separator; not
        # Python's `from minidl import nn` nor prose that names minidl)
        if word not in MINIDL or not (before is None or before == "-m" or before in SEPARATORS):
            continue
        arguments: list[str] = []
        for argument in split[index + 1 :]:
            if argument in SEPARATORS or argument.startswith((">", "<", "2>")):
                break
            arguments.append(argument)
        if arguments and arguments[0].endswith(":"):
            continue
        commands.append(arguments)
    return commands


@functools.cache
def minidl_parser() -> argparse.ArgumentParser:
    """:func:`minidl.cli.build_parser`'s parser, made once (parsing leaves it as it was)."""
    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return dict(parser._option_string_actions)


def minidl_problem(arguments: list[str]) -> str | None:
    """Why minidl's command line refuses ``arguments``, in its own words (its error's last
    line), or a flag that it takes for an abbreviation of one of its own; ``None`` if none."""
    parser = minidl_parser()
    commands = subcommands(parser)
    position = next((i for i, word in enumerate(arguments) if word in commands), len(arguments))
    command = arguments[position : position + 1]
    options = option_actions(commands[command[0]] if command else parser)
    # Before the command, minidl's options; after it, the command's, less a flag named alone.
    spelt = [(word, option_actions(parser)) for word in arguments[:position]]
    kept = arguments[: position + 1]
    rest = arguments[position + 1 :]
    index = 0
    while index < len(rest):
        word = rest[index]
        spelt.append((word, options))
        action = options.get(word)
        named = index + 1 == len(rest) or METAVAR.fullmatch(rest[index + 1]) is not None
        if action is not None and action.nargs != 0 and named:
            index += 2  # (the flag named, with no value or its metavar: it exists)
            continue
        kept.append(word)
        index += 1
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(kept)
    except SystemExit as exit:
        if exit.code:
            return errors.getvalue().strip().splitlines()[-1]
    for word, known in spelt:
        name = word.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            where = " ".join(["minidl", *command]) if known is options else "minidl"
            return f"{name} is no flag of {where}, which takes it for an abbreviation"
    return None


def torchrun_problem(arguments: list[str]) -> str | None:
    """Why torchrun's parser refuses ``arguments`` (its flags spelt in full), or ``None``."""
    parser = torchrun_parser()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed = parser.parse_args(arguments)
    except SystemExit:
        return errors.getvalue().strip().splitlines()[-1]
    options = option_actions(parser)
    for word in arguments[: arguments.index(parsed.training_script)]:
        if word.startswith("-") and word.split("=", 1)[0] not in options:
            return f"{word} is no flag of torchrun"
    return None


@functools.cache
def documented_lines() -> tuple[tuple[str, str], ...]:
    """``(where, line)`` for every command line and code span of the pages, every line of the
    Makefile's recipes, and every code span of the package's strings and comments."""
    found = []
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    found += [("Makefile", line.strip()) for line in re.findall(r"^\t(.*)", makefile, re.M)]
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT)
        found += [(f"{name} (block)", line) for line in shell_lines(text)]
        found += [(f"{name} (span)", span) for span in code_spans(text)]
    for module, text in package_texts():
        found += [(module, span) for span in code_spans(text)]
    return tuple(found)


def test_the_collection_finds_the_commands_the_pages_show() -> None:
    """The collection sees what the pages hold (a change of their markup that hid the commands
    would let every test below pass on nothing)."""
    lines = [line for _, line in documented_lines()]
    commands = [" ".join(c) for line in lines for c in minidl_commands(line)]
    for expected in (
        "train --epochs 400 --checkpoint run.ckpt --checkpoint-every 10",  # (a sh block)
        "train --batch-size 120",  # (torchrun's line, continued over a backslash)
        "reproduce --jobs 1",  # (a code span)
        "train --detect-anomaly",
        "--version",
        "reproduce --tables 2",  # (a docstring's span)
    ):
        assert expected in commands, expected
    assert "minidl train: error: rank 0 of 3" not in commands  # (a message, not a command)
    recipes = [line for where, line in documented_lines() if where == "Makefile"]
    assert [c for line in recipes for c in minidl_commands(line)] == [["train"], ["reproduce"]]
    assert sum(line.startswith("torchrun ") for line in lines) == 6
    assert sum(line.startswith("make ") for line in lines) >= 10


def test_every_minidl_command_parses_under_its_parser() -> None:
    problems = [
        f"{where}: `{line}`: {problem}"
        for where, line in documented_lines()
        for arguments in minidl_commands(line)
        if (problem := minidl_problem(arguments)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_every_torchrun_line_parses_under_torchruns_parser() -> None:
    problems = [
        f"{where}: `{line}`: {problem}"
        for where, line in documented_lines()
        if words(line)[:1] == ["torchrun"] and len(words(line)) > 1
        if (problem := torchrun_problem(words(line)[1:])) is not None
    ]
    assert not problems, "\n".join(problems)


def makefile_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):(?!=)", makefile, flags=re.MULTILINE))


def test_every_make_target_named_is_one_of_the_makefiles() -> None:
    targets = makefile_targets()
    assert {"test", "reproduce", "bench", "docs", "clean"} <= targets
    problems = []
    for where, line in documented_lines():
        split = words(line)
        if split[:1] != ["make"]:
            continue
        for word in split[1:]:
            if word in SEPARATORS:
                break
            if "=" not in word and not word.startswith("-") and word not in targets:
                problems.append(f"{where}: `{line}`: no target {word!r} in the Makefile")
    assert not problems, "\n".join(problems)


def extras() -> set[str]:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.partition("[project.optional-dependencies]")[2].partition("\n[")[0]
    return set(re.findall(r"^([\w-]+) = \[", section, flags=re.MULTILINE))


def named_extras(text: str) -> list[str]:
    """The extras of ``pip install '.[a,b]'`` or ``'minidl[a]'``, and of a ``minidl[a]``."""
    named = re.findall(r"(?:^|[\s'\"])(?:\.|minidl)\[([\w,-]+)\]", text)
    return [extra for group in named for extra in group.split(",")]


def test_every_extra_named_is_one_of_pyprojects() -> None:
    texts = [line for _, line in documented_lines()] + list(help_texts())
    named = [extra for text in texts for extra in named_extras(text)]
    assert {"reproduce", "checkpoint", "examples", "docs", "dev"} <= set(named)
    assert set(named) <= extras(), set(named) - extras()


def script_flags() -> set[str]:
    """The flags of the scripts the pages document, of ``torchrun``, and of ``minidl``'s
    commands."""
    flags = set(option_actions(torchrun_parser()))
    for script in SCRIPTS:
        flags |= set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", script.read_text("utf-8")))
    gpu_check = (ROOT / "scripts" / "gpu-check").read_text(encoding="utf-8")
    flags |= set(re.findall(r"^\s+(--[\w-]+)[|)]", gpu_check, flags=re.MULTILINE))
    for parser in subcommands(minidl_parser()).values():
        flags |= set(option_actions(parser))
    return flags


def test_every_flag_a_span_of_the_pages_names_is_a_flag() -> None:
    known = script_flags()
    assert {"--only", "--wall", "--bench-only", "--node_rank", "--checkpoint-every"} <= known
    problems = [
        f"{where}: `{line}`: {line.split()[0]} is no flag of minidl nor of a documented script"
        for where, line in documented_lines()
        if where.endswith("(span)") and re.match(r"--[a-z]", line)
        if line.split()[0].split("=", 1)[0] not in known
    ]
    assert not problems, "\n".join(problems)


def help_texts() -> Iterator[str]:
    """The descriptions, epilogs and help texts of ``minidl`` and of its commands."""
    parser = minidl_parser()
    for command in (parser, *subcommands(parser).values()):
        yield from (command.description or "", command.epilog or "")
        yield from (action.help or "" for action in command._actions)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from (choice.help or "" for choice in action._choices_actions)


def test_every_flag_and_command_a_help_text_names_exists() -> None:
    parser = minidl_parser()
    commands = subcommands(parser)
    problems = []
    for name, command in (("minidl", parser), *((f"minidl {n}", p) for n, p in commands.items())):
        options = option_actions(command)
        texts = [command.description or "", command.epilog or ""]
        texts += [action.help or "" for action in command._actions]
        for text in texts:
            problems += [
                f"{name}'s help names {flag}, no flag of it"
                for flag in FLAG.findall(text)
                if flag not in options
            ]
    for text in help_texts():
        problems += [
            f"a help text names minidl {word}, no command of it"
            for word in re.findall(r"\bminidl (\w[\w-]*)", text)
            if word not in commands
        ]
    assert not problems, "\n".join(problems)


def test_every_flag_the_packages_strings_and_comments_name_is_a_flag_of_minidl() -> None:
    """Its messages (``try a smaller --lr``), docstrings and comments."""
    parser = minidl_parser()
    flags = {flag for command in subcommands(parser).values() for flag in option_actions(command)}
    flags |= set(option_actions(parser))
    problems = [
        f"{module}: {flag} (in {text[:60]!r}...) is no flag of minidl"
        for module, text in package_texts()
        for flag in FLAG.findall(text)
        if flag not in flags
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("minidl train --epoch 400", "--epoch is no flag of minidl train"),  # (abbreviated)
        ("minidl train --checkpoint-evry 10", "unrecognized arguments: --checkpoint-evry 10"),
        ("minidl reproduce --hidden 5", "unrecognized arguments: --hidden 5"),
        ("minidl trian --epochs 4", "argument COMMAND: invalid choice: 'trian'"),
        ("minidl train --epochs four", "argument --epochs: expected an integer >= 0"),
        ("minidl train --loss mae", "argument --loss: invalid choice: 'mae'"),
        ("minidl reproduce --quick --rounds 2", "not allowed with argument --quick"),
        ("minidl --vers", "--vers is no flag of minidl"),  # (abbreviated)
        ("minidl reproduce --jbos N", "unrecognized arguments: --jbos N"),
        ("python -m minidl train --lr", None),  # (the flag named)
        ("minidl train --checkpoint-every N --quiet", None),  # (with its metavar)
    ],
)
def test_a_misspelt_command_line_is_refused(line: str, problem: str | None) -> None:
    (arguments,) = minidl_commands(line)
    found = minidl_problem(arguments)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_a_misspelt_torchrun_line_make_target_or_flag_is_refused() -> None:
    split = words("torchrun --nproc-per-node 3 --nnode 2 -m minidl train")
    assert torchrun_problem(split[1:]) == "--nnode is no flag of torchrun"
    assert "reproduc" not in makefile_targets()
    assert "--onyl" not in script_flags()
    assert named_extras("pip install '.[checkpoints]'") == ["checkpoints"]
    assert "checkpoints" not in extras()
