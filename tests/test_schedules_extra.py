"""ExponentialDecay, CosineAnnealing, CosineAnnealingWarmRestarts, OneCycle, LinearWarmup and
SequentialSchedule against the torch.optim.lr_scheduler equivalents over many steps, with any
optimizer; their argument checks and state restore."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import pytest
import torch

from minidl import nn, optim

LR = 0.1
MakeSchedule = Callable[[optim.Optimizer], optim.LRScheduler]
MakeTorchSchedule = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


_NOT_INTEGER = r"SequentialSchedule: milestones must be integers, got milestones\[0\] = "


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(2, dtype=torch.float64))]


def _torch_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=LR)


def _sequential(optimizer: optim.Optimizer) -> optim.LRScheduler:
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, start_factor=0.2, interval="epoch")
    decay = optim.CosineAnnealing(optimizer, T_max=20, eta_min=0.001)
    return optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[5])


def _torch_sequential(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.2, total_iters=5)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=20, eta_min=0.001)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, decay], milestones=[5])


def _three_stage(optimizer: optim.Optimizer) -> optim.LRScheduler:
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, start_factor=0.5, interval="epoch")
    decay = optim.ExponentialDecay(optimizer, gamma=0.9)
    restarts = optim.CosineAnnealingWarmRestarts(optimizer, T_0=4, T_mult=2)
    return optim.SequentialSchedule(optimizer, [warmup, decay, restarts], milestones=[3, 10])


def _torch_three_stage(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    schedules = [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=3),
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9),
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=4, T_mult=2),
    ]
    return torch.optim.lr_scheduler.SequentialLR(optimizer, schedules, milestones=[3, 10])


CASES: dict[str, tuple[MakeSchedule, MakeTorchSchedule, int]] = {
    "exponential": (
        lambda o: optim.ExponentialDecay(o, gamma=0.93),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93),
        100,
    ),
    "cosine": (
        lambda o: optim.CosineAnnealing(o, T_max=30),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30),
        90,  # three half periods: torch's recursive form goes on past T_max too
    ),
    "cosine-eta-min": (
        lambda o: optim.CosineAnnealing(o, T_max=17, eta_min=0.01),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=17, eta_min=0.01),
        60,
    ),
    "warm-restarts": (
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=7),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=7),
        50,
    ),
    "warm-restarts-mult": (
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.005),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=3, T_mult=2, eta_min=0.005
        ),
        100,
    ),
    "one-cycle-cos": (
        lambda o: optim.OneCycle(o, max_lr=0.5, total_steps=100),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.5, total_steps=100, cycle_momentum=False
        ),
        100,
    ),
    "one-cycle-linear": (
        lambda o: optim.OneCycle(
            o,
            max_lr=1.0,
            total_steps=57,
            pct_start=0.45,
            anneal_strategy="linear",
            div_factor=10,
            final_div_factor=100,
        ),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=1.0,
            total_steps=57,
            pct_start=0.45,
            anneal_strategy="linear",
            div_factor=10,
            final_div_factor=100,
            cycle_momentum=False,
        ),
        57,
    ),
    "linear-warmup": (
        lambda o: optim.LinearWarmup(o, warmup_steps=10, start_factor=0.01),
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=10),
        40,
    ),
    "linear-warmup-default-start": (  # minidl's default start_factor 0.1 (LinearLR's is 1/3)
        lambda o: optim.LinearWarmup(o, warmup_steps=7),
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=7),
        20,
    ),
    "warmup-then-cosine": (_sequential, _torch_sequential, 60),
    "switch-after-one-step": (  # the smallest milestone
        lambda o: optim.SequentialSchedule(
            o, [optim.ExponentialDecay(o, 0.5), optim.ExponentialDecay(o, 0.9)], [1]
        ),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.ExponentialLR(o, 0.5),
                torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
            ],
            milestones=[1],
        ),
        20,
    ),
    "warmup-exponential-restarts": (_three_stage, _torch_three_stage, 60),
}


#: CASES, with StepDecay (whose rate StepLR multiplies by gamma at each milestone) and CyclicLR,
#: for the 16-bit runs below.
SIXTEEN_BIT_SCHEDULES: dict[str, tuple[MakeSchedule, MakeTorchSchedule, int]] = {
    **CASES,
    "step": (
        lambda o: optim.StepDecay(o, step_size=5, gamma=0.3),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.3),
        150,
    ),
    "cyclic-exp-range": (
        lambda o: optim.CyclicLR(o, 0.001, 0.05, step_size_up=6, mode="exp_range", gamma=0.99),
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.001, 0.05, step_size_up=6, mode="exp_range", gamma=0.99, cycle_momentum=False
        ),
        150,
    ),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("optimizer_name", ["SGD", "Adam", "RMSprop"])
@pytest.mark.parametrize("case", sorted(SIXTEEN_BIT_SCHEDULES))
def test_a_16_bit_run_under_a_schedule_gives_torchs_bits(
    case: str, optimizer_name: str, dtype: torch.dtype
) -> None:
    """minidl's schedules compute each rate from the step in closed form, several of PyTorch's
    from the last rate (ExponentialLR, StepLR, CosineAnnealingLR, LinearLR): the two differ in
    the last bits of a float64 (see test_schedule_matches_torch), which a float16 or bfloat16
    update does not see here. Under each schedule, over its steps (120 at
    least, its whole cycle for OneCycle), the parameters are torch.optim's bit for bit at every
    step, SGD's, Adam's and RMSprop's (SGD's on a vectorised kernel, where PyTorch's 16-bit
    ``add_`` rounds once, see docs/pytorch.md)."""
    if optimizer_name == "SGD" and torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("ATen's default kernels round a 16-bit add_'s product first everywhere")
    make, make_torch, steps = SIXTEEN_BIT_SCHEDULES[case]
    if not case.startswith("one-cycle"):
        steps = max(steps, 120)
    settings = {} if optimizer_name == "SGD" else {"eps": 1e-3}
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(256, generator=generator).to(dtype)
    parameter, leaf = nn.Parameter(start.clone()), start.clone().requires_grad_()
    optimizer = getattr(optim, optimizer_name)([parameter], lr=0.05, **settings)
    torch_optimizer = getattr(torch.optim, optimizer_name)([leaf], lr=0.05, **settings)
    schedule, torch_schedule = make(optimizer), make_torch(torch_optimizer)
    for step in range(steps):
        grad = torch.randn(256, generator=generator).to(dtype)
        parameter.grad.copy_(grad)
        leaf.grad = grad.clone()
        optimizer.step()
        torch_optimizer.step()
        assert torch.equal(parameter.data, leaf.detach()), f"step {step + 1}"
        if step < steps - 1:
            schedule.step()
            torch_schedule.step()


@pytest.mark.parametrize("case", sorted(CASES))
def test_schedule_matches_torch(case: str) -> None:
    make, make_torch, steps = CASES[case]
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = make(optimizer)
    torch_optimizer = _torch_optimizer()
    torch_schedule = make_torch(torch_optimizer)
    for step in range(steps + 1):
        expected = torch_optimizer.param_groups[0]["lr"]
        if case.startswith("one-cycle") and step == steps:
            # After the last batch: minidl stays at the minimum, torch extrapolates.
            assert optimizer.lr == pytest.approx(0.5 / 25 / 1e4 if "cos" in case else 0.001)
            break
        assert math.isclose(optimizer.lr, expected, rel_tol=1e-9, abs_tol=1e-15), (
            f"{case}, step {step}: {optimizer.lr} != {expected}"
        )
        assert math.isclose(schedule.lr_at(step), expected, rel_tol=1e-9, abs_tol=1e-15)
        if step < steps:
            schedule.step()
            torch_optimizer.step()
            torch_schedule.step()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Adadelta", "Adagrad"])
def test_schedules_drive_any_optimizer(case: str, name: str) -> None:
    """Each schedule drives each optimizer's steps as torch's schedule drives torch.optim's,
    in float64 over the schedule's steps (to rounding: minidl's rates are in closed form,
    several of PyTorch's from the last rate). The test compared the optimizer's ``lr`` with the
    schedule's own rate alone: an optimizer that kept its first rate passed (a test-suite
    audit's mutant of Adadelta)."""
    make, make_torch, steps = CASES[case]
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(16, dtype=torch.float64, generator=generator)
    parameter = nn.Parameter(start.clone())
    leaf = start.clone().requires_grad_()
    optimizer = getattr(optim, name)([parameter], lr=LR)
    torch_optimizer = getattr(torch.optim, name)([leaf], lr=LR)
    schedule, torch_schedule = make(optimizer), make_torch(torch_optimizer)
    for step in range(steps):
        grad = torch.randn(16, dtype=torch.float64, generator=generator)
        parameter.grad.copy_(grad)
        leaf.grad = grad.clone()
        optimizer.step()
        torch_optimizer.step()
        torch.testing.assert_close(
            parameter.data, leaf.detach(), rtol=1e-12, atol=1e-12, msg=f"step {step + 1}"
        )
        if step < steps - 1:
            schedule.step()
            torch_schedule.step()


