"""Probes of the public API with bad inputs: each is refused with a message naming the
function, what was given and what was expected, and leaves every bit of state as it was."""

from __future__ import annotations

import pytest
import torch

from minidl import nn, optim


def test_a_parameter_refuses_data_or_grad_whose_elements_share_memory() -> None:
    # An expanded tensor used to be taken; the optimizer's step then failed part-way, with the
    # parameters before it updated, and load_state_dict likewise.
    first, second = nn.Linear(3, 4), nn.Linear(4, 2)
    params = first.parameters() + second.parameters()
    for parameter in params:
        parameter.grad.normal_()
    optimizer = optim.SGD(params, lr=0.1, momentum=0.9)
    before = [(p.data.clone(), p.grad.clone()) for p in params]
    bias = params[3]
    for name in ("data", "grad"):
        with pytest.raises(
            ValueError,
            match=rf"Parameter 'bias': {name} of shape \(2,\) has "
            r"elements that share memory \(strides \(0,\)",
        ):
            setattr(bias, name, torch.zeros(1).expand(2))
    with pytest.raises(ValueError, match=r"Parameter: data of shape \(2, 3\) has elements"):
        nn.Parameter(torch.zeros(1, 3).expand(2, 3))
    optimizer.step()  # (the parameters are as they were: the step runs whole)
    for (data, grad), parameter in zip(before, params, strict=True):
        assert torch.equal(parameter.grad, grad)
        assert not torch.equal(parameter.data, data)
    # A stride of 0 over one element shares nothing; transposed data is its own.
    nn.Parameter(torch.zeros(1).expand(1))
    nn.Parameter(torch.zeros(3, 4).t())
