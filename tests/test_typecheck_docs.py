"""tests/typecheck_docs.py, which ``make typecheck`` runs: its programs are the code that
tests/test_docs.py runs, grouped as it runs them, at the pages' own line numbers, and an error of
mypy fails unless it is known, as a known error that mypy no longer finds does."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import typecheck_docs
from tests.test_docs import ROOT, python_blocks
from tests.typecheck_docs import Error, Known, compare, module_name, parse, programs


def blocks_run(page: str) -> list[str]:
    """The blocks tests/test_docs.py runs for ``page`` (the README's read as its test reads
    them)."""
    return python_blocks(f"../{page}" if page == "README.md" else page.removeprefix("docs/"))


def nonblank(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def test_pages_are_those_whose_code_test_docs_runs() -> None:
    """A page that comes to hold a ``python`` block is checked here: run it in test_docs too."""
    assert typecheck_docs.pages() == [
        "README.md",
        "docs/index.md",
        "docs/pytorch.md",
        "docs/tutorial.md",
    ]


@pytest.mark.parametrize(
    "page", ["README.md", "docs/index.md", "docs/pytorch.md", "docs/tutorial.md"]
)
def test_programs_hold_the_blocks_at_the_pages_lines(page: str) -> None:
    """One program of all the blocks (one namespace), docs/index.md's one a block; each line of
    a program is blank or the page's line of the same number."""
    blocks = blocks_run(page)
    found = programs(page)
    groups = [[block] for block in blocks] if page == "docs/index.md" else [blocks]
    assert len(found) == len(groups) and len(blocks) >= 2
    lines = (ROOT / page).read_text(encoding="utf-8").split("\n")
    for program, group in zip(found, groups, strict=True):
        assert nonblank(program) == nonblank("".join(group))
        assert len(program.split("\n")) == len(lines)
        for number, line in enumerate(program.split("\n")):
            assert line in ("", lines[number]), (page, number + 1)


def test_module_names_are_their_own() -> None:
    assert module_name("README.md", 1) == "doc_readme_1"
    assert module_name("docs/index.md", 2) == "doc_docs_index_2"


FILES = {
    "doc_docs_tutorial_1.py": ("docs/tutorial.md", ["", "y.backward(g)", "z = f(1)"]),
    "doc_readme_1.py": ("README.md", ["def keep(record):"]),
}
BACKWARD = 'Call to untyped function "backward" in typed context'


def test_parse_reads_the_errors_at_their_pages_lines_and_skips_notes() -> None:
    output = (
        f"/tmp/x/doc_docs_tutorial_1.py:2: error: {BACKWARD}  [no-untyped-call]\n"
        "/tmp/x/doc_docs_tutorial_1.py:3: note: Right operand is of type ...\n"
        "/tmp/x/doc_readme_1.py:1: error: Function is missing a type annotation  [no-untyped-def]\n"
    )
    assert parse(output, FILES) == [
        Error("docs/tutorial.md", 2, "no-untyped-call", BACKWARD, "y.backward(g)"),
        Error(
            "README.md",
            1,
            "no-untyped-def",
            "Function is missing a type annotation",
            "def keep(record):",
        ),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "mypy: error: Cannot find implementation or library stub",
        "/tmp/x/other.py:1: error: x  [misc]",
    ],
)
def test_parse_refuses_a_line_it_does_not_understand(line: str) -> None:
    with pytest.raises(ValueError, match="typecheck_docs: a line of mypy's output not understood"):
        parse(line, FILES)


def test_compare_fails_on_an_unknown_error_and_on_a_known_one_no_longer_found() -> None:
    backward = Error("docs/tutorial.md", 2, "no-untyped-call", BACKWARD, "y.backward(g)")
    untyped = Error(
        "README.md",
        1,
        "no-untyped-def",
        "Function is missing a type annotation",
        "def keep(record):",
    )
    anywhere = Known("no-untyped-call", BACKWARD, "PyTorch's")
    elsewhere = Known("no-untyped-def", untyped.message, "why", line="def other(record):")
    assert compare([backward], (anywhere,)) == []
    assert compare([backward, untyped], (anywhere,)) == [
        "README.md:1: error: Function is missing a type annotation  [no-untyped-def]\n"
        "    def keep(record):"
    ]
    assert compare([backward, untyped], (anywhere, elsewhere))[1] == (
        "KNOWN lists an error that mypy no longer finds: Function is missing a type annotation "
        "on 'def other(record):'"
    )
    assert compare([untyped], (anywhere,))[1].startswith(
        f"KNOWN lists an error that mypy no longer finds: {BACKWARD}"
    )


def test_known_errors_say_why() -> None:
    for entry in typecheck_docs.KNOWN:
        assert entry.why and entry.message and entry.code, entry


