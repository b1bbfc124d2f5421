"""The experiments of ``minidl reproduce`` written with PyTorch eager (the twin of workload D).

Each row is trained round by round with ``torch.nn``, autograd and ``torch.optim``, on the same
data sets, initial weights and shuffles as minidl's run, with the validation error measured
after every epoch and the test and training errors at the end, as minidl's runner does (a
sample whose scores hold a NaN counts as wrong, as in :func:`minidl.train.error_rate`). Rows
that train identically are trained once, as in minidl's runner. The faults of the published
code that some variant rows reproduce have no PyTorch counterpart; those rows train the nearest
standard configuration, which costs the same.
"""

from __future__ import annotations

import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from minidl._allocator import keep_freed_memory
from minidl.experiments.config import (
    Experiment,
    StepSchedule,
    experiments_for_tables,
    training_key,
)
from minidl.experiments.faithful import PublishedELU, PublishedSELU
from minidl.experiments.pool import START_METHOD
from minidl.experiments.runner import QUICK_EPOCHS
from minidl.experiments.seeds import round_seeds
from minidl.experiments.training import build_network, make_round_data
from minidl.interop import to_torch

#: The rows (``minidl reproduce --tables``) and the rounds of a full run (its ``--rounds``).
TABLES = "1,2,3"
ROUNDS = 5


def _twin(model: Any) -> torch.nn.Sequential:
    """``minidl.interop.to_torch`` of the row's network; the activations of the published code's
    faults, which torch does not have, become their standard counterparts (same cost)."""
    layers: list[torch.nn.Module] = []
    for layer in model:
        if isinstance(layer, PublishedSELU):
            layers.append(torch.nn.SELU())
        elif isinstance(layer, PublishedELU):
            layers.append(torch.nn.ELU(alpha=layer.alpha))
        else:
            layers.append(to_torch(layer))
    return torch.nn.Sequential(*layers)


def _criterion(experiment: Experiment) -> Any:
    if experiment.loss == "cross-entropy":
        return torch.nn.CrossEntropyLoss()
    reduction = "sum" if experiment.mse_reduction == "paper" else experiment.mse_reduction

    def mse(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)
        loss = torch.nn.functional.mse_loss(z, target, reduction=reduction)
        return loss / z.shape[0] if experiment.mse_reduction == "paper" else loss

    return mse


def _error_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The error of ``model`` on ``(x, y)`` in %, as :func:`minidl.train.error_rate` counts it:
    the argmax of each sample's scores, none (so wrong) where they hold a NaN (a diverged row's
    error is 100%, not the share of a class that ``argmax`` of NaN scores would give)."""
    with torch.no_grad():
        scores = model(x)
        predicted = scores.argmax(1).masked_fill_(scores.isnan().any(1), -1)
        return 100.0 * float((predicted != y).sum()) / y.shape[0]


def _train_round(
    experiment: Experiment, round_index: int, epochs: int, base_seed: int
) -> tuple[float, float]:
    """The test and training errors (%) of one round of ``experiment``."""
    seeds = round_seeds(base_seed, round_index, new_data=experiment.protocol.new_data_per_round)
    data = make_round_data(experiment, seeds)
    model = _twin(build_network(experiment, torch.Generator().manual_seed(seeds.init)))
    if experiment.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=experiment.lr, momentum=experiment.momentum
        )
    else:
        optimizer = torch.optim.Adadelta(
            model.parameters(),
            lr=experiment.lr,
            rho=experiment.adadelta_rho,
            eps=experiment.adadelta_eps,
        )
    scheduler: Any = None
    per_batch = False
    schedule = experiment.scheduler
    if isinstance(schedule, StepSchedule):
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, schedule.step_size, schedule.gamma)
    elif schedule is not None:
        scheduler = torch.optim.lr_scheduler.CyclicLR(
            optimizer,
            schedule.base_lr,
            schedule.max_lr,
            schedule.batches_up(experiment.protocol),
            cycle_momentum=False,
        )
        per_batch = True
    criterion = _criterion(experiment)
    generator = torch.Generator().manual_seed(seeds.shuffle)
    x, y = data.train.x, data.train.y
    batch = experiment.protocol.batch_size
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        for x_batch, y_batch in zip(
            torch.split(x[order], batch), torch.split(y[order], batch), strict=True
        ):
            optimizer.zero_grad()
            criterion(model(x_batch), y_batch).backward()
            optimizer.step()
            if per_batch:
                scheduler.step()
        if scheduler is not None and not per_batch:
            scheduler.step()
        _error_rate(model, data.validation.x, data.validation.y)
    return _error_rate(model, data.test.x, data.test.y), _error_rate(model, x, y)


def _start_worker() -> None:
    # As minidl's workers: one thread, and glibc keeps freed memory (minidl._allocator).
    torch.set_num_threads(1)
    keep_freed_memory()


def run_torch_reproduce(
    quick: bool = False, rounds: int = ROUNDS, base_seed: int = 0, jobs: int = 1
) -> list[dict[str, Any]]:
    """Train every row of ``minidl reproduce`` with PyTorch eager; return each row's errors.

    With ``jobs`` > 1 the rounds are trained in that many worker processes (one thread each),
    the longest first, as ``minidl reproduce --jobs`` does with its rows.
    """
    rounds = 1 if quick else rounds
    experiments = experiments_for_tables(TABLES)
    distinct: dict[Experiment, Experiment] = {}
    for experiment in experiments:
        distinct.setdefault(training_key(experiment), experiment)
    tasks = [
        (experiment, index, QUICK_EPOCHS if quick else experiment.epochs, base_seed)
        for experiment in distinct.values()
        for index in range(rounds)
    ]
    if jobs > 1:
        # Started as minidl's workers are (forked on Linux: a spawned worker imports torch
        # again, about 2 s of its start here), so that both sides pay the same; the longest
        # rounds first (minidl's pool hands out its longest stacks first), so that the workers
        # finish together.
        order = sorted(range(len(tasks)), key=lambda index: -tasks[index][2])
        context = multiprocessing.get_context(START_METHOD)
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker) as pool:
            done = pool.map(_train_round, *zip(*(tasks[index] for index in order), strict=True))
            errors_of_tasks: list[tuple[float, float]] = [(0.0, 0.0)] * len(tasks)
            for index, errors in zip(order, done, strict=True):
                errors_of_tasks[index] = errors
    else:
        errors_of_tasks = [_train_round(*task) for task in tasks]
    trained = {
        key: errors_of_tasks[position * rounds : (position + 1) * rounds]
        for position, key in enumerate(distinct)
    }
    rows = []
    for experiment in experiments:
        test_errors = [test for test, _ in trained[training_key(experiment)]]
        rows.append(
            {
                "table": experiment.table,
                "label": experiment.label,
                "test_errors": test_errors,
                "mean": statistics.fmean(test_errors),
                "train_errors": [train for _, train in trained[training_key(experiment)]],
            }
        )
    return rows
