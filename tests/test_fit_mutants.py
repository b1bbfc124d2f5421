"""Tests that a second mutation audit of fit's training loop (minidl/train.py) found missing:
fit against a loop written out by hand in float64 (the order of the steps, the schedule's
interval, the history's records, resuming at start_epoch, early stopping), and refusals that
leave the model as it was. Each fails with a small change of train.py that the suite missed."""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Callable
from typing import Any, Literal

import pytest
import torch
from torch import Tensor

from minidl import nn, optim
from minidl.data import BatchIterator
from minidl.train import EpochRecord, History, error_rate, fit
from tests.helpers import F64, unfolded
from tests.test_fit_signals import Signalling

Interval = Literal["epoch", "batch"]


def _data(samples: int = 23) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A training set of ``samples`` (23: batches of 5 end with one of 3) and a validation set."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 3, generator=generator, dtype=F64)
    y = torch.randint(0, 3, (samples,), generator=generator)
    x_validation = torch.randn(17, 3, generator=generator, dtype=F64)
    y_validation = torch.randint(0, 3, (17,), generator=generator)
    return x, y, x_validation, y_validation


class _Setup:
    """A float64 model, its SGD with momentum and an exponential schedule of ``interval``."""

    def __init__(self, interval: Interval) -> None:
        self.model = nn.mlp(
            (3, 6, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1)
        )
        self.optimizer = optim.SGD(self.model.parameters(), lr=0.3, momentum=0.9)
        self.scheduler: optim.LRScheduler = optim.ExponentialDecay(
            self.optimizer, gamma=0.8, interval=interval
        )
        self.generator = torch.Generator().manual_seed(2)


def _hand_loop(
    setup: _Setup,
    x: Tensor,
    y: Tensor,
    validation: tuple[Tensor, Tensor],
    *,
    start: int,
    epochs: int,
    batch_size: int,
    drop_last: bool = False,
    max_grad_norm: float | None = None,
    on_epoch: Callable[[EpochRecord], object] | None = None,
) -> History:
    """The user's own loop that fit documents, its records written out by hand."""
    model, optimizer, scheduler = setup.model, setup.optimizer, setup.scheduler
    criterion = nn.CrossEntropyLoss()
    history = History()
    model.train()
    for epoch in range(start, epochs):
        lr = optimizer.lr
        losses = []
        for x_batch, y_batch in BatchIterator(
            x, y, batch_size, generator=setup.generator, drop_last=drop_last
        ):
            optimizer.zero_grad()
            loss = criterion(model(x_batch), y_batch)
            model.backward(criterion.backward())
            if max_grad_norm is not None:
                nn.clip_grad_norm_(optimizer.params, max_grad_norm)
            optimizer.step()
            losses.append(float(loss))
            if scheduler.interval == "batch":
                history.batch_lr.append(optimizer.lr)
                scheduler.step()
        if scheduler.interval == "epoch":
            scheduler.step()
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(torch.tensor(losses, dtype=F64).sum()) / len(losses),
            lr=lr,
            validation_error=error_rate(model, *validation),
        )
        # (the curves written out, not by History.append, which is under test too)
        history.train_loss.append(record.train_loss)
        history.validation_error.append(record.validation_error)
        history.lr.append(record.lr)
        if on_epoch is not None and on_epoch(record):
            break
    return history


def _parameters(model: nn.Module) -> list[Tensor]:
    return [parameter.data.clone() for parameter in model.parameters()]


def _assert_same_state(mine: _Setup, theirs: _Setup) -> None:
    for a, b in zip(_parameters(mine.model), _parameters(theirs.model), strict=True):
        assert torch.equal(a, b)
    assert mine.optimizer.step_count == theirs.optimizer.step_count
    assert mine.optimizer.lr == theirs.optimizer.lr
    assert mine.scheduler.last_step == theirs.scheduler.last_step
    assert torch.equal(mine.generator.get_state(), theirs.generator.get_state())


