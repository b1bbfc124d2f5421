"""examples/digits.py: the quick mode runs and prints both accuracies; the full run reaches the
test accuracy that the example and the README document, for minidl and for its torch twin."""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

#: The tests that load the data (the module itself imports without scikit-learn).
needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="the digits example's data need scikit-learn (dev extra)",
)

ROOT = Path(__file__).resolve().parent.parent
PATTERN = re.compile(r"^(minidl|torch) +test accuracy: ([0-9.]+) %$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """The example sets one torch thread; give the other tests their setting back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" / "digits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _printed(text: str) -> dict[str, float]:
    return {name: float(value) for name, value in PATTERN.findall(text)}


@needs_sklearn
def test_quick_mode_runs_and_prints_both_accuracies(
    digits: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    minidl_accuracy, torch_accuracy = digits.main(["--quick"])
    printed = _printed(capsys.readouterr().out)
    assert printed == {
        "minidl": round(minidl_accuracy, 2),
        "torch": round(torch_accuracy, 2),
    }
    assert 10.0 < minidl_accuracy <= 100.0  # better than chance after two epochs


@needs_sklearn
def test_full_run_reaches_the_documented_accuracy(
    digits: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    digits.main([])
    printed = _printed(capsys.readouterr().out)
    documented = dict(zip(("minidl", "torch"), digits.DOCUMENTED_ACCURACY, strict=True))
    assert printed == documented
    assert min(documented.values()) >= 97.0
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, value in documented.items():
        assert re.search(rf"{name}\W.*{value:.2f} %", readme, re.IGNORECASE), (
            f"README.md does not report the {name} accuracy {value:.2f} %"
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
        (["--epochs", "-1"], "argument --epochs: expected an integer >= 1, got '-1'"),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295], got '-1'"),
        # Numbers that argparse alone took for unknown options ("expected one argument"):
        (["--epochs", "-1e3"], "argument --epochs: expected an integer >= 1, got '-1e3'"),
        (["--epochs", "-inf"], "argument --epochs: expected an integer >= 1, got '-inf'"),
        (["--seed", "-NaN"], "argument --seed: expected an integer in [0, 4294967295], got '-NaN'"),
        (["--seed", "-.5e1"], "argument --seed: expected an integer in [0, 4294967295]"),
        # ... and a value like an option that is no number is still an option:
        (["--epochs", "-x"], "argument --epochs: expected one argument"),
        (["--seed", "5000000000"], "argument --seed: expected an integer in [0, 4294967295]"),
        (["--quick", "--epochs", "5"], "argument --epochs: not allowed with argument --quick"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    digits: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """They used to end in tracebacks from fit or scikit-learn (or, for --quick with --epochs,
    to ignore --quick). A value like a negative number is judged by its option's type, as by
    minidl's command line, whose parser the example shares."""
    with pytest.raises(SystemExit) as info:
        digits.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_describes_every_option_in_plain_text(
    digits: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seed`` had no help line, and the description showed the docstring's ``torch.nn``
    markup."""
    with pytest.raises(SystemExit) as info:
        digits.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text
    options = text.split("options:", 1)[1]
    for option in ("--quick", "--epochs EPOCHS", "--seed SEED"):
        line = next(line for line in options.splitlines() if line.strip().startswith(option))
        assert line.strip() != option, f"{option} has no help"
    assert f"(default {digits.EPOCHS})" in options
    assert f"(default {digits.SEED})" in options
    assert "[0, 2**32 - 1]" in options


def test_without_scikit_learn_it_says_what_to_install(
    digits: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without scikit-learn (the examples extra), --help still works, and a run stops before
    training with one line naming what to install, exit status 1 (the script stopped at its
    first line with a traceback: no --help either)."""
    monkeypatch.setitem(sys.modules, "sklearn", None)  # (import raises ModuleNotFoundError)
    with pytest.raises(SystemExit) as info:
        digits.main(["--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")
    with pytest.raises(SystemExit) as info:
        digits.main(["--quick"])
    assert info.value.code == 1
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err.endswith(
        ": the digits data set comes with scikit-learn, which is not installed; install "
        "minidl's examples extra: pip install 'minidl[examples]' (or pip install scikit-learn)\n"
    )
    assert output.err.count("\n") == 1


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """A finder that raises ``KeyboardInterrupt`` when scikit-learn is imported: Ctrl-C pressed
    while it loads (a second or so)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "sklearn":
            raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["import", "training"])
def test_ctrl_c_prints_one_line_and_exits_130(
    digits: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    """Ctrl-C while scikit-learn is imported or while the networks train stops the run with one
    line and the shell's status for SIGINT, 130, as minidl train does (it ended in a traceback
    of the training loop, exit status 1)."""
    if where == "import":
        monkeypatch.delitem(sys.modules, "sklearn", raising=False)
        monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    else:
        if importlib.util.find_spec("sklearn") is None:
            pytest.skip("the digits example's data need scikit-learn (dev extra)")

        def interrupted(epochs: int, seed: int) -> tuple[float, float]:
            raise KeyboardInterrupt

        monkeypatch.setattr(digits, "run", interrupted)
    try:
        digits.main(["--quick"])
    except KeyboardInterrupt:  # (raised on, pytest would stop the whole session)
        pytest.fail("the interrupt left main: a traceback")
    except SystemExit as exit:
        assert exit.code == 130
    else:
        pytest.fail("main returned after the interrupt")
    output = capsys.readouterr()
    assert output.out == ""
    assert output.err.endswith(": interrupted\n")
    assert output.err.count("\n") == 1
