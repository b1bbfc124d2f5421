"""Learning-rate schedules: their closed forms, PyTorch's StepLR / CyclicLR sequences, the
optimizer's learning rate actually changing, and save/restore."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from minidl import nn, optim

STEPS = 200


def _optimizer(lr: float = 0.1) -> optim.SGD:
    return optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)


def _torch_optimizer(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _torch_lrs(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def _minidl_lrs(scheduler: optim.LRScheduler, steps: int) -> list[float]:
    lrs = [scheduler.optimizer.lr]
    for _ in range(steps):
        returned = scheduler.step()
        assert returned == scheduler.optimizer.lr == scheduler.lr
        lrs.append(scheduler.optimizer.lr)
    return lrs


def _assert_sequences_close(got: list[float], expected: list[float], rtol: float = 1e-12) -> None:
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a == pytest.approx(b, rel=rtol, abs=1e-15), f"step {step}: {a} != {b}"


@pytest.mark.parametrize(("step_size", "gamma"), [(10, 0.5), (1, 0.9), (7, 0.1), (3, 1.0)])
def test_step_decay_closed_form_and_torch(step_size: int, gamma: float) -> None:
    scheduler = optim.StepDecay(_optimizer(0.1), step_size=step_size, gamma=gamma)
    got = _minidl_lrs(scheduler, STEPS)
    closed_form = [0.1 * gamma ** (epoch // step_size) for epoch in range(STEPS + 1)]
    _assert_sequences_close(got, closed_form)
    torch_optimizer = _torch_optimizer(0.1)
    torch_scheduler = torch.optim.lr_scheduler.StepLR(
        torch_optimizer, step_size=step_size, gamma=gamma
    )
    _assert_sequences_close(got, _torch_lrs(torch_scheduler, torch_optimizer, STEPS))


def test_step_decay_paper_defaults() -> None:
    scheduler = optim.StepDecay(_optimizer(1e-2))
    lrs = _minidl_lrs(scheduler, 30)
    assert lrs[0] == lrs[9] == 1e-2
    assert lrs[10] == lrs[19] == 5e-3
    assert lrs[20] == lrs[29] == 2.5e-3
    assert lrs[30] == 1.25e-3


def _triangle(
    step: int, base: float, top: float, up: int, down: int, mode: str, gamma: float
) -> float:
    """Smith's policy written independently: position in the cycle, then up or down."""
    cycle_length = up + down
    cycle = step // cycle_length
    position = step - cycle * cycle_length
    height = position / up if position <= up else 1 - (position - up) / down
    scale = {"triangular": 1.0, "triangular2": 0.5**cycle, "exp_range": gamma**step}[mode]
    return base + (top - base) * height * scale


CYCLIC_CASES = [
    ("triangular", 1.0, 10, None),
    ("triangular2", 1.0, 10, None),
    ("exp_range", 0.99, 10, None),
    ("triangular", 1.0, 4, 13),
    ("triangular2", 1.0, 9, 3),
    ("exp_range", 0.995, 1, 6),
    ("triangular", 1.0, 1, 1),
]


@pytest.mark.parametrize(("mode", "gamma", "up", "down"), CYCLIC_CASES)
def test_cyclic_lr_closed_form_and_torch(
    mode: str, gamma: float, up: int, down: int | None
) -> None:
    base, top = 1e-3, 1e-2
    scheduler = optim.CyclicLR(
        _optimizer(0.5), base, top, step_size_up=up, mode=mode, gamma=gamma, step_size_down=down
    )
    got = _minidl_lrs(scheduler, STEPS)
    closed_form = [
        _triangle(t, base, top, up, up if down is None else down, mode, gamma)
        for t in range(STEPS + 1)
    ]
    _assert_sequences_close(got, closed_form)
    torch_optimizer = _torch_optimizer(0.5)
    torch_scheduler = torch.optim.lr_scheduler.CyclicLR(
        torch_optimizer,
        base_lr=base,
        max_lr=top,
        step_size_up=up,
        step_size_down=down,
        mode=mode,
        gamma=gamma,
        cycle_momentum=False,
    )
    _assert_sequences_close(got, _torch_lrs(torch_scheduler, torch_optimizer, STEPS))


