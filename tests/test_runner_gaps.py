"""Behaviour of ``minidl reproduce``'s runner, pool, batched training and configuration that a
third mutation audit found untested (after tests/test_runner_mutants.py).

Each test checks a value a user relies on (a refusal's type and message, a number computed by
hand, a state left as it was) against an oracle written out here, not against the code under
test.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import torch

from minidl.cli import main
from minidl.experiments import batched, runner
from minidl.experiments.batched import train_rows_batched
from minidl.experiments.config import (
    PROTOCOL,
    TABLE_I,
    TABLE_II,
    CyclicSchedule,
    Experiment,
    Protocol,
)
from minidl.experiments.pool import train_groups
from minidl.experiments.runner import RunSettings, run_experiments
from minidl.experiments.training import RowResult

#: Seconds the group beside a failing one would train (see fail_or_wait).
_WAIT_SECONDS = 30.0


def fail_or_wait(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: object
) -> list[RowResult]:
    """A train function (importable, for a worker) that fails at once for Table I's group and
    takes :data:`_WAIT_SECONDS` for any other."""
    if group[0].table == "I":
        raise ValueError("fail_or_wait: Table I fails")
    time.sleep(_WAIT_SECONDS)
    return [RowResult(experiment=row, rounds=(), seconds=0.0) for row in group]


def test_a_protocol_of_two_widths_is_a_network_without_hidden_layer() -> None:
    """``sizes=(2, 2)`` (input and output, no hidden layer) is a protocol; one width alone is
    no network and refused as a TypeError naming what was given."""
    protocol = dataclasses.replace(PROTOCOL, sizes=(2, 2))
    assert protocol.sizes == (2, 2)
    with pytest.raises(
        TypeError,
        match=r"^Protocol: sizes must be a tuple of layer widths, input first, got \(2,\)$",
    ):
        dataclasses.replace(PROTOCOL, sizes=(2,))
    assert isinstance(protocol, Protocol)


@pytest.mark.parametrize("sizes", [(2, 25, 3), (3, 25, 2), (2, 25, 1)])
def test_a_protocol_must_begin_and_end_with_two_widths(sizes: tuple[int, ...]) -> None:
    """The disk's points have 2 coordinates and 2 classes: a network of another input or
    output width is refused when the protocol is made, not when its rows' data are drawn."""
    with pytest.raises(
        ValueError,
        match=r"^Protocol: sizes must begin and end with 2 \(the disk's points have 2 "
        rf"coordinates and 2 classes\), got \({sizes[0]}, 25, {sizes[2]}\)$",
    ):
        dataclasses.replace(PROTOCOL, sizes=sizes)


@pytest.mark.parametrize(("rounds", "kind"), [(0, ValueError), (1.0, TypeError)])
def test_run_experiments_refuses_bad_rounds_in_its_own_name(rounds: object, kind: type) -> None:
    """``run_experiments(rows, 0, ...)`` is refused in run_experiments' name (the function the
    caller called), not in that of a helper it calls, before anything trains."""
    seen: list[object] = []
    with pytest.raises(
        kind, match=f"^run_experiments: rounds must be an integer >= 1, got {rounds}$"
    ):
        run_experiments(
            [TABLE_II[0]],
            rounds,  # type: ignore[arg-type]
            0,
            epochs=1,
            on_epoch=lambda *record: seen.append(record),
        )
    assert seen == []


def test_a_worker_error_stops_the_other_workers_at_once() -> None:
    """A group whose train function raises ends train_groups with that error at once: the
    other workers are stopped, not left to train their groups to the end (30 s here) while
    the caller waits for the pool to shut down."""
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^fail_or_wait: Table I fails$"):
        train_groups([[TABLE_II[0]], [TABLE_I[0]]], 1, 0, jobs=2, train=fail_or_wait)
    assert time.monotonic() - start < _WAIT_SECONDS / 2


