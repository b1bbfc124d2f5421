"""Schedules: behaviours that changed code passed every other test of (mutation testing).

Each test names the change it catches: a refusal at the last step a restored state may not
name, a sequence's rate bound with a schedule that has none, the schedule a sequence's refusal
names at a milestone, OneCycle's ``repr`` (which checkpoints compare), and a NumPy step taken
as an ``int``.
"""

from __future__ import annotations

import pytest
import torch

from minidl import nn, optim


def _optimizer(lr: float = 0.1) -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr)


def test_a_state_one_step_past_the_limit_is_refused_by_load_state_dict() -> None:
    """``last_step = step_limit + 1`` is refused by ``load_state_dict`` in its own words (with
    the limit's check off by one, the rate's check refused it, naming ``step`` or the
    sequence's inner schedule), and ``last_step = step_limit`` loads."""
    optimizer = _optimizer()
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    chain = optim.SequentialSchedule(
        optimizer, [warmup, optim.OneCycle(optimizer, max_lr=1.0, total_steps=5)], milestones=[3]
    )
    cycle = optim.OneCycle(_optimizer(), max_lr=1.0, total_steps=5)
    for schedule, name, limit in ((chain, "SequentialSchedule", 8), (cycle, "OneCycle", 5)):
        assert schedule.step_limit == limit
        optimizer = schedule.optimizer
        before = (schedule.state_dict(), optimizer.lr)
        with pytest.raises(
            ValueError,
            match=rf"^{name}\.load_state_dict: last_step {limit + 1} is past this schedule's "
            rf"last step {limit} \(its step_limit\)$",
        ):
            schedule.load_state_dict({"base_lr": 0.7, "last_step": limit + 1})
        assert (schedule.state_dict(), optimizer.lr) == before
        schedule.load_state_dict({"base_lr": 0.7, "last_step": limit})
        assert schedule.last_step == limit


class _Growing(optim.LRScheduler):
    """A schedule of one's own with no ``rate_bound``: its rate grows without bound."""

    def lr_at(self, step: int) -> float:
        return self.base_lr * (step + 1)


def test_a_sequence_holding_a_schedule_without_a_bound_has_none() -> None:
    """``rate_bound`` is ``None`` where one schedule of the sequence has none (fit then checks
    every rate): the largest of the others' bounds (0.1) would be passed by step 50's 4.8."""
    optimizer = _optimizer()
    sequence = optim.SequentialSchedule(
        optimizer, [optim.StepDecay(optimizer, step_size=2), _Growing(optimizer)], milestones=[3]
    )
    assert sequence.rate_bound is None
    assert sequence.lr_at(50) == pytest.approx(0.1 * 48)
    bounded = optim.SequentialSchedule(
        optimizer,
        [optim.StepDecay(optimizer, step_size=2), optim.ExponentialDecay(optimizer, 0.5)],
        milestones=[3],
    )
    assert bounded.rate_bound == 0.1


def test_a_rate_refused_at_a_milestone_names_the_schedule_that_starts_there() -> None:
    """Step 3 is the milestone: its rate is the CyclicLR's, and the refusal names that
    schedule (with the milestone looked up on its left side, it named the warm-up)."""
    optimizer = _optimizer()  # (float32 parameters: 1e39 is past their range)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=3, interval="batch")
    cyclic = optim.CyclicLR(optimizer, 0.01, 1e39, 2)
    sequence = optim.SequentialSchedule(optimizer, [warmup, cyclic], milestones=[3])
    cyclic.base_lr = 1e39
    sequence.step()
    sequence.step()
    rate = optimizer.lr
    with pytest.raises(
        ValueError,
        match=r"^SequentialSchedule\.step: the rate of step 3 is 1e\+39 \(CyclicLR\(base_lr=1e\+39, "
        r"max_lr=1e\+39, step_size_up=2, step_size_down=2, mode='triangular', gamma=1\.0\)\), "
        r"which the optimizer refuses: SGD: lr=1e\+39 is beyond the range",
    ):
        sequence.step()
    assert (sequence.last_step, optimizer.lr) == (2, rate)


def test_one_cycle_repr_leaves_out_its_default_interval_batch() -> None:
    """Checkpoints compare schedules by their ``repr``: OneCycle's default interval is
    ``"batch"``, left out (shown, a checkpoint saved before would be refused as another
    schedule); ``"epoch"`` is shown."""
    optimizer = _optimizer()
    assert repr(optim.OneCycle(optimizer, max_lr=1.0, total_steps=10)) == (
        "OneCycle(max_lr=1.0, total_steps=10, pct_start=0.3, anneal_strategy='cos', "
        "div_factor=25.0, final_div_factor=10000.0)"
    )
    per_epoch = optim.OneCycle(_optimizer(), 1.0, 10)
    per_epoch.interval = "epoch"
    assert repr(per_epoch).endswith(", final_div_factor=10000.0, interval='epoch')")


@pytest.mark.parametrize(
    "build",
    [
        lambda o: optim.StepDecay(o, 2),
        lambda o: optim.ExponentialDecay(o, 0.5),
        lambda o: optim.CosineAnnealing(o, T_max=10),
        lambda o: optim.CosineAnnealingWarmRestarts(o, T_0=3),
        lambda o: optim.LinearWarmup(o, warmup_steps=4),
        lambda o: optim.CyclicLR(o, 0.01, 0.1, 2),
        lambda o: optim.OneCycle(o, 1.0, 10),
    ],
    ids=["step", "exponential", "cosine", "restarts", "warmup", "cyclic", "onecycle"],
)
def test_a_numpy_step_gives_a_python_float(build: object) -> None:
    """``lr_at`` takes a NumPy integer as an ``int`` (its docstring says so): the rate is a
    Python float, the same as for the ``int`` (without the conversion, a NumPy float64)."""
    np = pytest.importorskip("numpy")
    schedule = build(_optimizer())  # type: ignore[operator]
    for step in (0, 3):
        rate = schedule.lr_at(np.int64(step))
        assert type(rate) is float
        assert rate == schedule.lr_at(step)
