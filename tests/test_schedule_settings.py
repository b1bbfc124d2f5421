"""Learning-rate schedules' settings set after construction: each value is checked as by the
constructor (a refused one changes neither the schedule nor the optimizer's rate), and a value
taken gives the schedule built with it, against PyTorch's schedule of the same settings where
there is one. They were plain attributes: a bad value failed at the next ``step`` in Python's
words (a ZeroDivisionError, a TypeError) or was computed with silently, and a value from which
the constructor derived other state (OneCycle's initial rate) was ignored."""

from __future__ import annotations

import copy
import math
import pickle
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from minidl import nn, optim
from minidl._setting import Setting
from minidl._validate import check_real
from minidl.optim.lr_scheduler import ScheduleSetting

STEPS = 160
LR = 0.1

Build = Callable[..., optim.LRScheduler]
TorchBuild = Callable[..., Any]


def _sgd(lr: float = LR) -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=lr)


def _torch_sgd(lr: float = LR) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))], lr=lr)


# -- the schedules, each with every setting a keyword (the defaults below unless given) ----------


def _step_decay(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    return optim.StepDecay(o, **{"step_size": 3, "gamma": 0.5, **kw})


def _exponential(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    return optim.ExponentialDecay(o, **{"gamma": 0.97, **kw})


def _cosine(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    return optim.CosineAnnealing(o, **{"T_max": 20, "eta_min": 0.01, **kw})


def _restarts(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    return optim.CosineAnnealingWarmRestarts(o, **{"T_0": 3, "T_mult": 2, "eta_min": 0.001, **kw})


def _warmup(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    return optim.LinearWarmup(o, **{"warmup_steps": 10, "start_factor": 0.2, **kw})


def _one_cycle(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    return optim.OneCycle(o, **{"max_lr": 1.0, "total_steps": STEPS, **kw})


def _cyclic(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    settings = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4, "step_size_down": 4}
    return optim.CyclicLR(o, **{**settings, **kw})


def _sequential(o: optim.Optimizer, **kw: Any) -> optim.LRScheduler:
    schedules = [optim.LinearWarmup(o, 10, 0.2), optim.CosineAnnealing(o, 40, 0.001)]
    return optim.SequentialSchedule(o, schedules, kw.get("milestones", [10]))


# -- a bad value: the constructor's error, and nothing changed ------------------------------------

BAD: list[tuple[Build, str, object]] = [
    (_step_decay, "step_size", 0),
    (_step_decay, "step_size", 2.5),
    (_step_decay, "gamma", 1.5),
    (_step_decay, "gamma", "0.5"),
    (_exponential, "gamma", 0),
    (_exponential, "gamma", float("nan")),
    (_exponential, "interval", "step"),
    # (an array of strings: numpy's "truth value of an array ... is ambiguous" from ``in``; as
    # mode's and anneal_strategy's below)
    (_exponential, "interval", np.array(["epoch", "batch"])),
    (_cosine, "T_max", 0),
    (_cosine, "T_max", 20.0),
    (_cosine, "eta_min", -0.01),
    (_cosine, "eta_min", math.inf),
    (_cosine, "interval", 0),  # (None given to the constructor keeps the class's)
    (_restarts, "T_0", 0),
    (_restarts, "T_mult", 0),
    (_restarts, "T_mult", True),
    (_restarts, "eta_min", -1),
    (_restarts, "interval", "Batch"),
    (_warmup, "warmup_steps", 0),
    (_warmup, "warmup_steps", "10"),
    (_warmup, "start_factor", 0),
    (_warmup, "start_factor", 1.5),
    (_warmup, "interval", "bogus"),
    (_one_cycle, "max_lr", 0),
    (_one_cycle, "max_lr", None),
    (_one_cycle, "total_steps", 0),
    (_one_cycle, "total_steps", 160.0),
    (_one_cycle, "pct_start", 1.0),
    (_one_cycle, "pct_start", 1 / STEPS),  # a rise that ends at step 0: both together
    (_one_cycle, "anneal_strategy", "cosine"),
    (_one_cycle, "anneal_strategy", np.array(["cos", "linear"])),
    (_one_cycle, "div_factor", 0),
    (_one_cycle, "div_factor", -25),
    (_one_cycle, "final_div_factor", math.nan),
    (_cyclic, "base_lr", -0.01),
    (_cyclic, "max_lr", 0.001),  # below base_lr
    (_cyclic, "max_lr", "x"),
    (_cyclic, "step_size_up", 0),
    (_cyclic, "step_size_down", 0),
    (_cyclic, "step_size_down", 1.5),
    (_cyclic, "mode", "x"),
    (_cyclic, "mode", ["triangular"]),
    (_cyclic, "mode", np.array(["triangular", "exp_range"])),
    (_cyclic, "gamma", 0),
    (_sequential, "milestones", [0]),
    (_sequential, "milestones", [5, 6]),
    (_sequential, "milestones", [2.5]),
    (_sequential, "milestones", 10),
]


def _ids(case: tuple[Build, str, object]) -> str:
    return f"{case[0].__name__.strip('_')}.{case[1]}={case[2]!r}"


def _snapshot(schedule: optim.LRScheduler) -> tuple[Any, ...]:
    return (
        schedule.state_dict(),
        repr(schedule),
        schedule.optimizer.lr,
        schedule.lr,
        schedule.interval,
        schedule.step_limit,
    )


@pytest.mark.parametrize("case", BAD, ids=[_ids(case) for case in BAD])
def test_a_bad_setting_raises_the_constructors_error_and_changes_nothing(
    case: tuple[Build, str, object],
) -> None:
    build, name, bad = case
    with pytest.raises((TypeError, ValueError)) as refused:
        build(_sgd(), **{name: bad})
    schedule, twin = build(_sgd()), build(_sgd())
    for _ in range(7):
        schedule.step()
        twin.step()
    before, value = _snapshot(schedule), getattr(schedule, name)
    with pytest.raises(refused.type) as raised:
        setattr(schedule, name, bad)
    assert str(raised.value) == str(refused.value)
    assert str(raised.value).startswith(f"{type(schedule).__name__}: ")
    if not isinstance(bad, list | int) or isinstance(bad, bool) or name != "milestones":
        # (pct_start's check of both together names the product pct_start * total_steps - 1)
        assert repr(bad) in str(raised.value) or name == "pct_start"
    assert _snapshot(schedule) == before and getattr(schedule, name) == value
    assert [schedule.step() for _ in range(30)] == [twin.step() for _ in range(30)]


def test_a_lower_bound_above_the_upper_is_refused_and_changes_nothing() -> None:
    schedule = _cyclic(_sgd())
    schedule.step()
    before = _snapshot(schedule)
    with pytest.raises(
        ValueError, match=r"^CyclicLR: base_lr must be in \[0, 0\.1\] \(at most max_lr\), got 0\.5$"
    ):
        schedule.base_lr = 0.5
    assert _snapshot(schedule) == before
    schedule.max_lr = 1.0  # raise the upper bound first, then the lower one
    schedule.base_lr = 0.5
    assert (schedule.base_lr, schedule.max_lr) == (0.5, 1.0)


def test_one_cycles_base_lr_which_its_rates_do_not_read_cannot_be_set() -> None:
    """OneCycle's rates come from max_lr and its factors; its base_lr is the optimizer's rate
    before it was built. Setting it was taken and changed nothing but the state it saves (the
    docstring says that a setting set makes the schedule "the one built with that value"): it
    is refused, naming what to set, and nothing changes; in a sequence too."""
    schedule = _one_cycle(_sgd())
    schedule.step()
    before = _snapshot(schedule)
    with pytest.raises(
        AttributeError,
        match=r"^OneCycle\.base_lr is the optimizer's rate before the schedule was built, "
        r"which its rates do not read \(they come from max_lr, div_factor and "
        r"final_div_factor\); set those$",
    ):
        schedule.base_lr = 5.0
    for bad in (-1.0, "x"):  # (whatever the value: no value is taken, so none is checked)
        with pytest.raises(AttributeError, match=r"^OneCycle\.base_lr is the optimizer's rate"):
            schedule.base_lr = bad
    assert _snapshot(schedule) == before and schedule.base_lr == LR
    optimizer = _sgd()
    warmup = _warmup(optimizer)
    warmup.interval = "batch"  # (OneCycle's)
    sequence = optim.SequentialSchedule(optimizer, [warmup, _one_cycle(optimizer)], milestones=[10])
    before, own = _snapshot(sequence), sequence.schedules[1].base_lr
    with pytest.raises(AttributeError, match=r"^OneCycle\.base_lr is the optimizer's rate"):
        sequence.schedules[1].base_lr = 5.0
    assert _snapshot(sequence) == before
    sequence.base_lr = 0.5  # (the sequence's reference rate: its warm-up's, not OneCycle's)
    assert [s.base_lr for s in sequence.schedules] == [0.5, own]


@pytest.mark.parametrize(
    "build", [_step_decay, _exponential, _cosine, _restarts, _warmup, _sequential]
)
@pytest.mark.parametrize("bad", [-0.1, math.inf, "0.1", None])
def test_a_bad_reference_rate_is_refused_and_changes_nothing(build: Build, bad: object) -> None:
    schedule = build(_sgd())
    schedule.step()
    before = _snapshot(schedule)
    inner = [s.base_lr for s in getattr(schedule, "schedules", [])]
    name = type(schedule).__name__
    kind = ValueError if isinstance(bad, float) else TypeError  # ("0.1" and None: no number)
    with pytest.raises(kind, match=rf"^{name}: base_lr must be .*\[0, inf\).*, got "):
        schedule.base_lr = bad
    assert _snapshot(schedule) == before
    assert [s.base_lr for s in getattr(schedule, "schedules", [])] == inner


def test_a_setting_that_leaves_the_current_step_no_finite_rate_is_refused() -> None:
    optimizer = _sgd()
    schedule = optim.OneCycle(optimizer, max_lr=1e300, total_steps=10)
    schedule.step()
    before = _snapshot(schedule)
    with pytest.raises(
        ValueError,
        match=r"^OneCycle\.div_factor: the rate of step 1 is inf \(OneCycle\(max_lr=1e\+300, "
        r".*div_factor=1e-10, .*\); expected a finite rate >= 0$",
    ):
        schedule.div_factor = 1e-10
    assert _snapshot(schedule) == before and schedule.initial_lr == 1e300 / 25


def test_total_steps_before_the_current_step_is_refused() -> None:
    schedule = _one_cycle(_sgd())
    for _ in range(100):
        schedule.step()
    before = _snapshot(schedule)
    with pytest.raises(
        ValueError,
        match=r"^OneCycle: with total_steps=50 the last step would be 50 \(its step_limit\), "
        r"before the current step 100$",
    ):
        schedule.total_steps = 50
    assert _snapshot(schedule) == before
    schedule.total_steps = 100  # (the current step may be the last)
    assert schedule.optimizer.lr == schedule.min_lr
    with pytest.raises(ValueError, match="past total_steps=100"):
        schedule.step()


# -- what cannot change --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "name", "message"),
    [
        (_step_decay, "optimizer", r"^StepDecay\.optimizer is fixed at construction; build a new "),
        (_one_cycle, "optimizer", r"^OneCycle\.optimizer is fixed at construction"),
        (_one_cycle, "initial_lr", r"^OneCycle\.initial_lr is max_lr / div_factor; set max_lr"),
        (_one_cycle, "min_lr", r"^OneCycle\.min_lr is max_lr / div_factor / final_div_factor"),
        (_sequential, "schedules", r"^SequentialSchedule\.schedules is fixed at construction"),
        (_sequential, "interval", r"^SequentialSchedule\.interval is fixed at construction; it "),
    ],
)
def test_what_the_schedule_cannot_change_is_read_only(
    build: Build, name: str, message: str
) -> None:
    schedule = build(_sgd())
    schedule.step()
    before, value = _snapshot(schedule), getattr(schedule, name)
    new = _sgd() if name == "optimizer" else "batch" if name == "interval" else 0.5
    with pytest.raises(AttributeError, match=message):
        setattr(schedule, name, new)
    assert _snapshot(schedule) == before and getattr(schedule, name) == value  # (schedules: a copy)


# -- a good value: the schedule built with it ----------------------------------------------------

GOOD: list[tuple[Build, str, object, TorchBuild | None]] = [
    (_step_decay, "step_size", 7, lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5)),
    (_step_decay, "gamma", 0.8, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.8)),
    (_exponential, "gamma", 0.9, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
    (_cosine, "T_max", 33, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 33, 0.01)),
    (_cosine, "eta_min", 0.0, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 20)),
    (
        _restarts,
        "T_0",
        5,
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 5, 2, 0.001),
    ),
    (
        _restarts,
        "T_mult",
        1,
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 3, 1, 0.001),
    ),
    (
        _restarts,
        "eta_min",
        0.02,
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 3, 2, 0.02),
    ),
    (
        _warmup,
        "warmup_steps",
        25,
        lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.2, 1.0, total_iters=25),
    ),
    (
        _warmup,
        "start_factor",
        0.05,
        lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.05, 1.0, total_iters=10),
    ),
    *(
        (
            _one_cycle,
            name,
            value,
            lambda o, name=name, value=value: torch.optim.lr_scheduler.OneCycleLR(
                o, **{"max_lr": 1.0, "total_steps": STEPS, name: value}, cycle_momentum=False
            ),
        )
        for name, value in [
            ("max_lr", 0.3),
            ("total_steps", 120),
            ("pct_start", 0.5),
            ("anneal_strategy", "linear"),
            ("div_factor", 10.0),
            ("final_div_factor", 100.0),
        ]
    ),
    *(
        (
            _cyclic,
            name,
            value,
            lambda o, name=name, value=value: torch.optim.lr_scheduler.CyclicLR(
                o,
                **{
                    "base_lr": 0.01,
                    "max_lr": 0.1,
                    "step_size_up": 4,
                    "step_size_down": 4,
                    name: value,
                },
                cycle_momentum=False,
            ),
        )
        for name, value in [
            ("base_lr", 0.05),
            ("max_lr", 0.3),
            ("step_size_up", 9),
            ("step_size_down", 2),
            ("mode", "triangular2"),
        ]
    ),
    (
        _cyclic,
        "gamma",
        0.99,
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.01, 0.1, 4, mode="exp_range", gamma=0.99, cycle_momentum=False
        ),
    ),
    (
        _sequential,
        "milestones",
        [25],
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 0.2, total_iters=10),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, 40, 0.001),
            ],
            milestones=[25],
        ),
    ),
]


