"""minidl.experiments.pool and minidl.experiments.training under a fifth mutation audit:
tests, each against an oracle written out here, that kill the mutants the suite let through,
and three refusals it found made in other functions' words, or too late (fixed)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
import re
import signal
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from minidl import nn
from minidl.experiments import pool
from minidl.experiments.batched import train_row_batched, train_rows_batched
from minidl.experiments.config import TABLE_I, TABLE_II, TABLE_III, Experiment, StepSchedule
from minidl.experiments.training import (
    build_network,
    build_optimizer,
    build_scheduler,
    train_row,
    train_rows,
)
from minidl.optim import StepDecay
from tests.pool_helpers import report_at_exit, sleep_then_nothing, threads_in_worker
from tests.test_experiments import _forced

# A train function that no worker can import although it is defined at the top level of a
# module: pickle fails on it with PicklingError (its name is "<lambda>"), not AttributeError.
_TOP_LEVEL_LAMBDA = lambda group, rounds, base_seed, **kwargs: []  # noqa: E731


class _Process:
    """A worker as ``_how_workers_ended`` reads it: a pid, an exit code, the timeouts of its
    joins."""

    def __init__(self, pid: int, exitcode: int | None) -> None:
        self.pid, self.exitcode = pid, exitcode
        self.joins: list[float | None] = []

    def join(self, timeout: float | None = None) -> None:
        self.joins.append(timeout)


def test_how_workers_ended_called_on_the_executors_own_thread_does_not_join_it() -> None:
    """Called on the executor's thread itself (which cannot join itself: RuntimeError
    "cannot join current thread"), the exits are read at once."""
    processes = {0: _Process(100, -signal.SIGKILL)}
    executor = types.SimpleNamespace(
        _processes=processes, _executor_manager_thread=threading.current_thread()
    )
    assert pool._how_workers_ended(executor) == (  # type: ignore[arg-type]
        "process 100 killed by SIGKILL, as the out-of-memory killer does"
    )


def test_how_workers_ended_waits_for_the_executors_thread_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An executor's thread that does not end is awaited ``_MANAGER_SECONDS`` at most (here
    0.2 s), and each worker 1 s at most: the message is then made from the exits known."""
    monkeypatch.setattr(pool, "_MANAGER_SECONDS", 0.2)
    release = threading.Event()
    manager = threading.Thread(target=release.wait)
    manager.start()
    processes = {0: _Process(100, 3), 1: _Process(101, None)}
    answer: list[str] = []
    try:
        executor = types.SimpleNamespace(_processes=processes, _executor_manager_thread=manager)
        caller = threading.Thread(
            target=lambda: answer.append(pool._how_workers_ended(executor)),  # type: ignore[arg-type]
            daemon=True,
        )
        caller.start()
        caller.join(timeout=5.0)
        finished = not caller.is_alive()
    finally:
        release.set()
        manager.join()
        caller.join()
    assert finished, "_how_workers_ended waited for the executor's thread past its limit"
    assert answer == ["process 100 exited with status 3"]
    assert [p.joins for p in processes.values()] == [[1.0], [1.0]]


def test_train_groups_refuses_a_top_level_lambda_in_its_own_name() -> None:
    """A lambda at the top level of a module cannot be sent to a worker either: pickle fails
    with PicklingError (not AttributeError, as for a function defined inside another); it is
    refused in train_groups' name, a TypeError whose cause is pickle's error, before any worker
    starts."""
    with pytest.raises(pickle.PicklingError):
        pickle.dumps(_TOP_LEVEL_LAMBDA)
    with pytest.raises(
        TypeError,
        match=r"^train_groups: the train function runs in worker processes, so it must be "
        r"importable \(a function defined at the top level of a module\), got <function ",
    ) as info:
        pool.train_groups([[TABLE_II[0]]], 1, 0, jobs=2, train=_TOP_LEVEL_LAMBDA)
    assert isinstance(info.value.__cause__, pickle.PicklingError)
    assert multiprocessing.active_children() == []


