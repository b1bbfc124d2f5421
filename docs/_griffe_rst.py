"""A griffe extension that turns the reStructuredText bits of minidl's docstrings into Markdown.

The docstrings follow PyTorch's style: Google sections (``Args:``, ``Shape:``, ``Example:``) with
reStructuredText roles (``:math:`y = x W^T```, ``:class:`~minidl.nn.Parameter```) and
``.. math::`` blocks. mkdocstrings renders Markdown, so before the docstrings are parsed:

- a ``:math:`` role becomes MathML, typeset by the browser (``<math>``, with the TeX source as
  its ``alttext``, in a ``<span class="math">``); any other inline role becomes a code span
  (``~a.b.C`` shows as ``C``, as Sphinx does);
- a hyperlink, ```text <url>`_``, becomes a Markdown link;
- a paragraph's closing ``::``, which announces a literal block, becomes ``:`` (or goes, after
  a space), as Sphinx shows it; the indented block after it is already code in Markdown;
- a ``.. math::`` block becomes displayed MathML, one equation to a line (its formula split at
  each ``\\\\`` outside an environment such as ``cases``);
- a simple table (columns under ``=====  =====`` borders) becomes a Markdown table;
- an ``Example:`` section is read as griffe's ``Examples:``, so that its ``>>>`` lines show as
  a console session rather than as nested quotes;
- the ``#:`` comment lines just above a module attribute (Sphinx's form of an attribute's
  docstring, e.g. ``minidl.nn.ACTIVATIONS``) become its docstring, so that it is documented.

The formulas are turned into MathML when the site is built (`latex2mathml`_), so that the pages
need no script to typeset them; a formula it cannot read stays TeX source, in a code span or a
fenced block. MathML's text is written as character references, which Markdown leaves alone (an
``_`` or ``*`` of a formula would otherwise start emphasis, a ``|`` end a table's cell).

.. _latex2mathml: https://pypi.org/project/latex2mathml/
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import griffe
from latex2mathml.converter import convert as latex_to_mathml

ROLE = re.compile(r":(?:py:)?(math|class|func|meth|attr|mod|data|obj|exc):`(~?)([^`]+)`")
DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
BORDER = re.compile(r"^\s*=+(?: +=+)+\s*$")
LINK = re.compile(r"(?<!`)`([^`<>]+?)\s*<([^<>`\s]+)>`__?(?![\w`])")
LITERAL = re.compile(r"^(\s*)(?!\s|\.\. |>>> |\.\.\. )(.*?)(\s?)::\s*$")


#: A run of text between two tags of MathML, and a character that Markdown might read in it.
TEXT = re.compile(r">([^<]+)<")
SPECIAL = re.compile(r"&(?!#x?[0-9a-fA-F]+;|[a-zA-Z]+;)|[^A-Za-z0-9\s&;#]")


def _references(text: str) -> str:
    """``text`` with every character other than a letter, digit or space (and the entities
    already in it) as a character reference."""
    return SPECIAL.sub(lambda match: f"&#{ord(match.group())};", text)


def mathml(tex: str, display: bool = False) -> str | None:
    """The MathML of the TeX formula ``tex`` on one line, as a docstring's Markdown can hold it
    (see the module docstring), or ``None`` where the formula cannot be read."""
    source = " ".join(tex.split())
    try:
        # (\_ in \text is an underscore, which latex2mathml would show with its backslash)
        text = re.sub(r"\\text\{[^}]*\}", lambda match: match.group().replace("\\_", "_"), source)
        markup = latex_to_mathml(text, display="block" if display else "inline")
    except Exception:  # (latex2mathml raises its own errors and others: IndexError, KeyError)
        return None
    # \mathrel{+}= (an accumulation): one relation, +=, where latex2mathml nests an operator
    # in an operator, which browsers show as two apart
    markup = re.sub(
        r"<mo><mrow><mo>([^<]+)</mo></mrow></mo><mo>([^<]+)</mo>", r"<mo>\1\2</mo>", markup
    )
    markup = TEXT.sub(lambda match: f">{_references(match.group(1))}<", markup)
    alttext = _references(source).replace("&#38;", "&amp;")
    return markup.replace("<math ", f'<math alttext="{alttext}" ', 1)


def _role(match: re.Match[str]) -> str:
    kind, tilde, target = match.groups()
    if kind == "math":
        markup = mathml(target)
        # (in a span: Markdown reads a line that opens with <math>, a block-level tag, as a
        # block of HTML of its own, which ended the paragraph there)
        return f'<span class="math">{markup}</span>' if markup else f"`{target}`"
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _equations(formula: str) -> list[str]:
    """``formula`` split at each ``\\\\`` outside braces and environments (``\\begin{cases}``
    ... ``\\end{cases}``)."""
    # (\begin{ opens an environment and a brace, \end{ closes one and opens another)
    steps = {"\\begin{": 2, "\\end{": 0, "{": 1, "}": -1}
    equations, depth, start = [], 0, 0
    for match in re.finditer(r"\\begin\{|\\end\{|(?<!\\)[{}]|\\\\", formula):
        if match.group() in steps:
            depth += steps[match.group()]
        elif depth == 0:
            equations.append(formula[start : match.start()])
            start = match.end()
    equations.append(formula[start:])
    return [equation.strip() for equation in equations if equation.strip()]


def _literal(match: re.Match[str]) -> str:
    margin, text, space = match.groups()
    return f"{margin}{text}" if space or not text else f"{margin}{text}:"


def _inline(line: str) -> str:
    """One line of prose: roles as code spans, links as Markdown links, ``::`` as Sphinx
    shows it."""
    line = LINK.sub(r"[\1](\2)", ROLE.sub(_role, line))
    return LITERAL.sub(_literal, line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _table(lines: list[str]) -> list[str]:
    """A simple table (border, header, border, rows, border) as Markdown table lines."""
    border = lines[0]
    starts = [match.start() for match in re.finditer(r"=+", border)]
    margin = border[: starts[0]]
    rows: list[list[str]] = []
    for line in lines[1:]:
        if BORDER.match(line) or not line.strip():
            continue
        cells = []
        for start, stop in zip(starts, [*starts[1:], len(line)], strict=True):
            cells.append(ROLE.sub(_role, line[start:stop].strip()))
        if rows and not cells[0]:  # a continuation line adds to the row above
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    header, *body = rows
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in body]
    return ["", *(margin + line for line in table), ""]


def rst_to_markdown(text: str) -> str:
    """Return ``text`` in Markdown: math as MathML, other inline roles as code spans, links as
    links, simple tables as tables (see the module docstring)."""
    lines = text.splitlines()
    output: list[str] = []
    index = 0
    while index < len(lines):
        if BORDER.match(lines[index]):
            borders = [i for i in range(index, len(lines)) if BORDER.match(lines[i])][:3]
            if len(borders) == 3:
                output += _table(lines[index : borders[2] + 1])
                index = borders[2] + 1
                continue
        match = DIRECTIVE.match(lines[index])
        if match is None:
            line = EXAMPLE.sub(r"\1Examples:", lines[index])
            output.append(_inline(line))
            index += 1
            continue
        margin, inline = match.groups()
        body = [inline] if inline else []
        index += 1
        while index < len(lines) and (
            not lines[index].strip() or _indent(lines[index]) > len(margin)
        ):
            body.append(lines[index])
            index += 1
        while body and not body[-1].strip():
            body.pop()
        depth = min((_indent(line) for line in body if line.strip()), default=0)
        # (Sphinx's blank lines in a math block separate its equations, as \\ does)
        formulas = "\n".join(line[depth:] for line in body).split("\n\n")
        equations = [e for formula in formulas for e in _equations(formula)]
        shown = [mathml(equation, display=True) for equation in equations]
        if all(shown):
            output += ["", *(f"{margin}{markup}" for markup in shown), ""]
            continue
        output += ["", f"{margin}```text"]
        output += [f"{margin}{line[depth:]}" if line.strip() else "" for line in body]
        output += [f"{margin}```", ""]
    return "\n".join(output)


@cache
def _source_lines(path: Path) -> tuple[str, ...]:
    return tuple(path.read_text(encoding="utf-8").splitlines())


def comment_docstring(lines: tuple[str, ...], lineno: int) -> str | None:
    """The text of the ``#:`` comment lines just above line ``lineno`` (1-based), or ``None``."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        found.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    return " ".join(found) if found else None


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring with :func:`rst_to_markdown` as griffe loads it, and give an
    attribute without a docstring the ``#:`` comment above it."""

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        filepath, lineno = attr.filepath, attr.lineno
        if attr.docstring is not None or not isinstance(filepath, Path) or lineno is None:
            return
        text = comment_docstring(_source_lines(filepath), lineno)
        if text is not None:
            attr.docstring = griffe.Docstring(rst_to_markdown(text), lineno=lineno, parent=attr)

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
