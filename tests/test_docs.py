"""The documentation: it builds without a warning, and the code it shows runs and is right.

- the site builds with ``mkdocs build --strict`` (every docstring parses, every link resolves)
  and the API pages hold the documented objects, with the reStructuredText turned into Markdown;
- every ``python`` code block of the tutorial and of the PyTorch page runs, in order (the blocks
  hold their own assertions against PyTorch autograd and ``minidl.gradcheck``), and so do the
  README's and the home page's, whose names for the API reference's examples are those the
  docstring examples run with; the ``>>>`` examples of the docstrings that the tutorial writes
  show what they print;
- the tutorial's Softplus matches PyTorch where the tutorial claims it is stable, and the
  comments of its ``print`` calls show what they print (the values, the errors);
- the home page links every page of the site, and every relative link of the README and the
  pages (docs/api's too) leads to a file that exists and, after a ``#``, to one of its headings,
  as the checker finds on a planted site;
- the README's anomaly error and docs/distributed.md's rank failure are the ones minidl gives, and
  the defaults of the command line that the README, docs/distributed.md, docs/rounds.md and
  docs/reproducing.md state are the code's;
- where the README and the pages speak of this version's ``make bench`` runs, they count the
  runs of docs/speed.md's table and give their numbers (``minidl reproduce``'s wall times, the
  hand-written step's ratios, what two processes gain, what inference mode saves);
- the README's table of layers, losses, optimizers, schedules and initialisations names what
  ``minidl.nn`` and ``minidl.optim`` export;
- every ``Args:`` section of the package's docstrings names each parameter of its function, and
  no other;
- the docstring converter (docs/_griffe_rst.py) turns roles, links, literal-block markers, math
  blocks, tables and examples into the expected Markdown, the formulas into MathML.
"""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import itertools
import os
import re
import subprocess
import sys
import unicodedata
from html import unescape
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import minidl
import minidl.anomaly
from minidl.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def missing_docs_tools() -> list[str]:
    modules = {
        "mkdocs": "mkdocs",
        "mkdocstrings": "mkdocstrings",
        "mkdocstrings_handlers.python": "mkdocstrings-python",
        "material": "mkdocs-material",
        "griffe": "griffe",
        "latex2mathml": "latex2mathml",
    }
    missing = []
    for module, package in modules.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(package)
    return missing


requires_docs_tools = pytest.mark.skipif(
    bool(missing_docs_tools()),
    reason=f"the docs tools are not installed ({', '.join(missing_docs_tools())}); "
    "`pip install -e '.[docs]'` or `make dev` installs them",
)


def python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def run_page(page: str) -> dict[str, Any]:
    """Execute the page's ``python`` blocks in order, in one namespace, and return it."""
    namespace: dict[str, Any] = {"__name__": f"docs_{page.removesuffix('.md')}"}
    for number, block in enumerate(python_blocks(page), start=1):
        exec(compile(block, f"docs/{page} (python block {number})", "exec"), namespace)
    return namespace


# -- the site ------------------------------------------------------------------------------------

API_OBJECTS = {
    "nn": ["minidl.nn.Linear", "minidl.nn.Sequential", "minidl.nn.Module", "minidl.nn.Tanh"],
    "optim": ["minidl.optim.SGD", "minidl.optim.Adadelta", "minidl.optim.Optimizer"],
    "data": ["minidl.data.make_disk_data", "minidl.data.BatchIterator"],
    "train": ["minidl.train.fit", "minidl.train.error_rate"],
    "folded": ["minidl.folded.FoldedStep"],
    "rounds": ["minidl.rounds.fit_rounds", "minidl.rounds.PerModel"],
    "gradcheck": ["minidl.gradcheck.gradcheck"],
    "checkpoint": ["minidl.checkpoint"],
    "interop": ["minidl.interop.to_torch", "minidl.interop.from_torch"],
    "anomaly": ["minidl.anomaly.detect_anomaly", "minidl.anomaly.AnomalyError"],
    "distributed": ["minidl.distributed.DataParallel", "minidl.distributed.ProcessGroup"],
}


