"""Behaviour of minidl.experiments.training and minidl.experiments.runner that a fourth
mutation audit found untested (after tests/test_training_mutants.py, test_runner_mutants.py and
test_runner_gaps.py).

Each test checks a value a user relies on (a refusal's type and message, a number computed by
hand, a state left as it was) against an oracle written out here, not against the code under
test.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from minidl.data import make_disk_data
from minidl.experiments import runner
from minidl.experiments.config import TABLE_I, TABLE_II, Experiment
from minidl.experiments.runner import (
    RunSettings,
    count_epochs,
    progress_label,
    run_experiments,
    stack_groups,
)
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import (
    RowResult,
    make_round_data,
    train_round,
    train_row,
    train_rows,
)
from minidl.train import EpochRecord, error_rate


def _settings(**change: object) -> RunSettings:
    options: dict[str, object] = {
        "rounds": 1,
        "base_seed": 0,
        "tables": "2",
        "quick": False,
        "epochs_override": 1,
        "command": "t",
    }
    options.update(change)
    return RunSettings(**options)  # type: ignore[arg-type]


def _no_training(group: Sequence[Experiment], *args: object, **kwargs: object) -> list[RowResult]:
    return [RowResult(experiment=row, rounds=(), seconds=0.0) for row in group]


# --- training.py ---------------------------------------------------------------------------


def test_a_row_of_one_round_has_no_standard_deviation() -> None:
    """The sample standard deviation of one round is undefined: ``nan`` (the report shows no
    spread), not 0.0 (which would read as rounds that agreed); the mean is that round's error."""
    result = train_row(TABLE_II[0], 1, 0, epochs=0)
    assert math.isnan(result.sd)
    assert result.mean == result.rounds[0].test_error


@pytest.mark.parametrize(("rounds", "kind"), [(0, ValueError), (1.0, TypeError)])
def test_train_row_refuses_bad_rounds_in_its_own_name(rounds: object, kind: type) -> None:
    """``train_row(row, 0, ...)`` is refused (not an empty row whose mean fails later in
    statistics' words), in train_row's name, as a float count is."""
    with pytest.raises(kind, match=f"^train_row: rounds must be an integer >= 1, got {rounds}$"):
        train_row(TABLE_II[0], rounds, 0, epochs=0)  # type: ignore[arg-type]


def test_train_rows_gives_each_row_its_epochs_and_each_round_its_index() -> None:
    """train_rows trains each row for the ``epochs`` given (one here, not the row's 100), and
    calls on_epoch with the row and each round's own index, as train_rows_batched does."""
    calls: list[tuple[str, int, int]] = []

    def on_epoch(experiment: Experiment, index: int, record: EpochRecord) -> None:
        calls.append((experiment.label, index, record.epoch))

    (result,) = train_rows([TABLE_II[0]], 2, 0, epochs=1, on_epoch=on_epoch)
    assert [len(r.validation_curve) for r in result.rounds] == [1, 1]
    assert calls == [("SGD, momentum 0", 0, 0), ("SGD, momentum 0", 1, 0)]


def test_a_rounds_data_are_drawn_from_its_data_seed() -> None:
    """A round's data set is make_disk_data's from the round's data seed (the one the report
    gives), not from its initialisation seed."""
    row = TABLE_II[0]
    seeds = round_seeds(3, 1)
    assert seeds.data != seeds.init
    data = make_round_data(row, seeds)
    expected = make_disk_data(1000, 1000, 1000, seed=seeds.data, dtype=torch.float32)
    for got, want in zip(
        (data.train, data.validation, data.test),
        (expected.train, expected.validation, expected.test),
        strict=True,
    ):
        assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y)


def test_a_rounds_validation_curve_is_measured_on_the_validation_set() -> None:
    """The validation error of a round's last epoch is the trained network's error on the
    round's validation set (which differs from its test set), not on its test set."""
    row = TABLE_II[0]
    seeds = round_seeds(0, 0)
    result = train_round(row, seeds, epochs=2)
    data = make_round_data(row, seeds)
    validation = error_rate(result.model, data.validation.x, data.validation.y)
    assert result.validation_curve[-1] == validation
    assert validation != error_rate(result.model, data.test.x, data.test.y)


# --- runner.py: RunSettings -------------------------------------------------------------------


def test_run_settings_take_exactly_a_million_rounds() -> None:
    """10**6 rounds is the most the report's Welch test takes: accepted; one more refused."""
    assert _settings(rounds=10**6).rounds == 10**6
    with pytest.raises(
        ValueError, match=r"^RunSettings: rounds must be an integer in \[1, 10\*\*6\]"
    ):
        _settings(rounds=10**6 + 1)


