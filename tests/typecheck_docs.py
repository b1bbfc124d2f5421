"""The code of the README and of the pages under ``mypy --strict``: what a strictly typed program
that copies it sees.

``make typecheck`` runs this module (``python -m tests.typecheck_docs``) after mypy has checked
``src``, whose cache it shares (a second or two then; some twenty seconds with no cache). Each
page's ``python`` blocks make programs as tests/test_docs.py runs them: the blocks of a page in
one program (one namespace), those of docs/index.md each in a program of its own. A program is
the page itself with every line outside its blocks left blank, so that mypy's line numbers are
the page's. mypy checks them with the project's settings against this tree's ``src``; an error
fails, with its page and line, unless :data:`KNOWN` lists it with why it stays, and an entry of
:data:`KNOWN` that matches no error fails too (as an unused ``type: ignore`` does).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Pages whose blocks run each in a namespace of its own (tests/test_docs.py).
SEPARATE_BLOCKS = frozenset({"docs/index.md"})

BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
MYPY_LINE = re.compile(
    r"^(?P<path>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<message>.*?)"
    r"(?:  \[(?P<code>[a-z0-9-]+)\])?$"
)


@dataclass(frozen=True)
class Known:
    """An error that mypy finds in the pages' code and that stays, with why."""

    code: str
    message: str
    why: str
    #: The source line it is found on, stripped; ``None``: any line of any page.
    line: str | None = None

    def matches(self, error: Error) -> bool:
        return (
            error.code == self.code
            and error.message == self.message
            and (self.line is None or error.source == self.line)
        )


@dataclass(frozen=True)
class Error:
    """One error of mypy, at its page's line."""

    page: str
    line: int
    code: str
    message: str
    source: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: error: {self.message}  [{self.code}]\n    {self.source}"


KNOWN = (
    Known(
        "no-untyped-call",
        'Call to untyped function "backward" in typed context',
        "PyTorch's Tensor.backward has no annotations; the pages call it on the autograd side "
        "of their checks against PyTorch",
    ),
    Known(
        "operator",
        'Unsupported operand types for * ("int" and "None")',
        "a torch tensor's grad is Tensor | None to a type checker (PyTorch's typing); the "
        "tutorial's check against autograd reads it after the backward that set it",
        line="torch.testing.assert_close(layer.scale.grad, 2 * scale_ref.grad, rtol=1e-10, "
        "atol=1e-12)",
    ),
)


def pages(root: Path = ROOT) -> list[str]:
    """The README and the pages of docs/ that hold a ``python`` block, relative to ``root``."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [
        path.relative_to(root).as_posix()
        for path in found
        if BLOCK.search(path.read_text(encoding="utf-8"))
    ]


def programs(page: str, root: Path = ROOT) -> list[str]:
    """The programs of ``page``: the page with every line outside its ``python`` blocks (those
    of the program) blank, one program for the page or one per block (:data:`SEPARATE_BLOCKS`)."""
    text = (root / page).read_text(encoding="utf-8")
    blank = [""] * (text.count("\n") + 1)
    groups: list[list[re.Match[str]]] = [[]]
    for match in BLOCK.finditer(text):
        if page in SEPARATE_BLOCKS and groups[-1]:
            groups.append([])
        groups[-1].append(match)
    result = []
    for group in groups:
        lines = list(blank)
        for match in group:
            first = text.count("\n", 0, match.start(1))
            block = match.group(1).split("\n")[:-1]  # (it ends with a newline)
            lines[first : first + len(block)] = block
        result.append("\n".join(lines))
    return result


def module_name(page: str, number: int) -> str:
    """A module name of its own for a program (none that a page imports: ``doc_...``)."""
    return "doc_" + re.sub(r"\W", "_", page.removesuffix(".md").lower()) + f"_{number}"


def run_mypy(root: Path = ROOT) -> tuple[list[Error], str]:
    """Check every page's programs with mypy; its errors, and its whole output."""
    with tempfile.TemporaryDirectory() as folder:
        files: dict[str, tuple[str, list[str]]] = {}
        for page in pages(root):
            for number, program in enumerate(programs(page, root), start=1):
                path = Path(folder) / f"{module_name(page, number)}.py"
                path.write_text(program, encoding="utf-8")
                files[path.name] = (page, program.split("\n"))
        environment = dict(os.environ)
        search = [str(root / "src"), *filter(None, [environment.get("MYPYPATH")])]
        environment["MYPYPATH"] = os.pathsep.join(search)
        result = subprocess.run(
            [
                *(sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")),
                *("--show-error-codes", "--hide-error-context", "--hide-column-numbers"),
                *("--no-pretty", "--no-color-output", "--no-error-summary"),
                *(str(Path(folder) / name) for name in files),
            ],
            cwd=root,  # (the cache of make typecheck's mypy: .mypy_cache)
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
    output = result.stdout + result.stderr
    if result.returncode not in (0, 1):
        raise RuntimeError(f"mypy failed (status {result.returncode}):\n{output}")
    return parse(output, files), output


def parse(output: str, files: dict[str, tuple[str, list[str]]]) -> list[Error]:
    """The errors of mypy's ``output`` on the programs ``files`` (each file's name: its page and
    lines); a line of another form is refused, so that no error goes unread."""
    errors = []
    for line in output.splitlines():
        match = MYPY_LINE.match(line)
        if match is None or Path(match["path"]).name not in files:
            raise ValueError(f"typecheck_docs: a line of mypy's output not understood: {line!r}")
        if match["kind"] == "note":
            continue
        page, lines = files[Path(match["path"]).name]
        number = int(match["line"])
        source = lines[number - 1].strip()
        errors.append(Error(page, number, match["code"] or "", match["message"], source))
    return errors


def compare(errors: list[Error], known: tuple[Known, ...] = KNOWN) -> list[str]:
    """What fails: each error that no entry of ``known`` matches, and each entry that matches
    none of ``errors``."""
    problems = [str(error) for error in errors if not any(k.matches(error) for k in known)]
    for entry in known:
        if not any(entry.matches(error) for error in errors):
            where = "" if entry.line is None else f" on {entry.line!r}"
            problems.append(
                f"KNOWN lists an error that mypy no longer finds: {entry.message}{where}"
            )
    return problems


def main() -> int:
    errors, _ = run_mypy()
    problems = compare(errors)
    if problems:
        print("mypy --strict on the code of the README and the pages (tests/typecheck_docs.py):")
        print("\n".join(problems))
        print("Fix the page's code, or list the error in KNOWN with why it stays.")
        return 1
    print(f"typecheck_docs: {len(pages())} pages' code checked, {len(errors)} known errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
