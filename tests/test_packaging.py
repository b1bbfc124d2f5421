"""minidl as a user installs it: the wheel and the sdist that pyproject.toml builds.

A copy of what the build reads (pyproject.toml, MANIFEST.in, README.md, LICENSE, src/ and
tests/) is built with setuptools' own backend, in another process, and the archives are read
back:

- the wheel holds every file of ``src/minidl`` (``py.typed`` too) and nothing else, the
  ``minidl`` console script, and the metadata: the name, the package's version, Python >= 3.10,
  torch as the one dependency, the extras' packages (each the one that minidl's errors name for
  it: :data:`minidl._extras.EXTRAS`), the licence as an SPDX expression, and the licence's text;
- the sdist holds what builds the wheel (the licence's text too), and no tests (setuptools adds
  ``tests/test*.py`` of its own accord, without the helpers and conftest they import);
- the build gives no deprecation warning of setuptools' (a licence as a TOML table is one,
  which setuptools stops building after 2027-02-18).
"""

from __future__ import annotations

import email.parser
import json
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import minidl
from minidl._extras import EXTRAS

# (pyproject.toml's build requirement: what reads a licence given as an SPDX expression)
pytest.importorskip("setuptools", minversion="77", reason="the build needs setuptools>=77")

ROOT = Path(__file__).resolve().parent.parent
#: What the build reads, beside src/ (tests/ to show that the sdist leaves it out).
BUILD_FILES = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE")

#: Built in the copy: the archives' names and setuptools' deprecation warnings, into built.json.
BUILD = """
import json
import warnings

from setuptools import build_meta
from setuptools.warnings import SetuptoolsDeprecationWarning

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sdist = build_meta.build_sdist("dist")
    wheel = build_meta.build_wheel("dist")
deprecated = [
    str(warning.message).splitlines()[0]
    for warning in caught
    if issubclass(warning.category, SetuptoolsDeprecationWarning)
]
with open("built.json", "w") as file:
    json.dump({"sdist": sdist, "wheel": wheel, "deprecated": deprecated}, file)
"""


def _source_files() -> list[str]:
    """The files of ``src/minidl`` (relative to ``src``), less Python's caches."""
    source = ROOT / "src"
    return sorted(
        path.relative_to(source).as_posix()
        for path in (source / "minidl").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """The sdist and the wheel built from a copy of the tree, and the deprecation warnings."""
    copy = tmp_path_factory.mktemp("tree")
    for name in BUILD_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, copy / name)
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*")
    shutil.copytree(ROOT / "src", copy / "src", ignore=ignored)
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=ignored)
    done = subprocess.run(
        [sys.executable, "-c", BUILD], cwd=copy, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((copy / "built.json").read_text())
    return copy / "dist" / result["sdist"], copy / "dist" / result["wheel"], result["deprecated"]


def test_the_build_gives_no_deprecation_warning(built: tuple[Path, Path, list[str]]) -> None:
    assert built[2] == []


def test_the_wheel_holds_the_package_and_its_metadata(
    built: tuple[Path, Path, list[str]],
) -> None:
    version = minidl.__version__
    with zipfile.ZipFile(built[1]) as wheel:
        names = wheel.namelist()
        info = f"minidl-{version}.dist-info"
        metadata = email.parser.Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert sorted(name for name in names if not name.startswith(info)) == _source_files()
    assert "minidl/py.typed" in names
    assert "[console_scripts]\nminidl = minidl.cli:main\n" in entry_points
    assert metadata["Name"] == "minidl"
    assert metadata["Version"] == version
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "MIT"
    # The licence's text travels with the package (setuptools puts it under licenses/).
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert f"{info}/licenses/LICENSE" in names
    assert metadata["Description-Content-Type"] == "text/markdown"
    requirements = metadata.get_all("Requires-Dist")
    assert [r for r in requirements if "extra ==" not in r] == ["torch>=2.13"]
    for extra, packages in (
        ("reproduce", ["matplotlib>=3.7", "tqdm>=4.60"]),
        ("checkpoint", ["safetensors>=0.4"]),
    ):
        assert extra in metadata.get_all("Provides-Extra")
        assert [r.split(";")[0] for r in requirements if f'extra == "{extra}"' in r] == packages
    # The extra that minidl's errors tell to install for each optional package is the one
    # that installs it.
    for package, extra in EXTRAS.items():
        assert any(
            re.match(rf"{package}\b", r) and f'extra == "{extra}"' in r for r in requirements
        ), (package, extra)


def test_the_sdist_holds_what_builds_the_wheel_and_no_tests(
    built: tuple[Path, Path, list[str]],
) -> None:
    top = f"minidl-{minidl.__version__}"
    with tarfile.open(built[0]) as sdist:
        names = [name.removeprefix(f"{top}/") for name in sdist.getnames()]
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= set(names)
    assert set(_source_files()) <= {name.removeprefix("src/") for name in names}
    assert [name for name in names if name == "tests" or name.startswith("tests/")] == []