def test_triangular2_goes_on_past_cycle_1024_at_the_lower_bound() -> None:
    """The halved amplitude of cycle c, 2^(1 - c), is the closed form's at every step: past
    cycle 1024, where torch's 1 / 2.0 ** (c - 1) overflows (OverflowError; minidl's step
    refused the schedule as "cannot be computed", and fit stopped midway), it is below the
    smallest float and the rate is base_lr; before, the same bits as torch's."""
    base, top = 1e-3, 1e-2
    scheduler = optim.CyclicLR(_optimizer(0.5), base, top, step_size_up=1, mode="triangular2")
    got = _minidl_lrs(scheduler, 2200)
    assert got == [_triangle(t, base, top, 1, 1, "triangular2", 1.0) for t in range(2201)]
    assert got[2047:] == [base] * 154
    assert scheduler.lr_at(10**30 + 1) == base  # (any step)
    torch_optimizer = _torch_optimizer(0.5)
    torch_scheduler = torch.optim.lr_scheduler.CyclicLR(
        torch_optimizer, base, top, step_size_up=1, mode="triangular2", cycle_momentum=False
    )
    assert got[:2047] == _torch_lrs(torch_scheduler, torch_optimizer, 2046)


@pytest.mark.parametrize(
    ("total_steps", "pct_start", "anneal_strategy"),
    [
        (10, 0.05, "cos"),  # pct_start * total_steps = 0.5: no step rises
        (10, 0.0, "cos"),
        (10, 0.05, "linear"),
        (400, 0.001, "cos"),
        (2, 0.3, "cos"),
        (1, 0.3, "cos"),  # one step, at min_lr
        (1, 0.0, "linear"),
        (10, 0.11, "cos"),  # a rise that ends at step 0.1: step 0 only
    ],
)
def test_one_cycle_with_a_rise_of_less_than_a_step_is_pytorchs(
    total_steps: int, pct_start: float, anneal_strategy: str
) -> None:
    """With ``pct_start * total_steps < 1`` PyTorch's OneCycleLR has no step rising: every
    step is one of the fall from ``pct_start * total_steps - 1 < 0`` on. minidl takes the same
    rates for steps 0 to total_steps - 1, built so or with pct_start (or total_steps) set
    after construction. (It refused such a product, and total_steps=1, pct_start=0.)"""
    settings: dict[str, Any] = {"pct_start": pct_start, "anneal_strategy": anneal_strategy}
    reference = _torch_optimizer()
    expected = _torch_lrs(
        torch.optim.lr_scheduler.OneCycleLR(
            reference, max_lr=0.5, total_steps=total_steps, cycle_momentum=False, **settings
        ),
        reference,
        total_steps - 1,
    )
    built = optim.OneCycle(_optimizer(), max_lr=0.5, total_steps=total_steps, **settings)
    _assert_sequences_close(_minidl_lrs(built, total_steps - 1), expected)
    set_after = optim.OneCycle(_optimizer(), max_lr=0.5, total_steps=30, pct_start=0.5)
    set_after.anneal_strategy = anneal_strategy  # type: ignore[assignment]
    set_after.pct_start = pct_start
    set_after.total_steps = total_steps
    _assert_sequences_close(_minidl_lrs(set_after, total_steps - 1), expected)
    assert built.step() == pytest.approx(built.min_lr, rel=1e-9)  # (PyTorch extrapolates)


