"""Learning-rate schedules: behaviours that changed code passed every other test of (a second
pass of mutation testing over ``lr_scheduler``, ``sequential_schedule``, ``cyclic_lr`` and
``step_decay``; a third over ``cosine_warm_restarts``, ``linear_warmup``, ``cosine_annealing``,
``exponential_decay`` and ``one_cycle``, at the end).

Each test names the change it catches and checks what a user relies on: the rates (against
PyTorch's schedulers or the closed form, exactly), the refusals (type and message, naming the
schedule) and the state left unchanged after one.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from minidl import nn, optim
from minidl.optim.lr_scheduler import ScheduleSetting, checks_step
from tests.test_schedule_settings import _torch_rates

LR = 0.1


def _sgd(lr: float = LR, dtype: torch.dtype = torch.float64) -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(2, dtype=dtype))], lr=lr)


def _restore(kind: type[optim.LRScheduler], state: dict[str, Any]) -> optim.LRScheduler:
    schedule = kind.__new__(kind)
    schedule.__setstate__(state)
    return schedule


def test_a_schedule_pickled_before_ready_existed_checks_and_applies_a_setting() -> None:
    """A schedule pickled before ``_ready`` existed is a built one once loaded: a setting set
    then is checked against the others and sets the optimizer's rate to the current step's
    (taken as still being built, the value was only stored: the rate stayed the old one, and
    a ``CyclicLR`` lower bound above its upper one was taken)."""
    optimizer = _sgd()
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    for _ in range(5):
        decay.step()
    state = dict(decay.__dict__)
    del state["_ready"]
    loaded = _restore(optim.StepDecay, state)
    assert isinstance(loaded, optim.StepDecay)
    loaded.gamma = 0.25
    assert optimizer.lr == LR * 0.25**2
    cyclic = optim.CyclicLR(_sgd(), 0.01, 0.1, 2)
    state = dict(cyclic.__dict__)
    del state["_ready"]
    old = _restore(optim.CyclicLR, state)
    assert isinstance(old, optim.CyclicLR)
    with pytest.raises(ValueError, match=r"^CyclicLR: base_lr must be"):
        old.base_lr = 0.5
    assert (old.base_lr, old.max_lr) == (0.01, 0.1)


def test_a_numpy_last_step_set_by_hand_is_made_an_int_once_read() -> None:
    """``last_step`` set by hand to a NumPy integer is read as the ``int`` it stands for, and
    kept as one (the attribute, as ``state_dict``'s value, is a plain ``int``, as pickled
    checkpoints and ``json`` take it), with the rate of that step."""
    np = pytest.importorskip("numpy")
    optimizer = _sgd()
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    decay.last_step = np.int64(4)
    assert decay.lr == LR * 0.25
    assert type(decay.last_step) is int and decay.last_step == 4
    decay.last_step = np.int32(3)
    assert decay.state_dict() == {"base_lr": LR, "last_step": 3}
    assert type(decay.last_step) is int


def test_load_state_dict_keeps_a_numpy_last_step_as_an_int() -> None:
    """``load_state_dict`` takes a NumPy ``last_step`` (a state saved by hand from an array)
    as the ``int`` it stands for: the schedule's ``last_step`` is a plain ``int`` afterwards,
    with the rate of that step."""
    np = pytest.importorskip("numpy")
    optimizer = _sgd()
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    decay.load_state_dict({"base_lr": 0.2, "last_step": np.int64(5)})
    assert type(decay.last_step) is int and decay.last_step == 5
    assert optimizer.lr == 0.2 * 0.25
    assert decay.step() == 0.2 * 0.125


@pytest.mark.parametrize("make", [torch.tensor, "numpy"], ids=["tensor", "numpy"])
def test_a_zero_dim_milestones_is_refused_in_the_sequences_words(make: Any) -> None:
    """A 0-dim tensor or array given as ``milestones`` (one number, though ``Iterable``) is
    refused as no sequence, naming it, by the constructor and by the setter, which leaves the
    milestones as they were (listed, it failed in the tensor's or NumPy's own words)."""
    if make == "numpy":
        make = pytest.importorskip("numpy").array
    optimizer = _sgd()
    first = optim.StepDecay(optimizer, step_size=2)
    second = optim.ExponentialDecay(optimizer, 0.5)
    kind = "Tensor" if make is torch.tensor else "ndarray"
    message = rf"^SequentialSchedule: milestones must be a sequence, got a 0-dim {kind}$"
    with pytest.raises(TypeError, match=message):
        optim.SequentialSchedule(optimizer, [first, second], milestones=make(3))
    sequence = optim.SequentialSchedule(optimizer, [first, second], milestones=[3])
    with pytest.raises(TypeError, match=message):
        sequence.milestones = make(4)
    assert sequence.milestones == [3]
    with pytest.raises(
        TypeError, match=r"^SequentialSchedule: schedules must be a sequence, got a 0-dim"
    ):
        optim.SequentialSchedule(optimizer, make(3), milestones=[])


@pytest.mark.parametrize(
    ("state", "missing"),
    [
        ({"last_step": 2}, "['base_lr']"),
        ({"base_lr": 0.2}, "['last_step']"),
        ({}, "['base_lr', 'last_step']"),
    ],
    ids=["base_lr", "last_step", "both"],
)
def test_a_schedule_state_missing_a_key_is_refused_naming_every_one(
    state: dict[str, Any], missing: str
) -> None:
    """A schedule's ``load_state_dict`` names each missing key, in the schedule's words (a raw
    ``KeyError: 'base_lr'`` named neither the schedule nor the other key missing), and changes
    nothing."""
    optimizer = _sgd()
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    decay.step()
    decay.step()
    before = (decay.state_dict(), optimizer.lr)
    with pytest.raises(KeyError) as raised:
        decay.load_state_dict(state)
    assert raised.value.args == (f"StepDecay.load_state_dict: missing keys {missing}",)
    assert (decay.state_dict(), optimizer.lr) == before


def test_a_sequence_refuses_an_empty_base_lrs_and_changes_nothing() -> None:
    """``base_lrs`` given as an empty list is refused as a list of the wrong length (taken as
    absent, the sequence's ``base_lr`` was given to every schedule, losing the one set by hand
    on a schedule); the sequence and its schedules are left as they were."""
    optimizer = _sgd()
    first = optim.StepDecay(optimizer, step_size=2)
    second = optim.ExponentialDecay(optimizer, 0.5)
    sequence = optim.SequentialSchedule(optimizer, [first, second], milestones=[3])
    second.base_lr = 0.3
    sequence.step()
    before = (sequence.state_dict(), first.base_lr, second.base_lr, optimizer.lr)
    assert before[0]["base_lrs"] == [LR, 0.3]
    with pytest.raises(
        ValueError,
        match=r"^SequentialSchedule\.load_state_dict: base_lrs must be a list of 2 rates, the "
        r"base_lr of each schedule it holds \(as state_dict\(\) gives it\), got \[\]$",
    ):
        sequence.load_state_dict({"base_lr": 0.2, "last_step": 4, "base_lrs": []})
    assert (sequence.state_dict(), first.base_lr, second.base_lr, optimizer.lr) == before


class _Resumed(optim.StepDecay):
    """A schedule of one's own that resumes, in its constructor, from a saved state."""

    def __init__(self, optimizer: optim.Optimizer, state: dict[str, Any]) -> None:
        super().__init__(optimizer, step_size=2, gamma=0.5)
        self.load_state_dict(state)


