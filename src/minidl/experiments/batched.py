"""Training the rounds of rows at once (batched rounds).

:func:`train_rows_batched` returns what :func:`minidl.experiments.training.train_rows` returns
(to 1e-12 in float64 where the training loss stays finite: a round that diverges, as Fig. 1's
MSE does, amplifies the last bits without bound; in float32 a stack's products may sum in
another order than one model's, and a round can then end a test point apart), computed with :func:`minidl.rounds.fit_rounds`: the R rounds of every given row are stacked and
trained together, each on its own data set, initial weights and shuffles, and each row with its
own optimizer and schedule. The rows must share a :func:`~minidl.experiments.config.stack_key`
(same layer sizes, epochs and data; they differ only in activations, loss and how they update
the weights).

A row that can share a stack (several rows given, or a row of the paper's catalog with a
partner: :func:`~minidl.experiments.config.shares_a_stack`) is trained in a stack with the
``"model"`` layout (:func:`minidl.nn.stack_models`), each row's optimizer updating its R models
as one flat block: its numbers are then the same bits whichever rows share its stack (e.g. with
another ``--tables``) and however many rounds there are, where its batch sizes times its layer
widths are multiples of 16 bytes on this CPU, as the paper protocol's are (see
:func:`minidl.nn.stack_models`). A row that trains alone in every run keeps the ``"layer"``
layout, where the weight gradients accumulate about 10% faster in place (its numbers may change
in the last bits with the number of rounds). It is the runner's default;
:func:`train_row_batched` trains one row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from minidl._validate import check_int
from minidl.experiments.config import Experiment, shares_a_stack, stack_key
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import (
    RoundResult,
    RowResult,
    build_criterion,
    build_network,
    build_optimizer,
    build_scheduler,
    check_rows,
    make_round_data,
    trained_copy,
)
from minidl.nn.loss import Loss
from minidl.nn.parameter import Parameter
from minidl.nn.sequential import Sequential
from minidl.nn.stacked_loss import StackedLoss
from minidl.optim.lr_scheduler import LRScheduler
from minidl.optim.optimizer import Optimizer
from minidl.rounds import PerModel, fit_rounds
from minidl.train import EpochRecord, error_rate

__all__ = ["train_row_batched", "train_rows_batched"]


def train_rows_batched(
    experiments: Sequence[Experiment],
    rounds: int,
    base_seed: int,
    *,
    epochs: int | None = None,
    on_epoch: Callable[[Experiment, int, EpochRecord], None] | None = None,
) -> list[RowResult]:
    """Train ``rounds`` rounds of each of ``experiments`` in one stack; round r of every row uses
    ``round_seeds(base_seed, r)``.

    Args:
        experiments: K >= 1 rows with one :func:`~minidl.experiments.config.stack_key`.
        rounds: rounds per row, >= 1.
        base_seed: the run's base seed.
        epochs: overrides the rows' epochs (for smoke tests).
        on_epoch: called with ``(experiment, round index, record)`` after every epoch.

    Returns:
        One :class:`RowResult` per row, in order. Each round's ``seconds`` is the stack's time
        divided by its K R models, and each row's the stack's time divided by K.
    """
    rounds = check_int("train_rows_batched", "rounds", rounds)
    check_rows("train_rows_batched", experiments, on_epoch)
    if not experiments:
        raise ValueError("train_rows_batched: expected at least one experiment")
    keys = {stack_key(experiment) for experiment in experiments}
    if len(keys) != 1:
        raise ValueError(
            "train_rows_batched: the rows must differ only in activations, loss, optimizer and "
            "schedule (one stack_key), got "
            + ", ".join(repr(experiment.key) for experiment in experiments)
        )
    first = experiments[0]
    epochs = first.epochs if epochs is None else epochs
    start = time.perf_counter()
    seeds = [
        round_seeds(base_seed, index, new_data=first.protocol.new_data_per_round)
        for index in range(rounds)
    ]
    data = [make_round_data(first, round_seed) for round_seed in seeds]
    # Model k R + r is round r of row k.
    models = [
        build_network(experiment, torch.Generator().manual_seed(round_seed.init))
        for experiment in experiments
        for round_seed in seeds
    ]
    built: list[Optimizer] = []

    def make_optimizer(row: int, parameters: list[Parameter]) -> Optimizer:
        built.append(build_optimizer(experiments[row], parameters))
        return built[-1]

    def make_scheduler(optimizer: Optimizer) -> LRScheduler | None:
        row = next(index for index, other in enumerate(built) if other is optimizer)
        return build_scheduler(experiments[row], optimizer)

    def report(epoch: int, records: list[EpochRecord]) -> None:
        if on_epoch is not None:
            for position, record in enumerate(records):
                on_epoch(experiments[position // rounds], position % rounds, record)

    def make_stack_optimizer(stack: Sequential) -> Optimizer:
        return make_optimizer(0, list(stack.parameters()))

    # A row that may share a stack, by model; one that is always alone, by layer.
    by_model = len(experiments) > 1 or shares_a_stack(first)
    optimizers: PerModel | Callable[[Sequential], Optimizer] = (
        PerModel(make_optimizer, group=rounds, flat=True) if by_model else make_stack_optimizer
    )
    histories = fit_rounds(
        models,
        _criterion(experiments, rounds),
        optimizers,
        [(d.train.x, d.train.y) for _ in experiments for d in data],
        epochs=epochs,
        batch_size=first.protocol.batch_size,
        generators=[torch.Generator().manual_seed(s.shuffle) for _ in experiments for s in seeds],
        make_scheduler=make_scheduler,
        validation_sets=[(d.validation.x, d.validation.y) for _ in experiments for d in data],
        on_epoch=report,
    )
    elapsed = time.perf_counter() - start
    results = []
    for row, experiment in enumerate(experiments):
        round_results = []
        for index, (round_seed, d) in enumerate(zip(seeds, data, strict=True)):
            model, history = models[row * rounds + index], histories[row * rounds + index]
            round_results.append(
                RoundResult(
                    seeds=round_seed,
                    test_error=error_rate(model, d.test.x, d.test.y),
                    train_error=error_rate(model, d.train.x, d.train.y),
                    validation_curve=tuple(history.validation_error),
                    train_loss=tuple(history.train_loss),
                    lr_curve=tuple(history.lr),
                    batch_lr=tuple(history.batch_lr),
                    seconds=elapsed / len(models),
                    model=trained_copy(experiment, model),
                )
            )
        results.append(
            RowResult(
                experiment=experiment,
                rounds=tuple(round_results),
                seconds=elapsed / len(experiments),
            )
        )
    return results


def _criterion(experiments: Sequence[Experiment], rounds: int) -> Loss:
    """The stack's loss: the rows' own if they share it, else one run per row of a loss."""
    losses = [build_criterion(experiment) for experiment in experiments]
    if len({repr(loss) for loss in losses}) == 1:
        return losses[0]
    runs: list[tuple[Loss, int]] = []
    for loss in losses:
        if runs and repr(runs[-1][0]) == repr(loss):
            runs[-1] = (runs[-1][0], runs[-1][1] + rounds)
        else:
            runs.append((loss, rounds))
    return StackedLoss(runs)


def train_row_batched(
    experiment: Experiment,
    rounds: int,
    base_seed: int,
    *,
    epochs: int | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> RowResult:
    """Train ``rounds`` rounds of ``experiment`` at once; round r uses ``round_seeds(base_seed, r)``.

    Same arguments and result as :func:`~minidl.experiments.training.train_row`; the numbers
    are those of the row in :func:`train_rows_batched`, alone or beside others.
    """
    check_rows("train_row_batched", [experiment], on_epoch, one=True)
    callback = None
    if on_epoch is not None:
        report = on_epoch

        def callback(experiment: Experiment, index: int, record: EpochRecord) -> None:
            report(index, record)

    (result,) = train_rows_batched(
        [experiment], rounds, base_seed, epochs=epochs, on_epoch=callback
    )
    return result
