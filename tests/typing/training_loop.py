"""A training loop of one's own, as a strictly typed program sees minidl: a Sequential of Linear
and Tanh layers, CrossEntropyLoss, SGD under schedules, indexing and iterating the model, and
state dicts of the model, the optimizer and the schedule saved and loaded back.

``make typecheck`` runs ``mypy --strict`` on this file, which checks every ``assert_type``;
``tests/test_typing_programs.py`` runs it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, NoReturn

import torch
from torch import Tensor
from typing_extensions import assert_type

from minidl import nn, optim
from minidl.nn import IncompatibleKeys, Module, Parameter, Sequential


class Position:
    """An integer index of one's own (as NumPy's integers are)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


def make_model() -> Sequential:
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))


def inspect_model(model: Sequential) -> None:
    first = model[0]
    assert_type(first, Module)
    assert_type(model[-1], Module)
    assert_type(model[Position(1)], Module)  # any integer index, as a list takes
    assert_type(model[1:], Sequential)
    assert_type(model[::2], Sequential)
    assert_type(len(model), int)
    for layer in model:
        assert_type(layer, Module)
        if isinstance(layer, nn.Linear):
            assert_type(layer.weight, Parameter)
            assert_type(layer.bias, Parameter | None)
            assert_type(layer.weight.data, Tensor)
            assert_type(layer.weight.grad, Tensor)
    assert isinstance(first, nn.Linear) and first.in_features == 2
    assert_type(model.parameters(), Iterator[Parameter])
    assert_type(model.named_parameters(), Iterator[tuple[str, Parameter]])
    assert_type(model.param(), list[tuple[Tensor, Tensor]])
    assert_type(model.num_parameters(), int)
    assert_type(list(model.named_modules()), list[tuple[str, Module]])
    assert_type(model.get_submodule("0"), Module)
    assert_type(model.get_parameter("0.weight"), Parameter)
    assert_type(model + copy.deepcopy(model[1:]), Sequential)


def modes_and_moves(model: Sequential) -> None:
    # Each returns the module it was called on, as torch.nn's do: a Sequential stays one.
    assert_type(model.train(), Sequential)
    assert_type(model.eval(), Sequential)
    assert_type(model.train(True), Sequential)
    assert_type(model.to(torch.float64), Sequential)
    assert_type(model.to(dtype=torch.float32), Sequential)
    assert_type(model.double(), Sequential)
    assert_type(model.float(), Sequential)
    assert_type(model.cpu(), Sequential)
    assert_type(model.apply(lambda module: None), Sequential)
    linear = nn.Linear(3, 4).to(torch.float64)
    assert_type(linear, nn.Linear)
    assert linear.weight.dtype == torch.float64


def on_a_gpu(model: Sequential) -> None:
    # A device may be an index, as torch.device takes it.
    assert_type(model.to(0), Sequential)
    assert_type(model.cuda(0), Sequential)
    assert_type(model.to("cpu"), Sequential)


def train(model: Sequential, x: Tensor, y: Tensor, epochs: int) -> list[float]:
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    warmup = optim.LinearWarmup(optimizer, warmup_steps=2)
    decay = optim.StepDecay(optimizer, step_size=2, gamma=0.5)
    schedule = optim.SequentialSchedule(optimizer, [warmup, decay], milestones=[2])
    losses: list[float] = []
    for _ in range(epochs):
        optimizer.zero_grad(set_to_none=False)
        output = model(x)
        assert_type(output, Tensor)
        loss = criterion(output, y)
        assert_type(loss, Tensor)
        gradient = criterion.backward()
        assert_type(gradient, Tensor)
        assert_type(model.backward(gradient), Tensor)
        assert_type(nn.clip_grad_norm_(model.parameters(), max_norm=10.0), Tensor)
        assert_type(optimizer.step(), None)
        assert_type(schedule.step(), float)
        losses.append(loss.item())
    assert_type(schedule.lr, float)
    assert_type(schedule.get_last_lr(), list[float])
    assert_type(decay.lr_at(3), float)
    return losses


