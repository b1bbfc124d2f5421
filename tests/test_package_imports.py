"""The package ``minidl`` imports its names at their first use, and torch with them.

``import minidl`` (which the command line's console script and ``python -m minidl`` do before
any of its code runs) imports no torch, so that the command line handles a Ctrl-C during
torch's import (``tests/test_train_cli.py`` checks that); each name of ``minidl.__all__`` is
still the object its module defines, whatever was imported first. Each check that needs a
fresh interpreter runs a short program in one.
"""

from __future__ import annotations

import sys

import pytest

import minidl
from tests.helpers import run_python


def test_the_package_and_the_command_lines_help_and_version_import_no_torch() -> None:
    """``import minidl``, ``import minidl.cli``, ``minidl --help`` and ``minidl --version`` run
    with torch's import refused (they imported it, a second or so, before anything else)."""
    program = (
        "import importlib.abc, sys\n"
        "class Refused(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            raise AssertionError('torch imported')\n"
        "sys.meta_path.insert(0, Refused())\n"
        "import minidl, minidl.cli\n"
        "for argv in (['--help'], ['--version'], ['train', '--help'], ['reproduce', '--help']):\n"
        "    try:\n"
        "        minidl.cli.main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, (argv, exit.code)\n"
        "print('torch' in sys.modules)\n"
    )
    done = run_python(program)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.endswith("\nFalse\n")
    assert "minidl 0.1.0\n" in done.stdout


def test_each_public_name_is_the_one_its_module_defines() -> None:
    """``minidl.nn``, ``minidl.AnomalyError``, ``minidl.gradcheck``, ... are the objects of
    their modules; ``dir`` lists them; another name is missing as from any module."""
    for name in ("anomaly", "data", "nn", "optim"):
        assert getattr(minidl, name) is sys.modules[f"minidl.{name}"]
    for name, module in (
        ("AnomalyError", "anomaly"),
        ("detect_anomaly", "anomaly"),
        ("GradcheckError", "gradcheck"),
        ("gradcheck", "gradcheck"),
    ):
        assert getattr(minidl, name) is getattr(sys.modules[f"minidl.{module}"], name)
    assert set(minidl.__all__) <= set(dir(minidl))
    with pytest.raises(AttributeError, match=r"^module 'minidl' has no attribute 'Linear'$"):
        minidl.Linear  # noqa: B018
    with pytest.raises(ImportError, match="cannot import name 'Linear' from 'minidl'"):
        from minidl import Linear  # type: ignore[attr-defined]  # noqa: F401


@pytest.mark.parametrize(
    "first",
    [
        "from minidl.gradcheck import GradcheckError",
        "import minidl.gradcheck",
        "import minidl",
        "from minidl import gradcheck",
    ],
)
def test_minidl_gradcheck_is_the_function_whatever_is_imported_first(first: str) -> None:
    """The function :func:`minidl.gradcheck` and its module share the name; the import system
    sets the module on the package when it imports it, which put the module in the function's
    place where it came first (``minidl.gradcheck(...)``: 'module' object is not callable).
    It stays the function, as when the package imported everything at once."""
    program = (
        f"{first}\n"
        "import sys, minidl\n"
        "import minidl.gradcheck as aliased\n"
        "function = sys.modules['minidl.gradcheck'].gradcheck\n"
        "assert minidl.gradcheck is function is aliased, (minidl.gradcheck, aliased)\n"
    )
    done = run_python(program)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_fresh_package_lists_and_gives_its_names_and_keeps_them() -> None:
    """Before any name is used, ``dir(minidl)`` lists every name of ``__all__`` and the
    submodules (``anomaly`` too) without importing torch; ``minidl.anomaly`` is then the module
    (the first name used, so that no other import has set it), and a name of another module,
    once used, is kept in the package's namespace (looked up once)."""
    program = (
        "import sys, minidl\n"
        "names = set(dir(minidl))\n"
        "assert 'torch' not in sys.modules\n"
        "expected = {*minidl.__all__, 'anomaly', 'data', 'nn', 'optim'}\n"
        "assert expected <= names, sorted(expected - names)\n"
        "assert minidl.anomaly is sys.modules['minidl.anomaly']\n"
        "assert 'AnomalyError' not in vars(minidl)\n"
        "error = minidl.AnomalyError\n"
        "assert vars(minidl)['AnomalyError'] is error is sys.modules['minidl.anomaly'].AnomalyError\n"
    )
    done = run_python(program)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_modules_the_docs_name_by_their_dotted_path_come_with_the_package() -> None:
    """``import minidl`` then ``minidl.train.fit`` (as the README names it), ``minidl.rounds``,
    ``minidl.checkpoint`` and ``minidl.interop``: each the module, torch
    imported at the first use, none of them a name of ``from minidl import *``."""
    program = (
        "import sys, minidl\n"
        "assert 'torch' not in sys.modules\n"
        "assert minidl.train.fit is sys.modules['minidl.train'].fit\n"
        "namespace = {}\n"
        "exec('from minidl import *', namespace)\n"
        "assert 'nn' in namespace and 'train' not in namespace and 'rounds' not in namespace\n"
        "for name in ('rounds', 'checkpoint', 'interop'):\n"
        "    assert getattr(minidl, name) is sys.modules['minidl.' + name], name\n"
        "    assert name in dir(minidl), name\n"
    )
    done = run_python(program)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_package_takes_any_value_set_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's class puts the function :func:`minidl.gradcheck` in place of its module
    only: a number, a function, a stand-in module of another name (what a test patches in) or
    one of its name without the function set on the package stay what they are, under
    ``gradcheck`` too."""
    import types
    from unittest import mock

    stand_in = types.ModuleType("elsewhere")
    stand_in.gradcheck = len
    # (and one of the module's own name without the function: the class looked it up there,
    # an AttributeError, where it took any module of that name, and passed the tests before)
    empty = types.ModuleType("minidl.gradcheck")
    for name, value in [
        ("seed", 3),
        ("gradcheck", len),
        ("gradcheck", stand_in),
        ("gradcheck", empty),
    ]:
        monkeypatch.setattr(minidl, name, value, raising=False)
        assert getattr(minidl, name) is value
        monkeypatch.undo()
    with mock.patch("minidl.gradcheck") as patched:
        assert minidl.gradcheck is patched
    assert minidl.gradcheck is sys.modules["minidl.gradcheck"].gradcheck