def build_site(directory: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert not warnings, "mkdocs build warned:\n" + "\n".join(warnings)


@requires_docs_tools
def test_site_builds_strictly_and_documents_the_api(tmp_path: Path) -> None:
    """One build (the slow part), then every check of its pages."""
    build_site(tmp_path)
    for page in ("index.html", "tutorial.html", "pytorch.html"):
        assert (tmp_path / page).is_file(), page
    assert not list(tmp_path.rglob("*.py")), "the docstring converter must not be published"
    for module, objects in API_OBJECTS.items():
        html = (tmp_path / "api" / f"{module}.html").read_text(encoding="utf-8")
        for name in objects:
            assert f'id="{name}"' in html, f"{name} missing from api/{module}.html"
        # Every name the module exports (constants documented by their "#:" comments too).
        for name in importlib.import_module(f"minidl.{module}").__all__:
            path = f"minidl.{module}.{name}"
            assert f'id="{path}"' in html, f"{path} missing from api/{module}.html"
        text = re.sub(r"<[^>]+>", "", html)
        for leftover in (":math:`", ":class:`", ":func:`", ":meth:`", ".. math::", "Example:"):
            assert leftover not in text, f"{leftover!r} left in api/{module}.html"
        # A reStructuredText link (`text <url>`_) and a literal block's "::" (shown as ":").
        assert "&gt;_" not in text, f"a reStructuredText link left in api/{module}.html"
        assert not re.search(r"\S::$", text, re.MULTILINE), f"'::' left in api/{module}.html"
    # The sections of one docstring, rendered.
    html = (tmp_path / "api" / "nn.html").read_text(encoding="utf-8")
    start = html.index('id="minidl.nn.Linear"')
    linear = html[start : html.index('id="minidl.nn.', start + 30)]
    assert "in_features" in linear and "size of each input sample" in linear  # Args
    assert "<summary>Shape</summary>" in linear
    assert "Examples:" in linear and "torch.Size([100, 25])" in linear  # a console session
    # The formulas as MathML, with their TeX as alttext: the roles inline (in a span, which
    # keeps them in their paragraph), a math block displayed, one equation to a line.
    displayed = r'<math alttext="([^"]*)"[^>]*display="block"'
    assert [unescape(alt) for alt in re.findall(displayed, linear)] == [
        r"\frac{\partial L}{\partial X} = G W, \qquad \frac{\partial L}{\partial W} "
        r"\mathrel{+}= G^T X, \qquad \frac{\partial L}{\partial b} \mathrel{+}= "
        r"\textstyle\sum_{n} G_{n,:}"
    ]
    assert '<p>Fully connected layer <span class="math"><math alttext="y' in linear
    optim = (tmp_path / "api" / "optim.html").read_text(encoding="utf-8")
    start = optim.index('id="minidl.optim.Adadelta"')
    adadelta = [
        unescape(alt)
        for alt in re.findall(
            displayed, optim[start : optim.index('id="minidl.optim.', start + 30)]
        )
    ]
    assert adadelta == [
        r"E[g^2]_t = \rho E[g^2]_{t-1} + (1 - \rho) g_t^2",
        r"\Delta w_t = -\frac{\sqrt{E[\Delta w^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}}\, g_t",
        r"E[\Delta w^2]_t = \rho E[\Delta w^2]_{t-1} + (1 - \rho) \Delta w_t^2",
        r"w_t = w_{t-1} + \lambda\, \Delta w_t",
    ]
    # Markdown left the formulas' text as it was (no emphasis, code or link inside).
    for page in tmp_path.rglob("*.html"):
        for formula in re.findall(r"<math\b.*?</math>", page.read_text(encoding="utf-8"), re.S):
            assert not re.search(r"<(?:em|strong|code|a|p)\b", formula), (page, formula)


# -- the code of the pages -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tutorial() -> dict[str, Any]:
    """The tutorial's namespace after running all its blocks (they assert as they go)."""
    assert python_blocks("tutorial.md"), "docs/tutorial.md has no python block"
    return run_page("tutorial.md")


def test_tutorial_code_runs(tutorial: dict[str, Any]) -> None:
    for name in ("Softplus", "WrongSoftplus", "Scale", "model", "optimizer", "LogCoshLoss"):
        assert name in tutorial, name


def test_tutorial_scale_reads_a_gradient_given_in_its_own_gradients_memory(
    tutorial: dict[str, Any],
) -> None:
    """Section 9: the tutorial's Scale computes its input gradient before its accumulation, so
    ``layer.backward(layer.scale.grad.expand(n, -1))`` gives PyTorch autograd's gradients of
    the values given (its input gradient multiplied the gradient as written over when it came
    after the ``add_``)."""
    layer = tutorial["Scale"](4, dtype=torch.float64)
    layer.scale.data.copy_(torch.tensor([0.5, -1.0, 2.0, 3.0]))
    layer.scale.grad.copy_(torch.tensor([1.0, 2.0, -3.0, 0.25]))
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad = layer.scale.grad.expand(3, -1)
    given, before = grad.clone(), layer.scale.grad.clone()
    layer(x)
    grad_x = layer.backward(grad)
    scale = layer.scale.data.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    (x_ref * scale).backward(given)
    assert x_ref.grad is not None and scale.grad is not None
    torch.testing.assert_close(grad_x, x_ref.grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(layer.scale.grad, before + scale.grad, rtol=1e-12, atol=0)


def test_tutorial_docstring_examples_run(tutorial: dict[str, Any]) -> None:
    """The ``>>>`` examples in the docstrings the tutorial writes (Softplus's) show what they
    print: tests/test_docstring_examples.py runs only those of the package."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report: list[str] = []
    examples = 0
    for name in ("Softplus", "Scale", "LogCoshLoss"):
        for test in finder.find(tutorial[name], name, globs=dict(tutorial)):
            examples += len(test.examples)
            runner.run(test, out=report.append)
    assert examples >= 1
    assert runner.failures == 0, "".join(report)


#: A comment that shows a tensor's values: a label, then the numbers in brackets.
SHOWN_NUMBERS = re.compile(r"^(?P<label>[^:\[]*): \[(?P<numbers>[-+0-9., ]+)\]$")


def test_tutorial_prints_what_its_comments_show() -> None:
    """Each commented ``print(...)`` of docs/tutorial.md shows what it prints: a list of numbers
    is the printed tensor's values, each to the digits written (``0.3133`` is a value that
    rounds to it); a message is the printed error's, ``[...]`` standing for the index it
    names."""
    printed: list[object] = []
    namespace: dict[str, Any] = {"__name__": "docs_tutorial", "print": printed.append}
    checked = 0
    for number, block in enumerate(python_blocks("tutorial.md"), start=1):
        printed.clear()
        exec(compile(block, f"docs/tutorial.md (python block {number})", "exec"), namespace)
        calls = [line for line in block.splitlines() if line.strip().startswith("print(")]
        assert len(calls) == len(printed), (number, calls, printed)
        for call, value in zip(calls, printed, strict=True):
            comment = call.partition("#")[2].strip()
            if not comment:
                continue
            numbers = SHOWN_NUMBERS.match(comment)
            if numbers:
                assert isinstance(value, torch.Tensor), (comment, value)
                shown = [part.strip() for part in numbers.group("numbers").split(",")]
                values = value.tolist()
                assert len(shown) == len(values), (comment, values)
                for text, actual in zip(shown, values, strict=True):
                    digits = len(text.partition(".")[2])
                    assert round(actual, digits) == float(text), (comment, values)
            else:
                pattern = re.escape(comment).replace(re.escape("[...]"), r"\[[^\]]+\]")
                assert re.search(pattern, str(value)), (comment, str(value))
            checked += 1
    assert checked == 4, "docs/tutorial.md's commented prints changed: update this test"


def test_index_links_every_page_of_the_site() -> None:
    """The home page's "Where to go next" links every other page of the site's navigation
    (mkdocs.yml), the API reference's included."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config.partition("\nnav:\n")[2].partition("\n\n")[0]
    pages = set(re.findall(r": (\S+\.md)$", nav, re.M)) - {"index.md"}
    assert len(pages) >= 15, "mkdocs.yml's nav moved: update this test"
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#]+\.md)[)#]", index.partition("## Where to go next")[2]))
    assert pages <= linked, sorted(pages - linked)


FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def heading_anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as the site's table of contents makes them
    (Python-Markdown's ``toc`` slugify: the heading's text without its markup, in lower case,
    without punctuation, each run of spaces and hyphens one hyphen; a repeated one gets ``_1``)."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+?)#*$", FENCED.sub("", path.read_text("utf-8")), re.M):
        text = unicodedata.normalize("NFKD", heading.replace("`", "").replace("*", ""))
        text = re.sub(r"[^\w\s-]", "", text.encode("ascii", "ignore").decode()).strip().lower()
        anchor = base = re.sub(r"[-\s]+", "-", text)
        number = 0
        while anchor in anchors:
            number += 1
            anchor = f"{base}_{number}"
        anchors.add(anchor)
    return anchors