def test_state_dict_restores_the_position() -> None:
    optimizer = optim.Adam(_params(), lr=LR)
    schedule = _sequential(optimizer)
    for _ in range(12):
        schedule.step()
    state = schedule.state_dict()
    other_optimizer = optim.Adam(_params(), lr=LR)
    other = _sequential(other_optimizer)
    other.load_state_dict(state)
    assert other_optimizer.lr == optimizer.lr == other.lr_at(12)
    # The position itself, not only the rate at it (lr_at(12) holds whatever the position):
    # the steps after go on as the original's.
    assert other.last_step == schedule.last_step == 12
    for _ in range(10):
        schedule.step()
        other.step()
        assert other_optimizer.lr == optimizer.lr


@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
def test_one_cycle_gives_torchs_rates_to_the_bit_the_peak_step_included(
    anneal_strategy: Literal["cos", "linear"],
) -> None:
    """The closed forms are OneCycleLR's, and the step that ends the rise (step 29 here,
    ``pct_start * total_steps - 1``) belongs to the rise as in torch: the fall's formula at its
    start gives ``max_lr`` rounded otherwise (0.9 against 0.9000000000000001 for "linear")."""
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.OneCycle(optimizer, 0.9, 100, div_factor=3.0, anneal_strategy=anneal_strategy)
    torch_optimizer = _torch_optimizer()
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        torch_optimizer,
        0.9,
        100,
        div_factor=3.0,
        anneal_strategy=anneal_strategy,
        cycle_momentum=False,
    )
    for step in range(100):
        assert optimizer.lr == torch_optimizer.param_groups[0]["lr"], f"step {step}"
        schedule.step()
        torch_optimizer.step()
        torch_schedule.step()


