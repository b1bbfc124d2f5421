"""The Makefile's set-up (``make install``, which ``make reproduce`` and ``make test`` start
from), run by make on a copy of the Makefile with a stub for Python (``PYTHON=``).

The stub makes the venv with the real ``venv`` module (without pip, but running the venv's
``python3`` as venv does to install pip) and puts itself in as its ``python``; its ``pip install`` writes down what it is asked, and installs ``torch==2.13.0``
by leaving a file ``torch`` in the venv, which its ``import torch`` looks for. So the tests
see which installs make asks for, in which order, without a package registry:

- a pinned torch install that failed (offline, say) is done pinned by the next make, before
  the editable install, which would otherwise take torch unpinned (a multi-GB CUDA build);
  once done, make asks for nothing more;
- a ``.venv`` whose python points nowhere (its Python since removed or upgraded) is made anew;
- a Python older than 3.10 is named and refused before any venv is made;
- ``make clean`` removes what make and the commands it runs generate, and nothing else.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The stub's code; the wrapper script gives it its own path first.
STUB = """
import os
import shutil
import subprocess
import sys
from pathlib import Path

me, args = Path(sys.argv[1]), sys.argv[2:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if "STUB_VERSION" in os.environ:  # (a Python of another version)
    sys.version = os.environ["STUB_VERSION"] + " (stub)"
    sys.version_info = tuple(int(part) for part in os.environ["STUB_VERSION"].split("."))
if args[:2] == ["-m", "venv"]:
    done = subprocess.run([sys.executable, "-m", "venv", "--without-pip", *args[2:]])
    if done.returncode:
        sys.exit(done.returncode)
    # (as venv runs ensurepip: with the venv's python3, which fails where it points nowhere)
    subprocess.run([Path(args[-1]) / "bin" / "python3", "-c", "pass"], check=True)
    python = Path(args[-1]) / "bin" / "python"
    python.unlink()
    shutil.copy(me, python)
elif args[:2] == ["-c", "import torch"]:
    sys.exit(0 if (me.parent.parent / "torch").exists() else 1)
elif args[:1] == ["-c"]:
    exec(args[1])
elif args[:3] == ["-m", "pip", "install"] and "torch==2.13.0" in args:
    if os.environ.get("STUB_OFFLINE"):
        sys.exit("ERROR: No matching distribution found for torch==2.13.0")
    (me.parent.parent / "torch").touch()
"""

PINNED = "-m pip install --quiet torch==2.13.0"
EDITABLE = "-m pip install --quiet -e .[reproduce,checkpoint]"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder holding the Makefile, pyproject.toml and the stub (``python-stub``)."""
    if shutil.which("make") is None:
        pytest.skip("needs make")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, project / name)
    (tmp_path / "stub.py").write_text(STUB)
    wrapper = project / "python-stub"
    quoted = f"{shlex.quote(sys.executable)} {shlex.quote(str(tmp_path / 'stub.py'))}"
    wrapper.write_text(f'#!/bin/sh\nexec {quoted} "$0" "$@"\n')
    wrapper.chmod(0o755)
    return project


def make(
    project: Path, *targets: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``make PYTHON=./python-stub TARGETS`` in ``project``: the run, and what the stub was
    asked in it (one line a call)."""
    log = project.parent / "stub.log"
    log.write_text("")
    # (not the make flags of a make that runs these tests: its jobs are not this one's)
    outer = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    done = subprocess.run(
        ["make", "PYTHON=./python-stub", *targets],
        cwd=project,
        env={**outer, "STUB_LOG": str(log), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, log.read_text().splitlines()


def pip_installs(calls: list[str]) -> list[str]:
    """The stub's calls that install a package (pip's own upgrade left out)."""
    return [call for call in calls if call.startswith("-m pip install") and "--upgrade" not in call]


def test_a_torch_install_that_failed_is_done_pinned_by_the_next_make(project: Path) -> None:
    done, calls = make(project, "install", STUB_OFFLINE="1")
    assert done.returncode != 0
    assert "No matching distribution found for torch==2.13.0" in done.stderr
    assert pip_installs(calls) == [PINNED]
    assert not (project / ".venv" / ".installed").exists()

    done, calls = make(project, "install")
    assert done.returncode == 0, done.stderr
    assert pip_installs(calls) == [PINNED, EDITABLE]
    assert (project / ".venv" / "torch").exists()
    assert (project / ".venv" / ".installed").exists()

    done, calls = make(project, "install")
    assert done.returncode == 0, done.stderr
    assert calls == []


def test_a_venv_whose_python_points_nowhere_is_made_anew(project: Path) -> None:
    venv = project / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3.12").symlink_to("/nonexistent/bin/python3.12")
    for name in ("python", "python3"):
        (venv / "bin" / name).symlink_to("python3.12")
    (venv / "pyvenv.cfg").write_text("home = /nonexistent/bin\nversion = 3.12.1\n")
    stale = venv / "lib" / "python3.12" / "site-packages" / "stale.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("")

    done, calls = make(project, "install")
    assert done.returncode == 0, done.stderr
    assert (venv / "bin" / "python").read_text() == (project / "python-stub").read_text()
    assert not stale.exists()
    assert pip_installs(calls) == [PINNED, EDITABLE]


def test_a_python_older_than_3_10_is_named_before_any_venv(project: Path) -> None:
    done, calls = make(project, "install", STUB_VERSION="3.9.18")
    assert done.returncode != 0
    assert (
        "make: minidl needs Python 3.10 or newer, ./python-stub is 3.9.18 "
        "(make PYTHON=python3.X chooses one)"
    ) in done.stderr
    assert not (project / ".venv").exists()
    assert not any(call.startswith("-m") for call in calls)


def test_make_clean_removes_what_make_generates_and_nothing_else(project: Path) -> None:
    # Each folder that make or the commands it runs make, with a file in it.
    generated = {
        ".venv": "bin/python",
        "results": "report.md",
        "site": "index.html",
        ".mypy_cache": "3.11/x.json",
        ".ruff_cache": "0.6/x",
        ".pytest_cache": "v/cache/lastfailed",
        ".hypothesis": "examples/x",
        "src/minidl.egg-info": "PKG-INFO",
    }
    kept = [
        "src/minidl/__init__.py",
        "tests/test_x.py",
        "README.md",
        "benchmarks/results.json",
        "checkpoints/run.ckpt",
    ]
    for name in [f"{folder}/{file}" for folder, file in generated.items()] + kept:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("")

    done, _ = make(project, "clean")
    assert done.returncode == 0, done.stderr
    assert [folder for folder in generated if (project / folder).exists()] == []
    assert [
        name for name in [*kept, "Makefile", "pyproject.toml"] if not (project / name).exists()
    ] == []
