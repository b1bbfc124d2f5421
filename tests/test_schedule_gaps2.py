"""Schedules: behaviours that changed code passed every other test of (mutation testing of
``cosine_warm_restarts``, ``linear_warmup``, ``cosine_annealing``, ``exponential_decay`` and
``one_cycle``).

Each test names the change it catches and checks what a user relies on: the rates (against
PyTorch's schedulers or the closed form, exactly), the refusals (type and message, naming the
schedule) and the state left unchanged after one.
"""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from minidl import nn, optim

LR = 0.1


def _sgd(lr: float = LR) -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=lr)


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