def test_sequential_schedule_step_limit_is_the_first_schedule_to_run_out() -> None:
    """Two OneCycles that each run out before the schedule after them takes over: the limit is
    the earlier one's (step 10), the last step that steps without raising."""
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.SequentialSchedule(
        optimizer,
        [
            optim.OneCycle(optimizer, max_lr=0.5, total_steps=10),
            optim.ExponentialDecay(optimizer, 0.9, interval="batch"),
            optim.OneCycle(optimizer, max_lr=0.5, total_steps=5),
        ],
        milestones=[12, 20],
    )
    stepped = 0
    with pytest.raises(
        ValueError,
        match=r"^SequentialSchedule: step 11 is past step 10, the last of the OneCycle from "
        r"step 0 \(it has rates for 10 steps; the sequence's step_limit is 10\)",
    ):
        for _ in range(30):
            schedule.step()
            stepped += 1
    assert schedule.step_limit == stepped == 10


def test_one_cycle_refuses_to_step_past_total_steps() -> None:
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.OneCycle(optimizer, max_lr=0.5, total_steps=10)
    for _ in range(10):
        schedule.step()
    lr = optimizer.lr
    with pytest.raises(ValueError, match="OneCycle: step 11 is past total_steps=10"):
        schedule.step()
    assert (schedule.last_step, optimizer.lr) == (10, lr)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda o: optim.ExponentialDecay(o, gamma=0.0), r"ExponentialDecay: gamma must be in"),
        (lambda o: optim.ExponentialDecay(o, gamma=1.5), r"ExponentialDecay: gamma must be in"),
        (lambda o: optim.OneCycle(o, 0.1, 10, div_factor=0.0), r"OneCycle: div_factor must be"),
        (
            lambda o: optim.OneCycle(o, 0.1, 10, final_div_factor=0.0),
            r"OneCycle: final_div_factor must be",
        ),
        (lambda o: optim.LinearWarmup(o, 5, start_factor=1.5), r"LinearWarmup: start_factor"),
        (lambda o: optim.ExponentialDecay(o, 0.5, "step"), r"ExponentialDecay: interval must"),
        (lambda o: optim.CosineAnnealing(o, T_max=0), r"CosineAnnealing: T_max must be"),
        (lambda o: optim.CosineAnnealing(o, 5, eta_min=-1), r"CosineAnnealing: eta_min must"),
        (
            lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0),
            r"CosineAnnealingWarmRestarts: T_mult must be an integer >= 1",
        ),
        (lambda o: optim.OneCycle(o, max_lr=0.0, total_steps=10), r"OneCycle: max_lr must be"),
        (lambda o: optim.OneCycle(o, 0.1, total_steps=0), r"OneCycle: total_steps must be"),
        (lambda o: optim.OneCycle(o, 0.1, 10, pct_start=1.0), r"OneCycle: pct_start must be"),
        (lambda o: optim.OneCycle(o, 0.1, 10, pct_start=0.1), r"OneCycle: pct_start \* total"),
        (lambda o: optim.OneCycle(o, 0.1, 10, anneal_strategy="exp"), r"anneal_strategy must"),
        (lambda o: optim.LinearWarmup(o, 0), r"LinearWarmup: warmup_steps must be"),
        (lambda o: optim.LinearWarmup(o, 5, start_factor=0.0), r"LinearWarmup: start_factor"),
        (lambda o: optim.SequentialSchedule(o, [], []), r"SequentialSchedule: give at least one"),
        (
            lambda o: optim.SequentialSchedule(o, [optim.ExponentialDecay(o, 0.9), 0.5], [3]),
            r"^SequentialSchedule: schedules\[1\] must be an LRScheduler, got float$",
        ),
        (
            lambda o: optim.SequentialSchedule(
                o, [optim.ExponentialDecay(o, 0.9), optim.ExponentialDecay(o, 0.8)], [0]
            ),
            r"SequentialSchedule: milestones must be strictly increasing",
        ),
        (
            lambda o: optim.SequentialSchedule(o, [optim.ExponentialDecay(o, 0.9)], [3]),
            r"SequentialSchedule: expected 0 milestones for 1 schedules, got 1",
        ),
        *[
            (
                lambda o, bad=bad: optim.SequentialSchedule(
                    o, [optim.ExponentialDecay(o, 0.9), optim.ExponentialDecay(o, 0.8)], [bad]
                ),
                message,
            )
            for bad, message in (
                (True, _NOT_INTEGER + r"True \(bool\)"),
                (2.5, _NOT_INTEGER + r"2.5 \(float\)"),
                (0, r"SequentialSchedule: milestones must be strictly increasing integers >= 1"),
            )
        ],
        (
            lambda o: optim.SequentialSchedule(
                o, [optim.ExponentialDecay(o, 0.9), optim.OneCycle(o, 0.1, 10)], [3]
            ),
            r"SequentialSchedule: all schedules must step at the same interval",
        ),
        (
            lambda o: optim.SequentialSchedule(
                o, [optim.ExponentialDecay(optim.SGD(_params(), lr=0.1), 0.9)], []
            ),
            r"SequentialSchedule: schedules\[0\] \(ExponentialDecay\) schedules another",
        ),
    ],
)
def test_arguments_are_validated(build: Callable[[optim.Optimizer], object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build(optim.SGD(_params(), lr=LR))


def test_sequential_schedule_restores_base_lr_from_state() -> None:
    """Loading a SequentialSchedule's state gives the saved reference rate to every inner
    schedule (each computes its rates from its own ``base_lr``): a schedule built on an
    optimizer at another rate then continues with the saved schedule's rates, in every phase."""
    schedule = _three_stage(optim.SGD(_params(), lr=0.2))
    for _ in range(2):
        schedule.step()
    resumed = _three_stage(optim.SGD(_params(), lr=0.9))
    assert isinstance(resumed, optim.SequentialSchedule)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.base_lr == 0.2
    assert [inner.base_lr for inner in resumed.schedules] == [0.2, 0.2, 0.2]
    expected = 0.2 * (0.5 + 0.5 * 2 / 3)
    assert resumed.lr == schedule.lr == schedule.optimizer.lr == expected
    assert resumed.optimizer.lr == expected  # the rate the next optimizer step uses
    for step in range(3, 30):  # through the warm-up's end and both milestones
        assert resumed.step() == schedule.step(), f"step {step}"
        assert resumed.optimizer.lr == schedule.optimizer.lr


@pytest.mark.parametrize(
    ("total_steps", "pct_start"), [(10, 0.1), (2, 0.5), (4, 0.25), (100, 0.01)]
)
def test_one_cycle_refuses_a_rise_that_ends_at_step_0(total_steps: int, pct_start: float) -> None:
    """The rise ends at step ``pct_start * total_steps - 1``; at 0 step 0's fraction of the
    rise is 0 / 0 (below 0 no step rises, as in PyTorch): OneCycle refuses it with a ValueError
    naming that value and the two arguments, leaving the optimizer's rate unchanged."""
    optimizer = optim.SGD(_params(), lr=LR)
    assert pct_start * total_steps - 1 == 0
    with pytest.raises(ValueError) as info:
        optim.OneCycle(optimizer, max_lr=0.5, total_steps=total_steps, pct_start=pct_start)
    message = str(info.value)
    for fragment in (
        f"OneCycle: pct_start * total_steps - 1 = 0 (pct_start={pct_start}, "
        f"total_steps={total_steps}) ends the rise at step 0",
    ):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert optimizer.lr == LR


@pytest.mark.parametrize(
    ("total_steps", "pct_start"),
    [(10, 0.2), (11, 0.1), (3, 0.5), (10, 0.9), (2, math.nextafter(1.0, 0.0))],
)
def test_one_cycle_accepts_the_shortest_phases(total_steps: int, pct_start: float) -> None:
    """The closest accepted cases: a rise ending at step 1 or just after 0, and a fall as short
    as pct_start < 1 allows; their rates are PyTorch's OneCycleLR's (no division by zero)."""
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.OneCycle(optimizer, max_lr=0.5, total_steps=total_steps, pct_start=pct_start)
    torch_optimizer = _torch_optimizer()
    torch_schedule = torch.optim.lr_scheduler.OneCycleLR(
        torch_optimizer,
        max_lr=0.5,
        total_steps=total_steps,
        pct_start=pct_start,
        cycle_momentum=False,
    )
    for step in range(total_steps):
        expected = torch_optimizer.param_groups[0]["lr"]
        assert math.isclose(optimizer.lr, expected, rel_tol=1e-12, abs_tol=1e-15), step
        schedule.step()
        torch_optimizer.step()
        torch_schedule.step()
    assert optimizer.lr == schedule.min_lr


def _rates(schedule: optim.LRScheduler, steps: int) -> list[float]:
    return [schedule.optimizer.lr] + [schedule.step() for _ in range(steps)]


def _torch_rates(schedule: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    optimizer = schedule.optimizer
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_sequential_schedule_leaves_cyclic_lr_its_own_bounds() -> None:
    """CyclicLR takes its own rates (``takes_own_rates``): a SequentialSchedule does not reset
    its lower bound to the warm-up's reference rate, as SequentialLR does not."""
    optimizer = optim.SGD(_params(), lr=LR)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=4, start_factor=0.1, interval="batch")
    cyclic = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.05, step_size_up=3)
    schedule = optim.SequentialSchedule(optimizer, [warmup, cyclic], milestones=[4])
    assert (cyclic.base_lr, cyclic.max_lr, warmup.base_lr) == (0.01, 0.05, LR)
    twin = _torch_optimizer()
    torch_schedule = torch.optim.lr_scheduler.SequentialLR(
        twin,
        [
            torch.optim.lr_scheduler.LinearLR(twin, start_factor=0.1, total_iters=4),
            torch.optim.lr_scheduler.CyclicLR(
                twin, base_lr=0.01, max_lr=0.05, step_size_up=3, cycle_momentum=False
            ),
        ],
        milestones=[4],
    )
    got, expected = _rates(schedule, 20), _torch_rates(torch_schedule, 20)
    assert got == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert min(got[4:]) == pytest.approx(0.01) and max(got[4:]) == pytest.approx(0.05)
    # a state restored into a schedule built at another rate keeps the bounds too
    resumed_optimizer = optim.SGD(_params(), lr=0.7)
    resumed = optim.SequentialSchedule(
        resumed_optimizer,
        [
            optim.LinearWarmup(resumed_optimizer, 4, 0.1, interval="batch"),
            optim.CyclicLR(resumed_optimizer, base_lr=0.01, max_lr=0.05, step_size_up=3),
        ],
        milestones=[4],
    )
    resumed.load_state_dict(schedule.state_dict())
    assert [inner.base_lr for inner in resumed.schedules] == [LR, 0.01]
    assert _rates(resumed, 10)[1:] == _rates(schedule, 10)[1:]


def test_nested_sequential_schedule_equals_the_flat_one() -> None:
    """A SequentialSchedule inside another restarts its schedules from the outer reference
    rate: the rates are those of one flat chain, in every phase and after a restore."""

    def nested(optimizer: optim.Optimizer) -> optim.SequentialSchedule:
        warmup = optim.LinearWarmup(optimizer, 2, 0.1)
        inner = optim.SequentialSchedule(
            optimizer,
            [optim.ExponentialDecay(optimizer, 0.5), optim.StepDecay(optimizer, 2, 0.5)],
            [3],
        )
        return optim.SequentialSchedule(optimizer, [warmup, inner], [2])

    def flat(optimizer: optim.Optimizer) -> optim.SequentialSchedule:
        schedules = [
            optim.LinearWarmup(optimizer, 2, 0.1),
            optim.ExponentialDecay(optimizer, 0.5),
            optim.StepDecay(optimizer, 2, 0.5),
        ]
        return optim.SequentialSchedule(optimizer, schedules, [2, 5])

    expected = _rates(flat(optim.SGD(_params(), lr=LR)), 12)
    assert expected[:5] == pytest.approx([0.01, 0.055, 0.1, 0.05, 0.025])
    schedule = nested(optim.SGD(_params(), lr=LR))
    assert _rates(schedule, 12) == expected
    resumed = nested(optim.SGD(_params(), lr=0.3))
    for _ in range(4):
        resumed.step()
    resumed.load_state_dict({"base_lr": LR, "last_step": 0})
    assert _rates(resumed, 12) == expected


def test_a_nested_sequence_restarts_from_the_rate_before_its_first_schedule_whenever_built() -> (
    None
):
    """The reference rate of a sequence is that of the schedule built first. A sequence inside
    it is built after its own schedules, which may come after the outer sequence's others
    (every schedule built first, then the sequences): the outer one took the rate of the
    schedule built first at its own level, set by the inner sequence's first schedule (the
    warm-up's 0.05, half the rate), and gave rates half those of the same chain built in the
    other order. The earliest schedule at any depth counts now."""

    def chain(leaves_first: bool) -> list[float]:
        optimizer = optim.SGD(_params(), lr=LR)
        warmup = optim.LinearWarmup(optimizer, warmup_steps=2, start_factor=0.5)
        decay = optim.ExponentialDecay(optimizer, gamma=0.5)
        inner = None if leaves_first else optim.SequentialSchedule(optimizer, [warmup, decay], [2])
        cosine = optim.CosineAnnealing(optimizer, T_max=4)
        inner = inner or optim.SequentialSchedule(optimizer, [warmup, decay], [2])
        outer = optim.SequentialSchedule(optimizer, [inner, cosine], [4])
        return _rates(outer, 7)

    def flat() -> list[float]:
        optimizer = optim.SGD(_params(), lr=LR)
        schedules = [
            optim.LinearWarmup(optimizer, warmup_steps=2, start_factor=0.5),
            optim.ExponentialDecay(optimizer, gamma=0.5),
            optim.CosineAnnealing(optimizer, T_max=4),
        ]
        return _rates(optim.SequentialSchedule(optimizer, schedules, [2, 4]), 7)

    expected = flat()
    assert expected[:3] == pytest.approx([0.05, 0.075, 0.1])
    assert chain(leaves_first=False) == expected
    assert chain(leaves_first=True) == expected


def test_a_sequence_refused_at_its_first_rate_leaves_its_schedules_as_they_were() -> None:
    """A sequence whose first rate the optimizer refuses (the rate before its schedules, beyond
    float16, the model cast since) set every schedule's base_lr to that rate before the refusal
    and left them so: the schedule still scheduling the optimizer then refused to step."""
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = optim.SGD(model.parameters(), lr=1e5)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, start_factor=0.1)  # rate 1e4
    cosine = optim.CosineAnnealing(optimizer, T_max=10)  # base_lr 1e4
    model.to(dtype=torch.float16)  # (1e4 is a float16, 1e5 not)
    before = [(vars(schedule).copy()) for schedule in (warmup, cosine)]
    with pytest.raises(ValueError, match=r"^SequentialSchedule: the rate of step 0 is 100000\.0"):
        optim.SequentialSchedule(optimizer, [cosine, warmup], milestones=[5])
    assert [vars(schedule) for schedule in (warmup, cosine)] == before
    assert cosine.step() == cosine.lr_at(1) == optimizer.lr