def test_a_cyclic_schedule_may_hold_its_rate_and_refuses_a_peak_below_its_base() -> None:
    """``max_lr == base_lr`` is a flat cycle (as minidl.optim.CyclicLR takes it), accepted;
    a peak below the base is refused, naming both rates."""
    flat = CyclicSchedule(base_lr=0.1, max_lr=0.1, step_size_up_epochs=2)
    assert (flat.base_lr, flat.max_lr) == (0.1, 0.1)
    with pytest.raises(
        ValueError, match=r"^CyclicSchedule: max_lr must be at least base_lr \(0.1\), got 0.05$"
    ):
        CyclicSchedule(base_lr=0.1, max_lr=0.05, step_size_up_epochs=2)


@pytest.mark.parametrize("optimizer", ["adadelta", "adadelta-published"])
def test_momentum_is_refused_with_either_adadelta(
    optimizer: Literal["adadelta", "adadelta-published"],
) -> None:
    """Momentum applies to SGD only: a row of the published ADADELTA (which ignores it as
    plain ADADELTA does) given ``momentum=0.5`` is refused when made, naming the optimizer,
    not recorded in results.json as if it had been used."""
    adadelta = TABLE_II[7]
    assert adadelta.optimizer == "adadelta-published"
    with pytest.raises(
        ValueError,
        match=f"^Experiment: momentum applies to SGD only, got momentum 0.5 with optimizer "
        f"'{optimizer}'$",
    ):
        dataclasses.replace(adadelta, optimizer=optimizer, momentum=0.5)


def test_the_largest_finite_rate_of_the_protocols_dtype_is_a_rate() -> None:
    """A learning rate of exactly float32's largest finite value is in its range, and taken by
    a float32 row (as SGD takes it); the next float above it is refused."""
    import math

    largest = float(torch.finfo(torch.float32).max)
    assert dataclasses.replace(TABLE_II[0], label="x", lr=largest).lr == largest
    with pytest.raises(ValueError, match=r"^Experiment: lr 3\.40282346638528[0-9e+]* is beyond"):
        dataclasses.replace(TABLE_II[0], label="x", lr=math.nextafter(largest, math.inf))


def test_tables_are_named_in_roman_numerals_of_either_case() -> None:
    """``--tables ii,i`` selects Tables I and II as ``II,I`` and ``2,1`` do, in table order: the
    roman numerals are read whatever their case."""
    from minidl.experiments.config import TABLES, experiments_for_tables

    assert experiments_for_tables("ii, i") == (*TABLES["1"], *TABLES["2"])
    assert experiments_for_tables("ii, i") == experiments_for_tables("2,1")
    assert experiments_for_tables("Iii") == experiments_for_tables("3")


def test_the_progress_bar_shortens_a_rows_label_further_beside_more_rows() -> None:
    """The bar's description stays short enough for one line: a row's label is cut to 40
    characters alone, and to 24 when " and N more rows" follows it."""
    from minidl.experiments.runner import progress_label

    row = TABLE_II[4]
    assert row.label == "SGD, momentum 0.5, as published (momentum without effect)"
    assert (
        progress_label(row, 5) == "Table II | SGD, momentum 0.5, as published (momentu | rounds 1-5"
    )
    assert (
        progress_label(row, 1, others=3)
        == "Table II | SGD, momentum 0.5, as pu and 3 more rows | round 1"
    )


