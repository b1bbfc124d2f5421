"""Optimizer and schedule behaviour that a mutation audit of ``minidl.optim`` found no test
for: each test here fails on a small change to the source (named in its docstring) that the
rest of the suite let through. Trajectories are compared with ``torch.optim`` and
``torch.optim.lr_scheduler`` in float64 where one exists, exact values otherwise."""

from __future__ import annotations

import pytest
import torch

from minidl import nn, optim

F64 = torch.float64


def _sgd(lr: float = 0.1) -> optim.SGD:
    return optim.SGD([nn.Parameter(torch.zeros(3, dtype=F64))], lr=lr)


@pytest.mark.parametrize("milestones", [[], [2, 4]])
def test_sequential_schedule_refuses_too_few_or_too_many_milestones(milestones: list[int]) -> None:
    """Two schedules need exactly one milestone: none would run the first one forever (the
    second never starts), which a check of "not too many" alone let through."""
    optimizer = _sgd()
    first = optim.LinearWarmup(optimizer, warmup_steps=2)
    second = optim.ExponentialDecay(optimizer, gamma=0.5)
    with pytest.raises(
        ValueError,
        match=rf"SequentialSchedule: expected 1 milestones for 2 schedules, got {len(milestones)}",
    ):
        optim.SequentialSchedule(optimizer, [first, second], milestones=milestones)


# minidl optimizer, torch optimizer, and minidl's state name -> torch's state name (the
# meanings are the same; SGD's paper-convention velocity is lr times torch's buffer, so it is
# not here).
STATE_CASES = {
    "adam": (
        lambda p: optim.Adam(p, lr=0.01, betas=(0.8, 0.95)),
        lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95)),
        {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"},
    ),
    "adamw": (
        lambda p: optim.AdamW(p, lr=0.01, betas=(0.7, 0.9), weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.7, 0.9), weight_decay=0.1),
        {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"},
    ),
    "adagrad": (
        lambda p: optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.25),
        lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.25),
        {"sum": "sum"},
    ),
    "adadelta": (
        lambda p: optim.Adadelta(p, lr=0.5, rho=0.8),
        lambda p: torch.optim.Adadelta(p, lr=0.5, rho=0.8),
        {"square_avg": "square_avg", "acc_delta": "acc_delta"},
    ),
    "rmsprop-centered-momentum": (
        lambda p: optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True),
        lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True),
        {"square_avg": "square_avg", "momentum_buffer": "momentum_buffer", "grad_avg": "grad_avg"},
    ),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_each_named_state_tensor_holds_what_torch_keeps_under_that_name(case: str) -> None:
    """``state_dict()["state"]`` holds, under each name, the quantity torch's optimizer keeps
    under it (``exp_avg`` the first moment, not the second): compared after 30 steps on two
    parameters in float64. (Adam with its two state tensors swapped gave the same parameters,
    and so passed every trajectory test, but saved m as ``exp_avg_sq``.)"""
    make, make_torch, names = STATE_CASES[case]
    generator = torch.Generator().manual_seed(3)
    start = [
        torch.randn(2, 3, generator=generator, dtype=F64),
        torch.randn(4, generator=generator, dtype=F64),
    ]
    ours = [nn.Parameter(value.clone()) for value in start]
    theirs = [torch.nn.Parameter(value.clone()) for value in start]
    optimizer, reference = make(ours), make_torch(theirs)
    for _ in range(30):
        for mine, other in zip(ours, theirs, strict=True):
            grad = torch.randn(mine.data.shape, generator=generator, dtype=F64)
            mine.grad.copy_(grad)
            other.grad = grad.clone()
        optimizer.step()
        reference.step()
    state = optimizer.state_dict()["state"]
    assert set(state) == set(names)
    for name, torch_name in names.items():
        expected = torch.cat([reference.state[p][torch_name].reshape(-1) for p in theirs])
        torch.testing.assert_close(state[name], expected, rtol=1e-10, atol=1e-14)
    for mine, other in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine.data, other.data.detach(), rtol=1e-10, atol=1e-14)


def test_a_schedules_lr_is_its_own_rate_not_the_optimizers() -> None:
    """``lr`` and ``get_last_lr()`` give the schedule's rate at its current step, whatever the
    optimizer's rate now is (set by hand, or by a later schedule): exact values."""
    optimizer = _sgd(lr=0.8)
    schedule = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    assert schedule.step() == 0.4
    optimizer.lr = 3.0
    assert (schedule.lr, schedule.get_last_lr()) == (0.4, [0.4])
    later = optim.ExponentialDecay(optimizer, gamma=0.25)
    later.step()
    assert optimizer.lr == 0.75
    assert (schedule.lr, schedule.get_last_lr()) == (0.4, [0.4])


def test_an_older_schedule_of_the_same_class_refuses_to_step() -> None:
    """The schedule built last sets the rate also when the older one is of the same class
    (telling them apart by class name let both step, each overwriting the other's rate)."""
    optimizer = _sgd(lr=1.0)
    older = optim.StepDecay(optimizer, step_size=1, gamma=0.5)
    newer = optim.StepDecay(optimizer, step_size=2, gamma=0.25)
    assert older.superseded_by == "StepDecay"
    assert newer.superseded_by is None
    with pytest.raises(
        RuntimeError, match=r"StepDecay\.step: the optimizer is scheduled by the StepDecay"
    ):
        older.step()
    assert (older.last_step, optimizer.lr) == (0, 1.0)
    assert newer.step() == 1.0
    assert newer.step() == 0.25


@pytest.mark.parametrize("key", ["lr", "step_count", "state"])
def test_a_state_dict_missing_a_key_is_refused_naming_it(key: str) -> None:
    """Each of the three required entries is named when missing (a raw ``KeyError:
    'step_count'`` named neither the optimizer nor the method), and nothing changes."""
    optimizer = optim.Adam([nn.Parameter(torch.ones(2, dtype=F64))], lr=0.5)
    saved = optimizer.state_dict()
    optimizer.params[0].grad.fill_(1.0)
    optimizer.step()
    before = optimizer.state_dict()
    del saved[key]
    with pytest.raises(KeyError, match=rf"Adam\.load_state_dict: missing keys \['{key}'\]"):
        optimizer.load_state_dict(saved)
    after = optimizer.state_dict()
    assert (after["lr"], after["step_count"]) == (before["lr"], before["step_count"]) == (0.5, 1)
    for name, tensor in before["state"].items():
        assert torch.equal(after["state"][name], tensor)