def relative_links(path: Path) -> list[str]:
    """The targets of a Markdown file's links that are neither absolute URLs nor in code."""
    text = re.sub(r"`[^`\n]*`", "", FENCED.sub("", path.read_text("utf-8")))
    return [
        target
        for target in re.findall(r"\]\(([^)\s]+)\)", text)
        if not re.match(r"[a-z][a-z+.-]*:", target)
    ]


def broken_links(root: Path) -> tuple[int, list[str]]:
    """The relative links of ``root``'s README and of every page under ``root/docs`` (its
    folders' too, as ``docs/api``), counted, and those that lead to no file or, after a ``#``,
    to none of its headings, each as ``page: target (why)``."""
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    broken = []
    checked = 0
    for page in pages:
        for target in relative_links(page):
            file, _, anchor = target.partition("#")
            destination = (page.parent / file).resolve() if file else page
            checked += 1
            if not destination.is_file():
                broken.append(f"{page.relative_to(root).as_posix()}: {target} (no such file)")
            elif anchor and anchor not in heading_anchors(destination):
                broken.append(f"{page.relative_to(root).as_posix()}: {target} (no such heading)")
    return checked, broken


def test_relative_links_lead_to_a_file_and_one_of_its_headings() -> None:
    """Every relative link of the README and of the pages names a file that exists and, after a
    ``#``, one of its headings: ``mkdocs build --strict`` checks the files of the pages' links
    but not their anchors, and nothing the README's."""
    checked, broken = broken_links(ROOT)
    assert checked >= 100, "the pages' links moved: update this test"
    assert not broken, "\n".join(broken)


def test_the_link_checker_finds_each_broken_link_of_a_planted_site(tmp_path: Path) -> None:
    """On a planted README and pages, the checker counts the relative links (not a URL's, not
    one in code or in a fenced block) and names exactly the broken ones: a missing file, a
    missing heading, a heading only in a fenced block or after a '#' inside a line, a repeated
    heading's number past its repeats, and a page's in a folder of docs; headings with code,
    punctuation, a spaced hyphen, closing hashes and repeats are slugged as the site's table of
    contents slugs them."""
    (tmp_path / "docs" / "api").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "# Project\n\n"
        "[a](docs/a.md), [code](docs/a.md#a-heading-with-code-and-punctuation),\n"
        "[gone](docs/gone.md), [typo](docs/a.md#a-heading-with-code),\n"
        "[site](https://example.com/gone.md), [mail](mailto:a@example.com),\n"
        "[old](http://example.com/gone.md), `[quoted](docs/quoted.md)`\n\n"
        "```python\n[fenced](docs/fenced.md)\n```\n",
        "utf-8",
    )
    (tmp_path / "docs" / "a.md").write_text(
        "# A heading with `code`, and *punctuation*!\n\n## Twice\n\n## Twice\n\n"
        "## Save  -  and load\n\nNo heading: C# and F# in a line.\n\n"
        "###### Deep ###\n\n```text\n# In a fence\n```\n\n"
        "[repeat](#twice_1), [deep](#deep), [past](#twice_2), [fence](#in-a-fence),\n"
        "[dash](#save-and-load), [line](#and-f-in-a-line)\n",
        "utf-8",
    )
    (tmp_path / "docs" / "api" / "b.md").write_text(
        "[up](../a.md#twice), [readme](../../README.md#project), [down](../a.md#twice-1)\n",
        "utf-8",
    )
    assert broken_links(tmp_path) == (
        13,
        [
            "README.md: docs/gone.md (no such file)",
            "README.md: docs/a.md#a-heading-with-code (no such heading)",
            "docs/a.md: #twice_2 (no such heading)",
            "docs/a.md: #in-a-fence (no such heading)",
            "docs/a.md: #and-f-in-a-line (no such heading)",
            "docs/api/b.md: ../a.md#twice-1 (no such heading)",
        ],
    )