@pytest.mark.parametrize("interval", ["epoch", "batch"])
@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
def test_fit_resumed_at_start_epoch_trains_and_records_as_the_hand_written_loop(
    interval: Interval, drop_last: bool
) -> None:
    """Epochs 0-1, then a resumed call for epochs 2-4 with the saved history, train bit for bit
    as one hand-written float64 loop of epochs 0-4: the same parameters, optimizer step count,
    rate, schedule step and shuffles; the history records each epoch's number, the mean of its
    batches' losses (a short last batch counted once, or dropped), the rate at its start, the
    validation error after it and, per batch, the rate each batch used; on_epoch gets each
    epoch's record, numbered from 0 across both calls."""
    x, y, x_validation, y_validation = _data()
    mine, theirs = _Setup(interval), _Setup(interval)
    records: list[EpochRecord] = []
    expected_records: list[EpochRecord] = []
    options: dict[str, Any] = {
        "batch_size": 5,
        "scheduler": mine.scheduler,
        "validation": (x_validation, y_validation),
        "generator": mine.generator,
        "drop_last": drop_last,
        "max_grad_norm": 0.5,
        "on_epoch": records.append,
    }
    criterion = nn.CrossEntropyLoss()
    with unfolded():
        history = fit(mine.model, criterion, mine.optimizer, x, y, epochs=2, **options)
        history = fit(
            mine.model, criterion, mine.optimizer, x, y, epochs=5, start_epoch=2,
            history=history, **options,
        )  # fmt: skip
    expected = _hand_loop(
        theirs, x, y, (x_validation, y_validation), start=0, epochs=5, batch_size=5,
        drop_last=drop_last, max_grad_norm=0.5, on_epoch=expected_records.append,
    )  # fmt: skip
    assert [record.epoch for record in records] == [0, 1, 2, 3, 4]
    assert records == expected_records
    batches = 4 if drop_last else 5
    assert len(history.train_loss) == 5
    assert len(history.batch_lr) == (5 * batches if interval == "batch" else 0)
    assert history == expected
    assert history.train_loss == expected.train_loss  # (no NaN here: plain list equality)
    assert history.validation_error == expected.validation_error
    assert history.lr == expected.lr
    assert history.batch_lr == expected.batch_lr
    assert mine.optimizer.step_count == theirs.optimizer.step_count == 5 * batches
    assert mine.scheduler.last_step == (5 * batches if interval == "batch" else 5)
    _assert_same_state(mine, theirs)