def test_a_subclass_that_loads_a_state_in_its_constructor_keeps_that_steps_rate() -> None:
    """A built-in schedule starts once, at the end of its own ``__init__``: a subclass whose
    constructor goes on to restore a state keeps the restored step's rate on the optimizer
    (started again when the subclass's constructor returned, the rate was step 0's while
    ``last_step`` was the restored one), and steps on from it."""
    optimizer = _sgd()
    resumed = _Resumed(optimizer, {"base_lr": 0.4, "last_step": 5})
    assert resumed.last_step == 5
    assert optimizer.lr == resumed.lr == 0.4 * 0.25
    assert resumed.step() == 0.4 * 0.125


def _torch_cyclic_rates(
    base_lr: float, max_lr: float, up: int, down: int, mode: str, gamma: float, steps: int
) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    schedule = torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr,
        max_lr,
        step_size_up=up,
        step_size_down=down,
        mode=mode,  # type: ignore[arg-type]
        gamma=gamma,
        cycle_momentum=False,
    )
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize(
    ("base_lr", "max_lr", "up", "down", "mode", "gamma"),
    [
        (0.01, 0.1, 3, 5, "triangular", 1.0),
        (0.013, 0.37, 7, 3, "triangular2", 1.0),
        (0.001, 0.3, 4, 4, "exp_range", 0.97),
        (0.02, 0.7, 5, 7, "exp_range", 0.99),
        (0.0, 1.0, 2, 9, "exp_range", 0.9),
    ],
    ids=["triangular-3-5", "triangular2-7-3", "exp_range-4-4", "exp_range-5-7", "exp_range-2-9"],
)
def test_cyclic_lr_gives_torchs_rates_exactly_over_many_cycles(
    base_lr: float, max_lr: float, up: int, down: int, mode: str, gamma: float
) -> None:
    """``CyclicLR`` gives ``torch.optim.lr_scheduler.CyclicLR``'s rates bit for bit, over 15
    cycles and more, for unequal rising and falling phases and every mode (the docstring says
    so: computed with the same roundings; with the amplitude's scale multiplied in another
    order, or the cycle's fraction or the rising share computed otherwise, rates differed in
    the last bit)."""
    optimizer = _sgd(0.5)
    cyclic = optim.CyclicLR(
        optimizer,
        base_lr,
        max_lr,
        up,
        mode=mode,  # type: ignore[arg-type]
        gamma=gamma,
        step_size_down=down,
    )
    ours = [optimizer.lr] + [cyclic.step() for _ in range(180)]
    assert ours == _torch_cyclic_rates(base_lr, max_lr, up, down, mode, gamma, 180)
    assert [cyclic.lr_at(step) for step in range(181)] == ours


def test_a_setting_that_ends_the_sequence_at_its_current_step_is_taken() -> None:
    """A setting of a schedule in a sequence after which the sequence ends exactly at its
    current step (``step_limit == last_step``) is taken: that step still has a rate (refused
    with the limit compared as ``>=``, in the words of a step past the end); one step earlier
    is refused, changing nothing."""
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    cycle = optim.OneCycle(optimizer, max_lr=1.0, total_steps=10)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cycle], milestones=[3])
    for _ in range(8):
        sequence.step()
    with pytest.raises(
        ValueError,
        match=r"^OneCycle: with total_steps=4 the SequentialSchedule it is part of would end at "
        r"step 7 \(its step_limit\), before its current step 8$",
    ):
        cycle.total_steps = 4
    assert (cycle.total_steps, sequence.step_limit) == (10, 13)
    cycle.total_steps = 5
    assert (sequence.step_limit, sequence.last_step) == (8, 8)
    assert sequence.lr == cycle.lr_at(5)


