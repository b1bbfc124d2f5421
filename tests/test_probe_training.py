"""A demanding user's probe of training: optimizers, schedules, fit, batches, rounds, gradcheck.

PyTorch is the oracle: long trajectories of every optimizer option that both have (against
``torch.optim``), schedules over hundreds of steps (against ``torch.optim.lr_scheduler``),
resumes from ``state_dict`` mid-way, ``fit`` against a loop written by hand, batched rounds
against one-by-one training. Then the failures that must happen before anything changes: bad
labels, optimizers and schedules that ``fit_rounds`` used to take silently or fail on mid-run, a
``OneCycle`` too short for the run, and ``gradcheck`` on modules that break the contract.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.optim import lr_scheduler as torch_schedules

from minidl import nn
from minidl import optim as mo
from minidl.data import BatchIterator
from minidl.gradcheck import GradcheckError, gradcheck
from minidl.nn.parameter import Parameter
from minidl.rounds import PerModel, fit_rounds
from minidl.train import EpochRecord, History, error_rate, fit
from tests.helpers import unfolded

F64 = torch.float64
SHAPES = [(3, 4), (4,), (2, 3)]


# -- optimizers against torch.optim -----------------------------------------------------------


def _gradients(values: list[Tensor], step: int) -> list[Tensor]:
    """A gradient that depends on the point and on the step (noise seeded by the step)."""
    generator = torch.Generator().manual_seed(1000 + step)
    return [
        torch.sin(3 * v) + 0.5 * v + 0.3 * torch.randn(v.shape, generator=generator, dtype=F64)
        for v in values
    ]


OPTIMIZERS: dict[
    str, tuple[Callable[[Any], mo.Optimizer], Callable[[Any], torch.optim.Optimizer]]
] = {
    "sgd-nesterov-wd": (
        lambda p: mo.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True),
    ),
    "sgd-wd": (
        lambda p: mo.SGD(p, lr=0.05, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.01),
    ),
    "adadelta": (
        lambda p: mo.Adadelta(p, lr=0.7, rho=0.5, eps=1e-3),
        lambda p: torch.optim.Adadelta(p, lr=0.7, rho=0.5, eps=1e-3),
    ),
    "adam-wd": (
        lambda p: mo.Adam(p, lr=0.01, betas=(0.5, 0.0), weight_decay=0.1),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.5, 0.0), weight_decay=0.1),
    ),
    "adamw": (
        lambda p: mo.AdamW(p, lr=0.01, betas=(0.0, 0.5), weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.0, 0.5), weight_decay=0.1),
    ),
    "adagrad": (
        lambda p: mo.Adagrad(
            p, lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5
        ),
        lambda p: torch.optim.Adagrad(
            p, lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5
        ),
    ),
    "rmsprop-centered-momentum": (
        lambda p: mo.RMSprop(p, lr=0.01, alpha=0.5, weight_decay=0.1, momentum=0.9, centered=True),
        lambda p: torch.optim.RMSprop(
            p, lr=0.01, alpha=0.5, weight_decay=0.1, momentum=0.9, centered=True
        ),
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_trajectories_with_a_resume_and_rate_changes_match_torch(name: str) -> None:
    """300 steps; the rate changed twice (not for momentum SGD, whose velocity is the paper's);
    at step 137 the state goes through state_dict into a new optimizer on new parameters."""
    make, make_torch = OPTIMIZERS[name]
    torch.manual_seed(0)
    start = [torch.randn(shape, dtype=F64) for shape in SHAPES]
    ours = [Parameter(v.clone()) for v in start]
    theirs = [v.clone().requires_grad_() for v in start]
    optimizer, reference = make(ours), make_torch(theirs)
    rates = {} if name.startswith("sgd-nesterov") else {50: 0.003, 120: 0.02}
    for step in range(300):
        if step in rates:
            optimizer.lr = rates[step]
            reference.param_groups[0]["lr"] = rates[step]
        if step == 137:
            saved = copy.deepcopy(optimizer.state_dict())
            ours = [Parameter(p.data.clone()) for p in ours]
            optimizer = make(ours)
            optimizer.load_state_dict(saved)
        for p, g in zip(ours, _gradients([p.data for p in ours], step), strict=True):
            p.grad.copy_(g)
        for q, g in zip(theirs, _gradients([q.detach() for q in theirs], step), strict=True):
            q.grad = g
        optimizer.step()
        reference.step()
    for p, q in zip(ours, theirs, strict=True):
        # Bit for bit but momentum SGD, whose velocity holds the rate (rounding apart).
        torch.testing.assert_close(p.data, q.detach(), rtol=1e-12, atol=1e-14)


# -- schedules against torch.optim.lr_scheduler ------------------------------------------------


def _sequential(optimizer: mo.Optimizer) -> mo.LRScheduler:
    schedules = [
        mo.LinearWarmup(optimizer, 10, 0.1),
        mo.CosineAnnealing(optimizer, 100, 0.001),
        mo.StepDecay(optimizer, 20, 0.7),
    ]
    return mo.SequentialSchedule(optimizer, schedules, [10, 110])


def _torch_sequential(optimizer: torch.optim.Optimizer) -> Any:
    schedules = [
        torch_schedules.LinearLR(optimizer, 0.1, 1.0, 10),
        torch_schedules.CosineAnnealingLR(optimizer, 100, 0.001),
        torch_schedules.StepLR(optimizer, 20, 0.7),
    ]
    return torch_schedules.SequentialLR(optimizer, schedules, [10, 110])


SCHEDULES: dict[str, tuple[Callable[[Any], mo.LRScheduler], Callable[[Any], Any]]] = {
    "warm-restarts": (
        lambda o: mo.CosineAnnealingWarmRestarts(o, 5, 2, 0.001),
        lambda o: torch_schedules.CosineAnnealingWarmRestarts(o, 5, 2, 0.001),
    ),
    "cyclic-asymmetric": (
        lambda o: mo.CyclicLR(o, 0.01, 0.2, 17, step_size_down=9),
        lambda o: torch_schedules.CyclicLR(
            o, 0.01, 0.2, 17, step_size_down=9, cycle_momentum=False
        ),
    ),
    "cyclic-exp-range": (
        lambda o: mo.CyclicLR(o, 0.01, 0.2, 10, mode="exp_range", gamma=0.995),
        lambda o: torch_schedules.CyclicLR(
            o, 0.01, 0.2, 10, mode="exp_range", gamma=0.995, cycle_momentum=False
        ),
    ),
    "one-cycle-linear": (
        lambda o: mo.OneCycle(o, 0.5, 401, anneal_strategy="linear", pct_start=0.25),
        lambda o: torch_schedules.OneCycleLR(
            o, 0.5, 401, anneal_strategy="linear", pct_start=0.25, cycle_momentum=False
        ),
    ),
    "sequential": (_sequential, _torch_sequential),
}


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_match_torch_over_400_steps_and_resume_exactly(name: str) -> None:
    make, make_torch = SCHEDULES[name]
    optimizer = mo.SGD([Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule, torch_schedule = make(optimizer), make_torch(reference)
    resumed: mo.LRScheduler | None = None
    other = mo.SGD([Parameter(torch.zeros(1))], lr=0.1)
    for step in range(400):
        expected = reference.param_groups[0]["lr"]
        assert optimizer.lr == pytest.approx(expected, rel=1e-12, abs=1e-15), (name, step)
        if resumed is not None:
            assert other.lr == optimizer.lr
        if step == 123:
            resumed = make(other)
            resumed.load_state_dict(schedule.state_dict())
            assert other.lr == optimizer.lr
        schedule.step()
        torch_schedule.step()
        if resumed is not None:
            resumed.step()


# -- fit against a loop written by hand --------------------------------------------------------


def _model(seed: int = 0) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 6, dtype=F64, generator=generator),
        nn.Tanh(),
        nn.Linear(6, 2, dtype=F64, generator=generator),
    )


def _data(seed: int, n: int) -> tuple[Tensor, Tensor]:
    x = torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))
    return x, (x[:, 0] * x[:, 1] > 0).long()


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("batch_size", [1, 7, 53, 100])
@pytest.mark.parametrize("interval", [None, "batch", "epoch"])
def test_fit_is_the_loop_written_by_hand_bit_for_bit(
    batch_size: int, interval: str | None, folded: bool
) -> None:
    """A final partial batch, a batch as large as the set or larger, a schedule per batch or
    per epoch, a validation set of another size: the same parameters and the same history, bit
    for bit from the loop ``fit`` documents, to 1e-11 from its folded step (whose products and
    softmax round otherwise, ``minidl.folded``: 212 steps of one sample at rates up to 0.2 with
    momentum grow a last-bit difference to 5e-12), with the same validation errors."""
    x, y = _data(3, 53)
    x_val, y_val = _data(4, 17)

    def schedule(optimizer: mo.Optimizer) -> mo.LRScheduler | None:
        if interval == "batch":
            return mo.CyclicLR(optimizer, 0.01, 0.2, 3)
        return mo.StepDecay(optimizer, 2, 0.5) if interval == "epoch" else None

    model = _model()
    optimizer = mo.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = schedule(optimizer)
    generator = torch.Generator().manual_seed(9)
    criterion = nn.CrossEntropyLoss()
    losses, rates, errors, batch_rates = [], [], [], []
    for _ in range(4):
        rates.append(optimizer.lr)
        order = torch.randperm(53, generator=generator)
        epoch = []
        for start in range(0, 53, batch_size):
            rows = order[start : start + batch_size]
            optimizer.zero_grad()
            epoch.append(float(criterion(model(x[rows]), y[rows])))
            model.backward(criterion.backward())
            optimizer.step()
            if interval == "batch":
                assert scheduler is not None
                batch_rates.append(optimizer.lr)
                scheduler.step()
        if interval == "epoch":
            assert scheduler is not None
            scheduler.step()
        losses.append(math.fsum(epoch) / len(epoch))
        errors.append(error_rate(model, x_val, y_val))

    fitted = _model()
    optimizer = mo.SGD(fitted.parameters(), lr=0.1, momentum=0.9)
    with contextlib.nullcontext() if folded else unfolded():
        history = fit(
            fitted,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=4,
            batch_size=batch_size,
            scheduler=schedule(optimizer),
            validation=(x_val, y_val),
            generator=torch.Generator().manual_seed(9),
        )
    for p, q in zip(fitted.parameters(), model.parameters(), strict=True):
        if folded:
            assert torch.allclose(p.data, q.data, rtol=1e-11, atol=1e-11)
        else:
            assert torch.equal(p.data, q.data)
    assert history.train_loss == pytest.approx(losses, rel=1e-12 if folded else 1e-14)
    assert (history.lr, history.validation_error, history.batch_lr) == (
        rates,
        errors,
        batch_rates,
    )


def test_fit_refuses_a_negative_class_index_before_training() -> None:
    """Only the first sample goes through the loss before training, and the check against the
    width of the outputs is only < C: a -1 further on used to fail after some steps."""
    x, y = _data(1, 20)
    y[15] = -1
    model = _model()
    before = [p.data.clone() for p in model.parameters()]
    optimizer = mo.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    with pytest.raises(ValueError, match=r"^fit: y must hold class indices >= 0, got -1$"):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=2,
            batch_size=4,
            generator=generator,
        )
    assert optimizer.step_count == 0
    assert torch.equal(generator.get_state(), state)
    for p, value in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, value)


def test_fit_refuses_a_one_cycle_too_short_for_the_run_before_training() -> None:
    """It used to train every batch and raise at the last one, the last epoch unrecorded."""
    x, y = _data(1, 37)  # 5 batches of 8
    model = _model()
    optimizer = mo.SGD(model.parameters(), lr=0.1)
    scheduler = mo.OneCycle(optimizer, 0.5, total_steps=4 * 5 - 1)
    with pytest.raises(
        ValueError,
        match=r"^fit: the scheduler OneCycle has rates up to step 19 and is at step 0, but 4 "
        r"epochs of 5 batches would step it 20 times \(to step 20\)",
    ):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=4,
            batch_size=8,
            scheduler=scheduler,
        )
    assert (optimizer.step_count, scheduler.last_step) == (0, 0)
    # Exactly long enough, and resumed for the rest of the run from its step: accepted.
    scheduler = mo.OneCycle(optimizer, 0.5, total_steps=4 * 5)
    history = fit(
        model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=8, scheduler=scheduler
    )
    fit(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=4,
        batch_size=8,
        scheduler=scheduler,
        start_epoch=2,
        history=history,
    )
    assert scheduler.last_step == 20 and len(history.batch_lr) == 20
    with pytest.raises(ValueError, match="is at step 20, but 1 epochs of 5 batches"):
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            batch_size=8,
            scheduler=scheduler,
        )


def test_fit_refuses_a_last_batch_of_one_sample_for_a_batch_norm_and_can_drop_it() -> None:
    """21 samples in batches of 10 used to train two steps, then fail in BatchNorm1d on the
    last batch (1 sample); fit had no drop_last, which the distributed docs point to."""
    x, y = _data(1, 21)

    def model() -> nn.Sequential:
        generator = torch.Generator().manual_seed(0)
        return nn.Sequential(
            nn.Linear(2, 4, dtype=F64, generator=generator),
            nn.BatchNorm1d(4, dtype=F64),
            nn.Tanh(),
            nn.Linear(4, 2, dtype=F64, generator=generator),
        )

    network = model()
    optimizer = mo.SGD(network.parameters(), lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"^fit: every epoch would end with a batch of 1 sample \(21 samples, batches of 10\), "
        r"on which the BatchNorm1d '1' cannot estimate a variance in training mode; pass "
        r"drop_last=True",
    ):
        fit(network, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=10)
    assert optimizer.step_count == 0
    with pytest.raises(TypeError, match=r"^fit: drop_last must be a bool, got 1$"):
        fit(network, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, drop_last=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^fit: with drop_last, batches of 30 leave no batch"):
        fit(
            network, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=30, drop_last=True
        )
    history = fit(
        network,
        nn.CrossEntropyLoss(),
        optimizer,
        x,
        y,
        epochs=2,
        batch_size=10,
        drop_last=True,
        generator=torch.Generator().manual_seed(5),
    )
    # The loop by hand: the same permutations, the last sample of each left out.
    reference = model()
    by_hand = mo.SGD(reference.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(5)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(2):
        order = torch.randperm(21, generator=generator)
        epoch = []
        for start in (0, 10):
            rows = order[start : start + 10]
            by_hand.zero_grad()
            epoch.append(float(criterion(reference(x[rows]), y[rows])))
            reference.backward(criterion.backward())
            by_hand.step()
        losses.append(sum(epoch) / 2)
    assert optimizer.step_count == 4
    assert history.train_loss == pytest.approx(losses, rel=1e-14)
    for p, q in zip(network.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.data, q.data)


def test_sequential_schedule_step_limit_is_where_a_schedule_runs_out() -> None:
    optimizer = mo.SGD([Parameter(torch.zeros(1))], lr=0.1)

    def sequential(total: int, milestone: int, last_is_cycle: bool) -> mo.SequentialSchedule:
        cycle = mo.OneCycle(optimizer, 1.0, total)
        other = mo.ExponentialDecay(optimizer, 0.9, interval="batch")
        schedules = [other, cycle] if last_is_cycle else [cycle, other]
        return mo.SequentialSchedule(optimizer, schedules, [milestone])

    assert mo.StepDecay(optimizer).step_limit is None
    assert sequential(20, 5, last_is_cycle=True).step_limit == 25
    assert sequential(10, 11, last_is_cycle=False).step_limit is None  # ends at its milestone
    schedule = sequential(10, 12, last_is_cycle=False)  # runs out one step before it
    assert schedule.step_limit == 10
    for _ in range(10):
        schedule.step()
    with pytest.raises(ValueError, match="SequentialSchedule: step 11 is past step 10, the last"):
        schedule.step()


# -- batches -----------------------------------------------------------------------------------


def test_batch_iterator_order_is_torch_random_samplers_and_views_are_documented() -> None:
    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10)
    batches = BatchIterator(x, y, 3, generator=torch.Generator().manual_seed(4))
    first = [int(i) for _, yb in batches for i in yb]
    sampler = torch.utils.data.RandomSampler(
        torch.utils.data.TensorDataset(x, y), generator=torch.Generator().manual_seed(4)
    )
    assert first == list(sampler)
    assert [len(yb) for _, yb in batches] == [3, 3, 3, 1] and len(batches) == 4
    # Shuffled batches are views of the pass's copy: writing into one spares the data set.
    for x_batch, _ in batches:
        x_batch.zero_()
    assert torch.equal(x, torch.arange(20.0).reshape(10, 2))


def test_batch_iterator_settings_set_again_are_checked() -> None:
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.int64)
    batches = BatchIterator(x, y, 3)
    for name, value, kind, message in [
        ("batch_size", 0, ValueError, "batch_size"),
        ("batch_size", 2.5, (TypeError, ValueError), "batch_size"),
        ("shuffle", "no", TypeError, "shuffle must be a bool, got 'no'"),
        ("drop_last", 1, TypeError, "drop_last must be a bool, got 1"),
    ]:
        with pytest.raises(kind, match=f"^BatchIterator: {message}"):  # type: ignore[arg-type]
            setattr(batches, name, value)
    assert (batches.batch_size, batches.shuffle, batches.drop_last, len(batches)) == (
        3,
        True,
        False,
        4,
    )
    batches.batch_size, batches.drop_last = 4, True
    assert len(batches) == len(list(batches)) == 2


# -- batched rounds ----------------------------------------------------------------------------


RATES = [0.3, 0.1, 0.03, 0.01]


@pytest.mark.parametrize("rounds", [1, 4])
def test_fit_rounds_with_rates_per_model_is_fit_model_by_model(rounds: int) -> None:
    sets = [_data(10 + r, 37) for r in range(rounds)]
    validation = [_data(50 + r, 11) for r in range(rounds)]
    alone = []
    histories = []
    for r in range(rounds):
        model = _model(r)
        optimizer = mo.SGD(model.parameters(), lr=RATES[r], momentum=0.9)
        histories.append(
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                *sets[r],
                epochs=4,
                batch_size=8,
                scheduler=mo.CyclicLR(optimizer, 0.01, RATES[r], 3),
                validation=validation[r],
                generator=torch.Generator().manual_seed(100 + r),
            )
        )
        alone.append(model)
    models = [_model(r) for r in range(rounds)]
    together = fit_rounds(
        models,
        nn.CrossEntropyLoss(),
        PerModel(lambda r, p: mo.SGD(p, lr=RATES[r], momentum=0.9)),
        sets,
        epochs=4,
        batch_size=8,
        generators=[torch.Generator().manual_seed(100 + r) for r in range(rounds)],
        make_scheduler=lambda o: mo.CyclicLR(o, 0.01, o.lr, 3),
        validation_sets=validation,
    )
    for model, reference, history, expected in zip(models, alone, together, histories, strict=True):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.data, q.data, rtol=0, atol=1e-12)
        assert history.train_loss == pytest.approx(expected.train_loss, abs=1e-12)
        assert (history.lr, history.batch_lr, history.validation_error) == (
            expected.lr,
            expected.batch_lr,
            expected.validation_error,
        )


def _fit_rounds(
    models: list[nn.Sequential], sets: list[tuple[Tensor, Tensor]], **change: Any
) -> None:
    arguments: dict[str, Any] = {
        "make_optimizer": lambda stack: mo.SGD(stack.parameters(), lr=0.1),
        "epochs": 2,
        "batch_size": 8,
        "generators": [torch.Generator().manual_seed(r) for r in range(len(models))],
        **change,
    }
    make_optimizer = arguments.pop("make_optimizer")
    fit_rounds(models, nn.CrossEntropyLoss(), make_optimizer, sets, **arguments)


def test_fit_rounds_checks_the_training_sets_against_the_models_before_training() -> None:
    """A label out of range (or inputs the models do not take) used to fail at the first
    batch holding it, after steps had changed the models and the generators had shuffled."""
    good = [_data(1, 37), _data(2, 37)]
    labels = good[1][1].clone()
    labels[-1] = 7
    negative = good[1][1].clone()
    negative[-1] = -2
    wide = torch.randn(37, 3, dtype=F64)
    cases: list[tuple[list[tuple[Tensor, Tensor]], type[Exception], str]] = [
        (
            [good[0], (good[1][0], labels)],
            ValueError,
            r"^fit_rounds: train_sets\[1\] y must hold class indices in \[0, 2\) .* got 7$",
        ),
        (
            [good[0], (good[1][0], negative)],
            ValueError,
            r"^fit_rounds: train_sets\[1\] y must hold class indices >= 0, got -2$",
        ),
        (
            [(wide, good[0][1]), (wide, good[1][1])],
            ValueError,
            r"^fit_rounds: the training sets do not fit: BatchedLinear: expected an input",
        ),
        (
            [(x.float(), y) for x, y in good],
            TypeError,
            r"^fit_rounds: the training sets do not fit: BatchedLinear: input dtype",
        ),
    ]
    for sets, kind, message in cases:
        models = [_model(0), _model(1)]
        for model in models:
            model.eval()
        before = [[p.data.clone() for p in model.parameters()] for model in models]
        generators = [torch.Generator().manual_seed(r) for r in range(2)]
        with pytest.raises(kind, match=message):
            _fit_rounds(models, sets, generators=generators)
        for generator, seed in zip(generators, range(2), strict=True):
            assert torch.equal(
                generator.get_state(), torch.Generator().manual_seed(seed).get_state()
            )
        for model, values in zip(models, before, strict=True):
            assert not model.training
            for p, value in zip(model.parameters(), values, strict=True):
                assert torch.equal(p.data, value)


def test_fit_rounds_refuses_optimizers_and_schedules_that_fit_would_refuse() -> None:
    sets = [_data(1, 37), _data(2, 37)]
    elsewhere = mo.SGD(_model(9).parameters(), lr=0.5)
    shared: dict[str, mo.Optimizer] = {}

    def one_for_all(group: int, parameters: list[Parameter]) -> mo.Optimizer:
        return shared.setdefault("optimizer", mo.SGD(parameters, lr=0.1))

    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"make_scheduler": lambda optimizer: mo.StepDecay(elsewhere, 1, 0.5)},
            r"^fit_rounds: make_scheduler returned a StepDecay for optimizer 0 that schedules "
            "another optimizer",
        ),
        (
            {"make_optimizer": lambda stack: mo.SGD(_model(5).parameters(), lr=0.1)},
            r"^fit_rounds: the optimizer updates none of the parameters it was built for",
        ),
        (
            {"make_optimizer": PerModel(lambda g, p: mo.SGD(_model(5).parameters(), lr=0.1))},
            r"^fit_rounds: optimizer 0 updates none of the parameters it was built for",
        ),
        (
            {"make_optimizer": PerModel(one_for_all)},
            r"^fit_rounds: the PerModel factory returned the same optimizer for optimizer 1",
        ),
        (
            {"make_scheduler": lambda optimizer: mo.OneCycle(optimizer, 0.5, total_steps=9)},
            r"^fit_rounds: the scheduler OneCycle has rates up to step 9 and is at step 0, but "
            r"2 epochs of 5 batches would step it 10 times",
        ),
    ]
    shuffles = torch.Generator().manual_seed(0)
    cases.append(
        (
            {"generators": [shuffles, shuffles]},
            r"^fit_rounds: generators\[1\] is generators\[0\] \(one generator given twice\)",
        )
    )
    for change, message in cases:
        models = [_model(0), _model(1)]
        before = [[p.data.clone() for p in model.parameters()] for model in models]
        with pytest.raises(ValueError, match=message):
            _fit_rounds(models, sets, **change)
        for model, values in zip(models, before, strict=True):
            for p, value in zip(model.parameters(), values, strict=True):
                assert torch.equal(p.data, value)
    # A CyclicLR of float32 models that would reach 5e38 at its step 2 (its max_lr of 1e39 over
    # 4 batches) is refused before training, as fit refuses it (it raised part-way).
    models = [_model(0).float(), _model(1).float()]
    before = [[p.data.clone() for p in model.parameters()] for model in models]
    with pytest.raises(ValueError) as info:
        _fit_rounds(
            models,
            [(x.float(), y) for x, y in sets],
            make_scheduler=lambda optimizer: mo.CyclicLR(optimizer, 0.01, 1e39, 4),
        )
    assert str(info.value).startswith(
        "fit_rounds: the CyclicLR would step to the rate 5e+38 at its step 2, after batch 2 of 5 "
        "of epoch 0, beyond the range of the parameters' dtype torch.float32 "
    )
    for model, values in zip(models, before, strict=True):
        for p, value in zip(model.parameters(), values, strict=True):
            assert torch.equal(p.data, value)
    # A OneCycle of exactly the run's batches is accepted.
    _fit_rounds(
        [_model(0), _model(1)],
        sets,
        make_scheduler=lambda optimizer: mo.OneCycle(optimizer, 0.5, total_steps=10),
    )


# -- gradcheck ---------------------------------------------------------------------------------


class _OverwritingLinear(nn.Linear):
    """Right gradients, but ``backward`` sets the parameters' ``grad`` instead of adding."""

    def backward(self, grad_output: Tensor) -> Tensor:
        grad_input = super().backward(grad_output)
        assert self._input is not None
        self.weight.grad.copy_(grad_output.t() @ self._input)
        assert self.bias is not None
        self.bias.grad.copy_(grad_output.sum(0))
        return grad_input


def test_gradcheck_catches_a_backward_that_overwrites_the_gradients() -> None:
    module = _OverwritingLinear(3, 2, dtype=F64)
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(
        GradcheckError,
        match=r"^gradcheck: _OverwritingLinear\.backward does not accumulate into the gradient "
        r"of 'weight'",
    ):
        gradcheck(module, x)
    assert gradcheck(module, x, raise_exception=False) is False
    assert gradcheck(nn.Linear(3, 2, dtype=F64), x)


def test_gradcheck_names_a_random_forward_instead_of_reporting_a_wrong_gradient() -> None:
    """A dropout in training mode used to give ``backward disagrees ... numeric -290752``."""
    module = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Dropout(0.5))
    x = torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    values = [p.data.clone() for p in module.parameters()]
    with pytest.raises(
        GradcheckError, match=r"^gradcheck: Sequential\.forward is not deterministic"
    ):
        gradcheck(module, x)
    for p, value in zip(module.parameters(), values, strict=True):
        assert torch.equal(p.data, value)
    module.eval()
    assert gradcheck(module, x)