def test_run_settings_keep_a_numpy_round_count_as_an_int() -> None:
    """A numpy integer count is taken and kept as a plain int (results.json's writing fails on
    a numpy integer, after the training)."""
    settings = _settings(rounds=np.int64(1), jobs=np.int64(2))
    assert type(settings.rounds) is int and settings.rounds == 1
    assert type(settings.jobs) is int and settings.jobs == 2


def test_quick_run_settings_of_several_rounds_are_refused() -> None:
    """Quick mode trains 1 round a row: ``rounds=2`` with an epochs override is refused, as is
    ``rounds=1`` without one."""
    message = (
        r"^RunSettings: quick mode trains 1 round of a few epochs a row, got rounds=2 and "
        r"epochs_override=5; give rounds=1 and an epochs_override, or quick=False$"
    )
    with pytest.raises(ValueError, match=message):
        _settings(quick=True, rounds=2, epochs_override=5)
    with pytest.raises(ValueError, match="got rounds=1 and epochs_override=None"):
        _settings(quick=True, rounds=1, epochs_override=None)


# --- runner.py: run_experiments ---------------------------------------------------------------


def test_run_experiments_refuses_no_train_function() -> None:
    """``train=None`` is refused before anything trains, in run_experiments' name (None is the
    no-callback value of on_epoch and when_idle only), not as "'NoneType' object is not
    callable"."""
    with pytest.raises(TypeError, match=r"^run_experiments: train must be a function, got None$"):
        run_experiments([TABLE_II[0]], 1, 0, epochs=1, train=None)  # type: ignore[arg-type]


def _returns_nothing(
    group: Sequence[Experiment], *args: object, **kwargs: object
) -> list[RowResult]:
    return []


def test_run_experiments_refuses_a_train_function_that_leaves_rows_out() -> None:
    """A train function of one's own that returned no result for a row of its group is
    refused, naming how many rows have results, not returned as fewer results than rows."""
    with pytest.raises(
        ValueError,
        match=r"^run_experiments: train returned results for 0 of the 1 rows; it must return "
        r"one result per row of each group, in the group's order$",
    ):
        run_experiments([TABLE_II[0]], 1, 0, epochs=1, train=_returns_nothing)


def test_run_experiments_refuses_a_str_of_rows_in_its_own_name() -> None:
    """A table's name given for its rows (``"2"``) is refused as no sequence of Experiment,
    naming its type, in run_experiments' name."""
    with pytest.raises(
        TypeError,
        match=r"^run_experiments: experiments must be a sequence of Experiment \(a list or "
        r"tuple\), got str$",
    ):
        run_experiments("2", 1, 0, epochs=1)  # type: ignore[arg-type]


def test_identical_rows_train_as_the_first_of_them() -> None:
    """Of rows that train identically, the first given is the one trained (its experiment is
    the one the train function, and so the progress callback, sees); each row gets the result
    with its own experiment."""
    seen: list[list[str]] = []

    def train(group: Sequence[Experiment], *args: object, **kwargs: object) -> list[RowResult]:
        seen.append([row.label for row in group])
        return _no_training(group)

    without_effect, plain = TABLE_II[4], TABLE_II[0]
    results = run_experiments([without_effect, plain], 1, 0, epochs=1, train=train)
    assert seen == [["SGD, momentum 0.5, as published (momentum without effect)"]]
    assert [r.experiment for r in results] == [without_effect, plain]


def test_a_run_of_one_stack_trains_here_whatever_the_jobs() -> None:
    """With one stack there is no worker: ``jobs=2`` trains here, so a train function that
    could not be sent to a worker (defined inside a function) is used, not refused."""

    def local_train(
        group: Sequence[Experiment], *args: object, **kwargs: object
    ) -> list[RowResult]:
        return _no_training(group)

    results = run_experiments([TABLE_II[0]], 1, 0, epochs=1, train=local_train, jobs=2)
    assert [r.experiment for r in results] == [TABLE_II[0]]


# --- runner.py: stacks, epochs, labels ---------------------------------------------------------


def test_rows_that_fill_a_stack_exactly_are_not_split() -> None:
    """In 2 rounds a stack of 25 models holds 12 rows: Table I's 12 rows are one stack, not
    two; in 3 rounds (8 rows a stack at most) they are two even stacks of 6."""
    assert [len(g) for g in stack_groups(TABLE_I, 2)] == [12]
    assert [len(g) for g in stack_groups(TABLE_I, 3)] == [6, 6]


def test_a_stacks_rows_are_ordered_by_loss_and_activations() -> None:
    """The rows of a stack are side by side by loss and activations: Table I (all
    cross-entropy) in the order of its activations' names, ELU's first and Tanh's last."""
    (group,) = stack_groups(TABLE_I, 1)
    activations = [row.activations for row in group]
    assert activations == sorted(row.activations for row in TABLE_I)
    assert (group[0].label, group[-1].label) == ("ELU", "Tanh")