@pytest.mark.parametrize("interval", ["epoch", "batch"])
def test_on_epoch_sees_the_schedule_stepped_and_a_stop_ends_the_run_as_the_hand_loop(
    interval: Interval,
) -> None:
    """on_epoch is called after the epoch's schedule step (a per-epoch schedule already at the
    next epoch's rate, as the user's loop leaves it) with the epoch's record; a True after
    epoch 1 of 5 stops there, that epoch recorded and no later step taken: fit's run, its
    records and what on_epoch saw are the hand-written loop's, bit for bit."""
    x, y, x_validation, y_validation = _data()
    runs: list[list[tuple[int, float, int, int]]] = [[], []]
    setups = [_Setup(interval), _Setup(interval)]

    def watcher(seen: list[tuple[int, float, int, int]], setup: _Setup) -> Callable[..., bool]:
        def on_epoch(record: EpochRecord) -> bool:
            seen.append(
                (record.epoch, setup.optimizer.lr, setup.scheduler.last_step,
                 setup.optimizer.step_count)
            )  # fmt: skip
            return record.epoch == 1

        return on_epoch

    mine, theirs = setups
    with unfolded():
        history = fit(
            mine.model, nn.CrossEntropyLoss(), mine.optimizer, x, y, epochs=5, batch_size=5,
            scheduler=mine.scheduler, validation=(x_validation, y_validation),
            generator=mine.generator, on_epoch=watcher(runs[0], mine),
        )  # fmt: skip
    expected = _hand_loop(
        theirs, x, y, (x_validation, y_validation), start=0, epochs=5, batch_size=5,
        on_epoch=watcher(runs[1], theirs),
    )  # fmt: skip
    steps = 5 if interval == "batch" else 1
    assert (
        runs[0]
        == runs[1]
        == [
            (0, 0.3 * 0.8**steps, steps, 5),
            (1, 0.3 * 0.8 ** (2 * steps), 2 * steps, 10),
        ]
    )
    assert history == expected
    assert len(history.train_loss) == 2
    _assert_same_state(mine, theirs)


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")
def test_a_ctrl_c_in_a_step_is_raised_after_that_batchs_schedule_step() -> None:
    """A Ctrl-C as the update of batch 2 (of 5) begins is raised before batch 3: batch 2's step
    and its per-batch schedule step are both done (the schedule at step 2, two rates in
    history.batch_lr, as the hand loop leaves them after two batches), so that a checkpoint
    taken then resumes with the schedule in step with the optimizer."""
    x, y, _, _ = _data()
    model = nn.mlp((3, 6, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))
    optimizer = Signalling(model.parameters(), lr=0.3, momentum=0.9, at=2, number=signal.SIGINT)
    scheduler = optim.ExponentialDecay(optimizer, gamma=0.8, interval="batch")
    history = History()
    with unfolded(), pytest.raises(KeyboardInterrupt):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=5,
            scheduler=scheduler, generator=torch.Generator().manual_seed(2),
            history=history)  # fmt: skip
    assert optimizer.step_count == 2
    assert scheduler.last_step == 2
    assert optimizer.lr == 0.3 * 0.8**2
    assert history.batch_lr == [0.3, 0.3 * 0.8]  # (the rates batches 1 and 2 used)
    assert history.train_loss == []


def test_a_refused_schedule_leaves_the_models_modes_as_they_were() -> None:
    """A OneCycle built for fewer steps than the run would take is refused before training,
    the model's modules left in their own modes (a model in evaluation mode stays in it, a
    module kept in evaluation mode inside a training model too): fit's model.train() comes
    after every check."""
    x, y, _, _ = _data()
    model = nn.mlp((3, 6, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))
    model[1].eval()
    modes = [module.training for module in model.modules()]
    optimizer = optim.SGD(model.parameters(), lr=0.3)
    scheduler = optim.OneCycle(optimizer, max_lr=1.0, total_steps=9)
    before = _parameters(model)
    with pytest.raises(ValueError, match=r"^fit: the scheduler OneCycle has rates up to step 9 "):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=5,
            scheduler=scheduler)  # fmt: skip
    assert [module.training for module in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(_parameters(model), before, strict=True))
    assert optimizer.step_count == 0 and scheduler.last_step == 0


def test_a_one_cycle_built_for_exactly_the_run_trains_it_resumed_as_the_hand_loop() -> None:
    """A OneCycle of total_steps = epochs * batches (10: 2 epochs of 5 batches) is no step too
    short: fit trains epoch 0, then, resumed at start_epoch 1 with the schedule at step 5, the
    5 steps left (its step limit counts the epochs still to run, not those already done),
    ending at step 10, bit for bit as the hand loop."""
    x, y, x_validation, y_validation = _data()
    mine, theirs = _Setup("batch"), _Setup("batch")
    for setup in (mine, theirs):
        setup.scheduler = optim.OneCycle(setup.optimizer, max_lr=0.5, total_steps=10)
    options: dict[str, Any] = {
        "batch_size": 5,
        "scheduler": mine.scheduler,
        "validation": (x_validation, y_validation),
        "generator": mine.generator,
    }
    criterion = nn.CrossEntropyLoss()
    with unfolded():
        history = fit(mine.model, criterion, mine.optimizer, x, y, epochs=1, **options)
        assert mine.scheduler.last_step == 5
        history = fit(
            mine.model, criterion, mine.optimizer, x, y, epochs=2, start_epoch=1,
            history=history, **options,
        )  # fmt: skip
    expected = _hand_loop(
        theirs, x, y, (x_validation, y_validation), start=0, epochs=2, batch_size=5
    )
    assert history == expected
    assert mine.scheduler.last_step == 10
    _assert_same_state(mine, theirs)


