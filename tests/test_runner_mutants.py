"""Behaviour of ``minidl reproduce``'s runner, pool, training and configuration that a second
mutation audit found untested.

Each test checks a value a user relies on (a refusal's type and message, a number computed by
hand, a state left as it was) against an oracle written out here, not against the code under
test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from minidl.experiments.config import TABLE_II, Experiment
from minidl.experiments.runner import RunSettings, run_experiments


@pytest.mark.parametrize("seed", [True, False])
def test_run_settings_refuse_a_bool_seed(seed: bool) -> None:
    """A bool is an int to Python, but no seed: ``base_seed=True`` would be written into the
    report and results.json as ``true`` and seed the run as 1. Refused when the settings are
    made, in their name, as a float is."""
    with pytest.raises(TypeError, match=f"^RunSettings: base_seed must be an int, got {seed}$"):
        RunSettings(
            rounds=1, base_seed=seed, tables="2", quick=False, epochs_override=1, command=""
        )


@pytest.mark.parametrize("seed", [True, False])
def test_run_experiments_refuses_a_bool_seed_before_anything_trains(seed: bool) -> None:
    """``run_experiments(rows, 1, True)`` is refused in its own name before any group trains
    (the progress callback never called), as a seed of another type is."""
    seen: list[object] = []
    with pytest.raises(TypeError, match=f"^run_experiments: base_seed must be an int, got {seed}$"):
        run_experiments(
            [TABLE_II[0]], 1, seed, epochs=1, on_epoch=lambda *record: seen.append(record)
        )
    assert seen == []


def test_run_settings_refuse_tables_of_no_str_as_a_type_error() -> None:
    """``tables=2`` (an int, not the str "2") is refused as a TypeError, the type of the
    error of experiments_for_tables that it rewords in RunSettings' name (a ValueError would
    read as a choice outside 1,2,3); a str outside the choice stays a ValueError."""
    with pytest.raises(
        TypeError,
        match=r"^RunSettings: tables: experiments_for_tables: tables must be a str, got int$",
    ):
        RunSettings(rounds=1, base_seed=0, tables=2, quick=False, epochs_override=1, command="")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"^RunSettings: tables: experiments_for_tables: tables must be a comma-separated "
        r"choice from 1,2,3 \(or I,II,III\), got '4'$",
    ):
        RunSettings(rounds=1, base_seed=0, tables="4", quick=False, epochs_override=1, command="")


def test_previous_files_that_cannot_be_put_back_are_named_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a move into ``out`` fails and two files set aside cannot be put back, the error's
    note names both, in the order they were tried (the last set aside first), as "they are"
    in the folder kept aside, which holds them as they were; the new files are back where
    they came from."""
    from minidl.experiments import runner

    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")
    staging = tmp_path / ".staging"
    staging.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (staging / name).write_text(f"new {name[0]}")
    replace = os.replace

    def refusing(source: Any, target: Any, **kwargs: Any) -> None:
        put_back = Path(source).parent.name.startswith(".previous-")
        if Path(target) == tmp_path / "c.txt" or put_back:
            raise PermissionError(1, "Operation not permitted", str(source))
        replace(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", refusing)
    hidden: list[Path] = []
    incoming = [(staging / name, name) for name in ("a.txt", "b.txt", "c.txt")]
    with pytest.raises(PermissionError) as info:
        runner._move_in(tmp_path, incoming, [], hidden)
    monkeypatch.undo()
    assert hidden == []
    (aside,) = tmp_path.glob(".previous-*")
    assert {p.name: p.read_text() for p in aside.iterdir()} == {"a.txt": "old a", "b.txt": "old b"}
    assert {p.name: p.read_text() for p in staging.iterdir()} == {
        "a.txt": "new a",
        "b.txt": "new b",
        "c.txt": "new c",
    }
    assert getattr(info.value, "__notes__", None) == [
        f"reproduce could not put back the previous run's b.txt, a.txt: they are in {aside}"
    ]


def _returns_an_empty_str(group: list[Experiment], *args: object, **kwargs: object) -> object:
    return ""


def test_run_experiments_refuses_an_empty_str_from_a_train_function_as_no_results() -> None:
    """A str is a sequence, and an empty one holds no row that is not a RowResult: a train
    function of one's own that returned ``""`` is still refused as no list of RowResult, a
    TypeError naming what it returned (not as a ValueError about missing rows)."""
    with pytest.raises(
        TypeError,
        match=r"^run_experiments: train returned '' for a group of 1 rows; it must return a list "
        r"of RowResult, one per row of the group, in its order$",
    ):
        run_experiments([TABLE_II[0]], 1, 0, epochs=1, train=_returns_an_empty_str)  # type: ignore[arg-type]
