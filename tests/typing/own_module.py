"""Modules, a loss, an optimizer and a schedule of one's own, as the tutorial writes them,
under ``mypy --strict``: subclasses of ``minidl.nn.Module``, ``Activation`` and ``Loss`` with
typed ``forward`` and ``backward``, children registered with ``register_module`` and kept as
their own types, ``gradcheck``, and ``detect_anomaly`` as a context manager.

``make typecheck`` runs ``mypy --strict`` on this file, which checks every ``assert_type``;
``tests/test_typing_programs.py`` runs it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from typing_extensions import assert_type

import minidl
from minidl import AnomalyError, GradcheckError, detect_anomaly, gradcheck, nn, optim


class Scale(nn.Module):
    """y = x * a with a learned a of shape (features,)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.scale = self.register_parameter("scale", nn.Parameter(torch.ones(features)))
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input * self.scale.data

    def backward(self, grad_output: Tensor) -> Tensor:
        if self._input is None:
            raise RuntimeError("Scale: backward called before forward")
        grad_input = grad_output * self.scale.data
        self.scale.grad.add_((grad_output * self._input).sum(0))
        return grad_input


class Block(nn.Module):
    """x + W2 tanh(W1 x): children registered and read back as their own types."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.first = self.register_module("first", nn.Linear(features, features))
        self.act = self.register_module("act", nn.Tanh())
        self.second = self.register_module("second", nn.Linear(features, features))
        self.scale = self.register_module("scale", Scale(features))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, input: Tensor) -> Tensor:
        return input + self.scale(self.second(self.act(self.first(input))))

    def backward(self, grad_output: Tensor) -> Tensor:
        inner = self.scale.backward(grad_output)
        return grad_output + self.first.backward(self.act.backward(self.second.backward(inner)))


class Softplus(nn.Activation):
    """y = log(1 + exp(x)); the derivative from the output, -expm1(-y)."""

    def _forward(self, input: Tensor) -> tuple[Tensor, Tensor]:
        output = input.clamp(min=0) + torch.log1p(torch.exp(-input.abs()))
        return output, output

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        return grad_output * -torch.expm1(-output)


class WrongSoftplus(Softplus):
    """Softplus with the derivative taken as 1 - sigmoid(x): gradcheck refuses it."""

    def _backward(self, grad_output: Tensor, output: Tensor) -> Tensor:
        return grad_output * torch.exp(-output)


class LogCoshLoss(nn.Loss):
    """The mean over the batch of the sum of log(cosh(z - t))."""

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        self._difference = prediction - target
        magnitude = self._difference.abs()
        value = magnitude + torch.log1p(torch.exp(-2 * magnitude)) - math.log(2)
        return value.sum() / len(prediction)

    def _gradient(self) -> Tensor:
        return torch.tanh(self._difference) / len(self._difference)


class SignSGD(optim.Optimizer):
    """w <- w - lr sign(g)."""

    def _update(self, value: Tensor, grad: Tensor, state: tuple[Tensor, ...]) -> None:
        value.sub_(grad.sign(), alpha=self.lr)


class HeavyBall(optim.SGD):
    """SGD with its momentum also read as ``mu``, and a setting of its own declared without a
    type (read as Any)."""

    mu = optim.SGD.momentum
    note = optim.Hyperparameter()


class Halving(optim.LRScheduler):
    """lr_t = base_lr / 2**t."""

    def __init__(self, optimizer: optim.Optimizer) -> None:
        super().__init__(optimizer)
        self._start()

    def lr_at(self, step: int) -> float:
        return self.base_lr * 0.5**step


def check_modules() -> None:
    x = torch.randn(5, 4, dtype=torch.float64)
    block = Block(4).to(torch.float64)
    assert_type(block, Block)
    assert_type(block.first, nn.Linear)
    assert_type(block.act, nn.Tanh)
    assert_type(block.scale, Scale)
    assert_type(block.scale(x), Tensor)
    assert_type(block(x), Tensor)
    assert_type(block.first.weight, nn.Parameter)
    assert_type(block.get_buffer("calls"), Tensor)
    assert_type(gradcheck(block, x), bool)
    assert_type(gradcheck(Softplus(), x), bool)
    assert_type(Softplus()(x), Tensor)
    criterion = LogCoshLoss()
    target = torch.randn(5, 4, dtype=torch.float64)
    assert_type(criterion(x, target), Tensor)
    assert_type(criterion.backward(), Tensor)
    any_loss: nn.Loss = criterion  # any loss called takes (prediction, target): a Tensor
    assert_type(any_loss(x, target), Tensor)
    assert gradcheck(criterion, x, target)
    try:
        gradcheck(WrongSoftplus(), x)
    except GradcheckError as error:
        assert_type(error, GradcheckError)
    else:
        raise AssertionError("gradcheck should have failed")


def check_training() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), Softplus(), Block(8), nn.Linear(8, 2))
    criterion = nn.CrossEntropyLoss()
    optimizer = SignSGD(model.parameters(), lr=0.01)
    schedule = Halving(optimizer)
    x = torch.randn(16, 2)
    y = (x.norm(dim=1) > 1).long()
    for _ in range(3):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        assert_type(loss, Tensor)
        assert_type(model.backward_parameters(criterion.backward()), None)
        optimizer.step()
        assert_type(schedule.step(), float)
    assert optimizer.lr == 0.01 / 8
    heavy = HeavyBall(model.parameters(), lr=0.1, momentum=0.9)
    assert_type(heavy.mu, float)
    assert heavy.mu == 0.9
    assert_type(HeavyBall.mu, optim.Hyperparameter[float])
    with detect_anomaly(model, criterion):
        criterion(model(x), y)
        model.backward(criterion.backward())
    with detect_anomaly():
        try:
            model(torch.full((2, 2), math.nan))
        except AnomalyError as error:
            assert_type(error, AnomalyError)
    assert_type(minidl.__version__, str)


def main() -> None:
    check_modules()
    check_training()


if __name__ == "__main__":
    main()