def test_a_refused_interval_leaves_the_optimizer_to_the_schedule_built_before() -> None:
    """A constructor that refuses its ``interval`` takes nothing over: the schedule built
    before still sets the optimizer's rate and steps (with the schedule started before the
    interval was checked, the older one refused to step for a schedule that does not exist),
    and an empty ``interval`` is refused as any other, not taken as the default."""
    optimizer = _sgd()
    older = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    for interval in ("hourly", ""):
        with pytest.raises(
            ValueError, match=rf"^StepDecay: interval must be 'epoch' or 'batch', got '{interval}'$"
        ):
            optim.StepDecay(optimizer, step_size=3, interval=interval)  # type: ignore[arg-type]
        assert older.superseded_by is None
    assert [older.step() for _ in range(4)] == [LR, LR * 0.5, LR * 0.5, LR * 0.25]
    assert optimizer.lr == LR * 0.25


def test_a_shallow_copy_of_a_sequence_checks_its_schedules_against_itself() -> None:
    """The schedules of a ``copy.copy`` of a sequence are part of the copy: a setting of one
    of them that ends the copy before its current step is refused in the copy's terms, changing
    nothing (checked against a copy of the original sequence, still at step 0, it was taken,
    and the copy could no longer step)."""
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    cycle = optim.OneCycle(optimizer, max_lr=1.0, total_steps=10)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cycle], milestones=[3])
    copied = copy.copy(sequence)
    for _ in range(8):
        copied.step()
    inner = copied.schedules[1]
    assert isinstance(inner, optim.OneCycle) and inner is not cycle
    with pytest.raises(
        ValueError,
        match=r"^OneCycle: with total_steps=4 the SequentialSchedule it is part of would end at "
        r"step 7 \(its step_limit\), before its current step 8$",
    ):
        inner.total_steps = 4
    assert (inner.total_steps, copied.step_limit, sequence.last_step) == (10, 13, 0)
    assert copied.step() == cycle.lr_at(6)


def test_step_decay_takes_a_gamma_of_zero() -> None:
    """``gamma`` is in ``[0, 1]`` (documented, and as ``StepLR`` takes it): 0 is taken, by the
    constructor and when set, and drops the rate to 0 at the first drop (refused, a schedule
    that stops training after a warm start could not be built)."""
    optimizer = _sgd()
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.0)
    assert [decay.step() for _ in range(4)] == [LR, 0.0, 0.0, 0.0]
    other = optim.StepDecay(_sgd(), step_size=2, gamma=0.5)
    other.step()
    other.step()
    other.gamma = 0.0
    assert (other.gamma, other.optimizer.lr) == (0.0, 0.0)


def _check_count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: horizon must be an integer >= 1, got {value!r}")
    return value


class _Hyperbolic(optim.LRScheduler):
    """A schedule of one's own, ``base_lr * horizon / (horizon - step)``: no rate at step
    ``horizon`` (a division by zero), which a sequence must refuse in the schedule's words."""

    horizon = ScheduleSetting(_check_count)
    _horizon: int

    def __init__(self, optimizer: optim.Optimizer, horizon: int) -> None:
        self.horizon = horizon
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        return self._base_lr * self._horizon / (self._horizon - step)


def test_a_setting_that_divides_by_zero_at_the_sequences_step_is_refused_in_its_words() -> None:
    """A setting of a schedule in a sequence after which the sequence's current step has no
    rate (the schedule's formula divides by zero there) is refused as a ``ValueError`` naming
    the schedule, the change and the step (a raw ``ZeroDivisionError`` escaped), and changes
    nothing."""
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
    hyperbolic = _Hyperbolic(optimizer, horizon=10)
    sequence = optim.SequentialSchedule(optimizer, [warmup, hyperbolic], milestones=[2])
    for _ in range(5):
        sequence.step()
    rate = optimizer.lr
    with pytest.raises(
        ValueError,
        match=r"^_Hyperbolic: with horizon=3 the rate of the current step 5 of the "
        r"SequentialSchedule it is part of cannot be computed \((?:float )?division by zero\); expected "
        r"settings and steps within the range of a float$",
    ):
        hyperbolic.horizon = 3
    assert (hyperbolic.horizon, sequence.last_step, optimizer.lr) == (10, 5, rate)
    hyperbolic.horizon = 4
    assert sequence.lr == LR * 4