def test_one_cycle_whose_rise_ends_at_step_0_is_refused_as_pytorch_divides_by_zero() -> None:
    """``pct_start * total_steps = 1`` ends the rise at step 0, whose fraction of the rise is
    0 / 0: PyTorch's OneCycleLR raises ZeroDivisionError; minidl refuses it saying why, and a
    setting that makes it changes nothing."""
    with pytest.raises(ZeroDivisionError):
        torch.optim.lr_scheduler.OneCycleLR(
            _torch_optimizer(), max_lr=0.5, total_steps=10, pct_start=0.1, cycle_momentum=False
        )
    message = (
        r"^OneCycle: pct_start \* total_steps - 1 = 0 \(pct_start=0\.1, total_steps=10\) ends "
        r"the rise at step 0, whose fraction of the rise is 0 / 0 \(PyTorch's OneCycleLR raises "
        r"ZeroDivisionError\); change pct_start or total_steps"
    )
    with pytest.raises(ValueError, match=message):
        optim.OneCycle(_optimizer(), max_lr=0.5, total_steps=10, pct_start=0.1)
    schedule = optim.OneCycle(_optimizer(), max_lr=0.5, total_steps=10, pct_start=0.3)
    schedule.step()
    state, rate = schedule.state_dict(), schedule.optimizer.lr
    with pytest.raises(ValueError, match=message):
        schedule.pct_start = 0.1
    assert (schedule.pct_start, schedule.state_dict(), schedule.optimizer.lr) == (0.3, state, rate)
    with pytest.raises(ValueError, match=r"^OneCycle: total_steps must be an integer >= 1"):
        optim.OneCycle(_optimizer(), max_lr=0.5, total_steps=0)


def test_cyclic_lr_smith_formula_for_symmetric_cycles() -> None:
    # Smith (2017): cycle = floor(1 + t / 2s), x = |t / s - 2 cycle + 1|, lr = base + d max(0, 1 - x)
    scheduler = optim.CyclicLR(_optimizer(), 0.1, 0.5, step_size_up=6)
    for t in range(STEPS):
        cycle = math.floor(1 + t / 12)
        x = abs(t / 6 - 2 * cycle + 1)
        assert scheduler.lr_at(t) == pytest.approx(0.1 + 0.4 * max(0.0, 1 - x), rel=1e-12)
    assert scheduler.lr_at(0) == 0.1 and scheduler.lr_at(6) == pytest.approx(0.5)


def test_scheduler_sets_the_learning_rate_the_optimizer_uses() -> None:
    layer = nn.Linear(1, 1, bias=False, dtype=torch.float64)
    optimizer = optim.SGD(layer.parameters(), lr=1.0)
    scheduler = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    for epoch in range(4):
        before = layer.weight.data.clone()
        layer.weight.grad.fill_(1.0)
        optimizer.step()
        assert float(before - layer.weight.data) == 0.5**epoch
        scheduler.step()


@pytest.mark.parametrize(
    "make",
    [
        lambda o: optim.StepDecay(o, step_size=3, gamma=0.7),
        lambda o: optim.CyclicLR(o, 0.01, 0.1, 5, mode="triangular2", step_size_down=8),
        lambda o: optim.CyclicLR(o, 0.01, 0.1, 5, mode="exp_range", gamma=0.98),
    ],
    ids=["step", "cyclic-triangular2", "cyclic-exp-range"],
)
def test_scheduler_state_dict_round_trip(make: Any) -> None:
    scheduler = make(_optimizer(0.1))
    for _ in range(37):
        scheduler.step()
    state = scheduler.state_dict()
    continued = _minidl_lrs(scheduler, 50)
    optimizer = _optimizer(0.1)
    resumed = make(optimizer)
    resumed.load_state_dict(state)
    assert resumed.last_step == 37
    assert optimizer.lr == continued[0]
    assert _minidl_lrs(resumed, 50) == continued


def test_step_decay_restores_base_lr_from_state() -> None:
    scheduler = optim.StepDecay(_optimizer(0.2), step_size=2, gamma=0.5)
    for _ in range(5):
        scheduler.step()
    resumed = optim.StepDecay(_optimizer(0.9), step_size=2, gamma=0.5)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.optimizer.lr == scheduler.optimizer.lr == 0.2 * 0.5**2


def test_scheduler_repr() -> None:
    assert (
        repr(optim.StepDecay(_optimizer(0.1))) == "StepDecay(step_size=10, gamma=0.5, base_lr=0.1)"
    )
    assert repr(optim.CyclicLR(_optimizer(), 0.1, 1.0, 4)) == (
        "CyclicLR(base_lr=0.1, max_lr=1.0, step_size_up=4, step_size_down=4, "
        "mode='triangular', gamma=1.0)"
    )