def _rates(schedule: optim.LRScheduler, steps: int) -> list[float]:
    return [schedule.optimizer.lr] + [schedule.step() for _ in range(steps)]


def _torch_rates(build: TorchBuild, steps: int, lr: float = LR) -> list[float]:
    optimizer = _torch_sgd(lr)
    schedule = build(optimizer)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def _steps(schedule: optim.LRScheduler) -> int:
    limit = schedule.step_limit
    return STEPS if limit is None else limit


@pytest.mark.parametrize("case", GOOD, ids=[_ids((c[0], c[1], c[2])) for c in GOOD])
def test_a_good_setting_gives_the_schedule_built_with_it(
    case: tuple[Build, str, object, TorchBuild | None],
) -> None:
    build, name, value, torch_build = case
    exp_range = {"mode": "exp_range"} if name == "gamma" and build is _cyclic else {}
    built = build(_sgd(), **{name: value}, **exp_range)
    expected = _rates(built, _steps(built))

    # Set right after construction: the whole trajectory, step 0's rate included.
    schedule = build(_sgd(), **exp_range)
    setattr(schedule, name, value)
    assert getattr(schedule, name) == value
    assert repr(schedule) == repr(build(_sgd(), **{name: value}, **exp_range))
    assert _rates(schedule, _steps(schedule)) == expected
    if torch_build is not None:
        torch_rates = _torch_rates(torch_build, _steps(schedule))
        # (OneCycleLR extrapolates its annealing at step total_steps: minidl stays at min_lr)
        last = -1 if build is _one_cycle else None
        assert expected[:last] == pytest.approx(torch_rates[:last], rel=1e-12, abs=1e-15)

    # Set part-way: the optimizer's rate is at once that step's of the schedule built with it,
    # and the steps go on as that schedule's.
    schedule = build(_sgd(), **exp_range)
    for _ in range(60):
        schedule.step()
    setattr(schedule, name, value)
    assert schedule.optimizer.lr == schedule.lr == expected[60]
    assert _rates(schedule, _steps(schedule) - 60) == expected[60:]