def test_a_failed_load_or_step_changes_no_schedule() -> None:
    """A state whose step OneCycle has no rate for, and a step past it (inside a
    SequentialSchedule too), raise and leave the schedule and the optimizer as they were."""
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.OneCycle(optimizer, max_lr=0.5, total_steps=10)
    schedule.step()
    schedule.step()
    before = (schedule.last_step, schedule.base_lr, optimizer.lr)
    with pytest.raises(
        ValueError,
        match=r"OneCycle\.load_state_dict: last_step 50 is past this schedule.s last step 10",
    ):
        schedule.load_state_dict({"base_lr": 0.3, "last_step": 50})
    assert (schedule.last_step, schedule.base_lr, optimizer.lr) == before
    assert schedule.step() == schedule.lr_at(3)

    optimizer = optim.SGD(_params(), lr=LR)
    warmup = optim.LinearWarmup(optimizer, 2, interval="batch")
    chain = optim.SequentialSchedule(optimizer, [warmup, optim.OneCycle(optimizer, 0.5, 4)], [2])
    for _ in range(6):
        chain.step()
    lr = optimizer.lr
    for _ in range(2):
        with pytest.raises(
            ValueError,
            match=r"^SequentialSchedule: step 7 is past step 6, the last of the OneCycle",
        ):
            chain.step()
        assert (chain.last_step, optimizer.lr) == (6, lr)
    before = (chain.last_step, chain.base_lr, warmup.base_lr, optimizer.lr)
    with pytest.raises(
        ValueError,
        match=r"SequentialSchedule\.load_state_dict: last_step 9 is past this schedule.s last step 6",
    ):
        chain.load_state_dict({"base_lr": 0.2, "last_step": 9})
    assert (chain.last_step, chain.base_lr, warmup.base_lr, optimizer.lr) == before