def _sgd() -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)


def test_an_older_schedule_on_the_same_optimizer_refuses_to_step() -> None:
    # In PyTorch two schedulers on one optimizer multiply their factors; minidl's set the rate,
    # so the older one would be overwritten silently: it refuses, and changes nothing.
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, start_factor=0.5)
    decay = optim.ExponentialDecay(optimizer, gamma=0.5)
    assert warmup.superseded_by == "ExponentialDecay" and decay.superseded_by is None
    lr, state = optimizer.lr, warmup.state_dict()
    for call in (warmup.step, lambda: warmup.load_state_dict(state)):
        with pytest.raises(
            RuntimeError,
            match=r"^LinearWarmup\.(step|load_state_dict): the optimizer is scheduled by the "
            r"ExponentialDecay built \(or copied, by copy\.copy\) on it after this schedule; .*SequentialSchedule$",
        ):
            call()
        assert optimizer.lr == lr and warmup.last_step == 0
    assert decay.step() == decay.base_lr * 0.5
    # The schedules of a SequentialSchedule, built before it, are run by it, never stepped.
    first = optim.LinearWarmup(optimizer, warmup_steps=2, start_factor=0.5)
    then = optim.ExponentialDecay(optimizer, gamma=0.5)
    both = optim.SequentialSchedule(optimizer, [first, then], milestones=[2])
    assert [both.step() for _ in range(3)] == [both.lr_at(step) for step in (1, 2, 3)]
    assert decay.superseded_by == "SequentialSchedule"


def test_a_schedule_copied_or_pickled_with_its_optimizer_still_steps() -> None:
    import copy
    import pickle

    optimizer = _sgd()
    schedule = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    for twin in (copy.deepcopy(schedule), pickle.loads(pickle.dumps(schedule))):
        assert twin.superseded_by is None
        assert twin.step() == pytest.approx(0.05)
    assert schedule.step() == pytest.approx(0.05)  # the original is still its optimizer's


def test_fit_refuses_a_schedule_superseded_before_training() -> None:
    from minidl.train import fit

    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    older = optim.StepDecay(optimizer, step_size=1)
    optim.ExponentialDecay(optimizer, gamma=0.9)
    before = [p.data.clone() for p in model.parameters()]
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    with pytest.raises(
        ValueError,
        match=r"^fit: the optimizer is scheduled by the ExponentialDecay built on it after the "
        r"StepDecay given; pass that one",
    ):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, scheduler=older)
    assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))


def test_get_last_lr_is_pytorchs() -> None:
    optimizer = _sgd()
    schedule = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    twin_optimizer = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    twin = torch.optim.lr_scheduler.StepLR(twin_optimizer, step_size=2, gamma=0.5)
    for _ in range(6):
        assert schedule.get_last_lr() == pytest.approx(twin.get_last_lr(), rel=1e-15)
        assert schedule.get_last_lr() == [optimizer.lr]
        twin_optimizer.step()
        schedule.step()
        twin.step()


class _Doubling(optim.LRScheduler):
    """A schedule of one's own whose rate doubles every step (so a huge rate overflows)."""

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return self.base_lr * 2.0**step


def test_a_restored_state_whose_rate_overflows_is_refused_and_changes_nothing() -> None:
    optimizer = _sgd()
    schedule = _Doubling(optimizer)
    schedule.step()
    before = (schedule.base_lr, schedule.last_step, optimizer.lr)
    with pytest.raises(
        ValueError,
        match=r"^_Doubling\.load_state_dict: the rate of step 1 is inf \(from base_lr "
        r"1\.7e\+308\); expected a finite rate >= 0$",
    ):
        schedule.load_state_dict({"base_lr": 1.7e308, "last_step": 1})
    assert (schedule.base_lr, schedule.last_step, optimizer.lr) == before
    assert schedule.step() == schedule.lr_at(2)  # and it goes on as before