def test_a_refused_rate_in_a_nested_sequence_names_the_inner_schedule_that_gives_it() -> None:
    """A rate refused by the optimizer inside a nested sequence names where it comes from, as
    the inner sequence counts its steps (from its own milestone): step 5 of the outer one is
    step 2 of the inner, the StepDecay's, ``from base_lr`` (looked up at the outer step, the
    message named the CyclicLR after the inner milestone 4)."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=LR)  # (float32: 1e39 is past it)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    decay = optim.StepDecay(optimizer, step_size=4, interval="batch")
    cyclic = optim.CyclicLR(optimizer, 0.01, 0.1, 2)
    inner = optim.SequentialSchedule(optimizer, [decay, cyclic], milestones=[4])
    outer = optim.SequentialSchedule(optimizer, [warmup, inner], milestones=[3])
    for _ in range(4):
        outer.step()
    decay.base_lr = 1e39
    rate = optimizer.lr
    with pytest.raises(
        ValueError,
        match=r"^SequentialSchedule\.step: the rate of step 5 is 1e\+39 \(from base_lr 1e\+39\), "
        r"which the optimizer refuses",
    ):
        outer.step()
    assert (outer.last_step, optimizer.lr) == (4, rate)


def test_schedules_pickled_before_tokens_leave_the_rate_to_the_one_unpickled_last() -> None:
    """Schedules pickled before they had tokens (no ``_token``; their optimizer no
    ``_scheduled_by``) were never superseded: both of two on one optimizer stepped it, each
    overwriting the other's rate, and so did such a schedule beside its own ``copy.copy``. The
    one unpickled last now sets the rate, as if made last (the others refuse to step), and a
    copy takes over from it as from any schedule."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    first = optim.StepDecay(optimizer, step_size=2)
    second = optim.ExponentialDecay(optimizer, gamma=0.5)
    for schedule in (first, second):  # (as an earlier version pickled them)
        del schedule.__dict__["_token"]
    del optimizer.__dict__["_scheduled_by"]
    loaded, old_first, old_second = pickle.loads(pickle.dumps((optimizer, first, second)))
    assert old_first.superseded_by == "ExponentialDecay" and old_second.superseded_by is None
    with pytest.raises(RuntimeError, match=r"^StepDecay\.step: the optimizer is scheduled by"):
        old_first.step()
    old_second.step()
    assert loaded.lr == 0.05
    copied = copy.copy(old_second)
    assert old_second.superseded_by == "ExponentialDecay" and copied.superseded_by is None
    with pytest.raises(RuntimeError, match=r"^ExponentialDecay\.step: the optimizer is sched"):
        old_second.step()
    copied.step()
    assert loaded.lr == 0.025


@contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail (``TimeoutError``) what takes longer than ``seconds`` of wall time."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timer on this platform")

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_warm_restarts_of_one_period_length_find_a_far_step_at_once() -> None:
    """With ``T_mult=1`` every period is ``T_0`` long, so the rate of step ``10**18`` is that
    of ``10**18 % T_0`` (here 1 of 3), computed at once (searching the periods one by one, as
    for ``T_mult > 1``, takes a third of ``10**18`` iterations); the same as the period's start
    after it."""
    schedule = optim.CosineAnnealingWarmRestarts(_sgd(), T_0=3, eta_min=0.01)
    with _within(2.0):
        far, restart = schedule.lr_at(10**18), schedule.lr_at(3 * 10**18)
    assert far == schedule.lr_at(1)
    assert far == 0.01 + (LR - 0.01) * ((1 + math.cos(math.pi / 3)) / 2)
    assert restart == schedule.lr_at(0) == schedule.lr_at(3)


def test_one_cycle_takes_total_steps_up_to_the_largest_float_and_refuses_one_more() -> None:
    """``total_steps`` may be the largest float as an integer (``int(sys.float_info.max)``,
    whose ``pct_start * total_steps`` a float holds): the schedule is built, starts at
    ``initial_lr`` (as the cosine rounds it) and ends at ``min_lr``; one more is refused in
    OneCycle's words, when built and when set, leaving the schedule and the rate as they were
    (refusing the largest itself, or only past twice it, was off by one bound or the other)."""
    largest = int(sys.float_info.max)
    optimizer = _sgd()
    schedule = optim.OneCycle(optimizer, max_lr=1.0, total_steps=largest)
    assert schedule.step_limit == largest
    assert optimizer.lr == schedule.lr_at(0) == 0.040000000000000036
    assert schedule.lr_at(largest) == schedule.min_lr == 1.0 / 25.0 / 1e4
    message = (
        r"^OneCycle: total_steps must be at most 1\.79769e\+308 \(the largest float\), got an "
        r"int of 309 digits$"
    )
    for too_many in (largest + 1, 2 * largest):
        with pytest.raises(ValueError, match=message):
            optim.OneCycle(_sgd(), max_lr=1.0, total_steps=too_many)
        with pytest.raises(ValueError, match=message):
            schedule.total_steps = too_many
        assert (schedule.total_steps, optimizer.lr) == (largest, 0.040000000000000036)


def _torch_one_cycle_rates(total_steps: int, **settings: float | str) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = torch.optim.SGD([parameter], lr=LR)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        total_steps=total_steps,
        cycle_momentum=False,
        **settings,  # type: ignore[arg-type]
    )
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


@pytest.mark.parametrize("anneal_strategy", ["linear", "cos"])
def test_one_cycle_peaks_at_the_rise_s_last_step_as_torch_does(anneal_strategy: str) -> None:
    """Where the rise ends on a step (``pct_start * total_steps - 1 = 4``), that step is the
    rise's last (fraction 1), as in torch's ``OneCycleLR``: with ``"linear"`` its rate is
    0.30000000000000004, as the rise's formula rounds it; taken as the fall's first (fraction
    0) it was 0.3. Every rate of the 10 steps is torch's, exactly."""
    settings: dict[str, float | str] = {
        "max_lr": 0.3,
        "pct_start": 0.5,
        "anneal_strategy": anneal_strategy,
        "div_factor": 10.0,
    }
    schedule = optim.OneCycle(_sgd(), total_steps=10, **settings)  # type: ignore[arg-type]
    rates = [schedule.lr_at(step) for step in range(10)]
    assert rates == _torch_one_cycle_rates(10, **settings)
    assert rates[4] == (0.30000000000000004 if anneal_strategy == "linear" else 0.3)