def test_cyclic_lr_refuses_a_saved_lower_bound_above_its_max() -> None:
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.CyclicLR(optimizer, base_lr=0.01, max_lr=0.05, step_size_up=3)
    schedule.step()
    with pytest.raises(
        ValueError,
        match=r"CyclicLR\.load_state_dict: base_lr must be in \[0, 0\.05\] \(at most max_lr\), "
        r"got 0\.06",
    ):
        schedule.load_state_dict({"base_lr": 0.06, "last_step": 2})
    assert (schedule.base_lr, schedule.last_step, optimizer.lr) == (0.01, 1, schedule.lr_at(1))
    schedule.load_state_dict({"base_lr": 0.05, "last_step": 2})
    assert optimizer.lr == 0.05


@pytest.mark.parametrize(
    ("schedules", "milestones", "message"),
    [
        (None, [], "schedules must be a sequence, got NoneType"),
        ("warmup", [], "schedules must be a sequence, got str"),
        ([], 3, "milestones must be a sequence, got int"),
    ],
)
def test_sequential_schedule_refuses_non_sequences(
    schedules: object, milestones: object, message: str
) -> None:
    with pytest.raises(TypeError, match=f"SequentialSchedule: {message}"):
        optimizer = optim.SGD(_params(), lr=LR)
        optim.SequentialSchedule(optimizer, schedules, milestones)  # type: ignore[arg-type]