class _NaNAtEpochTwo(optim.LRScheduler):
    """Per epoch, 0.3, then NaN at step 2 (a schedule of one's own, without a rate_bound: fit
    cannot look for it before training)."""

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return math.nan if step == 2 else 0.3


def test_a_per_epoch_schedule_refused_at_an_epochs_end_leaves_that_epoch_unrecorded() -> None:
    """A per-epoch schedule whose step at the end of epoch 1 raises stops fit there, in the
    schedule's words with a note naming the epoch: both epochs trained (10 steps), the
    schedule left at step 1, and the history given holding epoch 0 only (epoch 1, whose
    schedule step failed, is not recorded; on_epoch was not called for it)."""
    x, y, _, _ = _data()
    model = nn.mlp((3, 6, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))
    optimizer = optim.SGD(model.parameters(), lr=0.3)
    scheduler = _NaNAtEpochTwo(optimizer)
    history = History()
    seen: list[int] = []
    with unfolded(), pytest.raises(ValueError) as info:
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=3, batch_size=5,
            scheduler=scheduler, generator=torch.Generator().manual_seed(2), history=history,
            on_epoch=lambda record: seen.append(record.epoch))  # fmt: skip
    assert str(info.value).startswith("_NaNAtEpochTwo.step: the rate of step 2 is nan ")
    assert info.value.__notes__ == [  # type: ignore[attr-defined]
        "fit stepped the schedule at the end of epoch 1: the model was trained on the whole "
        "epoch, which is not recorded"
    ]
    assert optimizer.step_count == 10
    assert scheduler.last_step == 1
    assert len(history.train_loss) == len(history.lr) == 1
    assert math.isnan(history.validation_error[0])  # (no validation set: NaN, not 0 %)
    assert seen == [0]


class _OnFifth(nn.Module):
    """A module of one's own that subtracts the fifth sample (an IndexError on fewer)."""

    def forward(self, x: Tensor) -> Tensor:
        return x - x[4]

    def backward(self, grad_output: Tensor) -> Tensor:
        grad = grad_output.clone()
        grad[4] -= grad_output.sum(0)
        return grad