def test_gradcheck_of_a_training_batch_norm_restores_its_buffers() -> None:
    """The bias before a batch norm has a gradient of zero but for rounding: no false alarm."""
    model = nn.Sequential(
        nn.Linear(3, 4, dtype=F64),
        nn.BatchNorm1d(4, dtype=F64),
        nn.Tanh(),
        nn.Linear(4, 2, dtype=F64),
    )
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    x = torch.randn(6, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert gradcheck(model, x)
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name


def test_fit_stopped_by_on_epoch_resumes_to_the_uninterrupted_run_bit_for_bit() -> None:
    """A raising callback leaves its epoch recorded, the schedule stepped and the generator
    drawn: fit again from ``len(history.train_loss)`` continues exactly."""
    x, y = _data(1, 33)

    def run(stop: int | None) -> tuple[nn.Sequential, History]:
        model = _model()
        optimizer = mo.Adam(model.parameters(), lr=0.01)
        scheduler = mo.OneCycle(optimizer, 0.05, 5 * 5)
        generator = torch.Generator().manual_seed(3)
        history = History()

        def on_epoch(record: EpochRecord) -> None:
            if record.epoch == stop:
                raise RuntimeError("stop")

        arguments: dict[str, Any] = {
            "epochs": 5,
            "batch_size": 7,
            "scheduler": scheduler,
            "generator": generator,
        }
        try:
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                history=history,
                on_epoch=on_epoch,
                **arguments,
            )
        except RuntimeError:
            assert stop is not None and len(history.train_loss) == stop + 1
            start = len(history.train_loss)
            fit(
                model,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                history=history,
                start_epoch=start,
                **arguments,
            )
        return model, history

    stopped, stopped_history = run(1)
    whole, whole_history = run(None)
    for p, q in zip(stopped.parameters(), whole.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
    assert stopped_history.train_loss == whole_history.train_loss
    assert (stopped_history.lr, stopped_history.batch_lr) == (
        whole_history.lr,
        whole_history.batch_lr,
    )


def test_fit_stops_after_an_epoch_whose_on_epoch_returns_true() -> None:
    """Early stopping: the run equals one of exactly that many epochs, bit for bit (the
    returned history included)."""
    x, y = _data(1, 33)

    def run(epochs: int, on_epoch: Any = None) -> tuple[nn.Sequential, History]:
        model = _model()
        optimizer = mo.SGD(model.parameters(), lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(3)
        history = fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=epochs,
            batch_size=7,
            validation=(x, y),
            generator=generator,
            on_epoch=on_epoch,
        )
        return model, history

    seen: list[int] = []

    def stop_at_two(record: EpochRecord) -> bool:
        seen.append(record.epoch)
        return record.epoch == 2

    stopped, stopped_history = run(10, stop_at_two)
    exact, exact_history = run(3)
    assert seen == [0, 1, 2]
    assert stopped_history == exact_history and len(stopped_history.train_loss) == 3
    for p, q in zip(stopped.parameters(), exact.parameters(), strict=True):
        assert torch.equal(p.data, q.data)
    # A comparison of metrics in numpy or torch stops too; a value that is not a bool is
    # refused rather than taken for "go on".
    numpy = pytest.importorskip("numpy")
    for stop in (numpy.float64(2.0) > 1.0, torch.tensor(2.0) > 1.0):
        _, history = run(4, lambda record, stop=stop: stop)
        assert len(history.train_loss) == 1
    _, history = run(4, lambda record: numpy.bool_(False))
    assert len(history.train_loss) == 4
    with pytest.raises(TypeError, match=r"^fit: on_epoch must return None or a bool .*, got int$"):
        run(4, lambda record: 1)


def test_a_sample_with_nan_outputs_counts_as_an_error() -> None:
    """argmax named class 0 for a row of NaNs (and the NaN's class for a row with one): a
    diverged model scored about 50% on the disk data, and on a set of class 0 alone, 0%."""
    from minidl.rounds import stacked_error_rates
    from minidl.train import predict

    layer = nn.Linear(2, 3)
    x = torch.randn(6, 2)
    x[1, 0] = math.nan
    x[4] = math.nan
    y = torch.zeros(6, dtype=torch.int64)
    layer.weight.data.zero_()
    assert layer.bias is not None
    layer.bias.data.copy_(torch.tensor([1.0, 0.0, 0.0]))  # class 0 for every finite row
    assert predict(layer, x).tolist() == [0, -1, 0, 0, -1, 0]
    assert error_rate(layer, x, y) == pytest.approx(100 * 2 / 6)
    stacked = nn.stack_models([nn.mlp((2, 3)), nn.mlp((2, 3))])
    first = stacked[0]
    assert isinstance(first, nn.BatchedLinear)
    first.weight.data[1] = math.nan
    inputs = torch.randn(2, 5, 2)
    targets = stacked(inputs).argmax(dim=-1)  # right for the first model
    assert stacked_error_rates(stacked, inputs, targets) == [0.0, 100.0]


def test_fit_refuses_a_one_sample_set_for_a_batch_norm_without_a_hint_that_cannot_work() -> None:
    """The refusal used to say "pass drop_last=True or choose another batch_size", which no
    batch_size or drop_last can satisfy with one sample."""
    x, y = _data(1, 1)
    network = nn.Sequential(nn.Linear(2, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64))
    optimizer = mo.SGD(network.parameters(), lr=0.1)
    for batch_size, drop_last in ((100, False), (1, False), (1, True), (2, True)):
        with pytest.raises(ValueError) as error:
            fit(
                network,
                nn.CrossEntropyLoss(),
                optimizer,
                x,
                y,
                epochs=1,
                batch_size=batch_size,
                drop_last=drop_last,
            )
        assert str(error.value) == (
            "fit: the training set holds 1 sample, on which the BatchNorm1d '1' cannot estimate "
            "a variance in training mode; no batch_size or drop_last can change that: train on "
            "at least 2 samples"
        )
    assert optimizer.step_count == 0
    # Without a batch norm, one sample trains.
    plain = _model()
    fit(plain, nn.CrossEntropyLoss(), mo.SGD(plain.parameters(), lr=0.1), x, y, epochs=1)


def test_eval_mode_refuses_what_is_not_a_model_when_called() -> None:
    """eval_mode(5) used to give an AttributeError, at the with statement."""
    from minidl.train import eval_mode

    for bad in (5, torch.zeros(2)):
        with pytest.raises(TypeError) as error:
            eval_mode(bad)  # type: ignore[arg-type]
        assert str(error.value) == (
            f"eval_mode: model must be a minidl Module, got {type(bad).__name__}"
        )
    model = _model()
    with eval_mode(model) as inside:
        assert inside is model and not model.training
    assert model.training


def test_fit_and_fit_rounds_refuse_a_generator_that_is_not_on_the_cpu() -> None:
    """A CUDA generator used to be taken, and to fail at the first epoch (randperm draws on the
    CPU), after the checks; a stand-in that says it is on cuda:0 shows the refusal here."""
    from tests.helpers import CudaLikeGenerator

    x, y = _data(1, 20)
    model = _model()
    optimizer = mo.SGD(model.parameters(), lr=0.1)
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(ValueError) as error:
        fit(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            x,
            y,
            epochs=1,
            generator=CudaLikeGenerator(),
        )
    assert str(error.value) == (
        "fit: generator must be a CPU torch.Generator (the shuffles are drawn on the CPU, then "
        "moved to the data's device), got a generator on cuda:0"
    )
    models = [_model(0), _model(1)]
    with pytest.raises(
        ValueError, match=r"^fit_rounds: generators\[1\] must be a CPU torch.Generator .* cuda:0$"
    ):
        _fit_rounds(
            models,
            [_data(1, 20), _data(2, 20)],
            generators=[torch.Generator(), CudaLikeGenerator()],
        )
    assert optimizer.step_count == 0
    for p, value in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, value)
    for index, model in enumerate(models):
        for p, q in zip(model.parameters(), _model(index).parameters(), strict=True):
            assert torch.equal(p.data, q.data)