@pytest.mark.parametrize(
    ("build", "torch_build"),
    [
        (_step_decay, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)),
        (_exponential, lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.97)),
        (_cosine, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 20, 0.01)),
        (
            _restarts,
            lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 3, 2, 0.001),
        ),
        (_warmup, lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.2, total_iters=10)),
        (
            _sequential,
            lambda o: torch.optim.lr_scheduler.SequentialLR(
                o,
                [
                    torch.optim.lr_scheduler.LinearLR(o, 0.2, total_iters=10),
                    torch.optim.lr_scheduler.CosineAnnealingLR(o, 40, 0.001),
                ],
                milestones=[10],
            ),
        ),
    ],
)
def test_a_reference_rate_set_gives_the_schedule_built_on_it(
    build: Build, torch_build: TorchBuild
) -> None:
    # (a SequentialSchedule passes it on to its schedules, as when it is built)
    expected = _rates(build(_sgd(0.5)), STEPS)
    schedule = build(_sgd())
    schedule.base_lr = 0.5
    assert _rates(schedule, STEPS) == expected
    assert expected == pytest.approx(_torch_rates(torch_build, STEPS, lr=0.5), rel=1e-12)
    schedule = build(_sgd())
    for _ in range(60):
        schedule.step()
    schedule.base_lr = 0.5
    assert schedule.optimizer.lr == expected[60]
    assert _rates(schedule, STEPS - 60) == expected[60:]