def test_one_cycle_derives_its_rates_from_a_huge_max_lr_too() -> None:
    """``initial_lr`` is ``max_lr / div_factor`` and ``min_lr`` that over ``final_div_factor``
    for any ``max_lr`` a float holds, 1e301 included (the rates the schedule starts and ends
    at), and the optimizer starts at the first as the cosine rounds it."""
    optimizer = _sgd()
    schedule = optim.OneCycle(optimizer, max_lr=1e301, total_steps=10)
    assert (schedule.initial_lr, schedule.min_lr) == (1e301 / 25.0, 1e301 / 25.0 / 1e4)
    assert schedule.lr_at(10) == schedule.min_lr
    assert optimizer.lr == schedule.lr_at(0) == pytest.approx(1e301 / 25.0, rel=1e-15)


# -- a fourth pass over lr_scheduler and sequential_schedule -----------------------------------


class _Reciprocal(optim.LRScheduler):
    """A schedule of one's own, checked by ``checks_step``, whose formula divides by zero at
    step 3."""

    @checks_step
    def lr_at(self, step: int) -> float:
        return self.base_lr / (3 - step)


def test_checks_step_lets_a_formulas_own_division_by_zero_through() -> None:
    """``checks_step`` names only a step past a float's range (an ``OverflowError``): a
    ``ZeroDivisionError`` of the formula itself reaches the caller of ``lr_at`` as Python
    raised it (caught as an arithmetic error, it became a ``ValueError`` blaming a step
    beyond the range of a float, step 3), and ``step`` refuses it in the schedule's words,
    changing nothing."""
    optimizer = _sgd()
    schedule = _Reciprocal(optimizer)
    assert schedule.lr_at(2) == LR
    with pytest.raises(ZeroDivisionError, match=r"^float division by zero$") as caught:
        schedule.lr_at(3)
    assert type(caught.value) is ZeroDivisionError
    for _ in range(2):
        schedule.step()
    with pytest.raises(
        ValueError,
        match=r"^_Reciprocal\.step: the rate of step 3 cannot be computed \(float division by "
        r"zero; ",
    ):
        schedule.step()
    assert (schedule.last_step, optimizer.lr) == (2, LR)


def test_a_schedule_whose_first_rate_the_optimizer_refuses_takes_nothing_over() -> None:
    """A constructor whose rate of step 0 the optimizer refuses (beyond its parameters' dtype)
    raises in the schedule's words and leaves the optimizer to the schedule built before it,
    which goes on stepping (taken over before the rate was given, the older one refused to
    step for a schedule that does not exist)."""
    optimizer = _sgd(dtype=torch.float32)
    older = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    with pytest.raises(
        ValueError,
        match=r"^CyclicLR: the rate of step 0 is 1e\+39 \(CyclicLR\(.*\), which the optimizer "
        r"refuses: SGD: lr=1e\+39 is beyond the range",
    ):
        optim.CyclicLR(optimizer, base_lr=1e39, max_lr=2e39, step_size_up=2)
    assert older.superseded_by is None
    assert optimizer.lr == LR
    assert [older.step() for _ in range(2)] == [LR * 0.5, LR * 0.25]


class _Interrupted(optim.LRScheduler):
    """A schedule of one's own whose ``lr_at`` is interrupted (Ctrl-C) at step 7."""

    def lr_at(self, step: int) -> float:
        if step == 7:
            raise KeyboardInterrupt
        return self.base_lr * 0.5**step


def test_a_load_state_dict_interrupted_part_way_changes_nothing() -> None:
    """A ``KeyboardInterrupt`` while ``load_state_dict`` computes the restored step's rate
    leaves the schedule as it was, its ``base_lr`` included (restored on ``Exception`` only,
    the state's ``base_lr`` stayed, and every later rate came from it), and the optimizer's
    rate too; so does one in a sequence holding the schedule (the schedule's ``base_lr``,
    given by the sequence, is put back)."""
    optimizer = _sgd()
    schedule = _Interrupted(optimizer)
    schedule.step()
    with pytest.raises(KeyboardInterrupt):
        schedule.load_state_dict({"base_lr": 0.8, "last_step": 7})
    assert (schedule.base_lr, schedule.last_step, optimizer.lr) == (LR, 1, LR * 0.5)
    assert schedule.step() == LR * 0.25
    optimizer = _sgd()
    inner = _Interrupted(optimizer)
    sequence = optim.SequentialSchedule(
        optimizer, [optim.StepDecay(optimizer, step_size=2), inner], milestones=[2]
    )
    with pytest.raises(KeyboardInterrupt):
        sequence.load_state_dict({"base_lr": 0.8, "last_step": 9})
    assert (sequence.base_lr, inner.base_lr, sequence.last_step) == (LR, LR, 0)
    assert sequence.state_dict() == {"base_lr": LR, "last_step": 0}
    assert [sequence.step() for _ in range(3)] == [LR, LR, LR * 0.5]


def test_numpy_milestones_are_kept_as_python_ints() -> None:
    """NumPy integer milestones (``np.cumsum(lengths)``) are taken as the ``int`` each stands
    for, in the constructor and when set: ``milestones`` gives plain ``int`` values (which
    ``json`` writes; kept as NumPy integers, ``json.dumps`` refused them), and the sequence
    switches schedules at them."""
    np = pytest.importorskip("numpy")
    optimizer = _sgd()
    first = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    second = optim.StepDecay(optimizer, step_size=1, gamma=0.25)
    sequence = optim.SequentialSchedule(
        optimizer, [first, second], milestones=np.cumsum(np.array([2], dtype=np.int64))
    )
    assert [type(milestone) for milestone in sequence.milestones] == [int]
    assert json.dumps(sequence.milestones) == "[2]"
    assert [sequence.step() for _ in range(3)] == [LR * 0.5, LR, LR * 0.25]
    sequence.milestones = [np.int32(1)]
    assert [type(milestone) for milestone in sequence.milestones] == [int]
    assert json.dumps(sequence.milestones) == "[1]"
    assert optimizer.lr == LR * 0.25**2