def test_a_module_that_needs_a_whole_batch_is_tried_on_the_first_batch_and_trains() -> None:
    """fit's trial, refused on the first sample, runs the first batch (here of 6 samples, which
    the module takes), not some smaller slice of it: the model trains bit for bit as the hand
    loop (batches of 6 of 24 samples, every one holding a fifth sample)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=generator, dtype=F64)
    y = torch.randint(0, 2, (24,), generator=generator)

    def build() -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(3, 4, dtype=F64, generator=torch.Generator().manual_seed(1)),
            _OnFifth(),
            nn.Tanh(),
            nn.Linear(4, 2, dtype=F64, generator=torch.Generator().manual_seed(2)),
        )

    model, twin = build(), build()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    with unfolded():
        history = fit(model, criterion, optimizer, x, y, epochs=2, batch_size=6,
                      generator=torch.Generator().manual_seed(5))  # fmt: skip
    twin_optimizer = optim.SGD(twin.parameters(), lr=0.1)
    losses: list[float] = []
    batches = BatchIterator(x, y, 6, generator=torch.Generator().manual_seed(5))
    for _ in range(2):
        epoch: list[float] = []
        for x_batch, y_batch in batches:
            twin_optimizer.zero_grad()
            epoch.append(float(criterion(twin(x_batch), y_batch)))
            twin.backward(criterion.backward())
            twin_optimizer.step()
        losses.append(float(torch.tensor(epoch, dtype=F64).sum()) / len(epoch))
    assert history.train_loss == losses
    for parameter, expected in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(parameter.data, expected.data)


def test_histories_and_records_are_equal_only_when_their_numbers_are() -> None:
    """Two histories (or records) are equal when their curves hold equal numbers, a NaN equal
    to a NaN (a run without a validation set); one number apart, or one epoch more, they are
    unequal (False, not an error: a history compared with its checkpoint's)."""
    nan = float("nan")
    first = History(train_loss=[1.0, 0.5], validation_error=[nan, nan], lr=[0.1, 0.1])
    same = History(train_loss=[1.0, 0.5], validation_error=[nan, nan], lr=[0.1, 0.1])
    assert first == same
    assert first != History(train_loss=[1.0, 0.25], validation_error=[nan, nan], lr=[0.1, 0.1])
    assert first != History(train_loss=[1.0, 0.5], validation_error=[nan, 3.0], lr=[0.1, 0.1])
    assert first != History(train_loss=[1.0], validation_error=[nan], lr=[0.1])
    assert first != History(
        train_loss=[1.0, 0.5], validation_error=[nan, nan], lr=[0.1, 0.1], batch_lr=[0.1]
    )
    record = EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=nan)
    assert record == EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=nan)
    assert hash(record) == hash(EpochRecord(epoch=0, train_loss=1.0, lr=0.1, validation_error=nan))
    assert record != EpochRecord(epoch=0, train_loss=2.0, lr=0.1, validation_error=nan)
    assert record != EpochRecord(epoch=1, train_loss=1.0, lr=0.1, validation_error=nan)


class _ToLargest(optim.LRScheduler):
    """Per batch, 0.01, then the largest finite float32 from step 2 on; its rate_bound
    infinite (unknown, say), so that fit looks at every step's rate before training."""

    _interval = "batch"

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return torch.finfo(torch.float32).max if step >= 2 else 0.01

    @property
    def rate_bound(self) -> float:
        return math.inf


def test_a_rate_of_the_largest_finite_value_of_the_dtype_is_not_refused_before_training() -> None:
    """fit refuses a schedule's rate beyond the largest finite value of the parameters' dtype,
    as the optimizer would; the largest finite value itself, which the optimizer takes, is no
    reason to refuse the run: it trains, the rate at that value after its steps."""
    largest = torch.finfo(torch.float32).max
    model = nn.mlp((2, 3, 2), "tanh", generator=torch.Generator().manual_seed(0))
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    scheduler = _ToLargest(optimizer)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1] * 4)
    with unfolded():
        history = fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=4,
                      scheduler=scheduler)  # fmt: skip
    assert history.batch_lr == [0.01, 0.01]
    assert scheduler.last_step == 2 and optimizer.lr == largest


def test_a_folded_fit_trains_on_from_the_parameters_on_epoch_changed() -> None:
    """Where fit folds its steps (an mlp, a built-in loss and optimizer, float64), a change
    that on_epoch makes to the parameters (halving the first weight after each epoch) is where
    the next epoch trains on from: the run agrees to rounding with the step-by-step loop's,
    which a folded step that kept its own copy of the parameters after on_epoch would miss."""
    x, y, _, _ = _data(40)

    def run(fold: bool) -> list[Tensor]:
        model = nn.mlp((3, 6, 3), "tanh", dtype=F64, generator=torch.Generator().manual_seed(1))
        optimizer = optim.SGD(model.parameters(), lr=0.3, momentum=0.9)

        def halve(record: EpochRecord) -> None:
            first = model[0]
            assert isinstance(first, nn.Linear)
            first.weight.data.mul_(0.5)

        with contextlib.nullcontext() if fold else unfolded():
            fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=3, batch_size=8,
                generator=torch.Generator().manual_seed(2), on_epoch=halve)  # fmt: skip
        return _parameters(model)

    for folded, plain in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(folded, plain, rtol=1e-10, atol=1e-12)
