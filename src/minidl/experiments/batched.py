"""Training all the rounds of a row at once (batched rounds).

:func:`train_row_batched` returns what :func:`minidl.experiments.training.train_row` returns,
computed with :func:`minidl.rounds.fit_rounds`: the R rounds' networks are stacked and trained
together, each on its own data set, initial weights and shuffles, so the 5 rounds of a row
cost little more than one. It is the runner's default.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from minidl.experiments.config import CHOICES, Experiment
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import (
    RoundResult,
    RowResult,
    build_criterion,
    build_network,
    build_optimizer,
    build_scheduler,
    make_round_data,
)
from minidl.rounds import fit_rounds
from minidl.train import EpochRecord, error_rate

__all__ = ["train_row_batched"]


def train_row_batched(
    experiment: Experiment,
    rounds: int,
    base_seed: int,
    *,
    epochs: int | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
) -> RowResult:
    """Train ``rounds`` rounds of ``experiment`` at once; round r uses ``round_seeds(base_seed, r)``.

    Same arguments and result as :func:`~minidl.experiments.training.train_row`; each round's
    ``seconds`` is the row's time divided by the number of rounds.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"train_row_batched: rounds must be an integer >= 1, got {rounds!r}")
    epochs = experiment.epochs if epochs is None else epochs
    start = time.perf_counter()
    seeds = [
        round_seeds(base_seed, index, new_data=CHOICES.new_data_per_round)
        for index in range(rounds)
    ]
    data = [make_round_data(experiment, round_seed) for round_seed in seeds]
    models = [
        build_network(experiment, torch.Generator().manual_seed(round_seed.init))
        for round_seed in seeds
    ]

    def report(epoch: int, records: list[EpochRecord]) -> None:
        if on_epoch is not None:
            for index, record in enumerate(records):
                on_epoch(index, record)

    histories = fit_rounds(
        models,
        build_criterion(experiment),
        lambda stack: build_optimizer(experiment, stack),
        [(d.train.x, d.train.y) for d in data],
        epochs=epochs,
        batch_size=experiment.protocol.batch_size,
        generators=[torch.Generator().manual_seed(s.shuffle) for s in seeds],
        make_scheduler=lambda optimizer: build_scheduler(experiment, optimizer),
        validation_sets=[(d.validation.x, d.validation.y) for d in data],
        on_epoch=report,
    )
    seconds = (time.perf_counter() - start) / rounds
    results = tuple(
        RoundResult(
            seeds=round_seed,
            test_error=error_rate(model, d.test.x, d.test.y),
            train_error=error_rate(model, d.train.x, d.train.y),
            validation_curve=tuple(history.validation_error),
            train_loss=tuple(history.train_loss),
            lr_curve=tuple(history.lr),
            batch_lr=tuple(history.batch_lr),
            seconds=seconds,
            model=model,
        )
        for round_seed, d, model, history in zip(seeds, data, models, histories, strict=True)
    )
    return RowResult(experiment=experiment, rounds=results, seconds=time.perf_counter() - start)