def test_count_epochs_counts_identical_rows_once() -> None:
    """Table II's 9 rows train 7 times (its two "momentum without effect" rows are the
    momentum-0 row): 7 rows x 100 epochs in a round, 7 x 3 x 2 with 3 epochs in 2 rounds."""
    assert count_epochs(TABLE_II, 1, None) == 700
    assert count_epochs(TABLE_II, 2, 3) == 42


def test_the_progress_bar_shortens_a_rows_label_beside_a_single_other_row() -> None:
    """ " and 1 more row" follows a label cut to 24 characters, as " and N more rows" does."""
    assert (
        progress_label(TABLE_II[4], 1, others=1)
        == "Table II | SGD, momentum 0.5, as pu and 1 more row | round 1"
    )


# --- runner.py: checks before a run ----------------------------------------------------------


@pytest.mark.parametrize("world_size", ["1", " 1\n"])
def test_a_world_size_of_one_is_a_run_alone(
    world_size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WORLD_SIZE=1`` (spaces around it too) is one process: not refused; 2 is refused."""
    monkeypatch.setenv("WORLD_SIZE", world_size)
    runner._check_not_launched()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"^reproduce runs as one process.*WORLD_SIZE='2'"):
        runner._check_not_launched()


@pytest.mark.parametrize(("dtype", "size"), [("float32", 4), ("float64", 8)])
def test_rounds_are_refused_exactly_past_the_machines_memory(
    monkeypatch: pytest.MonkeyPatch, dtype: str, size: int
) -> None:
    """A run's largest stack takes, per round, each row's parameters and their gradients
    (4 bytes each in float32, 8 in float64: a number of the row's own dtype) and the round's
    3000 points (2 features of that dtype and an int64 label each). Rounds that take exactly
    the machine's memory are accepted, a byte less memory refuses them."""
    row = TABLE_II[0]
    rows = [dataclasses.replace(row, protocol=dataclasses.replace(row.protocol, dtype=dtype))]
    sizes = row.protocol.sizes
    parameters = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    per_round = 2 * parameters * size + 3000 * (2 * size + 8)
    rounds = 1000

    def memory(total: int) -> None:
        pages = {"SC_PAGE_SIZE": 1, "SC_PHYS_PAGES": total}
        monkeypatch.setattr(os, "sysconf", lambda name: pages[name])

    memory(rounds * per_round)
    runner._check_rounds_fit(rows, rounds)
    memory(rounds * per_round - 1)
    with pytest.raises(
        ValueError,
        match=rf"^--rounds 1000: the run trains the 1000 rounds of 1 row at once, whose "
        rf"parameters, their gradients and data sets alone take {rounds * per_round} bytes, "
        rf"more than this machine's memory \({rounds * per_round - 1} bytes\)$",
    ):
        runner._check_rounds_fit(rows, rounds)


def test_a_folder_named_results_json_in_out_is_in_the_way(tmp_path: Path) -> None:
    """A folder where the run writes its results.json is refused before the training, as one
    named report.md is."""
    (tmp_path / "results.json").mkdir()
    why = runner._folder_in_the_way(tmp_path, TABLE_II)
    assert why is not None and why.endswith(
        "is a folder, where the run writes its results.json; move it"
    )


def test_reproduce_refuses_an_out_that_is_a_device_not_a_folder() -> None:
    """``out`` that exists and is no folder (``/dev/null``, no regular file either) is refused
    as such before anything is made, not left to fail in os.makedirs' words."""
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null here")
    with pytest.raises(
        ValueError, match=r"^reproduce: out /dev/null is a file, expected a folder$"
    ):
        runner.reproduce(_settings(), "/dev/null", progress=False, summary=False)


def test_reproduce_restores_the_callers_thread_count_after_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reproduce trains on one torch thread and gives the caller back its own count, here
    after a run whose training failed."""

    def stop(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stopped in the training")

    monkeypatch.setattr(runner, "run_experiments", stop)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match=r"^stopped in the training$"):
            runner.reproduce(_settings(), tmp_path / "out", progress=False, summary=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_row_mixing_a_published_activation_with_standard_ones_is_built() -> None:
    """A row may mix a standard activation with a published fault's (Experiment takes it):
    its network is built with the three Linear layers and each layer's own activation."""
    import dataclasses

    from minidl.experiments.training import build_network

    row = dataclasses.replace(TABLE_I[0], activations=("relu", "elu-published", "relu"))
    network = build_network(row, torch.Generator().manual_seed(0))
    names = [type(layer).__name__ for layer in network]
    assert names[0::2] == ["Linear"] * 4
    assert len(names) == 7
