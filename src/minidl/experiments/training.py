"""Training one row of a table: its rounds, each from its own seeds.

:func:`train_row` trains the rounds of a row one after the other with :func:`train_round`, and
:func:`train_rows` does so for several rows. The runner's default,
:func:`minidl.experiments.batched.train_rows_batched`, trains the rounds of rows at once with
batched matrix products behind the same signature, returning the same :class:`RowResult`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from minidl._validate import check_int, shown
from minidl.data import DiskData, make_disk_data
from minidl.experiments.config import CyclicSchedule, Experiment, StepSchedule
from minidl.experiments.faithful import PUBLISHED_ACTIVATIONS, PublishedAdadelta
from minidl.experiments.seeds import RoundSeeds, round_seeds
from minidl.nn import ACTIVATIONS, CrossEntropyLoss, Linear, MSELoss, Sequential, mlp
from minidl.nn.loss import Loss
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from minidl.optim import SGD, Adadelta, CyclicLR, StepDecay
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.train import EpochRecord, error_rate, fit

__all__ = [
    "RoundResult",
    "RowResult",
    "build_criterion",
    "build_network",
    "build_optimizer",
    "build_scheduler",
    "make_round_data",
    "train_round",
    "train_row",
    "train_rows",
    "trained_copy",
]


def build_network(experiment: Experiment, generator: torch.Generator) -> Sequential:
    """The row's network, its weights drawn from ``generator``.

    Standard activations go through :func:`minidl.nn.mlp`; rows with a published fault's
    activation build the same ``Linear`` layers in the same order, so a given generator gives
    the same initial weights either way.
    """
    dtype = getattr(torch, experiment.protocol.dtype)
    names = experiment.activations
    sizes = experiment.protocol.sizes
    if len(names) != len(sizes) - 2:
        raise ValueError(
            f"build_network: {experiment.key} has {len(names)} activations for "
            f"{len(sizes) - 2} hidden layers"
        )
    if all(name in ACTIVATIONS for name in names):
        return mlp(sizes, names, dtype=dtype, generator=generator)
    # (every name checked before the first layer draws its weights from the generator)
    makers = {**ACTIVATIONS, **PUBLISHED_ACTIVATIONS}
    for name in names:
        if name not in makers:
            raise ValueError(
                f"build_network: unknown activation {shown(name)} in {experiment.key}; "
                f"expected one of {', '.join(sorted(makers))}"
            )
    layers: list[Module] = []
    for index in range(len(sizes) - 1):
        layers.append(Linear(sizes[index], sizes[index + 1], dtype=dtype, generator=generator))
        if index < len(names):
            layers.append(makers[names[index]]())
    return Sequential(*layers)


def build_criterion(experiment: Experiment) -> Loss:
    """The row's loss: cross-entropy, or the MSE with the row's reduction."""
    if experiment.loss == "cross-entropy":
        return CrossEntropyLoss()
    if experiment.loss == "mse":
        return MSELoss(reduction=experiment.mse_reduction)
    raise ValueError(
        f"build_criterion: loss must be 'cross-entropy' or 'mse', got {shown(experiment.loss)}"
    )


def build_optimizer(experiment: Experiment, parameters: Iterable[Parameter]) -> Optimizer:
    """The row's optimizer on ``parameters`` (a model's ``parameters()``, or a stack's)."""
    if experiment.optimizer == "sgd":
        return SGD(parameters, lr=experiment.lr, momentum=experiment.momentum)
    if experiment.momentum:
        raise ValueError(f"build_optimizer: momentum applies to SGD only ({experiment.key})")
    rho, eps = experiment.adadelta_rho, experiment.adadelta_eps
    if experiment.optimizer == "adadelta":
        return Adadelta(parameters, lr=experiment.lr, rho=rho, eps=eps)
    if experiment.optimizer == "adadelta-published":
        return PublishedAdadelta(parameters, lr=experiment.lr, rho=rho, eps=eps)
    raise ValueError(
        "build_optimizer: optimizer must be 'sgd', 'adadelta' or 'adadelta-published', "
        f"got {shown(experiment.optimizer)}"
    )