def test_the_longest_groups_go_first_by_the_epochs_trained_not_the_rows_own() -> None:
    """The groups are ordered by the epochs they train times their rows: with ``epochs`` given,
    that count, not the rows' own ``epochs``. One worker trains them in that order: the group
    of two rows (2 x 1 epochs) before the one of one row of 300 epochs (1 x 1 epochs trained)."""
    long_row = dataclasses.replace(TABLE_II[0], epochs=300)
    groups = [[long_row], [TABLE_II[1], TABLE_II[2]]]
    calls: list[Experiment] = []
    pool.train_groups(
        groups,
        1,
        0,
        jobs=1,
        train=report_at_exit,
        epochs=1,
        on_epoch=lambda experiment, index, record: calls.append(experiment),
    )
    assert calls == [TABLE_II[1], TABLE_II[2], long_row]
    # Without ``epochs``, the rows' own: 300 x 1 before 100 x 2.
    calls.clear()
    pool.train_groups(
        groups,
        1,
        0,
        jobs=1,
        train=report_at_exit,
        on_epoch=lambda experiment, index, record: calls.append(experiment),
    )
    assert calls == [long_row, TABLE_II[1], TABLE_II[2]]


def test_exit_with_parent_does_nothing_in_a_process_with_no_parent() -> None:
    """Outside a worker (no multiprocessing parent) nothing is watched: no thread starts, no
    error."""
    assert multiprocessing.parent_process() is None
    before = set(threading.enumerate())
    pool._exit_with_parent()
    assert set(threading.enumerate()) == before


def test_how_workers_ended_names_every_signal_by_its_name_sighup_included() -> None:
    """A worker killed by SIGHUP (signal 1, the lowest number) is named by its signal, as any
    other, not taken for an exit status of -1."""
    processes = {0: _Process(100, -signal.SIGHUP), 1: _Process(101, 1)}
    executor = types.SimpleNamespace(_processes=processes)
    assert pool._how_workers_ended(executor) == (  # type: ignore[arg-type]
        "process 100 killed by SIGHUP; process 101 exited with status 1"
    )


def test_when_idle_gets_a_copy_of_the_results_finished_by_its_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Each call of ``when_idle`` gets the groups finished by then in a dict of its own: one it
    keeps does not change as more groups finish, and one it empties takes nothing from the
    results returned."""
    from minidl.experiments.config import FIGURE_1
    from tests.pool_helpers import PID_FOLDER_ENV, train_cross_entropy_late

    monkeypatch.setenv(PID_FOLDER_ENV, str(tmp_path))
    late = next(e for e in FIGURE_1 if e.loss == "cross-entropy")
    kept: list[tuple[dict[int, Any], list[int]]] = []

    def when_idle(finished: dict[int, Any]) -> None:
        kept.append((finished, sorted(finished)))
        (tmp_path / "idle").touch()
        finished.clear()

    results = pool.train_groups(
        [[TABLE_II[0]], [late]],
        1,
        0,
        jobs=2,
        train=train_cross_entropy_late,
        epochs=1,
        when_idle=when_idle,
    )
    assert [[r.experiment for r in group] for group in results] == [[TABLE_II[0]], [late]]
    assert kept and all(keys == [0] for _, keys in kept)
    assert all(finished == {} for finished, _ in kept)


def test_a_broken_pools_error_keeps_the_executors_as_its_cause() -> None:
    """A worker killed (SIGKILL, as the out-of-memory killer) breaks the pool: the error names
    how it ended, and keeps the executor's own BrokenProcessPool as its cause (for a debugger,
    and the traceback's "The above exception was the direct cause")."""
    from concurrent.futures.process import BrokenProcessPool

    from minidl.experiments.config import FIGURE_1
    from tests.pool_helpers import kill_late

    late = next(e for e in FIGURE_1 if e.loss == "cross-entropy")
    with pytest.raises(
        BrokenProcessPool,
        match=r"^train_groups: a worker process ended before its rows were trained \(process "
        r"\d+ killed by SIGKILL, as the out-of-memory killer does\); the other workers were "
        r"stopped$",
    ) as info:
        pool.train_groups([[late]], 1, 0, jobs=1, train=kill_late, epochs=1)
    assert isinstance(info.value.__cause__, BrokenProcessPool)
    assert multiprocessing.active_children() == []


# -- training ---------------------------------------------------------------------------------


def test_build_network_refuses_more_activations_than_hidden_layers() -> None:
    """A row of published activations with one activation per hidden layer too many is refused
    as one with too few is, naming the row and both counts, the generator as it was (not built
    with an activation after the output layer)."""
    published = next(row for row in TABLE_I if row.label == "ELU, as published (SELU's alpha)")
    hidden = len(published.protocol.sizes) - 2
    names = ("elu-published",) * (hidden + 1)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    with pytest.raises(
        ValueError,
        match=rf"^build_network: {re.escape(published.key)} has {hidden + 1} activations for "
        rf"{hidden} hidden layers$",
    ):
        build_network(_forced(published, activations=names), generator)
    assert torch.equal(generator.get_state(), state)