def test_index_code_runs_and_sets_up_the_names_of_the_api_examples() -> None:
    """The home page's loop runs (with fewer epochs), and its block of the names the docstring
    examples assume makes what ``tests/test_docstring_examples.py`` gives them, value for value."""
    from tests.test_docstring_examples import context

    blocks = python_blocks("index.md")
    assert len(blocks) == 2, "docs/index.md's python blocks changed: update this test"
    loop = blocks[0].replace("range(400)", "range(2)")
    assert loop != blocks[0]
    exec(compile(loop, "docs/index.md (python block 1)", "exec"), {"__name__": "docs_index"})
    page: dict[str, Any] = {"__name__": "docs_index"}
    exec(compile(blocks[1], "docs/index.md (python block 2)", "exec"), page)
    after_page = torch.get_rng_state()
    expected = context(importlib.import_module("minidl.train"))
    assert torch.equal(after_page, torch.get_rng_state())  # both end seeded with 0
    for name in ("torch", "minidl", "nn", "optim"):
        assert page[name] is expected[name], name
    for name in ("x", "y"):
        assert torch.equal(page[name], expected[name]), name
    assert page["model"].state_dict().keys() == expected["model"].state_dict().keys()
    for key, value in page["model"].state_dict().items():
        assert torch.equal(value, expected["model"].state_dict()[key]), key
    assert repr(page["model"]) == repr(expected["model"])
    assert type(page["criterion"]) is type(expected["criterion"])
    assert type(page["optimizer"]) is type(expected["optimizer"])
    assert page["optimizer"].lr == expected["optimizer"].lr
    assert torch.equal(page["generator"].get_state(), expected["generator"].get_state())
    for split in ("train", "validation", "test"):
        for part in ("x", "y"):
            got = getattr(getattr(page["data"], split), part)
            assert torch.equal(got, getattr(getattr(expected["data"], split), part))


def test_pytorch_page_code_runs() -> None:
    assert python_blocks("pytorch.md"), "docs/pytorch.md has no python block"
    namespace = run_page("pytorch.md")
    assert "twin" in namespace and "back" in namespace