def test_a_schedule_without_lr_at_says_so_and_leaves_the_rate() -> None:
    """A schedule of one's own without ``lr_at`` raises NotImplementedError naming its class
    and what lr_at returns (it was raised without a message), the optimizer's rate as it was."""

    class Unwritten(optim.LRScheduler):
        def __init__(self, optimizer: optim.Optimizer) -> None:
            super().__init__(optimizer)
            self._start()

    optimizer = _sgd()
    rate = optimizer.lr
    with pytest.raises(
        NotImplementedError,
        match=r"^Unwritten\.lr_at is not implemented \(a subclass of LRScheduler returns the "
        r"learning rate after a given number of steps\)$",
    ):
        Unwritten(optimizer)
    assert optimizer.lr == rate


class _Falling(optim.LRScheduler):
    """A schedule of one's own whose rate falls by 1 every step (so it turns negative)."""

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return self.base_lr - step


def test_a_negative_rate_is_refused_in_the_schedules_words_and_changes_nothing() -> None:
    optimizer = _sgd()
    schedule = _Falling(optimizer)
    message = r"the rate of step 1 is -0\.9 \(from base_lr 0\.1\); expected a finite rate >= 0$"
    with pytest.raises(ValueError, match=r"^_Falling\.step: " + message):
        schedule.step()
    assert (schedule.last_step, optimizer.lr) == (0, 0.1)
    with pytest.raises(ValueError, match=r"^_Falling\.load_state_dict: " + message):
        schedule.load_state_dict({"base_lr": 0.1, "last_step": 1})
    assert (schedule.base_lr, schedule.last_step, optimizer.lr) == (0.1, 0, 0.1)


def test_cosine_schedules_take_the_largest_finite_rate() -> None:
    # The rate lies between eta_min and base_lr; computed as (base_lr - eta_min) * 2 / 2, the
    # product overflowed first at step 0.
    for build in (
        lambda o: optim.CosineAnnealing(o, T_max=10),
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=3),
    ):
        optimizer = optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=1.7e308)
        schedule = build(optimizer)
        assert optimizer.lr == 1.7e308
        rates = [schedule.step() for _ in range(12)]
        assert all(math.isfinite(rate) and 0 <= rate <= 1.7e308 for rate in rates)
        schedule.load_state_dict({"base_lr": 1.7e308, "last_step": 0})
        assert optimizer.lr == 1.7e308


def test_a_schedule_whose_first_rate_overflows_is_refused_in_its_own_words() -> None:
    optimizer = _sgd()
    with pytest.raises(
        ValueError,
        match=r"^OneCycle: the rate of step 0 is inf \(OneCycle\(max_lr=1e\+300, .*"
        r"div_factor=1e-10, .*\); expected a finite rate >= 0$",
    ):
        optim.OneCycle(optimizer, max_lr=1e300, total_steps=10, div_factor=1e-10)
    assert optimizer.lr == 0.1 and optimizer._scheduled_by is None


HUGE = 10**400  # an integer beyond the range of a float


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda o: optim.CosineAnnealing(o, T_max=HUGE),
            r"^CosineAnnealing: the rate of step 0 cannot be computed \(int too large to convert "
            r"to float; CosineAnnealing\(T_max=an int of 401 digits, .*\)\); expected settings "
            r"and steps within the range of a float$",
        ),
        (
            lambda o: optim.CosineAnnealing(o, T_max=10**5000),  # (its repr: hexadecimal)
            r"^CosineAnnealing: the rate of step 0 cannot be computed \(int too large to convert "
            r"to float; CosineAnnealing\(T_max=an int of 5001 digits, eta_min=0\.0, "
            r"base_lr=0\.1\)\); expected settings and steps within the range of a float$",
        ),
        (
            lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=HUGE),
            r"^CosineAnnealingWarmRestarts: the rate of step 0 cannot be computed \(int too large",
        ),
        (
            lambda o: optim.CyclicLR(o, 0.01, 0.1, step_size_up=1, step_size_down=HUGE),
            r"^CyclicLR: the rate of step 0 cannot be computed \(float division by zero; "
            r"CyclicLR\(base_lr=0\.01, .*step_size_down=an int of 401 digits, ",
        ),
        (
            lambda o: optim.OneCycle(o, max_lr=0.1, total_steps=HUGE),
            r"^OneCycle: total_steps must be at most 1\.79769e\+308 \(the largest float\), got "
            r"an int of 401 digits$",
        ),
    ],
)
def test_an_integer_setting_beyond_the_range_of_a_float_is_refused_in_the_schedules_words(
    build: Any, message: str
) -> None:
    """The formulas cannot compute with it (it raised Python's OverflowError or
    ZeroDivisionError, which named neither the schedule nor the setting): refused when built,
    in the schedule's words, taking nothing over. The schedule is written with such a setting
    as its number of digits (its repr, quoted whole, wrote hundreds or thousands of them)."""
    optimizer = _sgd()
    with pytest.raises(ValueError, match=message):
        build(optimizer)
    assert optimizer.lr == 0.1 and optimizer._scheduled_by is None