def settings(model: Sequential) -> None:
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    assert_type(sgd.lr, float)
    assert_type(sgd.momentum, float)
    assert_type(sgd.nesterov, bool)
    assert_type(sgd.weight_decay, float)
    sgd.momentum = 0.5
    sgd.lr = 0.01
    adam = optim.Adam(model.parameters(), lr=1e-3)
    assert_type(adam.betas, tuple[float, float])
    listed = optim.Adam(model.parameters(), betas=[0.8, 0.99])  # a list or tensor, as at run time
    assert_type(listed.betas, tuple[float, float])
    assert listed.betas == (0.8, 0.99)
    decoupled = optim.AdamW(model.parameters(), betas=torch.tensor([0.5, 0.75]))
    assert_type(decoupled.betas, tuple[float, float])
    assert decoupled.betas == (0.5, 0.75)
    assert_type(adam.eps, float)
    rmsprop = optim.RMSprop(model.parameters(), lr=1e-3, centered=True)
    assert_type(rmsprop.centered, bool)
    assert_type(rmsprop.alpha, float)
    assert_type(optim.Adadelta(model.parameters()).rho, float)
    assert_type(optim.Adagrad(model.parameters(), lr=0.1).lr_decay, float)
    decay = optim.StepDecay(sgd, step_size=10, gamma=0.5)
    assert_type(decay.step_size, int)
    assert_type(decay.gamma, float)
    decay.step_size = 5
    cycle = optim.OneCycle(sgd, max_lr=1.0, total_steps=10)
    assert_type(cycle.max_lr, float)
    assert_type(cycle.step_limit, int)
    schedule: optim.LRScheduler = decay
    assert_type(schedule.step_limit, int | None)


def param_groups_are_refused(optimizer: optim.Optimizer) -> None:
    # A minidl optimizer is one group of parameters: param_groups and add_param_group raise.
    assert_type(optimizer.param_groups, NoReturn)


def add_param_group_is_refused(optimizer: optim.Optimizer, model: Sequential) -> NoReturn:
    optimizer.add_param_group({"params": list(model.parameters())})


def round_trip(model: Sequential, optimizer: optim.SGD, schedule: optim.StepDecay) -> None:
    state = model.state_dict()
    assert_type(state, dict[str, Tensor])
    assert_type(model.state_dict(keep_vars=True), dict[str, Tensor | Parameter])
    keys = model.load_state_dict(state)
    assert_type(keys, IncompatibleKeys)
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    fresh = make_model()
    assert_type(fresh.load_state_dict(state, strict=False), IncompatibleKeys)
    assert_type(optimizer.state_dict(), dict[str, Any])
    assert_type(schedule.state_dict(), dict[str, Any])
    optimizer.load_state_dict(optimizer.state_dict())
    schedule.load_state_dict(schedule.state_dict())


def refused(model: Sequential, x: Tensor) -> None:
    """Never run: mypy finds each mistake (the ignores fail ``make typecheck`` once unused)."""
    model("not a tensor")  # type: ignore[arg-type]
    nn.Linear(2, 3)(x, x)  # type: ignore[call-arg]
    _ = model[0].weight  # type: ignore[attr-defined]  # a Module: isinstance(..., nn.Linear) first
    _ = nn.Tanh().to(torch.float64).weight  # type: ignore[attr-defined]
    model.zero_grad(set_to_none=True)  # type: ignore[arg-type]  # a gradient is never None
    optim.SGD(model.parameters(), lr=0.1).zero_grad(set_to_none=True)  # type: ignore[arg-type]


def main() -> None:
    torch.manual_seed(0)
    model = make_model()
    inspect_model(model)
    modes_and_moves(model)
    if torch.cuda.is_available():
        on_a_gpu(model)
    model.float()
    x = torch.randn(32, 2)
    y = (x.norm(dim=1) > 1).long()
    losses = train(model, x, y, epochs=6)
    assert losses[-1] < losses[0]
    settings(model)
    try:
        param_groups_are_refused(optim.SGD(model.parameters(), lr=0.1))
    except AttributeError:
        pass
    else:
        raise AssertionError("param_groups should have been refused")
    try:
        add_param_group_is_refused(optim.SGD(model.parameters(), lr=0.1), model)
    except TypeError:
        pass
    else:
        raise AssertionError("add_param_group should have been refused")
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    round_trip(model, optimizer, optim.StepDecay(optimizer, step_size=2))


if __name__ == "__main__":
    main()