@pytest.mark.parametrize("build", [_step_decay, _one_cycle, _cyclic, _cosine])
def test_an_interval_set_is_taken_and_changes_no_rate(build: Build) -> None:
    schedule = build(_sgd())
    schedule.step()
    before = _snapshot(schedule)
    other = "epoch" if schedule.interval == "batch" else "batch"
    schedule.interval = other
    assert schedule.interval == other
    after = _snapshot(schedule)
    assert (after[0], after[2], after[3]) == (before[0], before[2], before[3])


def test_cyclic_lrs_step_size_down_of_none_is_step_size_up() -> None:
    schedule = _cyclic(_sgd(), step_size_down=2)
    schedule.step_size_up = 6
    assert schedule.step_size_down == 2  # (kept when step_size_up is set)
    schedule.step_size_down = None
    assert schedule.step_size_down == 6
    assert _rates(schedule, 50) == _rates(optim.CyclicLR(_sgd(), 0.01, 0.1, 6), 50)


# -- schedules that do not set the optimizer's rate ----------------------------------------------


def test_a_setting_of_a_schedule_in_a_sequence_takes_effect_at_the_sequences_next_step() -> None:
    optimizer = _sgd()
    warmup, decay = optim.LinearWarmup(optimizer, 10, 0.2), optim.CosineAnnealing(optimizer, 40)
    sequence = optim.SequentialSchedule(optimizer, [warmup, decay], [10])
    for _ in range(3):
        sequence.step()
    rate = optimizer.lr
    warmup.start_factor = 0.5
    decay.T_max = 15
    assert optimizer.lr == rate  # (the sequence sets the rate)
    with pytest.raises(ValueError, match=r"^LinearWarmup: warmup_steps must be an integer >= 1"):
        warmup.warmup_steps = 0

    other = _sgd()
    expected = optim.SequentialSchedule(
        other, [optim.LinearWarmup(other, 10, 0.5), optim.CosineAnnealing(other, 15)], [10]
    )
    expected.load_state_dict({"base_lr": LR, "last_step": 3})
    assert _rates(sequence, STEPS)[1:] == _rates(expected, STEPS)[1:]


def test_a_setting_of_a_superseded_schedule_leaves_the_optimizers_rate_alone() -> None:
    optimizer = _sgd()
    old = optim.StepDecay(optimizer, step_size=2)
    new = optim.ExponentialDecay(optimizer, gamma=0.9)
    new.step()
    rate = optimizer.lr
    old.gamma = 0.1
    assert optimizer.lr == rate and old.gamma == 0.1
    with pytest.raises(ValueError, match="StepDecay: gamma must be in"):
        old.gamma = 2


# -- saved state ---------------------------------------------------------------------------------

ALL = [_step_decay, _exponential, _cosine, _restarts, _warmup, _one_cycle, _cyclic, _sequential]


@pytest.mark.parametrize("build", ALL)
def test_state_dict_and_pickle_are_as_before(build: Build) -> None:
    schedule = build(_sgd())
    for _ in range(5):
        schedule.step()
    assert set(schedule.state_dict()) == {"base_lr", "last_step"}
    copy = pickle.loads(pickle.dumps(schedule))
    assert repr(copy) == repr(schedule) and copy.state_dict() == schedule.state_dict()
    assert _rates(copy, 20) == _rates(schedule, 20)


def _as_pickled_before(schedule: optim.LRScheduler) -> dict[str, Any]:
    """The schedule's state as pickled when its settings were plain attributes."""
    state = dict(schedule.__dict__)
    del state["_ready"]
    state.pop("_container", None)
    for key in list(state):
        if isinstance(getattr(type(schedule), key[1:], None), Setting | property):
            state[key[1:]] = state.pop(key)
    return state


@pytest.mark.parametrize("build", ALL)
def test_a_schedule_pickled_before_its_settings_were_checked_loads(build: Build) -> None:
    schedule = build(_sgd())
    for _ in range(5):
        schedule.step()
    state = _as_pickled_before(schedule)
    assert "_base_lr" not in state and "base_lr" in state and "optimizer" in state
    if isinstance(schedule, optim.SequentialSchedule):
        state["schedules"] = [_restore(type(s), _as_pickled_before(s)) for s in schedule.schedules]
    loaded = _restore(type(schedule), state)
    assert repr(loaded) == repr(schedule) and loaded.state_dict() == schedule.state_dict()
    if isinstance(loaded, optim.SequentialSchedule):  # (its schedules know it again)
        assert all(inner._container is loaded for inner in loaded.schedules)
    assert loaded.interval == schedule.interval
    assert _rates(loaded, 20)[1:] == [schedule.lr_at(step) for step in range(6, 26)]
    if isinstance(loaded, optim.OneCycle):  # (whose base_lr is not set: its rates ignore it)
        with pytest.raises(AttributeError, match=r"^OneCycle\.base_lr is the optimizer's rate"):
            loaded.base_lr = -1
        return
    with pytest.raises(ValueError, match=f"^{type(schedule).__name__}: base_lr must be"):
        loaded.base_lr = -1  # (and checked from then on)


def _restore(kind: type[optim.LRScheduler], state: dict[str, Any]) -> optim.LRScheduler:
    schedule = kind.__new__(kind)
    schedule.__setstate__(state)
    return schedule


def test_a_subclass_may_set_a_setting_before_calling_the_constructor() -> None:
    """As with the plain attributes before: the value is checked and kept, and the schedule is
    then built as usual (it was refused with an AttributeError for the step counter)."""

    class Halving(optim.LRScheduler):
        def __init__(self, optimizer: optim.Optimizer) -> None:
            self.interval = "batch"
            super().__init__(optimizer)
            self._start()

        def lr_at(self, step: int) -> float:
            return self.base_lr * 0.5**step

    class Decay(optim.StepDecay):
        def __init__(self, optimizer: optim.Optimizer) -> None:
            self.gamma = 0.25
            super().__init__(optimizer, step_size=1, gamma=self.gamma)

    halving = Halving(_sgd())
    assert halving.interval == "batch"
    assert halving.step() == LR / 2
    with pytest.raises(ValueError, match="Decay: gamma must be in"):
        Decay.__new__(Decay).gamma = 2.0
    decay = Decay(_sgd())
    assert decay.step() == LR * 0.25


