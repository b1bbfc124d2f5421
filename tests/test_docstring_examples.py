"""The ``>>>`` examples of the docstrings in ``src/minidl`` run, and show what they print.

Every docstring of every module of the package that holds an example (found with
:class:`doctest.DocTestFinder`) is one test case, named by the object's qualified name. Its
examples run in order, as doctest runs them, with the ``NORMALIZE_WHITESPACE`` and ``ELLIPSIS``
options: each must run without an error, and an example that shows output must print it.

Many examples are fragments of a training script, so each docstring runs in a fresh namespace
holding the public names (``__all__``) of its module and, for a module of ``minidl.nn`` or
``minidl.optim``, of that package (the API page documents them together), and then this context,
which the fragments may assume (each built from torch's global generator seeded with 0, which is
seeded with 0 again before the examples run, so that a random example prints the same each time):

- ``torch``; ``minidl``, ``nn`` (``minidl.nn``) and ``optim`` (``minidl.optim``);
- ``model``: ``nn.mlp((2, 25, 2), "tanh")``, initialised from seed 0;
- ``criterion``: ``nn.CrossEntropyLoss()``;
- ``optimizer``: ``optim.SGD(model.parameters(), lr=0.1)``;
- ``x``: ``torch.randn(8, 2)``; ``y``: class indices of shape ``(8,)``, in ``{0, 1}``;
- ``generator``: a ``torch.Generator`` seeded with 0;
- ``data``: ``minidl.data.make_disk_data(seed=0)``.

The documentation's home page (``docs/index.md``) shows the reader this context as code, which
``tests/test_docs.py`` checks makes the same values.

The examples run in a temporary working folder (an example may write a file there). The
examples of ``minidl.distributed`` run as one rank of a world of one, with the environment
``torchrun`` sets (on gloo over 127.0.0.1); for the examples that take a joined group, ``group``
is that rank's :class:`minidl.distributed.ProcessGroup`.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import minidl
from minidl import distributed, nn, optim
from minidl.data import make_disk_data
from tests.helpers import free_port

OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def package_modules() -> list[ModuleType]:
    """minidl and every module below it."""
    names = [minidl.__name__]
    names += [
        info.name for info in pkgutil.walk_packages(minidl.__path__, prefix=f"{minidl.__name__}.")
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def docstring_tests() -> list[doctest.DocTest]:
    """Every docstring of the package's own objects that holds at least one example."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: dict[str, doctest.DocTest] = {}
    for module in package_modules():
        for test in finder.find(module, globs={}):
            if not test.examples:
                continue
            # DocTestFinder looks only at objects defined in the module, so every docstring is
            # found once; keep the first should a name come back.
            found.setdefault(test.name, test)
    return sorted(found.values(), key=lambda test: test.name)


TESTS = docstring_tests()

# Docstrings whose examples are right and show a bug of the code (their cases are expected to
# fail, strictly: a fix of the code must remove the entry): name -> the bug.
KNOWN_BUGS: dict[str, str] = {}

# Docstrings whose examples take a joined process group as ``group``.
NEEDS_GROUP = {"minidl.distributed.DataParallel"}


def module_of(test: doctest.DocTest) -> ModuleType:
    """The module a docstring is in: the longest prefix of its name that is a module."""
    parts = test.name.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in sys.modules:
            return sys.modules[name]
    raise AssertionError(f"no module holds {test.name}")


def public_names(module: ModuleType) -> dict[str, Any]:
    names = getattr(module, "__all__", [name for name in vars(module) if not name.startswith("_")])
    return {name: getattr(module, name) for name in names}


def context(module: ModuleType) -> dict[str, Any]:
    """The namespace one docstring's examples start from (see the module docstring)."""
    namespace: dict[str, Any] = {"__name__": module.__name__}
    package = sys.modules[module.__name__.rpartition(".")[0] or minidl.__name__]
    if package is not minidl and hasattr(package, "__all__"):
        namespace.update(public_names(package))
    namespace.update(public_names(module))
    torch.manual_seed(0)
    model = nn.mlp((2, 25, 2), "tanh")
    namespace.update(
        torch=torch,
        minidl=minidl,
        nn=nn,
        optim=optim,
        model=model,
        criterion=nn.CrossEntropyLoss(),
        optimizer=optim.SGD(model.parameters(), lr=0.1),
        x=torch.randn(8, 2),
        y=torch.randint(0, 2, (8,)),
        generator=torch.Generator().manual_seed(0),
        data=make_disk_data(seed=0),
    )
    torch.manual_seed(0)
    return namespace


def run_examples(test: doctest.DocTest, namespace: dict[str, Any]) -> None:
    test.globs = namespace
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    try:
        runner.run(test, out=report.append, clear_globs=True)
    finally:
        test.globs = {}
    assert runner.failures == 0, "".join(report)


CASES = [
    pytest.param(
        test,
        id=test.name,
        marks=[pytest.mark.xfail(reason=KNOWN_BUGS[test.name], strict=True)]
        if test.name in KNOWN_BUGS
        else [],
    )
    for test in TESTS
]


@pytest.mark.parametrize("test", CASES)
def test_docstring_examples(
    test: doctest.DocTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = module_of(test)
    namespace = context(module)
    if module.__name__ != "minidl.distributed":
        run_examples(test, namespace)
        return
    # The environment torchrun sets for the only rank of a world of one.
    for name, value in {
        "WORLD_SIZE": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "GLOO_SOCKET_IFNAME": "lo",
    }.items():
        monkeypatch.setenv(name, value)
    if test.name not in NEEDS_GROUP:
        run_examples(test, namespace)
        return
    launch = distributed.launch_from_env()
    assert launch is not None
    with distributed.ProcessGroup(launch, timeout=30.0) as group:
        run_examples(test, {**namespace, "group": group})


def test_every_example_is_found() -> None:
    """The cases hold every ``>>>`` line of the package's sources (none is in a docstring that
    doctest does not look at, such as one of an object imported from elsewhere)."""
    source = Path(minidl.__file__).parent
    prompts = sum(path.read_text(encoding="utf-8").count(">>> ") for path in source.rglob("*.py"))
    assert len(TESTS) >= 50
    assert sum(len(test.examples) for test in TESTS) == prompts
