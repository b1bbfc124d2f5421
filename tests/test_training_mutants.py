"""minidl.experiments.training, which no earlier mutation review aimed at: each row's loss,
optimizer, schedule and data set are built with the row's own settings (the batched trainer
builds them with the same functions, so comparing the two cannot tell)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minidl import nn
from minidl.experiments import training
from minidl.experiments.config import CHOICES, FIGURE_1, TABLE_I, TABLE_II, TABLE_III
from minidl.experiments.faithful import PublishedAdadelta
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import (
    build_criterion,
    build_optimizer,
    build_scheduler,
    make_round_data,
)
from minidl.optim import SGD, Adadelta, CyclicLR, StepDecay
from tests.test_report import experiment


def _parameters() -> list[nn.Parameter]:
    return list(nn.mlp((2, 2)).parameters())


def test_each_figure_1_mse_row_gets_its_own_reduction() -> None:
    """Fig. 1's two MSE rows differ only in the MSE's reduction: the paper's, and PyTorch's
    mean over the outputs too; their losses of one batch differ by the number of outputs."""
    rows = [row for row in FIGURE_1 if row.loss == "mse"]
    assert sorted(row.mse_reduction for row in rows) == ["mean", "paper"]
    prediction, target = torch.tensor([[0.2, 0.9], [0.4, 0.1]]), torch.tensor([0, 1])
    losses = {}
    for row in rows:
        criterion = build_criterion(row)
        assert isinstance(criterion, nn.MSELoss) and criterion.reduction == row.mse_reduction
        losses[row.mse_reduction] = float(criterion(prediction, target))
    assert losses["paper"] == pytest.approx(2 * losses["mean"])


def test_each_optimizer_gets_the_rows_settings() -> None:
    """SGD with the row's rate and momentum; ADADELTA, and the published one, with the row's
    rho and eps: the chosen ones by default (ADADELTA's defaults), other ones where the row
    has them."""
    by_label = {row.label: row for row in TABLE_II}
    sgd = build_optimizer(by_label["SGD, momentum 0.9"], _parameters())
    assert isinstance(sgd, SGD)
    assert (sgd.lr, sgd.momentum) == (by_label["SGD, momentum 0.9"].lr, 0.9)
    chosen = build_optimizer(by_label["ADADELTA"], _parameters())
    assert (chosen.rho, chosen.eps) == (CHOICES.adadelta_rho, CHOICES.adadelta_eps)  # type: ignore[attr-defined]
    own = {"adadelta_rho": 0.8, "adadelta_eps": 1e-4}
    adadelta = build_optimizer(dataclasses.replace(by_label["ADADELTA"], **own), _parameters())
    assert type(adadelta) is Adadelta and (adadelta.rho, adadelta.eps) == (0.8, 1e-4)
    published = by_label["ADADELTA, as published (accumulators overwritten by sqrt_)"]
    faulty = build_optimizer(dataclasses.replace(published, **own), _parameters())
    assert type(faulty) is PublishedAdadelta and (faulty.rho, faulty.eps) == (0.8, 1e-4)


def test_each_schedule_gets_the_rows_settings() -> None:
    """Step decay every ``step_size`` epochs by ``gamma``; CLR between its rates with a
    half-cycle of ``batches_up`` batches."""
    by_label = {row.label: row for row in TABLE_III}
    step_row, clr_row = by_label["SGD, step decay"], by_label["SGD, CLR"]
    step = build_scheduler(step_row, build_optimizer(step_row, _parameters()))
    assert isinstance(step, StepDecay)
    schedule = step_row.scheduler
    assert (step.step_size, step.gamma) == (schedule.step_size, schedule.gamma)  # type: ignore[union-attr]
    clr = build_scheduler(clr_row, build_optimizer(clr_row, _parameters()))
    assert isinstance(clr, CyclicLR)
    cycle = clr_row.scheduler
    assert (clr.base_lr, clr.max_lr) == (cycle.base_lr, cycle.max_lr)  # type: ignore[union-attr]
    assert clr.step_size_up == cycle.batches_up(clr_row.protocol)  # type: ignore[union-attr]
    assert build_scheduler(by_label["SGD"], build_optimizer(by_label["SGD"], _parameters())) is None


def test_a_rounds_data_has_the_protocols_set_sizes() -> None:
    """Train, validation and test sets of the protocol's sizes, each its own (the catalogue's
    are all 1000 points, which would not tell the validation set from the test set)."""
    row = TABLE_I[1]
    row = dataclasses.replace(
        row,
        protocol=dataclasses.replace(row.protocol, n_train=300, n_validation=200, n_test=100),
    )
    data = make_round_data(row, round_seeds(0, 0))
    assert [len(split.y) for split in (data.train, data.validation, data.test)] == [300, 200, 100]


def test_train_row_draws_each_rounds_seeds_with_the_protocols_data_policy() -> None:
    """``train_row`` seeds round r with ``round_seeds(base_seed, r)`` under the protocol's
    policy of new data per round or not (the chosen one is ``round_seeds``' default, so the
    other one is set here)."""
    row = TABLE_I[1]
    row = dataclasses.replace(
        row, protocol=dataclasses.replace(row.protocol, new_data_per_round=False)
    )
    result = training.train_row(row, 2, 7, epochs=0)
    assert [r.seeds for r in result.rounds] == [
        round_seeds(7, index, new_data=False) for index in range(2)
    ]
    assert round_seeds(7, 1, new_data=False) != round_seeds(7, 1)


def test_a_rounds_rate_curve_is_the_rate_at_the_start_of_each_epoch() -> None:
    """Under CLR the rate changes at every batch: the round's rate of each epoch is that of
    the epoch's first batch, from the base rate at the first."""
    row = experiment("III", "SGD, CLR")
    result = training.train_round(row, round_seeds(0, 0), epochs=3)
    batches = row.protocol.batches_per_epoch
    assert len(result.batch_lr) == 3 * batches
    assert result.lr_curve == result.batch_lr[::batches]
    assert result.lr_curve[0] == row.scheduler.base_lr  # type: ignore[union-attr]
    assert len(set(result.lr_curve)) == 3