def test_sequential_schedule_takes_the_rate_from_the_schedule_built_first() -> None:
    """Listed in another order than built, the schedules still restart from the optimizer's
    rate before any of them was built, as SequentialLR's (the warm-up, built first, set the rate
    that the decay would otherwise take as its own reference: ten times too low)."""
    optimizer = optim.SGD(_params(), lr=LR)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=4, start_factor=0.1)
    decay = optim.ExponentialDecay(optimizer, gamma=0.5)
    schedule = optim.SequentialSchedule(optimizer, [decay, warmup], milestones=[3])
    twin_optimizer = _torch_optimizer()
    twin_warmup = torch.optim.lr_scheduler.LinearLR(twin_optimizer, 0.1, total_iters=4)
    twin_decay = torch.optim.lr_scheduler.ExponentialLR(twin_optimizer, gamma=0.5)
    twin = torch.optim.lr_scheduler.SequentialLR(
        twin_optimizer, [twin_decay, twin_warmup], milestones=[3]
    )
    rates, twin_rates = [optimizer.lr], [twin_optimizer.param_groups[0]["lr"]]
    for _ in range(10):
        rates.append(schedule.step())
        twin_optimizer.step()
        twin.step()
        twin_rates.append(twin_optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx(twin_rates, rel=1e-12)
    assert rates[0] == LR and rates[-1] == LR


def test_sequential_schedule_takes_numpy_milestones() -> None:
    np = pytest.importorskip("numpy")
    optimizer = optim.SGD(_params(), lr=LR)
    first, second = optim.StepDecay(optimizer, 1, 0.5), optim.StepDecay(optimizer, 1, 0.5)
    schedule = optim.SequentialSchedule(optimizer, [first, second], [np.int64(3)])
    assert schedule.milestones == [3] and type(schedule.milestones[0]) is int
    with pytest.raises(
        TypeError,
        match=r"^SequentialSchedule: milestones must be integers, got milestones\[1\] = 2\.5 "
        r"\(float\)$",
    ):
        optim.SequentialSchedule(optimizer, [first, second, second], [1, 2.5])


@pytest.mark.parametrize(
    "make",
    [
        lambda o, interval: optim.ExponentialDecay(o, 0.5, interval=interval),
        lambda o, interval: optim.CosineAnnealing(o, T_max=5, interval=interval),
        lambda o, interval: optim.CosineAnnealingWarmRestarts(o, T_0=5, interval=interval),
        lambda o, interval: optim.LinearWarmup(o, 3, 0.5, interval=interval),
    ],
)
def test_a_schedule_repr_shows_an_interval_other_than_the_default(
    make: Callable[[optim.Optimizer, str], optim.LRScheduler],
) -> None:
    """A checkpoint compares schedules by their repr: one stepped every batch must not match the
    same stepped every epoch (the default, left out so that older checkpoints still match)."""
    by_epoch = make(optim.SGD(_params(), lr=LR), "epoch")
    by_batch = make(optim.SGD(_params(), lr=LR), "batch")
    assert "interval" not in repr(by_epoch)
    assert repr(by_batch) == repr(by_epoch)[:-1] + ", interval='batch')"


def test_a_sequences_schedules_and_milestones_are_copies_that_cannot_bypass_its_checks() -> None:
    # They were the sequence's own lists: seq.milestones.append(0) left it with milestones
    # its constructor refuses (and a schedule appended, one no milestone reaches).
    optimizer = optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=5, start_factor=0.1)
    decay = optim.CosineAnnealing(optimizer, T_max=95)
    seq = optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[5])
    seq.milestones.append(0)
    seq.milestones[0] = 50
    seq.schedules.append(warmup)
    seq.schedules.reverse()
    assert seq.milestones == [5]
    assert type(seq.milestones) is list
    assert seq.schedules == [warmup, decay]
    assert repr(seq).endswith("milestones=[5])")
    rates = [seq.step() for _ in range(6)]
    assert rates[4] == pytest.approx(LR) and rates[5] == pytest.approx(decay.lr_at(1))