def test_a_link_to_no_file_in_out_is_put_back_where_a_move_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symbolic link of ``out`` that leads to no file, under a name the run writes, is one
    of the previous run's files too: where a later move fails, it is put back as it was (a
    link to the same target), and the new file goes back to where it came from."""

    os.symlink("nowhere", tmp_path / "a.txt")
    staging = tmp_path / ".staging"
    staging.mkdir()
    for name in ("a.txt", "b.txt"):
        (staging / name).write_text(f"new {name[0]}")
    replace = os.replace

    def refusing(source: Any, target: Any, **kwargs: Any) -> None:
        if Path(target) == tmp_path / "b.txt":
            raise PermissionError(1, "Operation not permitted", str(source))
        replace(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", refusing)
    hidden: list[Path] = []
    incoming = [(staging / name, name) for name in ("a.txt", "b.txt")]
    with pytest.raises(PermissionError, match="Operation not permitted"):
        runner._move_in(tmp_path, incoming, [], hidden)
    monkeypatch.undo()
    assert os.readlink(tmp_path / "a.txt") == "nowhere"
    assert not (tmp_path / "b.txt").exists()
    assert {p.name: p.read_text() for p in staging.iterdir()} == {
        "a.txt": "new a",
        "b.txt": "new b",
    }


@pytest.mark.parametrize("name", ["n_train", "n_validation", "n_test"])
def test_a_protocol_takes_a_set_of_the_most_points_make_disk_data_takes(name: str) -> None:
    """2**59 - 1 points is the largest set make_disk_data takes (its (n, 2) float64 points
    are then just within the largest tensor): a protocol takes it, as the number it was
    given, and refuses one point more."""
    most = 2**59 - 1
    protocol = dataclasses.replace(PROTOCOL, **{name: most})  # type: ignore[arg-type]
    assert getattr(protocol, name) == most
    with pytest.raises(ValueError, match=rf"^Protocol: {name} must be at most 2\*\*59 - 1, got "):
        dataclasses.replace(PROTOCOL, **{name: most + 1})  # type: ignore[arg-type]


def test_train_row_batched_gives_on_epoch_each_rounds_own_index() -> None:
    """train_row_batched trains its rounds at once, and calls on_epoch with each round's own
    index (0 and 1 here) at every epoch, as train_row does one round after the other."""
    from minidl.experiments.batched import train_row_batched

    calls: list[tuple[int, int]] = []
    train_row_batched(
        TABLE_II[0],
        2,
        0,
        epochs=2,
        on_epoch=lambda index, record: calls.append((index, record.epoch)),
    )
    assert sorted(calls) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [epoch for _, epoch in calls] == [0, 0, 1, 1]


def test_a_worker_killed_while_it_sends_its_results_breaks_the_pool_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed (SIGKILL) while it sent its results leaves the executor waiting for the
    rest of the message for good; train_groups sees the worker gone and raises about a second
    later (its grace for the executor to say so), not after a minute or more."""
    from concurrent.futures.process import BrokenProcessPool

    from tests.pool_helpers import PID_FOLDER_ENV, send_part_then_die

    monkeypatch.setenv(PID_FOLDER_ENV, str(tmp_path))

    def on_epoch(*record: object) -> None:
        (tmp_path / "reading").touch()  # (the worker then sends its result, and dies)

    start = time.monotonic()
    with pytest.raises(
        BrokenProcessPool,
        match=r"^train_groups: a worker process ended before its rows were trained \(process "
        r"\d+ killed by SIGKILL, as the out-of-memory killer does\); the other workers were "
        r"stopped$",
    ):
        train_groups([[TABLE_II[0]]], 1, 0, jobs=2, train=send_part_then_die, on_epoch=on_epoch)
    assert time.monotonic() - start < 20.0
    assert (tmp_path / "sent").exists() and (tmp_path / "killed").exists()


class _Bar:
    """A stand-in for tqdm's bar that records its descriptions."""

    descriptions: ClassVar[list[str]] = []

    def __init__(self, **options: object) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def set_description(self, description: str, refresh: bool = True) -> None:
        _Bar.descriptions.append(description)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("jobs", "described"), [(2, ["2 processes"]), (3, ["2 processes"])])