def test_a_schedule_whose_setting_is_a_property_steps_with_the_propertys_value() -> None:
    # lr_at reads the setting's slot (_gamma): a subclass overriding gamma failed there.
    class Tenth(optim.StepDecay):
        @property
        def gamma(self) -> float:
            return 0.1

        @gamma.setter
        def gamma(self, value: float) -> None:
            self.asked = value

    class Quarter(optim.StepDecay):
        gamma = 0.25

    optimizer = _sgd(1.0)
    tenth = Tenth(optimizer, step_size=2, gamma=0.5)
    assert tenth.asked == 0.5
    assert [tenth.step() for _ in range(4)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert optimizer.lr == pytest.approx(0.01)
    quarter = Quarter(_sgd(1.0), step_size=1, gamma=0.5)  # (the instance's, as before)
    assert [quarter.step() for _ in range(2)] == [0.5, 0.25]


def test_the_exponential_decays_share_one_check_of_gamma() -> None:
    # ExponentialDecay and CyclicLR each had the same _check_gamma.
    from minidl.optim import cyclic_lr, exponential_decay
    from minidl.optim.lr_scheduler import check_decay_gamma

    for kind in (exponential_decay.ExponentialDecay, cyclic_lr.CyclicLR):
        assert vars(kind)["gamma"].check is check_decay_gamma
    for module in (exponential_decay, cyclic_lr):
        assert not hasattr(module, "_check_gamma")
    with pytest.raises(ValueError, match=r"^ExponentialDecay: gamma must be in \(0, 1\]"):
        optim.ExponentialDecay(_sgd(), gamma=0.0)
    assert check_decay_gamma("CyclicLR", 1) == 1.0


# -- a schedule inside a SequentialSchedule: its settings checked against the sequence -----------
# They were checked against the schedule alone: at step 10 of a warm-up then a OneCycle of 20
# steps, onecycle.total_steps = 4 was taken, leaving the sequence's step_limit before its
# current step (its next step raised), and inner.interval = "batch" left a sequence of one
# interval ("epoch") with a schedule of another.


def _warmup_then_one_cycle() -> tuple[optim.SequentialSchedule, optim.OneCycle]:
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, interval="batch")
    one_cycle = optim.OneCycle(optimizer, max_lr=1.0, total_steps=20)
    sequence = optim.SequentialSchedule(optimizer, [warmup, one_cycle], milestones=[5])
    for _ in range(10):
        sequence.step()
    return sequence, one_cycle


def _whole(sequence: optim.SequentialSchedule) -> list[dict[str, Any]]:
    return [dict(vars(part)) for part in sequence._parts()] + [{"lr": sequence.optimizer.lr}]


def test_a_setting_that_ends_the_sequence_before_its_current_step_is_refused() -> None:
    sequence, one_cycle = _warmup_then_one_cycle()
    before = _whole(sequence)
    with pytest.raises(
        ValueError,
        match=r"^OneCycle: with total_steps=4 the SequentialSchedule it is part of would end at "
        r"step 9 \(its step_limit\), before its current step 10$",
    ):
        one_cycle.total_steps = 4
    assert _whole(sequence) == before and one_cycle.total_steps == 20
    one_cycle.total_steps = 6  # (the sequence's last step is now 11: the current one and next)
    assert sequence.step_limit == 11
    rate = sequence.step()
    assert rate == one_cycle.lr_at(6)
    with pytest.raises(ValueError, match=r"^OneCycle: with total_steps=5 the SequentialSchedule"):
        one_cycle.total_steps = 5


def test_an_interval_other_than_the_sequences_is_refused() -> None:
    sequence, one_cycle = _warmup_then_one_cycle()
    warmup = sequence.schedules[0]
    before = _whole(sequence)
    for inner in (warmup, one_cycle):
        with pytest.raises(
            ValueError,
            match=rf"^{type(inner).__name__}: interval must be 'batch', that of the "
            r"SequentialSchedule it is part of \(its schedules step at one interval\), got "
            r"'epoch'; build the schedules",
        ):
            inner.interval = "epoch"
        assert _whole(sequence) == before
    for inner in (warmup, one_cycle):
        inner.interval = "batch"  # (its own: taken)
    assert sequence.interval == "batch" and sequence.step() == one_cycle.lr_at(6)


class _LinearFall(optim.LRScheduler):
    """A schedule of one's own: ``base_lr - slope * step ** power``, at every batch."""

    slope = ScheduleSetting(lambda where, value: check_real(where, "slope", value, low=0.0))
    _slope: float

    def __init__(self, optimizer: optim.Optimizer, slope: float, power: float = 1) -> None:
        super().__init__(optimizer)
        self.slope = slope
        self.power = power
        self.interval = "batch"
        self._start()

    def lr_at(self, step: int) -> float:
        return self.base_lr - self._slope * step**self.power