def test_a_huge_setting_or_step_is_refused_and_changes_nothing() -> None:
    """The same refusal when such a setting is set, when such a step is restored, and when a
    step reaches a period that long; the schedule and the optimizer's rate are left as they
    were."""
    optimizer = _sgd()
    cosine = optim.CosineAnnealing(optimizer, T_max=10)
    for _ in range(3):
        cosine.step()
    rate = optimizer.lr
    with pytest.raises(ValueError, match=r"^CosineAnnealing\.T_max: the rate of step 3 cannot be"):
        cosine.T_max = HUGE
    assert (cosine.T_max, cosine.last_step, optimizer.lr) == (10, 3, rate)
    with pytest.raises(
        ValueError,
        match=r"^CosineAnnealing\.load_state_dict: the rate of step an int of 401 digits cannot be",
    ):
        cosine.load_state_dict({"base_lr": 0.1, "last_step": HUGE})
    assert (cosine.base_lr, cosine.last_step, optimizer.lr) == (0.1, 3, rate)
    one_cycle = optim.OneCycle(optimizer, max_lr=0.1, total_steps=10)
    rate = optimizer.lr
    with pytest.raises(ValueError, match=r"^OneCycle: total_steps must be at most"):
        one_cycle.total_steps = HUGE
    assert (one_cycle.total_steps, optimizer.lr) == (10, rate)
    # Step 0 of the first period has a rate; step 1 starts a period of T_0 * T_mult steps.
    optimizer = _sgd()
    restarts = optim.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=HUGE)
    with pytest.raises(
        ValueError, match=r"^CosineAnnealingWarmRestarts\.step: the rate of step 1 cannot be"
    ):
        restarts.step()
    assert (restarts.last_step, optimizer.lr) == (0, 0.1)


def test_a_schedule_refused_when_built_takes_nothing_over() -> None:
    optimizer = _sgd()
    schedule = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    with pytest.raises(ValueError, match="CosineAnnealing"):
        optim.CosineAnnealing(optimizer, T_max=-3)
    first = optim.LinearWarmup(optimizer, warmup_steps=2, start_factor=0.5)
    with pytest.raises(ValueError, match="SequentialSchedule: milestones"):
        optim.SequentialSchedule(optimizer, [first, optim.ExponentialDecay(optimizer, 0.5)], [0])
    # The schedule built last that was accepted owns the rate (the ExponentialDecay).
    assert schedule.superseded_by == "ExponentialDecay"
    assert first.superseded_by == "ExponentialDecay"