def test_a_rows_time_is_the_whole_rows_and_each_rounds_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row's ``seconds`` runs from the row's start to its end (the rounds and what comes
    between them), a round's from its start to its end: with a clock that advances 1 s per
    reading, 2 rounds take 1 s each and the row 5 s (its start, 2 x 2 readings, its end)."""
    from minidl.experiments import training

    ticks = iter(range(100))
    monkeypatch.setattr(
        training, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
    )
    result = training.train_row(TABLE_II[0], 2, 0, epochs=0)
    assert [r.seconds for r in result.rounds] == [1.0, 1.0]
    assert result.seconds == 5.0


def test_a_round_of_0_epochs_trains_nothing() -> None:
    """``epochs=0`` overrides the row's epochs (as any count does): the round's network is the
    one drawn from its init seed, untrained, and its curves are empty."""
    from minidl.experiments.seeds import round_seeds
    from minidl.experiments.training import train_round

    row = TABLE_II[0]
    seeds = round_seeds(0, 0)
    result = train_round(row, seeds, epochs=0)
    assert (result.validation_curve, result.train_loss, result.lr_curve) == ((), (), ())
    initial = build_network(row, torch.Generator().manual_seed(seeds.init))
    for got, want in zip(result.model.parameters(), initial.parameters(), strict=True):
        assert torch.equal(got.data, want.data)


# -- pristine-code defects found while reading (these fail on the pristine tree) ----------------


def test_build_network_refuses_a_standard_rows_activation_count_in_its_own_name() -> None:
    """A row of standard activations with an activation per hidden layer too few is refused,
    as a published row's is, in build_network's name with the row's key. (Fixed: refused in
    mlp's words, "mlp: expected 3 activation names for 3 hidden layers, got 1", which named
    neither build_network nor the row.)"""
    row = _forced(TABLE_II[0], activations=("tanh",))
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with pytest.raises(
        ValueError,
        match=rf"^build_network: {re.escape(row.key)} has 1 activations for 3 hidden layers$",
    ):
        build_network(row, generator)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(
    "function", [train_rows, train_rows_batched], ids=["train_rows", "train_rows_batched"]
)
@pytest.mark.parametrize(
    ("experiments", "got"),
    [("2", "'2'"), ([TABLE_II[0], None], "None at position 1")],
    ids=["a str", "None row"],
)
def test_the_row_trainers_refuse_what_is_no_sequence_of_experiments_in_their_own_name(
    function: Callable[..., object], experiments: Any, got: str
) -> None:
    """train_rows and train_rows_batched (public) refuse a table's name given for their rows,
    and a row that is no Experiment, with a TypeError in their own name, before anything
    trains. (Fixed: "'str' object has no attribute 'protocol'", an AttributeError naming
    nothing, after the rows before it had trained; the batched trainer's "replace() should be
    called on dataclass instances".)"""
    name = function.__name__  # type: ignore[attr-defined]
    with pytest.raises(
        TypeError, match=rf"^{name}: experiments must be a sequence of Experiment, got {got}$"
    ):
        function(experiments, 1, 0, epochs=0)


@pytest.mark.parametrize(
    "function", [train_row, train_row_batched], ids=["train_row", "train_row_batched"]
)
def test_the_row_trainers_refuse_an_on_epoch_that_is_no_function_before_training(
    function: Callable[..., object],
) -> None:
    """An ``on_epoch`` that is no function, or a row that is no Experiment, is refused in the
    trainer's name before the first epoch trains, as train_groups refuses them. (Fixed:
    "'int' object is not callable", raised after the first epoch of the first round had
    trained.)"""
    name = function.__name__  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match=rf"^{name}: on_epoch must be a function or None, got 5$"):
        function(TABLE_II[0], 1, 0, epochs=1, on_epoch=5)
    with pytest.raises(TypeError, match=rf"^{name}: experiment must be an Experiment, got None$"):
        function(None, 1, 0, epochs=1)