def test_a_setting_that_gives_the_sequences_current_step_no_rate_is_refused() -> None:
    """The schedule checks its rate at its own step (0: the sequence gives it its steps through
    lr_at); the sequence checks its own current step (3 of this schedule's), where a slope of
    0.05 gives a rate below 0, and a power of 10**5 one that cannot be computed (a float's
    power overflows), each refused in the words of the schedule changed, nothing changed."""
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, interval="batch")
    fall = _LinearFall(optimizer, slope=0.001)
    sequence = optim.SequentialSchedule(optimizer, [warmup, fall], milestones=[5])
    for _ in range(8):
        sequence.step()
    assert fall.last_step == 0 and sequence.last_step == 8
    before = _whole(sequence)
    with pytest.raises(
        ValueError,
        match=r"^_LinearFall: with slope=0\.05 the rate of the current step 8 of the "
        r"SequentialSchedule it is part of would be -0\.05\d*; expected a finite rate >= 0$",
    ):
        fall.slope = 0.05
    assert _whole(sequence) == before and fall.slope == 0.001
    fall.power = 10.0**5  # (a plain attribute, checked by nothing)
    with pytest.raises(
        ValueError,
        match=r"^_LinearFall: with slope=1e-300 the rate of the current step 8 of the "
        r"SequentialSchedule it is part of cannot be computed \(\(34, 'Numerical result out of "
        r"range'\)\); expected settings and steps within the range of a float$",
    ):
        fall.slope = 1e-300
    assert fall.slope == 0.001 and optimizer.lr == before[-1]["lr"]


def test_a_nested_sequence_checks_a_change_deep_inside_it() -> None:
    optimizer = _sgd()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, interval="batch")
    one_cycle = optim.OneCycle(optimizer, max_lr=1.0, total_steps=20)
    inner = optim.SequentialSchedule(optimizer, [warmup, one_cycle], milestones=[5])
    decay = optim.ExponentialDecay(optimizer, gamma=0.9, interval="batch")
    outer = optim.SequentialSchedule(optimizer, [inner, decay], milestones=[30])
    for _ in range(12):
        outer.step()
    assert (one_cycle._container, inner._container) == (inner, outer)
    # (the inner sequence, which the outer one steps through lr_at, is at its step 0)
    with pytest.raises(ValueError, match=r"^OneCycle: with total_steps=4 the SequentialSchedule"):
        one_cycle.total_steps = 4
    assert one_cycle.total_steps == 20 and outer.step_limit == 25
    one_cycle.total_steps = 24  # (past the outer milestone: no limit)
    assert outer.step_limit is None


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "load_state_dict"])
def test_a_sequence_copied_or_restored_still_checks_its_schedules(how: str) -> None:
    sequence, _ = _warmup_then_one_cycle()
    if how == "pickle":
        sequence = pickle.loads(pickle.dumps(sequence))
    elif how == "deepcopy":
        sequence = copy.deepcopy(sequence)
    else:
        state = sequence.state_dict()
        sequence, _ = _warmup_then_one_cycle()
        sequence.load_state_dict({**state, "last_step": 3})
        sequence.load_state_dict(state)
    one_cycle = sequence.schedules[1]
    assert all(inner._container is sequence for inner in sequence.schedules)
    with pytest.raises(ValueError, match=r"^OneCycle: with total_steps=4 the SequentialSchedule"):
        one_cycle.total_steps = 4  # type: ignore[attr-defined]


def test_a_refused_state_leaves_the_base_lr_of_each_schedule_of_a_sequence() -> None:
    """A SequentialSchedule's refused load_state_dict (a base_lr whose rate the float32
    parameters cannot hold, refused by the optimizer once the sequence had given it to its
    schedules) leaves every schedule as it was: the cosine's own base_lr, set by hand, too.
    (The sequence gave its own previous base_lr back to all of them, the cosine's 0.05 lost
    for 0.1.)"""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=LR)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
    cosine = optim.CosineAnnealing(optimizer, T_max=5)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cosine], milestones=[2])
    for _ in range(3):
        sequence.step()
    cosine.base_lr = 0.05
    before = repr(sequence), sequence.state_dict(), optimizer.lr
    with pytest.raises(ValueError, match=r"^SequentialSchedule\.load_state_dict: the rate of step"):
        sequence.load_state_dict({"base_lr": 1e300, "last_step": 3})
    assert (repr(sequence), sequence.state_dict(), optimizer.lr) == before
    assert (warmup.base_lr, cosine.base_lr) == (LR, 0.05)
    sequence.step()  # (the cosine's rate, from its own base_lr)
    assert optimizer.lr == cosine.lr_at(2) == 0.05 * (1 + math.cos(math.pi * 2 / 5)) / 2


def test_a_rate_that_the_optimizer_refuses_is_refused_in_the_schedules_words() -> None:
    """A rate beyond the range of float32 parameters, from a base_lr given to load_state_dict, a
    step of a CyclicLR or its constructor's step 0, is refused naming the schedule, the method,
    the step, the rate and where it comes from, then in the optimizer's words, and changes
    neither the schedule nor the optimizer's rate. (The optimizer's message came alone, 'SGD:
    lr=1e+39 is beyond ...', naming neither the schedule nor the base_lr given.)"""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=LR)
    refusal = (
        "which the optimizer refuses: SGD: lr={} is beyond the range of the parameters' dtype "
        "torch.float32 (largest finite value 3.40282e+38)"
    )
    with pytest.raises(ValueError) as raised:
        optim.CyclicLR(optimizer, base_lr=1e39, max_lr=2e39, step_size_up=2)
    assert str(raised.value) == (
        "CyclicLR: the rate of step 0 is 1e+39 (CyclicLR(base_lr=1e+39, max_lr=2e+39, "
        "step_size_up=2, step_size_down=2, mode='triangular', gamma=1.0)), "
        + refusal.format("1e+39")
    )
    assert (optimizer.lr, optimizer._scheduled_by) == (LR, None)
    cyclic = optim.CyclicLR(optimizer, base_lr=LR, max_lr=1e39, step_size_up=2)
    with pytest.raises(ValueError) as raised:
        cyclic.step()
    assert str(raised.value) == (
        "CyclicLR.step: the rate of step 1 is 5e+38 (CyclicLR(base_lr=0.1, max_lr=1e+39, "
        "step_size_up=2, step_size_down=2, mode='triangular', gamma=1.0)), "
        + refusal.format("5e+38")
    )
    assert (optimizer.lr, cyclic.last_step) == (LR, 0)
    decay = optim.StepDecay(optimizer, step_size=2)
    with pytest.raises(ValueError) as raised:
        decay.load_state_dict({"base_lr": 1e39, "last_step": 1})
    assert str(raised.value) == (
        "StepDecay.load_state_dict: the rate of step 1 is 1e+39 (from base_lr 1e+39), "
        + refusal.format("1e+39")
    )
    assert (optimizer.lr, decay.state_dict()) == (LR, {"base_lr": LR, "last_step": 0})