@pytest.mark.parametrize("step_size", [1, 3, 7])
def test_step_decay_stepped_every_batch_follows_steplr_and_fit_steps_it_every_batch(
    step_size: int,
) -> None:
    """``StepDecay(..., interval="batch")``, as the other decaying schedules take (it took no
    interval but by setting the attribute after): PyTorch's ``StepLR`` stepped every batch
    gives the same rates over 40 steps, and ``fit`` steps it after every batch, each batch's
    rate in ``batch_lr``."""
    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.StepDecay(optimizer, step_size=step_size, gamma=0.5, interval="batch")
    assert schedule.interval == "batch"
    torch_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    torch_schedule = torch.optim.lr_scheduler.StepLR(torch_optimizer, step_size, gamma=0.5)
    for step in range(40):
        assert optimizer.lr == pytest.approx(torch_optimizer.param_groups[0]["lr"], rel=1e-15), (
            f"step {step}"
        )
        schedule.step()
        torch_optimizer.step()
        torch_schedule.step()

    from minidl.train import fit

    x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    model = nn.mlp((2, 3, 2), "tanh", dtype=torch.float64)
    optimizer = optim.SGD(model.parameters(), lr=LR)
    schedule = optim.StepDecay(optimizer, step_size=step_size, gamma=0.5, interval="batch")
    history = fit(
        model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=5, scheduler=schedule
    )
    assert history.batch_lr == [LR * 0.5 ** (step // step_size) for step in range(8)]
    with pytest.raises(
        ValueError, match=r"^StepDecay: interval must be 'epoch' or 'batch', got 'step'"
    ):
        optim.StepDecay(optimizer, interval="step")  # type: ignore[arg-type]


#: The schedules whose constructor takes an ``interval``, with arguments for each.
_TAKING_AN_INTERVAL: dict[str, dict[str, float]] = {
    "StepDecay": {"step_size": 3},
    "ExponentialDecay": {"gamma": 0.9},
    "CosineAnnealing": {"T_max": 10},
    "LinearWarmup": {"warmup_steps": 5},
    "CosineAnnealingWarmRestarts": {"T_0": 4},
}


@pytest.mark.parametrize("attribute", ["interval", "_interval"])
@pytest.mark.parametrize("name", sorted(_TAKING_AN_INTERVAL))
def test_a_schedule_subclass_keeps_its_own_class_interval(name: str, attribute: str) -> None:
    """``interval`` left out (``None``) keeps the class's: ``"epoch"`` for each schedule that
    takes an ``interval`` argument, and what a subclass sets as its class attribute
    (``interval`` or ``_interval``; a constructor's default of ``"epoch"`` overrode it, and fit
    stepped such a subclass once an epoch); an ``interval`` given still overrides it."""
    base: type[optim.LRScheduler] = getattr(optim, name)
    arguments = _TAKING_AN_INTERVAL[name]
    per_batch: type[optim.LRScheduler] = type("PerBatch", (base,), {attribute: "batch"})

    def built(kind: type[optim.LRScheduler], **interval: str | None) -> optim.LRScheduler:
        return kind(optim.SGD(_params(), lr=LR), **arguments, **interval)

    assert built(base).interval == "epoch"
    assert built(base, interval=None).interval == "epoch"
    assert built(base, interval="batch").interval == "batch"
    assert built(per_batch).interval == "batch"
    assert built(per_batch, interval=None).interval == "batch"
    assert built(per_batch, interval="epoch").interval == "epoch"
    schedule = built(base)
    with pytest.raises(
        ValueError, match=rf"^{name}: interval must be 'epoch' or 'batch', got None$"
    ):
        schedule.interval = None  # type: ignore[assignment]  # (set, None is no interval)
    assert schedule.interval == "epoch"

    from minidl.train import fit

    x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    model = nn.mlp((2, 3, 2), "tanh", dtype=torch.float64)
    optimizer = optim.SGD(model.parameters(), lr=LR)
    plain = built(base, interval="batch")
    schedule = per_batch(optimizer, **arguments)
    history = fit(
        model, nn.CrossEntropyLoss(), optimizer, x, y, epochs=2, batch_size=5, scheduler=schedule
    )
    assert history.batch_lr == [plain.lr_at(step) for step in range(8)]


def _superseded(name: str, by: str) -> str:
    return (
        rf"^{name}\.step: the optimizer is scheduled by the {by} built \(or copied, by "
        r"copy\.copy\) on it after this schedule; "
    )


def test_a_shallow_copy_is_a_schedule_made_last_and_the_original_refuses_to_step() -> None:
    """``copy.copy(schedule)``: a schedule of the same optimizer with the original's settings,
    step and other attributes (shared, as a shallow copy shares them), which sets the rate from
    then on; the original refuses to step, changing nothing, as after any schedule built later
    (the copy shared the original's place, and the two stepped one optimizer, each overwriting
    the other's rate, silently)."""
    import copy

    optimizer = optim.SGD(_params(), lr=LR)
    schedule = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    twin = optim.StepDecay(optim.SGD(_params(), lr=LR), step_size=2, gamma=0.5)
    for _ in range(3):
        schedule.step()
        twin.step()
    schedule.notes = ["a user's own attribute"]  # type: ignore[attr-defined]
    copied = copy.copy(schedule)
    assert copied is not schedule and copied.optimizer is optimizer
    assert copied.notes is schedule.notes  # type: ignore[attr-defined]  # (a shallow copy)
    assert repr(copied) == repr(schedule) and copied.state_dict() == schedule.state_dict()
    assert optimizer.lr == twin.lr
    assert copied.superseded_by is None and schedule.superseded_by == "StepDecay"
    with pytest.raises(RuntimeError, match=_superseded("StepDecay", "StepDecay")):
        schedule.step()
    assert schedule.last_step == 3 and optimizer.lr == twin.lr
    assert [copied.step() for _ in range(6)] == [twin.step() for _ in range(6)]
    assert schedule.last_step == 3


def test_a_shallow_copy_of_a_sequence_copies_its_schedules_and_of_a_part_stands_alone() -> None:
    """``copy.copy`` of a SequentialSchedule copies its schedules with it (shared, a setting
    changed on the copy's changed the original's), and the copy goes on as the original would;
    a copy of a schedule inside a sequence is part of none (its settings are no longer checked
    by the sequence) and sets the rate, so the sequence refuses to step."""
    import copy

    def sequence(optimizer: optim.Optimizer) -> optim.SequentialSchedule:
        warmup = optim.LinearWarmup(optimizer, warmup_steps=3)
        decay = optim.CosineAnnealing(optimizer, T_max=6)
        return optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[3])

    optimizer = optim.SGD(_params(), lr=LR)
    original, twin = sequence(optimizer), sequence(optim.SGD(_params(), lr=LR))
    original.step()
    twin.step()
    copied = copy.copy(original)
    assert all(
        mine is not theirs
        for mine, theirs in zip(copied.schedules, original.schedules, strict=True)
    )
    copied.schedules[1].eta_min = 0.01
    assert original.schedules[1].eta_min == 0.0
    twin.schedules[1].eta_min = 0.01
    assert [copied.step() for _ in range(7)] == [twin.step() for _ in range(7)]
    with pytest.raises(RuntimeError, match=_superseded("SequentialSchedule", "SequentialSchedule")):
        original.step()

    optimizer = optim.SGD(_params(), lr=LR)
    whole = sequence(optimizer)
    part = whole.schedules[0]
    with pytest.raises(
        ValueError, match=r"^LinearWarmup: interval must be 'epoch', that of the SequentialSchedule"
    ):
        part.interval = "batch"
    alone = copy.copy(part)
    alone.interval = "batch"  # (in no sequence)
    assert alone.interval == "batch" and part.interval == "epoch"
    with pytest.raises(RuntimeError, match=_superseded("SequentialSchedule", "LinearWarmup")):
        whole.step()
    assert whole.last_step == 0


@pytest.mark.parametrize(
    ("lr", "eta_min"),
    [(0.3, 0.03), (0.9, 0.07), (0.9, 0.2), (0.6, 0.07), (0.1, 1e39), (1e-3, 0.5), (0.37, 0.37)],
)
def test_cosine_annealing_starts_at_the_optimizers_rate_and_reaches_eta_min_exactly(
    lr: float, eta_min: float
) -> None:
    """The first rate is the optimizer's, bit for bit, as PyTorch's CosineAnnealingLR keeps it,
    and the rate at ``T_max`` is ``eta_min``, at ``2 * T_max`` the first again. Computed as
    ``eta_min + (lr - eta_min) * 1`` the first rate misses by its rounding for each pair but
    the last (``eta_min`` far above the rate giving 0.0)."""
    optimizer = optim.SGD(_params(), lr=lr)
    schedule = optim.CosineAnnealing(optimizer, T_max=7, eta_min=eta_min)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=7, eta_min=eta_min)
    assert optimizer.lr == reference.param_groups[0]["lr"] == lr
    rates = [schedule.step() for _ in range(14)]
    assert (rates[6], rates[13]) == (eta_min, lr)
    between = [rate for step, rate in enumerate(rates, 1) if step % 7]
    closed_form = [
        eta_min + (lr - eta_min) * (1 + math.cos(math.pi * step / 7)) / 2
        for step in range(1, 15)
        if step % 7
    ]
    assert between == pytest.approx(closed_form, rel=1e-14, abs=0.0)