def test_readme_code_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ``python`` blocks run in order, in one namespace, with fewer epochs (the
    counts are the README's: its first loop alone takes seconds)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) == 6, "the README's python blocks changed: update this test"
    shorter = {
        "range(400)": "range(2)",
        "epochs=400": "epochs=12",
        "epochs=100": "epochs=2",
        ">= 20": ">= 1",  # the early stopping's patience
    }
    monkeypatch.chdir(tmp_path)  # the checkpoint block writes run.ckpt
    namespace: dict[str, Any] = {"__name__": "readme"}
    for number, block in enumerate(blocks, start=1):
        for long, short in shorter.items():
            block = block.replace(long, short)
        exec(compile(block, f"README.md (python block {number})", "exec"), namespace)
    # The checkpoint block resumed after its 10 epochs and trained to the end.
    assert namespace["state"].epoch == 10
    assert len(namespace["state"].history.train_loss) == 12
    assert len(namespace["histories"]) == len(namespace["rates"])
    # The early stopping stopped one epoch after its best, which it saved and loaded back.
    best, stopped = namespace["best"], namespace["stopped"]
    assert len(stopped.train_loss) == min(best["epoch"] + 2, 12)
    assert min(stopped.validation_error) == best["error"]
    assert read_checkpoint(tmp_path / "best.ckpt").training.epoch == best["epoch"] + 1


def readme_text() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def page_text(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def quoted_output(block: str, after: str) -> str:
    """The text of the ``#`` comment lines that follow the line ``after`` in a code block (or
    that end it), joined with single spaces: the output the block shows."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == after)
    comment = []
    for line in lines[start + 1 :]:
        if not line.strip().startswith("#"):
            break
        comment.append(line.strip().removeprefix("#").strip())
    assert comment, f"no comment after {after!r}"
    return " ".join(comment)


def test_readme_anomaly_error_is_the_one_shown() -> None:
    """The README's anomaly block shows the error it raises on the paper's network and the disk
    data when the third layer makes a NaN: that message, word for word."""
    from minidl.data import make_disk_data

    text = readme_text()
    block = re.search(
        r"^```python\n(import minidl\n\nwith minidl\.detect_anomaly.*?)^```",
        text,
        flags=re.DOTALL | re.MULTILINE,
    )
    assert block, "the README's anomaly block changed: update this test"
    shown = quoted_output(block.group(1), "model.backward(criterion.backward())")
    data = make_disk_data(seed=0)
    torch.manual_seed(0)
    model = minidl.nn.Sequential(
        *(minidl.nn.Linear(2, 25), minidl.nn.Tanh(), minidl.nn.Linear(25, 25), minidl.nn.Tanh()),
        *(minidl.nn.Linear(25, 25), minidl.nn.Tanh(), minidl.nn.Linear(25, 2)),
    )
    model[2].bias.data[4] = float("nan")
    namespace = {
        "model": model,
        "criterion": minidl.nn.CrossEntropyLoss(),
        "x": data.train.x,
        "y": data.train.y,
    }
    with pytest.raises(minidl.anomaly.AnomalyError) as error:
        exec(compile(block.group(1), "README.md (anomaly block)", "exec"), namespace)
    assert f"minidl.anomaly.AnomalyError: {error.value}" == shown


def test_docs_rank_failure_message_is_the_one_minidl_train_prints() -> None:
    """docs/distributed.md quotes the error of a rank whose peer died; ``...`` stands for the
    backend's own words."""
    from minidl.distributed import DEFAULT_TIMEOUT, ProcessGroup

    quote = re.search(r"with an error naming it, e\.g\.\s+`([^`]+)`", page_text("distributed.md"))
    assert quote, "docs/distributed.md's quote of a rank failure changed: update this test"
    shown = " ".join(quote.group(1).split())
    group = ProcessGroup.__new__(ProcessGroup)
    group.rank, group.world_size, group.timeout = 0, 3, DEFAULT_TIMEOUT
    group._census = lambda: [2]  # type: ignore[method-assign]
    group._left = lambda ranks: {}  # type: ignore[method-assign]  # (it did not close its group)
    group._finish_census = lambda missing: None  # type: ignore[method-assign]
    error = group._failure("the all_reduce of the gradients", RuntimeError("gloo: closed"))
    printed = f"minidl train: error: {error}"  # as the command line prints it
    pattern = re.escape(shown).replace(re.escape("..."), ".+")
    assert re.fullmatch(pattern, printed), (shown, printed)


def test_pytorch_page_prints_the_errors_its_comments_show(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each ``print(error)`` of docs/pytorch.md is followed by the message it prints (a trailing
    ``...`` stands for the rest)."""
    namespace: dict[str, Any] = {"__name__": "docs_pytorch"}
    checked = 0
    for number, block in enumerate(python_blocks("pytorch.md"), start=1):
        capsys.readouterr()
        exec(compile(block, f"docs/pytorch.md (python block {number})", "exec"), namespace)
        printed = " ".join(capsys.readouterr().out.split())
        for line in block.splitlines():
            if line.strip().startswith("print(error)"):
                inline = line.partition("#")[2].strip()
                shown = inline or quoted_output(block, line.strip())
                assert printed.startswith(shown.removesuffix("...").rstrip()), (shown, printed)
                checked += 1
    assert checked == 2, "docs/pytorch.md's printed errors changed: update this test"


def test_readme_and_pages_state_the_command_lines_defaults() -> None:
    """The defaults and constants the README and the pages on data-parallel training, many
    models at once and the paper's reproduction give for ``minidl train`` and ``minidl
    reproduce``, each checked on the page that states it."""
    from minidl import _allocator
    from minidl.cli import ROUNDS, build_parser
    from minidl.distributed import _CENSUS_SECONDS, _STORE_SECONDS, DEFAULT_TIMEOUT, TIMEOUT_ENV
    from minidl.experiments.runner import QUICK_EPOCHS

    text = " ".join(readme_text().split())
    train = build_parser().parse_args(["train"])
    reproduce = build_parser().parse_args(["reproduce"])
    assert train.dist_timeout is None  # then the environment's, else DEFAULT_TIMEOUT
    distributed = " ".join(page_text("distributed.md").split())
    assert f"(default `${TIMEOUT_ENV}`, else {DEFAULT_TIMEOUT:g})" in distributed
    # (the census's watch of the heartbeats, then the bound on the store's answers: a
    # _STORE_SECONDS of 50 passed the tests before, which set their own; fails this)
    census_bound = _CENSUS_SECONDS + _STORE_SECONDS
    assert f"the others say the store does not answer, {census_bound:g} s after" in distributed
    assert reproduce.rounds is None  # then ROUNDS (None: a --rounds given with --quick is refused)
    reproducing = " ".join(page_text("reproducing.md").split())
    assert ROUNDS == 5 and "Each row runs 5 rounds" in reproducing
    assert QUICK_EPOCHS == 5 and "`--quick` is a 1-round, 5-epoch smoke test" in reproducing
    assert reproduce.out == "results" and "writes into `results/`" in text
    assert reproduce.jobs is None and "(default: the CPUs available;" in reproducing
    assert (
        f"MALLOC_MMAP_THRESHOLD_={_allocator.MMAP_THRESHOLD} "
        f"MALLOC_TRIM_THRESHOLD_={_allocator.TRIM_THRESHOLD}"
    ) in " ".join(page_text("rounds.md").split())


#: A cell of D in docs/speed.md's tables, ``3.43x (20.7 / 71.1 s; training 19.6 s)``: minidl's
#: time, then PyTorch's.
SIDES = (r"([\d.]+) / ", r"[\d.]+ / ([\d.]+) s")
#: The words the pages count runs with.
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def this_versions_bench_runs() -> tuple[list[str], list[list[str]]]:
    """The header of docs/speed.md's table of the runs on the machine in use now (the first
    section of runs: ``## The runs on the ...``), and its rows of this version: the first and the
    ``run N`` rows after it, each as its cells."""
    section = page_text("speed.md").partition("\n## The runs on the ")[2].partition("\n## ")[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    assert len(rows) > 2, "docs/speed.md's table of this machine's runs moved: update this test"
    header, first, *older = rows
    return header, [first, *itertools.takewhile(lambda row: row[0].startswith("run "), older)]


def listed(values: list[str]) -> str:
    """``values`` as the pages list them: ``a and b``, ``a, b and c``."""
    return " and ".join([", ".join(values[:-1]), values[-1]] if len(values) > 1 else values)


def test_pages_give_this_versions_make_bench_runs() -> None:
    """Where the README and the pages speak of this version's runs, they count those of
    docs/speed.md's table, and give their numbers: docs/reproducing.md the wall times of ``minidl
    reproduce`` (D: minidl's side, in two processes and in one), docs/speed.md the hand-written
    step's ratios and what two processes gain each side of D, docs/speed.md and docs/pytorch.md
    how much less time A's loop takes inside ``torch.inference_mode()``."""
    header, runs = this_versions_bench_runs()
    pages = {"README.md": readme_text()}
    pages |= {f"docs/{page.name}": page.read_text(encoding="utf-8") for page in DOCS.glob("*.md")}
    counted = [
        (name, found[1])
        for name, text in pages.items()
        for found in re.finditer(
            r"this version's (\w+) (?:`make bench` )?runs?\b", " ".join(text.split())
        )
    ]
    assert len(counted) >= 3, counted
    wrong = [(name, word) for name, word in counted if NUMBER_WORDS.get(word) != len(runs)]
    assert not wrong, f"{len(runs)} runs in docs/speed.md's table, counted otherwise: {wrong}"

    def column(name: str, pattern: str) -> list[str]:
        """What ``pattern`` matches in the column ``name`` of each run (its first group)."""
        cells = [row[header.index(name)] for row in runs]
        found = [re.match(pattern, cell) for cell in cells]
        assert all(found), (name, cells)
        return [match[1] for match in found if match]

    def ratios(numerators: list[str], denominators: list[str], form: str) -> list[str]:
        pairs = zip(numerators, denominators, strict=True)
        return [format(float(a) / float(b), form) for a, b in pairs]

    minidl_two, twin_two = (column("D, 2 processes", rf"[\d.]+x \({side}") for side in SIDES)
    minidl_one, twin_one = (column("D, 1 process", rf"[\d.]+x \({side}") for side in SIDES)
    reproducing = " ".join(page_text("reproducing.md").split())
    assert f"took **{listed(minidl_two)} s** of wall time" in reproducing
    assert f"{listed(minidl_one)} s in one process" in reproducing
    speed = " ".join(page_text("speed.md").split())
    hand_written = column("hand-written", r"([\d.]+x)")
    assert f"{listed(hand_written)} faster than PyTorch eager in this version's" in speed
    assert (
        f"gave minidl {listed([f'{r}x' for r in ratios(minidl_one, minidl_two, '.2f')])} and the "
        "PyTorch twin, which trains 140 separate rounds, "
        f"{listed([f'{r}x' for r in ratios(twin_one, twin_two, '.2f')])} in this version's"
    ) in speed
    # (A's ratio over the ratio inside inference mode: the share of A's time that is left)
    left = ratios(column("A", r"([\d.]+)x"), column("A, inference mode", r"([\d.]+)x"), ".4f")
    less = listed([f"{100 - 100 * float(share):.0f}" for share in left])
    assert f"took {less}% less time than A in this version's" in speed
    assert f"took {less}% less time per step" in " ".join(page_text("pytorch.md").split())


def readme_table_names() -> dict[str, set[str]]:
    """The names in the code spans of each row of the README's table of layers, losses,
    optimizers and schedules (``nn.`` dropped, arguments left out: `Residual(block)` is
    ``Residual``)."""
    section = readme_text().partition("## Layers, losses, optimizers and schedules")[2]
    rows = re.findall(r"^\| ([a-z][a-z ]*) \| (.*) \|$", section.partition("\n\n\n")[0], re.M)
    assert rows, "the README's table of layers, losses and optimizers moved: update this test"
    return {kind: set(re.findall(r"`(?:nn\.)?([A-Za-z_]\w*)", cell)) for kind, cell in rows}


def test_readme_table_lists_every_layer_loss_optimizer_schedule_and_init() -> None:
    """The README's table names each module, loss, optimizer, schedule and initialisation that
    ``minidl.nn``, ``minidl.optim`` and ``minidl.nn.init`` export (the base classes and the
    stacks' modules aside), and no other class: one added, renamed or removed fails it."""
    from minidl import nn, optim

    rows = readme_table_names()

    def exported(module: ModuleType, base: type) -> set[str]:
        return {
            name
            for name in module.__all__
            if inspect.isclass(cls := getattr(module, name)) and issubclass(cls, base)
        }

    def classes(kind: str) -> set[str]:
        return {name for name in rows[kind] if name[0].isupper()}

    bases = {"Module", "Activation", "Loss", "Optimizer", "LRScheduler"}
    stacks = {"StackedActivation", "StackedLoss"}  # (docs/rounds.md names them)
    losses = exported(nn, nn.Loss) - bases - stacks
    activations = exported(nn, nn.Activation) - bases
    assert classes("activations") == activations
    assert classes("losses") == losses
    assert classes("layers") == exported(nn, nn.Module) - losses - activations - bases - stacks
    assert {"Sequential", "mlp"} <= rows["layers"]
    assert classes("optimizers") == exported(optim, optim.Optimizer) - bases
    assert classes("schedules") == exported(optim, optim.LRScheduler) - bases
    functions = {name for name in rows["initialisation"] if name[0].islower()}
    assert functions - {"init", "torch"} == set(nn.init.__all__)
    assert {"clip_grad_norm_", "clip_grad_value_"} <= rows["gradient clipping"]


def test_architecture_page_places_every_file_and_folder_of_the_package() -> None:
    """docs/architecture.md's first two sections (the rule and its two exceptions, the layers
    and the files beside them) name each module file (``name.py``) and subpackage (``name/``)
    of ``src/minidl``: one added or renamed and not placed fails it (``_frozen.py`` was not)."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page[: page.index("## A training step")]
    named = set(re.findall(r"(?<![\w/.])(\w+\.py|\w+/)(?![\w.])", section))
    package = ROOT / "src" / "minidl"
    files = {path.name for path in package.glob("*.py") if path.name != "__init__.py"}
    folders = {path.name + "/" for path in package.iterdir() if (path / "__init__.py").is_file()}
    assert files | folders <= named, sorted((files | folders) - named)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tutorial_softplus_matches_autograd_including_extreme_inputs(
    tutorial: dict[str, Any], dtype: torch.dtype
) -> None:
    x = torch.cat(
        [
            torch.tensor([-1000.0, -100.0, -40.0, -25.0, 0.0, 19.0, 50.0, 1000.0], dtype=dtype),
            torch.linspace(-15, 15, 31, dtype=dtype),
        ]
    )
    softplus = tutorial["Softplus"]()
    y = softplus(x)
    dx = softplus.backward(torch.ones_like(x))
    # The oracle: autograd through the stable form, in float64.
    x_ref = x.double().requires_grad_(True)
    y_ref = torch.logaddexp(x_ref, torch.zeros_like(x_ref))
    y_ref.sum().backward()
    assert x_ref.grad is not None
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(y.double(), y_ref.detach(), rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(dx.double(), x_ref.grad, rtol=tolerance * 10, atol=tolerance)
    # Where sigmoid(x) is tiny (but a normal number), expm1 keeps it to full relative precision.
    tiny = (x < -20) & (torch.sigmoid(x.double()) > torch.finfo(dtype).tiny)
    assert int(tiny.sum()) >= 2
    torch.testing.assert_close(
        dx[tiny].double(), torch.sigmoid(x[tiny].double()), rtol=tolerance * 10, atol=0.0
    )


def test_tutorial_scale_layer_accumulates(tutorial: dict[str, Any]) -> None:
    layer = tutorial["Scale"](3, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer(x)
    layer.backward(grad)
    once = layer.scale.grad.clone()
    torch.testing.assert_close(once, (grad * x).sum(0), rtol=1e-12, atol=1e-12)
    layer(x)
    layer.backward(grad)
    torch.testing.assert_close(layer.scale.grad, 2 * once, rtol=1e-12, atol=1e-12)
    with pytest.raises(
        ValueError, match=r"Scale: expected an input of shape \(N, 3\), got \(5, 4\)"
    ):
        layer(torch.zeros(5, 4, dtype=torch.float64))


# -- the docstrings' Args sections ---------------------------------------------------------------

SECTION = re.compile(r"^[A-Z][A-Za-z ]*:$")


def documented_arguments(docstring: str) -> list[str] | None:
    """The names an ``Args:`` section documents (``a, b: ...`` documents both; ``*inputs``
    is ``inputs``), or ``None`` without one."""
    lines = docstring.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Args:"]
    if not starts:
        return None
    start = starts[0]
    names: list[str] = []
    margin = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= len(lines[start]) - len(lines[start].lstrip()) or SECTION.match(line.strip()):
            break
        if margin is None:
            margin = indent
        if indent == margin:
            match = re.match(r"\s*([*\w][\w*, ]*):(\s|$)", line)
            assert match, f"an Args entry without a name: {line.strip()!r}"
            names += [name.strip().lstrip("*") for name in match.group(1).split(",")]
    return names


def documented_callables() -> list[tuple[str, Any]]:
    """Every public function, class and public method defined in the package's modules."""
    from tests.test_docstring_examples import package_modules

    found: dict[int, tuple[str, Any]] = {}
    for module in package_modules():
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value) or inspect.isclass(value):
                found.setdefault(id(value), (f"{module.__name__}.{name}", value))
            if inspect.isclass(value):
                for attribute, member in vars(value).items():
                    if not attribute.startswith("_") and inspect.isfunction(member):
                        found.setdefault(
                            id(member), (f"{module.__name__}.{name}.{attribute}", member)
                        )
    return sorted(found.values(), key=lambda item: item[0])


def test_args_sections_name_every_parameter_and_no_other() -> None:
    """An ``Args:`` entry is one parameter (or a comma-separated group), rendered as a row of the
    API page's parameter table: ``stacked_error_rates`` documented ``y`` inside ``x``'s entry,
    so that the page listed no ``y``."""
    checked = 0
    problems = []
    for name, value in documented_callables():
        docstring = inspect.getdoc(value)
        names = documented_arguments(docstring) if docstring else None
        function = value.__init__ if inspect.isclass(value) else value
        if names is None and inspect.isclass(value):
            names = documented_arguments(inspect.getdoc(function) or "")
        if names is None:
            continue
        parameters = [
            parameter.name
            for parameter in inspect.signature(function).parameters.values()
            if parameter.name not in ("self", "cls") and parameter.kind is not parameter.VAR_KEYWORD
        ]
        checked += 1
        for missing in sorted(set(parameters) - set(names)):
            problems.append(f"{name}: parameter {missing!r} is not documented in Args")
        for unknown in sorted(set(names) - set(parameters)):
            problems.append(f"{name}: Args documents {unknown!r}, which is no parameter")
    assert checked >= 50
    assert not problems, "\n".join(problems)


# -- the docstring converter ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def converter() -> ModuleType:
    pytest.importorskip("griffe", reason="the docs tools are not installed")
    spec = importlib.util.spec_from_file_location("_griffe_rst", DOCS / "_griffe_rst.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converter_turns_roles_into_code_spans_and_math_into_mathml(converter: ModuleType) -> None:
    text = "Layer :math:`y = x W^T` of :class:`~minidl.nn.Parameter`, see :func:`minidl.gradcheck`."
    assert converter.rst_to_markdown(text) == (
        'Layer <span class="math"><math alttext="y &#61; x W&#94;T" '
        'xmlns="http://www.w3.org/1998/Math/MathML" display="inline"><mrow><mi>y</mi>'
        "<mo>&#x0003D;</mo><mi>x</mi><msup><mi>W</mi><mi>T</mi></msup></mrow></math></span> "
        "of `Parameter`, see `minidl.gradcheck`."
    )


def test_converter_writes_the_text_of_mathml_as_references(converter: ModuleType) -> None:
    """What Markdown would read in a formula's text or its alttext (``_`` and ``*`` start
    emphasis, a backquote a code span, ``|`` ends a table's cell, ``\\`` escapes) is written as
    character references; ``\\_`` in ``\\text`` is an underscore, as in TeX."""
    markup = converter.mathml(r"a_i * b | \text{max\_norm} < `c`")
    text = "".join(re.findall(r">([^<]*)<", markup)) + re.findall(r'alttext="([^"]*)"', markup)[0]
    assert not set(text) & set('_*`|\\[]<>"')
    assert unescape(markup).count("max_norm") == 1
    assert (
        unescape(re.findall(r'alttext="([^"]*)"', markup)[0]) == r"a_i * b | \text{max\_norm} < `c`"
    )
    # Outside \text, \_ is TeX's: an underscore, not a subscript.
    assert "<msub>" not in converter.mathml(r"a\_b")
    # An accumulation, \mathrel{+}=, is one operator.
    assert "<mi>a</mi><mo>&#x0002B;&#x0003D;</mo><mi>b</mi>" in converter.mathml(
        r"a \mathrel{+}= b"
    )
    # Over lines, as a role can be: one line, its spaces as one.
    assert converter.mathml("a +\n    b") == converter.mathml("a + b")


def test_converter_keeps_a_formula_it_cannot_read_as_tex(
    converter: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(tex: str, display: str) -> str:
        raise IndexError("list index out of range")

    monkeypatch.setattr(converter, "latex_to_mathml", unreadable)
    assert converter.rst_to_markdown(":math:`a \\bad b`.") == "`a \\bad b`."
    text = ".. math::\n    a = b \\\\\n    c = d"
    assert converter.rst_to_markdown(text) == "\n```text\na = b \\\\\nc = d\n```\n"


def test_converter_turns_links_into_markdown_links(converter: ModuleType) -> None:
    """The checkpoint module's link to safetensors showed as code followed by an underscore."""
    text = "A `safetensors <https://huggingface.co/docs/safetensors>`_ file, `x <https://x.org>`__."
    assert converter.rst_to_markdown(text) == (
        "A [safetensors](https://huggingface.co/docs/safetensors) file, [x](https://x.org)."
    )
    # Code spans and roles are not links.
    assert converter.rst_to_markdown("``a <b>`` and :class:`C <d>`") == "``a <b>`` and `C <d>`"


def test_converter_shows_a_literal_blocks_colons_as_sphinx_does(converter: ModuleType) -> None:
    """``Module.apply``'s "in place::" showed both colons."""
    text = "For example, in place::\n\n    model.apply(init)\n\nOr ::\n\n    x\n\n::\n\n    y"
    assert converter.rst_to_markdown(text) == (
        "For example, in place:\n\n    model.apply(init)\n\nOr\n\n    x\n\n\n\n    y"
    )
    # Not in an example, nor a directive.
    text = "Examples:\n    >>> s = a[1::]\n    ... b::\n.. math::\n    a"
    assert converter.rst_to_markdown(text).startswith(
        "Examples:\n    >>> s = a[1::]\n    ... b::\n"
    )


def test_converter_displays_math_blocks_one_equation_to_a_line(converter: ModuleType) -> None:
    """A block's equations are split at each ``\\\\`` outside an environment, and at its blank
    lines, as Sphinx does; ``\\\\`` inside ``cases`` stays (MathML Core has no line break)."""
    text = (
        "Backward:\n\n.. math::\n    a = b \\\\\n    c = \\begin{cases} 1 & x \\\\ 2 & y \\end{cases}"
        "\n\n    d = {e \\\\ f}\n\nArgs:\n    x: the input."
    )
    lines = converter.rst_to_markdown(text).split("\n")
    assert lines[:3] == ["Backward:", "", ""]
    assert lines[-3:] == ["", "Args:", "    x: the input."]
    alts = [unescape(re.findall(r'alttext="([^"]*)"', line)[0]) for line in lines[3:-3]]
    assert alts == ["a = b", r"c = \begin{cases} 1 & x \\ 2 & y \end{cases}", r"d = {e \\ f}"]
    assert all('display="block"' in line for line in lines[3:-3])
    # Indented (a block inside a section), the lines keep the margin.
    assert converter.rst_to_markdown("    .. math:: x").split("\n")[1].startswith("    <math ")


def test_converter_turns_simple_tables_into_markdown(converter: ModuleType) -> None:
    text = "\n".join(
        [
            "Converted:",
            "",
            "=======  ==========",
            "minidl   torch.nn",
            "=======  ==========",
            "``A``    ``B``",
            "         (continued)",
            "``C``    ``D``",
            "=======  ==========",
            "",
            "After.",
        ]
    )
    assert converter.rst_to_markdown(text) == "\n".join(
        [
            "Converted:",
            "",
            "",
            "| minidl | torch.nn |",
            "|---|---|",
            "| ``A`` | ``B`` (continued) |",
            "| ``C`` | ``D`` |",
            "",
            "",
            "After.",
        ]
    )


def test_converter_reads_comment_docstrings(converter: ModuleType) -> None:
    lines = ("x = 1", "#: The first line", "#: and the second.", "CONSTANT = 2", "y = 3")
    assert converter.comment_docstring(lines, 4) == "The first line and the second."
    assert converter.comment_docstring(lines, 5) is None
    assert converter.comment_docstring(lines, 1) is None


def test_converter_reads_example_as_examples(converter: ModuleType) -> None:
    text = "Summary.\n\nExample:\n    >>> 1 + 1\n    2"
    assert converter.rst_to_markdown(text) == "Summary.\n\nExamples:\n    >>> 1 + 1\n    2"