class _Halving(optim.LRScheduler):
    """A schedule of one's own with a constructor of its own that does not start it."""

    def __init__(self, optimizer: optim.Optimizer, factor: float = 0.5) -> None:
        super().__init__(optimizer)
        self.factor = factor

    def lr_at(self, step: int) -> float:
        return self.base_lr * self.factor**step


class _ScaledHalving(_Halving):
    """A subclass of it that sets, after ``super().__init__``, what its ``lr_at`` reads."""

    def __init__(self, optimizer: optim.Optimizer, scale: float) -> None:
        super().__init__(optimizer)
        self.scale = scale

    def lr_at(self, step: int) -> float:
        return super().lr_at(step) * self.scale


def test_a_subclass_of_a_schedule_of_ones_own_starts_when_its_own_constructor_returns() -> None:
    """Only the outermost constructor (the instance's class's) starts the schedule: the rate
    of step 0 is set once the subclass's ``__init__`` has set what ``lr_at`` reads (started
    when the inherited ``__init__`` returned, ``lr_at`` ran before ``scale`` existed and the
    construction raised ``AttributeError``), and the schedule takes the optimizer over from
    the one built before."""
    optimizer = _sgd()
    older = optim.StepDecay(optimizer, step_size=1)
    scaled = _ScaledHalving(optimizer, scale=3.0)
    assert optimizer.lr == LR * 3.0
    assert (scaled.last_step, scaled.base_lr, older.superseded_by) == (0, LR, "_ScaledHalving")
    assert [scaled.step() for _ in range(2)] == [LR * 0.5 * 3.0, LR * 0.25 * 3.0]


def test_a_pytorch_optimizer_is_refused_naming_it_and_the_minidl_one_to_build() -> None:
    """A PyTorch optimizer given to a schedule is refused with a ``TypeError`` naming its full
    class (``torch.optim.sgd.SGD``: a module under ``torch.``) and saying which optimizer to
    build instead (the module compared with ``"torch"`` alone, or the class named without
    its module, gave only ``got SGD``); any other object is named by its class."""
    parameter = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(
        TypeError,
        match=r"^StepDecay: expected a minidl Optimizer, got torch\.optim\.sgd\.SGD, a PyTorch "
        r"optimizer \(build the optimizer of the same name from minidl\.optim\)$",
    ):
        optim.StepDecay(torch.optim.SGD([parameter], lr=LR), step_size=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^_Halving: expected a minidl Optimizer, got dict$"):
        _Halving({"lr": LR})  # type: ignore[arg-type]


def test_a_deep_copy_checks_a_shared_schedules_change_against_the_sequence_built_last() -> None:
    """Schedules put in two sequences are checked against the one built last, and so are
    their copies in a ``copy.deepcopy`` (or pickle) of the first sequence, which copies the
    second with them: a ``total_steps`` that would end the second copy before its current
    step is refused, changing nothing, as with the originals (given to the first copy, at
    step 0, by its ``__setstate__``, the change was taken and the second copy could no
    longer step)."""
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    cycle = optim.OneCycle(optimizer, max_lr=1.0, total_steps=10)
    first = optim.SequentialSchedule(optimizer, [warmup, cycle], milestones=[3])
    last = optim.SequentialSchedule(optimizer, [warmup, cycle], milestones=[6])
    for _ in range(12):
        last.step()
    message = (
        r"^OneCycle: with total_steps=5 the SequentialSchedule it is part of would end at step "
        r"11 \(its step_limit\), before its current step 12$"
    )
    with pytest.raises(ValueError, match=message):
        cycle.total_steps = 5
    copied = copy.deepcopy(first)
    inner = copied.schedules[1]
    assert isinstance(inner, optim.OneCycle)
    with pytest.raises(ValueError, match=message):
        inner.total_steps = 5
    assert (inner.total_steps, copied.last_step, copied.superseded_by) == (
        10,
        0,
        "SequentialSchedule",
    )


class _ResumedHalving(optim.LRScheduler):
    """A schedule of one's own whose constructor restores a state before it has started."""

    def __init__(self, optimizer: optim.Optimizer, state: dict[str, Any]) -> None:
        super().__init__(optimizer)
        self.load_state_dict(state)

    def lr_at(self, step: int) -> float:
        return self.base_lr * 0.5**step


def test_a_schedule_not_yet_started_is_superseded_by_no_older_one() -> None:
    """A schedule whose constructor has not returned has taken nothing over, and is not
    superseded by the one built before it: a constructor that restores a state (as one
    resuming a run does) may ``load_state_dict`` on an optimizer that another schedule set
    (taken as superseded by the older one, it raised ``RuntimeError``); once built, it sets
    the rate, that of the restored step (started when the constructor returned, the
    optimizer had step 0's rate while ``last_step`` was the restored one), and the older one
    refuses to step."""
    optimizer = _sgd()
    older = optim.StepDecay(optimizer, step_size=1)
    resumed = _ResumedHalving(optimizer, {"base_lr": 0.4, "last_step": 3})
    assert (resumed.superseded_by, older.superseded_by) == (None, "_ResumedHalving")
    assert (resumed.base_lr, resumed.last_step, resumed.lr) == (0.4, 3, 0.4 * 0.125)
    assert optimizer.lr == 0.4 * 0.125
    assert resumed.step() == optimizer.lr == 0.4 * 0.0625
    with pytest.raises(RuntimeError, match=r"^StepDecay\.step: the optimizer is scheduled by"):
        older.step()


@pytest.mark.parametrize("given", [[0.2, 3], "base_lr"], ids=["list", "str"])
def test_load_state_dict_refuses_a_sequence_as_no_mapping(given: object) -> None:
    """A list or a str (which can be indexed, but are no mapping) is refused as what it is,
    naming the schedule, not read for keys it would be missing; nothing changes."""
    optimizer = _sgd()
    decay = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    decay.step()
    with pytest.raises(TypeError) as caught:
        decay.load_state_dict(given)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "StepDecay.load_state_dict: expected a mapping (as state_dict() returns), got "
        f"{type(given).__name__}"
    )
    assert (decay.last_step, decay.base_lr, optimizer.lr) == (1, LR, LR * 0.5)