def test_the_progress_bar_names_the_processes_of_a_run_in_two_or_more(
    jobs: int, described: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose stacks train in 2 worker processes (Table II in 4 rounds: two stacks)
    describes its progress bar as "2 processes" before the training starts (the rows' own
    labels are for a run in this one process), with 2 jobs as with more."""
    import tqdm

    from minidl.experiments.runner import RunSettings, reproduce

    def stop(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stopped before the training")

    _Bar.descriptions = []
    monkeypatch.setattr(tqdm, "tqdm", _Bar)
    monkeypatch.setattr(runner, "run_experiments", stop)
    settings = RunSettings(
        rounds=4, base_seed=0, tables="2", quick=False, epochs_override=1, command="t", jobs=jobs
    )
    with pytest.raises(RuntimeError, match=r"^stopped before the training$"):
        reproduce(settings, tmp_path / "out", progress=True, summary=False)
    assert _Bar.descriptions == described
    assert not (tmp_path / "out").exists()


# -- a third pass of mutation testing over runner, pool and batched (2026-12-07) -----------------


def test_run_settings_keep_a_numpy_epochs_override_as_an_int() -> None:
    """A numpy integer ``epochs_override`` is taken and kept as a plain int, as ``rounds`` and
    ``jobs`` are: results.json is written with ``json``, which refuses a numpy integer (after
    the training)."""
    settings = RunSettings(
        rounds=1, base_seed=0, tables="2", quick=True, epochs_override=np.int64(3), command=""
    )
    assert type(settings.epochs_override) is int and settings.epochs_override == 3
    assert json.dumps(settings.epochs_override) == "3"


def test_rows_of_different_stacks_are_refused_naming_all_three() -> None:
    """The refusal of rows of several stacks names every row given, the third too."""
    from minidl.experiments.batched import train_rows_batched
    from minidl.experiments.config import TABLE_III, experiments_for_tables

    rows = [TABLE_III[0], TABLE_III[1], experiments_for_tables("2")[0]]
    with pytest.raises(ValueError) as info:
        train_rows_batched(rows, 1, 0, epochs=1)
    assert str(info.value) == (
        "train_rows_batched: the rows must differ only in activations, loss, optimizer and "
        f"schedule (one stack_key), got {rows[0].key!r}, {rows[1].key!r}, {rows[2].key!r}"
    )


def test_reproduce_with_no_stderr_runs_without_a_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose stderr is closed (``2>&-``: ``sys.stderr`` is None) runs with
    ``progress=True`` as with ``progress=False``: no bar (tqdm would write into None), and the
    run writes its report and JSON."""
    import sys

    from minidl.experiments.runner import reproduce

    settings = RunSettings(
        rounds=1, base_seed=0, tables="2", quick=True, epochs_override=1, command="x"
    )
    monkeypatch.setattr(sys, "stderr", None)
    document = reproduce(settings, tmp_path / "out", progress=True, summary=False)
    monkeypatch.undo()
    assert (tmp_path / "out" / "report.md").is_file()
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written == json.loads(json.dumps(document))
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_an_out_that_links_to_a_file_is_named_as_a_file_not_as_a_link_to_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` a link to a file that exists cannot be made a folder: mkdir's own reason,
    "File exists", is given (true of it), not "a link ... which leads to no file" (said only of
    a link whose target is missing). Nothing is made or removed."""
    from minidl.cli import main

    (tmp_path / "report.txt").write_text("kept")
    path = tmp_path / "link"
    path.symlink_to(tmp_path / "report.txt")
    assert main(["reproduce", "--quick", "--quiet", "--out", str(path)]) == 2
    error = f"minidl reproduce: error: --out {path}: cannot be made a folder (File exists)\n"
    assert capsys.readouterr().err == error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "report.txt"]
    assert (tmp_path / "report.txt").read_text() == "kept"


# The pool's order and the batched rows' seconds (P12, B07, B08 of pool.py's and batched.py's
# mutants, which only tests of progress reporting caught, or none).

# In a worker: how many groups it has been handed so far (its copy, forked, starts at 0).
_calls = itertools.count()


def record_call_order(
    group: Sequence[Experiment], rounds: int, base_seed: int, **kwargs: Any
) -> list[RowResult]:
    """A train function (importable, for the workers): each row's ``seconds`` is the index of
    this call in its worker (0 for the first group it is handed), and its rounds are empty."""
    index = next(_calls)
    return [RowResult(experiment=row, rounds=(), seconds=float(index)) for row in group]


def _longest_first(groups: Sequence[Sequence[Experiment]], epochs: int | None) -> list[int]:
    """The oracle: positions by epochs times rows, longest first, ties in the given order."""
    return sorted(
        range(len(groups)),
        key=lambda i: -(groups[i][0].epochs if epochs is None else epochs) * len(groups[i]),
    )


@pytest.mark.parametrize(
    ("groups", "epochs", "expected"),
    [
        # Same epochs (400 each): the rows decide, 3 > 2 > 1.
        (
            [[TABLE_I[0]], [TABLE_I[1], TABLE_I[2], TABLE_I[3]], [TABLE_I[4], TABLE_I[5]]],
            None,
            [1, 2, 0],
        ),
        # 1 row of 400 epochs against 5 rows of 100: 500 epochs of rows go first.
        (
            [[TABLE_I[0]], [TABLE_II[0], TABLE_II[1], TABLE_II[2], TABLE_II[3], TABLE_II[4]]],
            None,
            [1, 0],
        ),
        # epochs given: every group has the same epochs, the rows alone decide.
        ([[TABLE_II[0]], [TABLE_I[0], TABLE_I[1]]], 2, [1, 0]),
    ],
    ids=["same-epochs", "rows-outweigh-epochs", "epochs-given"],
)
def test_train_groups_hands_the_groups_to_workers_longest_first_by_epochs_times_rows(
    groups: list[list[Experiment]], epochs: int | None, expected: list[int]
) -> None:
    """With one worker (``jobs=1`` still trains in a worker process) the groups are trained in
    the order they are handed out: the call index each group's rows carry is its place in it."""
    assert _longest_first(groups, epochs) == expected  # (the oracle agrees with the table)
    results = train_groups(groups, 1, 0, jobs=1, train=record_call_order, epochs=epochs)
    assert [[r.experiment for r in group] for group in results] == groups
    stamps = [{r.seconds for r in group} for group in results]
    assert all(len(stamp) == 1 for stamp in stamps)  # (one call a group)
    calls = [int(next(iter(stamp))) for stamp in stamps]
    handed = sorted(range(len(groups)), key=lambda position: calls[position])
    assert sorted(calls) == list(range(len(groups)))
    assert handed == expected


class _Clock:
    """``perf_counter`` for batched.py alone: ``start`` at its first call, ``start + elapsed``
    at every later one."""

    def __init__(self, start: float, elapsed: float) -> None:
        self.times = [start, start + elapsed]
        self.calls = 0

    def perf_counter(self) -> float:
        self.calls += 1
        return self.times[min(self.calls - 1, 1)]


@pytest.mark.parametrize(("rows", "rounds"), [(2, 3), (3, 2)])
def test_batched_seconds_are_the_stacks_time_per_model_and_per_row(
    rows: int, rounds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack of K rows of R rounds took 12 s (a fake clock, batched.py's only): each round
    took 12 / (K R) s, each row 12 / K s, and all of them together the 12 s."""
    clock = _Clock(100.0, 12.0)
    monkeypatch.setattr(batched, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    experiments = list(TABLE_I[:rows])
    results = train_rows_batched(experiments, rounds, 0, epochs=1)
    assert clock.calls == 2
    assert [result.experiment for result in results] == experiments
    for result in results:
        assert len(result.rounds) == rounds
        assert [r.seconds for r in result.rounds] == [12.0 / (rows * rounds)] * rounds
        assert result.seconds == 12.0 / rows
    assert sum(result.seconds for result in results) == pytest.approx(12.0, rel=1e-15)


def test_reproduce_names_an_out_refusal_that_gives_no_strerror_by_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OSError of the write probe that carries no errno/strerror (``OSError("...")``) is
    named by its own message, not as "(None)"; the folder made for the run is removed again
    and nothing is trained. (Mutant R30 of a fourth audit: ``error.strerror`` alone.)"""

    def refuse(folder: object) -> None:
        raise OSError("the probe file vanished")

    def reproduce(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "check_folder_takes_files", refuse)
    monkeypatch.setattr(runner, "reproduce", reproduce)
    out = tmp_path / "new" / "results"
    assert main(["reproduce", "--quick", "--quiet", "--out", str(out)]) == 2
    assert capsys.readouterr() == (
        "",
        f"minidl reproduce: error: --out {out}: cannot write into the folder "
        "(the probe file vanished)\n",
    )
    assert list(tmp_path.iterdir()) == []