def test_a_known_error_matches_its_code_its_message_and_its_whole_line_alone() -> None:
    """An entry of KNOWN with a line stands for that error on that very line: another code,
    another message, or a line that only holds or starts with its line is another error."""
    known = Known("no-untyped-call", BACKWARD, "why", line="y.backward(g)")
    step = 'Call to untyped function "step" in typed context'
    assert known.matches(Error("README.md", 1, "no-untyped-call", BACKWARD, "y.backward(g)"))
    assert not known.matches(Error("README.md", 1, "misc", BACKWARD, "y.backward(g)"))
    assert not known.matches(Error("README.md", 1, "no-untyped-call", step, "y.backward(g)"))
    for source in ("y.backward(g).item()", "(y.backward(g))"):
        assert not known.matches(Error("README.md", 1, "no-untyped-call", BACKWARD, source))
    assert Known("no-untyped-call", BACKWARD, "why").matches(
        Error("docs/pytorch.md", 9, "no-untyped-call", BACKWARD, "loss.backward()")
    )


def test_parse_strips_the_source_line_and_reads_an_error_without_a_code() -> None:
    """A known line is written as the page shows it without its indentation, so the error's
    source is stripped; an error that mypy prints without a code has the code ''."""
    files = {
        "doc_readme_1.py": (
            "README.md",
            ["class Step:", "    def run(self):", "        y.backward(g)"],
        )
    }
    output = (
        f"/tmp/x/doc_readme_1.py:3: error: {BACKWARD}  [no-untyped-call]\n"
        '/tmp/x/doc_readme_1.py:1: error: Name "Step" already defined\n'
    )
    assert parse(output, files) == [
        Error("README.md", 3, "no-untyped-call", BACKWARD, "y.backward(g)"),
        Error("README.md", 1, "", 'Name "Step" already defined', "class Step:"),
    ]


def known_errors() -> list[Error]:
    """One error for each entry of KNOWN, on its line (or on a line of its own)."""
    return [
        Error(
            "docs/tutorial.md", number, entry.code, entry.message, entry.line or "loss.backward()"
        )
        for number, entry in enumerate(typecheck_docs.KNOWN, start=1)
    ]


def test_main_fails_on_a_stale_known_entry_and_on_an_unknown_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """make typecheck's status: 0 when mypy finds exactly the known errors; 1, naming each
    problem, when a known error is no longer found or an error is not known."""
    errors = known_errors()
    monkeypatch.setattr(typecheck_docs, "run_mypy", lambda: (errors, ""))
    assert typecheck_docs.main() == 0
    assert capsys.readouterr().out == (
        f"typecheck_docs: 4 pages' code checked, {len(errors)} known errors\n"
    )
    untyped = Error(
        "README.md", 7, "no-untyped-def", "Function is missing a type annotation", "def f(x):"
    )
    for found, problem in [
        (errors[1:], f"KNOWN lists an error that mypy no longer finds: {errors[0].message}\n"),
        ([*errors, untyped], f"{untyped}\n"),
    ]:
        monkeypatch.setattr(typecheck_docs, "run_mypy", lambda found=found: (found, ""))
        assert typecheck_docs.main() == 1
        assert capsys.readouterr().out == (
            "mypy --strict on the code of the README and the pages (tests/typecheck_docs.py):\n"
            + problem
            + "Fix the page's code, or list the error in KNOWN with why it stays.\n"
        )


def test_run_mypy_checks_each_program_against_this_trees_src_and_refuses_a_failed_mypy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mypy is given each page's programs, one file each, with this tree's ``src`` first on its
    path (not an installed minidl); a status other than 0 or 1 (mypy itself failed) is refused
    with its output rather than read as no errors."""
    given: dict[str, str] = {}
    status, output = 0, ""

    def fake_run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        given.clear()
        for argument in command:
            if argument.endswith(".py"):
                given[Path(argument).name] = Path(argument).read_text(encoding="utf-8")
        assert options["env"]["MYPYPATH"].split(os.pathsep)[0] == str(ROOT / "src")
        return subprocess.CompletedProcess(command, status, "", output)

    monkeypatch.setattr(typecheck_docs.subprocess, "run", fake_run)
    monkeypatch.setenv("MYPYPATH", "/elsewhere")
    assert typecheck_docs.run_mypy()[0] == []
    assert given == {
        f"{module_name(page, number)}.py": program
        for page in typecheck_docs.pages()
        for number, program in enumerate(programs(page), start=1)
    }
    status, output = 2, "mypy: error: no config\n"
    with pytest.raises(RuntimeError, match=r"^mypy failed \(status 2\):\nmypy: error: no config"):
        typecheck_docs.run_mypy()
