"""Optimizer and schedule behaviour that a mutation audit of ``minidl.optim`` found no test
for: each test here fails on a small change to the source (named in its docstring) that the
rest of the suite let through. Trajectories are compared with ``torch.optim`` and
``torch.optim.lr_scheduler`` in float64 where one exists, exact values otherwise."""

from __future__ import annotations

import contextlib

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


# -- found by a second mutation audit ------------------------------------------------------------


def test_zero_grad_right_after_a_parameter_is_put_in_params_zeroes_the_new_one() -> None:
    """A Parameter put in ``params`` after steps (the flat buffers built), with no step
    between: ``zero_grad`` zeroes its gradient and leaves the one taken out alone (noticed by
    ``step`` only, it zeroed the old one's through the stale buffers)."""
    torch.manual_seed(0)
    params = list(nn.mlp((2, 3, 2)).parameters())
    optimizer = optim.SGD(params, lr=0.5)
    # (made before the steps: making one assigns its tensors, which Parameter.replacements
    # counts, and zero_grad would notice the count)
    put = nn.Parameter(torch.zeros(params[1].data.shape))
    for p in params:
        p.grad.fill_(1.0)
    optimizer.step()
    optimizer.step()
    put.grad.fill_(1.0)
    optimizer.params[1] = put
    optimizer.zero_grad()
    assert not put.grad.any()
    assert params[1].grad.tolist() == [1.0, 1.0, 1.0]


def test_fit_trains_the_parameters_put_in_params_of_an_optimizer_that_stepped() -> None:
    """``fit``'s folded step reads the optimizer's flat buffers: after the parameters of
    another model are put in ``params``, that model trains, as the loop trains it, and the
    first model stays as it was (through stale buffers the first model moved, the second not)."""
    from minidl.train import fit
    from tests.helpers import unfolded

    torch.manual_seed(0)
    x, y = torch.randn(20, 2, dtype=F64), torch.randn(20, 1, dtype=F64)
    results = []
    for folded in (True, False):
        first = nn.mlp((2, 4, 1), dtype=F64, generator=torch.Generator().manual_seed(1))
        second = nn.mlp((2, 4, 1), dtype=F64, generator=torch.Generator().manual_seed(2))
        optimizer = optim.SGD(first.parameters(), lr=0.1)
        for _ in range(2):
            for p in first.parameters():
                p.grad.fill_(1.0)
            optimizer.step()
        kept = [p.data.clone() for p in first.parameters()]
        optimizer.params[:] = list(second.parameters())
        with contextlib.nullcontext() if folded else unfolded():
            fit(
                second,
                nn.MSELoss(),
                optimizer,
                x,
                y,
                epochs=1,
                batch_size=10,
                generator=torch.Generator().manual_seed(0),
            )
        assert all(torch.equal(p.data, q) for p, q in zip(first.parameters(), kept, strict=True))
        results.append([p.data.clone() for p in second.parameters()])
    for p, q in zip(*results, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    untrained = nn.mlp((2, 4, 1), dtype=F64, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(results[0][0], next(iter(untrained.parameters())).data)


def test_a_refused_load_after_a_cast_leaves_the_state_checked_against_the_new_dtype() -> None:
    """After the model is cast to float16, a refused ``load_state_dict`` (shapes of another
    model) leaves the held state as it was, and the next step still refuses its sum of 1e12,
    past float16's range (the refused load had recorded the range as checked: the step ran,
    the sum went infinite and every later update was 0)."""
    model = nn.Linear(2, 2)
    optimizer = optim.Adagrad(model.parameters(), lr=0.1, eps=1e-3)
    for p in model.parameters():
        p.grad.fill_(1e6)
    optimizer.step()
    bad = optimizer.state_dict()
    bad["shapes"] = [[9, 9], [9]]
    model.to(dtype=torch.float16)
    with pytest.raises(ValueError):
        optimizer.load_state_dict(bad)
    for p in model.parameters():
        p.grad.fill_(1.0)
    weight = model.weight.data.clone()
    with pytest.raises(
        ValueError,
        match=r"state 'sum' holds 1e\+12, beyond the range of the parameters' dtype torch\.float16",
    ):
        optimizer.step()
    assert torch.equal(model.weight.data, weight)