def test_a_sequences_refused_rate_names_the_schedule_that_gives_it() -> None:
    """A rate of a SequentialSchedule that the optimizer refuses, from a CyclicLR inside it
    whose own max_lr was set beyond float32's range, is said to come from that CyclicLR. (The
    message said "from base_lr 0.01", the sequence's, which gave no rate of the cycle.)"""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2))], lr=LR)
    cyclic = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.02, step_size_up=2)
    warmup = optim.LinearWarmup(optimizer, 3, interval="batch")
    sequence = optim.SequentialSchedule(optimizer, [warmup, cyclic], [3])
    cyclic.max_lr = 1e300  # (taken: the sequence's current step is the warmup's)
    for _ in range(3):
        sequence.step()
    before = sequence.state_dict(), optimizer.lr
    with pytest.raises(ValueError) as raised:
        sequence.step()
    assert str(raised.value) == (
        "SequentialSchedule.step: the rate of step 4 is 5e+299 (CyclicLR(base_lr=0.01, "
        "max_lr=1e+300, step_size_up=2, step_size_down=2, mode='triangular', gamma=1.0)), "
        "which the optimizer refuses: SGD: lr=5e+299 is beyond the range of the parameters' "
        "dtype torch.float32 (largest finite value 3.40282e+38)"
    )
    assert (sequence.state_dict(), optimizer.lr) == before


def _warmup_cosine(cosine_lr: float | None) -> tuple[optim.SGD, optim.SequentialSchedule]:
    """A warmup then a cosine in a sequence stepped 3 times, the cosine's base_lr set by hand
    to ``cosine_lr`` (if given)."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=LR)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
    cosine = optim.CosineAnnealing(optimizer, T_max=5)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cosine], milestones=[2])
    for _ in range(3):
        sequence.step()
    if cosine_lr is not None:
        cosine.base_lr = cosine_lr
    return optimizer, sequence


def test_a_sequence_whose_schedule_has_its_own_base_lr_restores_it() -> None:
    """A schedule of a sequence given a base_lr of its own by hand (the cosine's 0.05 under the
    sequence's 0.1) is in the sequence's state_dict (base_lrs, every schedule's, only then: a
    sequence's state is otherwise as before) and restored by load_state_dict, which went on
    with the sequence's 0.1 for it; a nested sequence's schedules too. A bad base_lrs is
    refused by name, changing nothing."""
    _, saved = _warmup_cosine(0.05)
    state = saved.state_dict()
    assert state == {"base_lr": LR, "last_step": 3, "base_lrs": [LR, 0.05]}
    assert set(_warmup_cosine(None)[1].state_dict()) == {"base_lr", "last_step"}
    optimizer, sequence = _warmup_cosine(None)
    sequence.load_state_dict(state)
    assert repr(sequence) == repr(saved)
    # (the rate of step 3 is the cosine's from 0.05: the sequence that saved it set its own
    # before the cosine's base_lr was set, which took effect at its next step)
    assert optimizer.lr == 0.05 * (1 + math.cos(math.pi / 5)) / 2
    assert _rates(sequence, 6)[1:] == _rates(saved, 6)[1:]
    for bad, message in (
        ([LR], r"base_lrs must be a list of 2 rates, the base_lr of each schedule it holds"),
        ([LR, -1.0], r"base_lrs\[1\] \(CosineAnnealing\): base_lr must be in \[0, inf\)"),
        (0.05, r"base_lrs must be a list of 2 rates, .*, got 0\.05$"),
    ):
        optimizer, sequence = _warmup_cosine(None)
        before = repr(sequence), sequence.state_dict(), optimizer.lr
        with pytest.raises(ValueError, match=r"^SequentialSchedule\.load_state_dict: " + message):
            sequence.load_state_dict({**state, "base_lrs": bad})
        assert (repr(sequence), sequence.state_dict(), optimizer.lr) == before
    # nested: the inner sequence's own base_lr, and its cosine's
    outer = []
    for inner_lr in (0.07, None):
        optimizer = optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=LR)
        warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
        cosine = optim.CosineAnnealing(optimizer, T_max=5)
        inner = optim.SequentialSchedule(optimizer, [warmup, cosine], milestones=[2])
        decay = optim.ExponentialDecay(optimizer, gamma=0.9)
        outer.append(optim.SequentialSchedule(optimizer, [inner, decay], milestones=[7]))
        if inner_lr is not None:
            inner.base_lr = inner_lr
            cosine.base_lr = 0.03
    outer[1].load_state_dict(outer[0].state_dict())
    assert outer[0].state_dict()["base_lrs"] == [0.07, 0.07, 0.03, LR]
    assert repr(outer[1]) == repr(outer[0])
    assert _rates(outer[1], 12)[1:] == _rates(outer[0], 12)[1:]


def test_a_sequence_of_a_schedule_of_its_own_rates_saves_no_base_lrs() -> None:
    """A schedule that takes its own rates (a CyclicLR from 0.01 under the sequence's 0.1) is
    given no base_lr by the sequence, so its own is none set by hand: the sequence's state is
    its base_lr and last_step alone, as before base_lrs were saved."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=LR)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
    warmup.interval = "batch"
    cyclic = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.2, step_size_up=3)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cyclic], milestones=[2])
    for _ in range(4):
        sequence.step()
    assert sequence.state_dict() == {"base_lr": LR, "last_step": 4}


def _warmup_then_cyclic(
    optimizer: optim.Optimizer,
) -> tuple[optim.SequentialSchedule, optim.CyclicLR]:
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, interval="batch")
    cyclic = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.2, step_size_up=5)
    return optim.SequentialSchedule(optimizer, [warmup, cyclic], milestones=[5]), cyclic