def test_a_step_decay_row_gets_its_own_gamma_not_step_decays_default() -> None:
    """T30 (StepDecay built without ``gamma=``): every row of the catalogue has gamma 0.5, which
    is StepDecay's default too, so a row of one's own with gamma 0.25 tells them apart; the
    rate after 3 epochs (step_size 3) is lr * 0.25, after 6 lr * 0.25**2."""
    row = next(r for r in TABLE_III if r.label == "SGD, step decay")
    row = dataclasses.replace(row, scheduler=StepSchedule(gamma=0.25, step_size=3))
    optimizer = build_optimizer(row, list(nn.mlp((2, 2)).parameters()))
    scheduler = build_scheduler(row, optimizer)
    assert isinstance(scheduler, StepDecay)
    assert (scheduler.step_size, scheduler.gamma) == (3, 0.25)
    rates = [optimizer.lr]
    for _ in range(6):
        scheduler.step()
        rates.append(optimizer.lr)
    lr = row.lr
    assert rates == [lr, lr, lr, lr * 0.25, lr * 0.25, lr * 0.25, lr * 0.25**2]


def test_each_worker_trains_with_one_intra_op_thread_whatever_the_parents() -> None:
    """P25 (``torch.set_num_threads(2)`` in the worker): the module promises one intra-op thread
    per worker; with the parent at 3 threads, each worker (two groups, two jobs) reports 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        results: Any = pool.train_groups(
            [[TABLE_II[0]], [TABLE_II[1]]], 1, 0, jobs=2, train=threads_in_worker
        )
    finally:
        torch.set_num_threads(threads)
    assert results == [[1], [1]]


@pytest.mark.skipif(sys.platform != "linux", reason="the workers are forked on Linux only")
def test_each_worker_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """P10 (``keep_freed_memory()`` left out of ``_start_worker``): every worker sets glibc's
    thresholds (minidl reproduce's workers are its own). The forked workers run the parent's
    module, so a recording stand-in shows each call: one per worker, each in its own process."""
    import os

    def record() -> bool:
        (tmp_path / f"kept-{os.getpid()}").touch()
        return True

    monkeypatch.setattr(pool, "keep_freed_memory", record)
    results: Any = pool.train_groups(
        [[TABLE_II[0]], [TABLE_II[1]]], 1, 0, jobs=2, train=threads_in_worker
    )
    assert results == [[1], [1]]
    pids = {int(p.name.removeprefix("kept-")) for p in tmp_path.glob("kept-*")}
    assert len(pids) == 2 and os.getpid() not in pids


def test_a_worker_found_ended_is_given_the_grace_before_the_pool_is_called_broken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """P12 (the grace of ``_ENDED_GRACE_SECONDS`` made 0): a worker the parent finds ended
    while groups are left is given the grace to be reported by the executor. With the check
    made to say "ended" all along and a grace of 60 s, groups of 0.5 s train to their end."""
    monkeypatch.setenv("MINIDL_TEST_SLEEP", "0.5")
    monkeypatch.setattr(pool, "_ENDED_GRACE_SECONDS", 60.0)
    monkeypatch.setattr(pool, "_a_worker_ended", lambda executor: True)
    groups = [[TABLE_II[0]], [TABLE_II[1]]]
    results: Any = pool.train_groups(groups, 1, 0, jobs=2, train=sleep_then_nothing)
    assert results == [[TABLE_II[0].key], [TABLE_II[1].key]]


def test_a_worker_found_ended_breaks_the_pool_once_the_grace_is_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """P13 (the time a worker was first found ended taken anew at every check): the grace runs
    from the first time; P16 (no ``_stop_workers`` on BrokenProcessPool): the pool's end then
    waits for the groups left, which nobody stops. So with the check made to say "ended" all
    along and a grace of 0.3 s, groups of 20 s are given up (their workers stopped) long before
    they end, with train_groups' BrokenProcessPool, caused by its own."""
    import time
    from concurrent.futures.process import BrokenProcessPool

    monkeypatch.setenv("MINIDL_TEST_SLEEP", "20")
    monkeypatch.setattr(pool, "_ENDED_GRACE_SECONDS", 0.3)
    monkeypatch.setattr(pool, "_a_worker_ended", lambda executor: True)
    start = time.monotonic()
    with pytest.raises(
        BrokenProcessPool,
        match=r"^train_groups: a worker process ended before its rows were trained \(.*\); "
        r"the other workers were stopped$",
    ) as caught:
        pool.train_groups([[TABLE_II[0]], [TABLE_II[1]]], 1, 0, jobs=2, train=sleep_then_nothing)
    assert time.monotonic() - start < 15
    assert str(caught.value.__cause__) == "a worker ended, unnoticed by the executor"
