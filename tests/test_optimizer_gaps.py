"""Optimizer base, SGD and Adadelta behaviour that a third mutation audit of
``minidl.optim.optimizer``, ``minidl.optim.sgd`` and ``minidl.optim.adadelta`` (finishing the
second, whose tests are in ``test_optimizer_mutants.py``) found no test for: each test here
fails on a small change to the source (named in its docstring) that the rest of the suite let
through. Trajectories are compared with ``torch.optim`` in float64, refusals by exception type
and message, with the optimizer left as it was."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from minidl import nn, optim
from tests.test_optimizer_mutants import _assert_unchanged, _set_gradients, _snapshot

F64 = torch.float64


def _parameters() -> list[nn.Parameter]:
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64), nn.Tanh(), nn.Linear(4, 2, dtype=F64))
    return list(model.parameters())


def _twin(parameters: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.data.clone().requires_grad_() for p in parameters]


def test_a_state_tensor_sharing_only_the_last_gradient_entry_is_refused() -> None:
    """A momentum buffer given in place of the optimizer's own that shares one element with
    the parameters' gradients, the last of the last gradient, is refused as sharing their
    memory, before anything changes: the step would write the buffer over that gradient entry.
    Mutant killed: the memory span of a tensor ending one element short of its last (a buffer
    sharing only the last entry taken)."""
    parameters = [
        nn.Parameter(torch.zeros(2, 3, dtype=F64)),
        nn.Parameter(torch.zeros(4, dtype=F64)),
    ]
    memory = torch.zeros(10 + 9, dtype=F64)
    parameters[0].grad = memory[0:6].view(2, 3)
    parameters[1].grad = memory[6:10]
    optimizer = optim.SGD(parameters, lr=0.5, momentum=0.5)
    memory[:10] = torch.arange(1.0, 11.0, dtype=F64)
    own = optimizer.state["momentum_buffer"]
    optimizer.state["momentum_buffer"] = memory[9:19]
    message = (
        "SGD.step: state 'momentum_buffer' shares its memory with the parameters' gradients, "
        "which the update reads and zero_grad zeroes: give it a tensor of its own (clone() one)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizer.step()
    assert torch.equal(memory[:10], torch.arange(1.0, 11.0, dtype=F64))
    assert all(not p.data.any() for p in parameters)
    assert optimizer.step_count == 0
    assert optimizer.state["momentum_buffer"] is not own
    assert torch.equal(own, torch.zeros(10, dtype=F64))


def test_a_single_tensor_given_as_params_is_refused_naming_it() -> None:
    """A plain tensor given as ``params`` (iterable, its rows tensors) is refused as one
    tensor, not as a list whose first element is no Parameter. Mutant killed: the refusal of
    a single value asked of a Parameter only (a Tensor then refused as ``params[0]``)."""
    message = (
        "SGD: params must be an iterable of Parameters (e.g. model.parameters()), got a "
        "single Tensor"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        optim.SGD(torch.zeros(3, 2), lr=0.1)


@pytest.mark.parametrize("momentum", [np.float32(0.5), np.float64(0.25)], ids=["np32", "np64"])
def test_sgds_momentum_is_kept_as_a_python_float(momentum: float) -> None:
    """A numpy momentum is kept as the Python ``float`` checked, by the constructor and by
    assignment: what ``momentum`` reads back and ``state_dict`` saves (a JSON checkpoint takes
    no numpy number), and the steps are torch.optim's SGD's with that momentum. Mutant killed:
    the checks returning the momentum given, not the one checked."""
    parameters = _parameters()
    optimizer = optim.SGD(parameters, lr=0.5, momentum=momentum)
    assert type(optimizer.momentum) is float and optimizer.momentum == float(momentum)
    assert type(optimizer.state_dict()["hyperparameters"]["momentum"]) is float
    optimizer.momentum = momentum
    assert type(optimizer.momentum) is float
    twin = _twin(parameters)
    reference = torch.optim.SGD(twin, lr=0.5, momentum=float(momentum))
    generator = torch.Generator().manual_seed(14)
    for _ in range(4):
        _set_gradients(parameters, twin, generator)
        optimizer.step()
        reference.step()
    for index, (parameter, other) in enumerate(zip(parameters, twin, strict=True)):
        assert torch.equal(parameter.data, other.detach()), f"parameter {index}"


def test_a_gradient_given_a_state_tensors_memory_is_blamed_when_another_was_replaced() -> None:
    """A parameter whose gradient was given the memory of one of Adadelta's own state tensors
    (``p.grad = optimizer.state["acc_delta"][:n]``) while the other state tensor was replaced
    by a valid tensor of its own is refused naming the parameter, the thing changed, not the
    state tensor the optimizer made, before anything changes. Mutant killed: the optimizer's
    own state tensors checked as if replaced by hand (blamed as sharing the gradients'
    memory)."""
    parameters = _parameters()
    optimizer = optim.Adadelta(parameters, lr=0.5, rho=0.8)
    generator = torch.Generator().manual_seed(15)
    _set_gradients(parameters, _twin(parameters), generator)
    optimizer.step()
    optimizer.state["square_avg"] = optimizer.state["square_avg"].clone()
    before = _snapshot(optimizer)
    values = [p.data.clone() for p in parameters]
    first = parameters[0]
    first.grad = optimizer.state["acc_delta"][: first.data.numel()].view(first.data.shape)
    message = (
        "Adadelta: params[0].grad shares its memory with state 'acc_delta', which the update "
        "writes: give the parameter a tensor of its own"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        optimizer.step()
    _assert_unchanged(optimizer, before)
    for parameter, value in zip(parameters, values, strict=True):
        assert torch.equal(parameter.data, value)


class _SGDWithWindows(optim.SGD):
    """SGD with a setting of its own whose value is a list (held as given, unchecked)."""

    windows: optim.Hyperparameter[list[int]] = optim.Hyperparameter()

    def __init__(self, params: list[nn.Parameter], windows: list[int]) -> None:
        self.windows = windows
        super().__init__(params, lr=0.1, momentum=0.5)


def test_a_list_setting_of_ones_own_is_restored_as_a_list() -> None:
    """``load_state_dict`` makes a saved list a tuple again only where the setting holds a
    tuple (a pair from a JSON checkpoint): a setting of one's own that holds a list gets its
    list back, equal to the one saved. Mutant killed: every saved list made a tuple."""
    saved_from = _SGDWithWindows(_parameters(), windows=[3, 5])
    saved = saved_from.state_dict()
    assert saved["hyperparameters"] == {"momentum": 0.5, "windows": [3, 5]}
    optimizer = _SGDWithWindows(_parameters(), windows=[1])
    optimizer.load_state_dict(saved)
    assert type(optimizer.windows) is list
    assert optimizer.windows == [3, 5]
    assert optimizer.hyperparameters() == {"momentum": 0.5, "windows": [3, 5]}