@pytest.mark.parametrize("twice", [False, True])
def test_a_sequence_saves_the_lower_bound_of_its_cyclic_lr_set_by_hand(twice: bool) -> None:
    """A CyclicLR's base_lr (its lower bound, its own rate) set by hand inside a sequence was
    saved only where another schedule's was set too: the resumed run went back to the bound it
    was built with (0.162, ..., 0.01 where the run gave 0.17, ..., 0.05). A run restored from
    such a state saves it again (``twice``)."""

    def make() -> optim.SGD:
        return optim.SGD([nn.Parameter(torch.zeros(3, dtype=torch.float64))], lr=0.3)

    optimizer = make()
    sequence, cyclic = _warmup_then_cyclic(optimizer)
    for _ in range(20):
        sequence.step()
    cyclic.base_lr = 0.05
    state, optimizer_state = sequence.state_dict(), optimizer.state_dict()
    assert state == {"base_lr": 0.3, "last_step": 20, "base_lrs": [0.3, 0.05]}
    if twice:
        middle = make()
        middle_sequence, _ = _warmup_then_cyclic(middle)
        middle.load_state_dict(optimizer_state)
        middle_sequence.load_state_dict(state)
        state = middle_sequence.state_dict()
        assert state == {"base_lr": 0.3, "last_step": 20, "base_lrs": [0.3, 0.05]}
    expected = [sequence.step() for _ in range(5)]
    resumed = make()
    resumed_sequence, resumed_cyclic = _warmup_then_cyclic(resumed)
    resumed.load_state_dict(optimizer_state)
    resumed_sequence.load_state_dict(state)
    assert resumed_cyclic.base_lr == 0.05
    assert [resumed_sequence.step() for _ in range(5)] == expected


def test_a_sequence_stepped_past_its_last_step_counts_its_own_steps() -> None:
    """The refusal named the OneCycle inside and its own count (step 11 past total_steps=10),
    where the sequence was asked for its step 16, past its step_limit 15; nothing changes."""
    optimizer = optim.SGD([nn.Parameter(torch.zeros(3, dtype=torch.float64))], lr=0.3)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, interval="batch")
    cycle = optim.OneCycle(optimizer, max_lr=0.2, total_steps=10)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cycle], milestones=[5])
    assert sequence.step_limit == 15
    for _ in range(15):
        sequence.step()
    lr = optimizer.lr
    with pytest.raises(
        ValueError,
        match=r"^SequentialSchedule: step 16 is past step 15, the last of the OneCycle from "
        r"step 5 \(it has rates for 10 steps; the sequence's step_limit is 15\)$",
    ):
        sequence.step()
    assert (sequence.last_step, optimizer.lr) == (15, lr)
    with pytest.raises(ValueError, match=r"^SequentialSchedule: step 17 is past"):
        sequence.lr_at(17)
    # The last step named is the refusing schedule's, not the sequence's first to run out.
    two = optim.SequentialSchedule(
        optimizer,
        [optim.OneCycle(optimizer, 0.2, total_steps=10), optim.OneCycle(optimizer, 0.2, 10)],
        milestones=[12],
    )
    with pytest.raises(
        ValueError,
        match=r"^SequentialSchedule: step 25 is past step 22, the last of the OneCycle from step "
        r"12 \(it has rates for 10 steps; the sequence's step_limit is 10\)$",
    ):
        two.lr_at(25)


@pytest.mark.parametrize(
    ("bad", "kind"),
    [(-5, ValueError), (2.5, TypeError), ("3", TypeError), (None, TypeError), (True, TypeError)],
)
def test_a_last_step_set_by_hand_to_no_count_is_refused_before_anything_changes(
    bad: object, kind: type[Exception]
) -> None:
    """``last_step`` is a plain attribute, the steps done. Set by hand to no integer >= 0, it
    failed in ``lr_at``'s words (``OneCycle.lr_at: step must be an integer >= 0, got -4``) or
    Python's (``"3"``: can only concatenate str (not "int") to str), and in fit after a batch
    was trained. ``step``, ``lr``, ``state_dict`` and fit now refuse it, naming it, with the
    optimizer, the model and the schedule as they were."""
    from minidl import nn
    from minidl.train import fit

    torch.manual_seed(0)
    model = nn.mlp((2, 4, 2), "tanh")
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.OneCycle(optimizer, 0.5, 100)
    schedule.last_step = bad  # type: ignore[assignment]
    rate, values = optimizer.lr, [p.data.clone() for p in model.parameters()]
    ending = rf"last_step \(the steps done\) must be an integer >= 0, got {re.escape(repr(bad))}$"
    for method in ("step", "lr", "state_dict"):
        with pytest.raises(kind, match=rf"^OneCycle\.{method}: {ending}"):
            getattr(schedule, method)() if method != "lr" else schedule.lr
    # (a setting set, which reads the current step: Python's error or lr_at's words before)
    with pytest.raises(kind, match=rf"^OneCycle\.pct_start: {ending}"):
        schedule.pct_start = 0.4
    assert schedule.pct_start == 0.3
    inner = optim.StepDecay(optimizer, 3)
    sequence = optim.SequentialSchedule(optimizer, [inner], [])
    sequence.last_step = bad  # type: ignore[assignment]
    with pytest.raises(kind, match=rf"^StepDecay\.gamma: the SequentialSchedule's {ending}"):
        inner.gamma = 0.25
    assert inner.gamma == 0.5
    sequence.last_step = 0
    schedule = optim.OneCycle(optimizer, 0.5, 100)  # (the last built schedules the optimizer)
    schedule.last_step = bad  # type: ignore[assignment]
    x, y = torch.randn(20, 2), torch.randint(2, (20,))
    with pytest.raises(kind, match=rf"^fit: the OneCycle's {ending}"):
        fit(model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=1, batch_size=5,
            scheduler=schedule)  # fmt: skip
    assert schedule.last_step == bad and optimizer.lr == rate and optimizer.step_count == 0
    assert all(torch.equal(p.data, v) for p, v in zip(model.parameters(), values, strict=True))
    schedule.last_step = 3
    assert schedule.lr == schedule.lr_at(3)