def test_checkpoints_and_fit_rounds_refuse_a_superseded_schedule() -> None:
    import tempfile
    from pathlib import Path

    from minidl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from minidl.rounds import fit_rounds

    model = nn.mlp((2, 3, 2))
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    older = optim.StepDecay(optimizer, step_size=1)
    optim.ExponentialDecay(optimizer, gamma=0.5)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c"
        message = r"scheduled by the ExponentialDecay built on it after the StepDecay given"
        with pytest.raises(CheckpointError, match=message):
            save_checkpoint(path, model, optimizer, older)
        assert not path.exists()
        save_checkpoint(path, model)
        before = [p.data.clone() for p in model.parameters()]
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path, model, optimizer, older)
        assert all(torch.equal(p.data, b) for p, b in zip(model.parameters(), before, strict=True))
        assert optimizer.lr == 0.1

    def two_schedules(optimizer: optim.Optimizer) -> optim.LRScheduler:
        first = optim.StepDecay(optimizer, step_size=1)
        optim.ExponentialDecay(optimizer, gamma=0.5)
        return first

    models = [nn.mlp((2, 3, 2)) for _ in range(2)]
    data = [(torch.randn(6, 2), torch.randint(0, 2, (6,)))] * 2
    before = [p.data.clone() for m in models for p in m.parameters()]
    with pytest.raises(ValueError, match=r"^fit_rounds: make_scheduler returned a StepDecay for"):
        fit_rounds(
            models,
            nn.CrossEntropyLoss(),
            lambda stack: optim.SGD(stack.parameters(), lr=0.1),
            data,
            epochs=1,
            generators=[torch.Generator().manual_seed(r) for r in range(2)],
            make_scheduler=two_schedules,
        )
    after = [p.data for m in models for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


def _warmup_then_cycles(optimizer: optim.SGD) -> optim.SequentialSchedule:
    warmup = optim.LinearWarmup(optimizer, 5)
    warmup.interval = "batch"
    cycles = optim.CyclicLR(optimizer, 0.01, 0.9, 4)
    return optim.SequentialSchedule(optimizer, [warmup, cycles], milestones=[5])


BOUNDED: list[tuple[str, Callable[[optim.SGD], optim.LRScheduler], float]] = [
    ("cyclic", lambda o: optim.CyclicLR(o, 0.01, 0.5, 7, step_size_down=3), 0.5),
    ("cyclic2", lambda o: optim.CyclicLR(o, 0.01, 0.5, 4, mode="triangular2"), 0.5),
    ("exp-range", lambda o: optim.CyclicLR(o, 0.01, 0.5, 4, mode="exp_range", gamma=0.9999), 0.5),
    ("one-cycle", lambda o: optim.OneCycle(o, 0.5, total_steps=STEPS), 0.5),
    ("one-cycle-div", lambda o: optim.OneCycle(o, 0.5, STEPS, div_factor=0.25), 2.0),
    ("one-cycle-final", lambda o: optim.OneCycle(o, 0.5, STEPS, final_div_factor=0.01), 2.0),
    ("cosine", lambda o: optim.CosineAnnealing(o, T_max=30), 0.1),
    ("cosine-rising", lambda o: optim.CosineAnnealing(o, T_max=30, eta_min=0.7), 0.7),
    ("restarts", lambda o: optim.CosineAnnealingWarmRestarts(o, 5, 2, eta_min=0.3), 0.3),
    ("exponential", lambda o: optim.ExponentialDecay(o, 0.97), 0.1),
    ("step", lambda o: optim.StepDecay(o, 3, 0.5), 0.1),
    ("warmup", lambda o: optim.LinearWarmup(o, 10, start_factor=0.1), 0.1),
    ("sequence", _warmup_then_cycles, 0.9),
]


@pytest.mark.parametrize(("make", "bound"), [c[1:] for c in BOUNDED], ids=[c[0] for c in BOUNDED])
def test_rate_bound_is_the_largest_rate_of_every_step(
    make: Callable[[optim.SGD], optim.LRScheduler], bound: float
) -> None:
    """rate_bound, which fit reads to look for a rate beyond the parameters' dtype before
    training, is the largest rate the schedule gives at any step (reached within 200 steps,
    to rounding), from the settings that make it so (a div_factor or final_div_factor below 1,
    an eta_min above base_lr); a schedule of one's own has none."""
    schedule = make(_optimizer())
    assert schedule.rate_bound == bound
    rates = [schedule.lr_at(step) for step in range(STEPS + 1)]
    assert max(rates) <= bound * (1 + 1e-15)
    assert max(rates) == pytest.approx(bound, rel=1e-3)
    assert optim.LRScheduler.rate_bound.fget(schedule) is None  # type: ignore[attr-defined]


class _Tenths(optim.LRScheduler):
    """A schedule of one's own as the docs describe one: ``lr_at`` alone, no ``_start``."""

    def lr_at(self, step: int) -> float:
        return self.base_lr * 0.1 * (step + 1)


def test_a_schedule_of_ones_own_starts_when_built() -> None:
    """Construction sets the rate of step 0 and takes the optimizer over, for a schedule that
    only implements ``lr_at`` too: it left the rate as it was, and the schedule built before
    it went on stepping, the two overwriting each other's rates."""
    optimizer = _sgd()
    older = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    schedule = _Tenths(optimizer)
    assert optimizer.lr == schedule.lr_at(0) == pytest.approx(0.01)
    with pytest.raises(RuntimeError, match=r"^StepDecay\.step: the optimizer is scheduled by "):
        older.step()
    assert optimizer.lr == schedule.lr_at(0)
    assert schedule.step() == optimizer.lr == schedule.lr_at(1)
    # Its settings are checked from then on, as a built-in schedule's are.
    with pytest.raises(ValueError, match=r"^_Tenths: interval must be 'epoch' or 'batch'"):
        schedule.interval = "step"
    with pytest.raises(ValueError, match=r"^_Tenths: base_lr must be"):
        schedule.base_lr = -1.0
    assert (schedule.base_lr, schedule.last_step, optimizer.lr) == (0.1, 1, schedule.lr_at(1))


def test_a_schedule_that_starts_itself_starts_once() -> None:
    """One that calls ``_start`` at the end of its ``__init__`` (as the built-in ones do) is
    not started again; a subclass of a built-in one starts before its own ``__init__`` ends."""
    optimizer = _sgd()
    schedule = _Doubling(optimizer)
    token = optimizer._scheduled_by
    assert token is not None and token[1] == "_Doubling" and schedule._token == token[0]

    class Quarter(optim.StepDecay):
        def __init__(self, optimizer: optim.Optimizer) -> None:
            super().__init__(optimizer, step_size=1, gamma=0.5)
            self.gamma = 0.25

    other = _sgd()
    quarter = Quarter(other)
    assert (quarter.gamma, quarter.step(), other.lr) == (0.25, 0.025, 0.025)


def test_schedule_classes_keep_their_signatures_and_mix_with_abstract_bases() -> None:
    """How a schedule starts when built (a class of metaclass before) hid every schedule's
    signature from ``inspect`` and ``help`` and made an abstract base of schedules a metaclass
    conflict; a subclass of a built-in schedule sets what ``lr_at`` reads before
    ``super().__init__``, which starts it."""
    import abc
    import inspect

    assert str(inspect.signature(optim.StepDecay)).startswith(
        "(optimizer: 'Optimizer', step_size: 'int' = 10"
    )

    class Base(optim.LRScheduler, abc.ABC):
        @abc.abstractmethod
        def lr_at(self, step: int) -> float: ...

    class Halves(Base):
        def lr_at(self, step: int) -> float:
            return self.base_lr * 0.5**step

    with pytest.raises(TypeError, match="abstract"):
        Base(_sgd())  # type: ignore[abstract]
    optimizer = _sgd()
    assert Halves(optimizer).step() == optimizer.lr == 0.05

    class Floored(optim.StepDecay):
        def __init__(self, optimizer: optim.Optimizer, floor: float) -> None:
            self.floor = floor
            super().__init__(optimizer, step_size=1, gamma=0.1)

        def lr_at(self, step: int) -> float:
            return max(super().lr_at(step), self.floor)

    other = _sgd()
    floored = Floored(other, 0.002)
    assert [floored.step() for _ in range(3)] == pytest.approx([0.01, 0.002, 0.002])
    assert other.lr == 0.002


def test_a_dataclass_schedule_keeps_its_constructor() -> None:
    """A class without an ``__init__`` of its own got a wrapped one, which a dataclass does
    not replace: its generated constructor was lost."""
    import dataclasses

    @dataclasses.dataclass
    class Halving(optim.LRScheduler):
        optimizer_given: optim.Optimizer
        factor: float = 0.5

        def __post_init__(self) -> None:
            super().__init__(self.optimizer_given)

        def lr_at(self, step: int) -> float:
            return self.base_lr * self.factor**step

    optimizer = _sgd()
    assert Halving(optimizer, 0.25).step() == pytest.approx(0.025)
