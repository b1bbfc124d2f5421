"""tests/typecheck_docs.py, which ``make typecheck`` runs: its programs are the code that
tests/test_docs.py runs, grouped as it runs them, at the pages' own line numbers, and an error of
mypy fails unless it is known, as a known error that mypy no longer finds does."""

from __future__ import annotations

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