class _Overflowing(optim.LRScheduler):
    """A schedule of one's own whose rate cannot be computed past step 0, and whose repr holds
    an integer of 40 digits (the longest written in full) and one of 41."""

    def lr_at(self, step: int) -> float:
        if step:
            raise OverflowError("int too large to convert to float")
        return self.base_lr

    def __repr__(self) -> str:
        return f"_Overflowing(kept={10**39}, shortened={10**40})"


def test_a_refused_rate_shortens_only_the_integers_longer_than_40_digits() -> None:
    """The message of a rate that cannot be computed quotes the schedule's repr with each
    integer of more than 40 digits written by its number of digits, and one of exactly 40 in
    full."""
    schedule = _Overflowing(_sgd())
    with pytest.raises(ValueError) as caught:
        schedule.step()
    assert str(caught.value) == (
        "_Overflowing.step: the rate of step 1 cannot be computed (int too large to convert to "
        f"float; _Overflowing(kept={10**39}, shortened=an int of 41 digits)); expected settings "
        "and steps within the range of a float"
    )


def test_a_setting_changed_inside_nested_sequences_checks_the_outer_sequences_step() -> None:
    """A setting of a schedule inside a sequence that is itself inside another is checked
    against every sequence holding it: the outer one's ``last_step`` set by hand to no count
    is named, in the setting's words, before anything changes (the inner sequence's alone was
    checked, and the outer one failed later, in its own step)."""
    optimizer = _sgd()
    first = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    second = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    inner = optim.SequentialSchedule(optimizer, [first, second], milestones=[2])
    after = optim.StepDecay(optimizer, step_size=1, gamma=0.9)
    outer = optim.SequentialSchedule(optimizer, [inner, after], milestones=[4])
    outer.step()
    outer.last_step = "x"  # type: ignore[assignment]
    with pytest.raises(TypeError) as caught:
        second.gamma = 0.25
    assert str(caught.value) == (
        "StepDecay.gamma: the SequentialSchedule's last_step (the steps done) must be an "
        "integer >= 0, got 'x'"
    )
    assert (second.gamma, optimizer.lr) == (0.5, LR * 0.5)


# -- a user's review against PyTorch's schedulers (2026-12-07) ---------------------------------


@pytest.mark.parametrize(
    ("torch_kind", "mine"),
    [
        (
            lambda o: torch.optim.lr_scheduler.StepLR(o, 2),
            lambda o: optim.StepDecay(o, 2),
        ),
        (
            lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, 3, cycle_momentum=False),
            lambda o: optim.CyclicLR(o, 0.01, 0.1, 3),
        ),
    ],
)
def test_a_pytorch_schedulers_state_dict_is_refused_with_what_to_load(
    torch_kind: Any, mine: Any
) -> None:
    """A PyTorch scheduler's state_dict (``last_epoch``, ``base_lrs``, ...) given to a minidl
    schedule says what it is, as an optimizer's ``load_state_dict`` does for a PyTorch
    optimizer's (it said only "missing keys ['base_lr', 'last_step']"); the schedule and the
    optimizer's rate are left as they were."""
    theirs = torch_kind(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR))
    theirs.optimizer.step()
    theirs.step()
    optimizer = _sgd()
    schedule = mine(optimizer)
    schedule.step()
    before = (schedule.last_step, schedule.base_lr, optimizer.lr)
    name = type(schedule).__name__
    message = (
        f"{name}.load_state_dict: missing keys ['base_lr', 'last_step'] (a PyTorch scheduler's "
        "state_dict, with last_epoch: a minidl schedule loads what a minidl schedule's "
        "state_dict() returns)"
    )
    with pytest.raises(KeyError) as info:
        schedule.load_state_dict(theirs.state_dict())
    assert info.value.args == (message,)
    assert (schedule.last_step, schedule.base_lr, optimizer.lr) == before
    # (a mapping that lacks the keys and is no PyTorch state: the plain message)
    with pytest.raises(KeyError) as info:
        schedule.load_state_dict({"last_step": 1})
    assert info.value.args == (f"{name}.load_state_dict: missing keys ['base_lr']",)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda o: optim.CyclicLR(o, 0.1, 0.01, 3),
            "CyclicLR: max_lr must be in [0.1, inf) (at least base_lr), got 0.01",
        ),
        (
            lambda o: optim.CyclicLR(o, math.nan, 0.01, 3),
            "CyclicLR: base_lr must be a finite number in [0, inf), got nan",
        ),
    ],
)
def test_cyclic_lrs_bounds_are_named_in_each_others_refusal(build: Any, message: str) -> None:
    """A CyclicLR ``max_lr`` below ``base_lr`` names the bound it is checked against as
    ``base_lr`` (the message said only "must be in [0.1, inf)", the 0.1 unnamed), and a
    ``base_lr`` set above ``max_lr`` names ``max_lr``; a check of a value on its own (NaN) names
    no other bound."""
    with pytest.raises(ValueError) as info:
        build(_sgd())
    assert str(info.value) == message
    optimizer = _sgd()
    schedule = optim.CyclicLR(optimizer, 0.01, 0.1, 3)
    schedule.step()
    for name, value, expected in (
        ("base_lr", 0.5, "CyclicLR: base_lr must be in [0, 0.1] (at most max_lr), got 0.5"),
        ("max_lr", 0.005, "CyclicLR: max_lr must be in [0.01, inf) (at least base_lr), got 0.005"),
    ):
        with pytest.raises(ValueError) as info:
            setattr(schedule, name, value)
        assert str(info.value) == expected
        assert (schedule.base_lr, schedule.max_lr, optimizer.lr) == (0.01, 0.1, schedule.lr_at(1))