def build_scheduler(experiment: Experiment, optimizer: Optimizer) -> LRScheduler | None:
    """The row's learning-rate schedule on ``optimizer`` (``None`` without one)."""
    schedule = experiment.scheduler
    if schedule is None:
        return None
    if isinstance(schedule, StepSchedule):
        return StepDecay(optimizer, step_size=schedule.step_size, gamma=schedule.gamma)
    if isinstance(schedule, CyclicSchedule):
        return CyclicLR(
            optimizer,
            base_lr=schedule.base_lr,
            max_lr=schedule.max_lr,
            step_size_up=schedule.batches_up(experiment.protocol),
        )
    raise TypeError(f"build_scheduler: unknown schedule {schedule!r}")


def make_round_data(experiment: Experiment, seeds: RoundSeeds) -> DiskData:
    """The data set of a round (train, validation, test), normalised with training statistics."""
    protocol = experiment.protocol
    return make_disk_data(
        protocol.n_train,
        protocol.n_validation,
        protocol.n_test,
        seed=seeds.data,
        dtype=getattr(torch, protocol.dtype),
    )


@dataclass(frozen=True)
class RoundResult:
    """What one round produced. Errors are in %."""

    seeds: RoundSeeds
    test_error: float
    train_error: float
    validation_curve: tuple[float, ...]
    """Validation error after each epoch."""
    train_loss: tuple[float, ...]
    """Mean training loss of each epoch."""
    lr_curve: tuple[float, ...]
    """Learning rate at the start of each epoch."""
    batch_lr: tuple[float, ...]
    """Learning rate of each batch (per-batch schedules only, else empty)."""
    seconds: float
    model: Module
    """The trained network (for Fig. 2)."""


@dataclass(frozen=True)
class RowResult:
    """The rounds of one row."""

    experiment: Experiment
    rounds: tuple[RoundResult, ...]
    seconds: float

    @property
    def test_errors(self) -> list[float]:
        """Each round's test error, in %, in the order of the rounds."""
        return [r.test_error for r in self.rounds]

    @property
    def train_errors(self) -> list[float]:
        """Each round's training error, in %, in the order of the rounds."""
        return [r.train_error for r in self.rounds]

    @property
    def mean(self) -> float:
        """Mean test error over the rounds, in %."""
        return statistics.fmean(self.test_errors)

    @property
    def sd(self) -> float:
        """Sample standard deviation of the test error over the rounds (``nan`` for 1 round)."""
        errors = self.test_errors
        return statistics.stdev(errors) if len(errors) > 1 else math.nan


def trained_copy(experiment: Experiment, model: Sequential) -> Sequential:
    """A new network of ``experiment`` holding ``model``'s parameters, and nothing else.

    A trained network keeps what its last forward cached (for the last evaluation, the
    activations of 1000 points: about 0.6 MB for the paper's network). The results keep this
    copy instead, so that the 140 networks of a reproduction neither keep nor send them from
    the ``--jobs`` workers (the peak memory of a one-process run fell from 382 to 337 MB).
    """
    copy = build_network(experiment, torch.Generator())  # its weights are replaced below
    copy.load_state_dict(model.state_dict())
    return copy


def train_round(
    experiment: Experiment,
    seeds: RoundSeeds,
    *,
    epochs: int | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> RoundResult:
    """Train one round of ``experiment`` from ``seeds`` with :func:`minidl.train.fit`.

    ``minidl reproduce`` trains its rounds stacked instead
    (:func:`minidl.experiments.batched.train_rows_batched`): the same computation, whose
    matrix products may sum in another order, so in float32 a round trained here can end a
    test point apart from the report's (the two agree to 1e-12 in float64, but in a round whose
    training diverges, which amplifies the last bits without bound).

    Args:
        experiment: the row.
        seeds: the round's data, initialisation and shuffle seeds.
        epochs: overrides ``experiment.epochs`` (for smoke tests).
        on_epoch: called after every epoch.
    """
    epochs = experiment.epochs if epochs is None else epochs
    start = time.perf_counter()
    data = make_round_data(experiment, seeds)
    model = build_network(experiment, torch.Generator().manual_seed(seeds.init))
    criterion = build_criterion(experiment)
    optimizer = build_optimizer(experiment, model.parameters())
    scheduler = build_scheduler(experiment, optimizer)
    history = fit(
        model,
        criterion,
        optimizer,
        data.train.x,
        data.train.y,
        epochs=epochs,
        batch_size=experiment.protocol.batch_size,
        scheduler=scheduler,
        validation=(data.validation.x, data.validation.y),
        generator=torch.Generator().manual_seed(seeds.shuffle),
        on_epoch=on_epoch,
    )
    return RoundResult(
        seeds=seeds,
        test_error=error_rate(model, data.test.x, data.test.y),
        train_error=error_rate(model, data.train.x, data.train.y),
        validation_curve=tuple(history.validation_error),
        train_loss=tuple(history.train_loss),
        lr_curve=tuple(history.lr),
        batch_lr=tuple(history.batch_lr),
        seconds=time.perf_counter() - start,
        model=trained_copy(experiment, model),
    )


def train_row(
    experiment: Experiment,
    rounds: int,
    base_seed: int,
    *,
    epochs: int | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> RowResult:
    """Train ``rounds`` rounds of ``experiment``; round r uses ``round_seeds(base_seed, r)``.

    Args:
        experiment: the row.
        rounds: number of rounds, >= 1.
        base_seed: the run's base seed.
        epochs: overrides ``experiment.epochs`` (for smoke tests).
        on_epoch: called with ``(round index, record)`` after every epoch.

    Example:
        >>> from minidl.experiments.config import TABLE_I
        >>> result = train_row(TABLE_I[1], rounds=5, base_seed=0, epochs=2)  # a smoke run
        >>> result.mean, result.sd  # the test error over the rounds, in %
        (..., ...)
    """
    rounds = check_int("train_row", "rounds", rounds)
    check_rows("train_row", [experiment], on_epoch, one=True)
    start = time.perf_counter()
    results = []
    for index in range(rounds):
        seeds = round_seeds(base_seed, index, new_data=experiment.protocol.new_data_per_round)
        callback = None if on_epoch is None else _bind_round(on_epoch, index)
        results.append(train_round(experiment, seeds, epochs=epochs, on_epoch=callback))
    return RowResult(
        experiment=experiment, rounds=tuple(results), seconds=time.perf_counter() - start
    )


def train_rows(
    experiments: Sequence[Experiment],
    rounds: int,
    base_seed: int,
    *,
    epochs: int | None = None,
    on_epoch: Callable[[Experiment, int, EpochRecord], None] | None = None,
) -> list[RowResult]:
    """Train each of ``experiments`` with :func:`train_row`, one round after the other.

    The same signature as :func:`minidl.experiments.batched.train_rows_batched`, for
    :func:`minidl.experiments.runner.run_experiments`; ``on_epoch`` is called with
    ``(experiment, round index, record)``.
    """
    check_rows("train_rows", experiments, on_epoch)
    results = []
    for experiment in experiments:
        callback = None
        if on_epoch is not None:
            callback = _bind_experiment(on_epoch, experiment)
        results.append(train_row(experiment, rounds, base_seed, epochs=epochs, on_epoch=callback))
    return results


def check_rows(where: str, experiments: object, on_epoch: object, *, one: bool = False) -> None:
    """Refuse, in ``where``'s name and before anything trains, ``experiments`` that is no
    sequence of :class:`Experiment` (a table's name, a row that is ``None``; ``one``: the single
    row of a function that takes one, as ``[experiment]``), and an ``on_epoch`` that is neither
    a function nor ``None`` (which would fail at the end of the first epoch)."""
    if isinstance(experiments, str) or not isinstance(experiments, Sequence):
        raise TypeError(
            f"{where}: experiments must be a sequence of Experiment, got {shown(experiments)}"
        )
    for position, row in enumerate(experiments):
        if not isinstance(row, Experiment):
            if one:
                raise TypeError(f"{where}: experiment must be an Experiment, got {shown(row)}")
            raise TypeError(
                f"{where}: experiments must be a sequence of Experiment, got {shown(row)} at "
                f"position {position}"
            )
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"{where}: on_epoch must be a function or None, got {shown(on_epoch)}")


def _bind_experiment(
    on_epoch: Callable[[Experiment, int, EpochRecord], None], experiment: Experiment
) -> Callable[[int, EpochRecord], None]:
    def callback(index: int, record: EpochRecord) -> None:
        on_epoch(experiment, index, record)

    return callback


def _bind_round(
    on_epoch: Callable[[int, EpochRecord], None], index: int
) -> Callable[[EpochRecord], None]:
    def callback(record: EpochRecord) -> None:
        on_epoch(index, record)

    return callback