# A mutation audit of the concrete schedules (L3, L6 of linear_warmup.py, O10 of one_cycle.py,
# Q18 of sequential_schedule.py).


def _schedule_sgd(lr: float = 0.1) -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def test_linear_warmup_takes_a_start_factor_of_one() -> None:
    """``start_factor`` is in ``(0, 1]``: 1 (no warm-up, PyTorch's ``LinearLR`` takes it) is
    accepted, and every rate is ``base_lr``, PyTorch's (with 1 refused, it raised)."""
    optimizer = _schedule_sgd(0.3)
    schedule = optim.LinearWarmup(optimizer, warmup_steps=4, start_factor=1.0)
    assert optimizer.lr == 0.3
    rates = [optimizer.lr] + [schedule.step() for _ in range(6)]
    expected = _torch_rates(
        lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=1.0, end_factor=1.0, total_iters=4
        ),
        6,
        lr=0.3,
    )
    assert rates == expected == [0.3] * 7
    schedule.start_factor = 0.5  # and set back to 1 after construction
    schedule.start_factor = 1.0
    assert schedule.start_factor == 1.0 and optimizer.lr == 0.3


def test_linear_warmup_repr_names_its_start_factor() -> None:
    """The ``repr`` (which checkpoints compare) writes ``start_factor``, not another value
    (with ``base_lr`` written in its place, two warm-ups of different factors passed for one)."""
    optimizer = _schedule_sgd(0.1)
    schedule = optim.LinearWarmup(optimizer, warmup_steps=4, start_factor=0.25, interval="batch")
    assert repr(schedule) == (
        "LinearWarmup(warmup_steps=4, start_factor=0.25, base_lr=0.1, interval='batch')"
    )
    other = optim.LinearWarmup(
        _schedule_sgd(0.1), warmup_steps=4, start_factor=0.5, interval="batch"
    )
    assert repr(other) != repr(schedule)


@pytest.mark.parametrize("max_lr", [1e308, 1e-320])
def test_one_cycle_cos_rounds_as_torch_at_the_ends_of_the_float_range(max_lr: float) -> None:
    """The "cos" annealing halves ``start - end`` before multiplying by ``cos + 1``, as torch's
    ``OneCycleLR`` does: the same rates bit for bit also where the other order differs (with
    ``max_lr=1e308``, ``(start - end) * 2`` overflows to -inf; in subnormals, halving last
    rounds otherwise)."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=0.1)
    schedule = optim.OneCycle(optimizer, max_lr=max_lr, total_steps=20, div_factor=25.0)
    rates = [optimizer.lr] + [schedule.step() for _ in range(19)]
    expected = _torch_rates(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=max_lr, total_steps=20, div_factor=25.0, cycle_momentum=False
        ),
        19,
    )
    assert rates == expected


def test_sequence_state_with_base_lrs_as_a_tuple_loads() -> None:
    """``base_lrs`` may be a list or a tuple (a state passed through JSON-like or immutable
    containers): a tuple is restored as the list is, each schedule given back its own
    ``base_lr``, the rates those of the state saved (with tuples refused, it raised)."""
    optimizer = _schedule_sgd(0.1)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    sequence = optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[2])
    decay.base_lr = 0.3
    for _ in range(3):
        sequence.step()
    state = sequence.state_dict()
    assert state == {"base_lr": 0.1, "last_step": 3, "base_lrs": [0.1, 0.3]}
    rate = optimizer.lr
    assert rate == 0.3  # decay's step 1
    fresh = _schedule_sgd(0.1)
    warmup2 = optim.LinearWarmup(fresh, warmup_steps=2)
    decay2 = optim.StepDecay(fresh, step_size=2, gamma=0.5)
    copy_ = optim.SequentialSchedule(fresh, [warmup2, decay2], milestones=[2])
    copy_.load_state_dict({**state, "base_lrs": tuple(state["base_lrs"])})
    assert (warmup2.base_lr, decay2.base_lr, copy_.last_step, fresh.lr) == (0.1, 0.3, 3, rate)
    assert [copy_.step() for _ in range(3)] == [sequence.step() for _ in range(3)]
