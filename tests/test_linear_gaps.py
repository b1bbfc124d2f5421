"""Mutation audit of ``minidl.nn.linear``: behaviours of ``Linear`` that earlier tests missed.

Each test pins a behaviour a user relies on (a value checked against PyTorch autograd in
float64, an exception type and message naming the layer, state left unchanged), chosen because
a hand-made change of the source that altered it passed the rest of the suite.
"""

from __future__ import annotations

import pickle
import re

import pytest
import torch
from torch import Tensor

from minidl import nn

F64 = torch.float64


def _autograd(
    x: Tensor, weight: Tensor, bias: Tensor | None, g: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """dL/dX, dL/dW and dL/db of ``sum(g * (x W^T + b))`` by PyTorch autograd, in float64."""
    x = x.detach().to(F64).requires_grad_(True)
    w = weight.detach().to(F64).requires_grad_(True)
    b = None if bias is None else bias.detach().to(F64).requires_grad_(True)
    y = torch.nn.functional.linear(x, w, b)
    leaves = [x, w] if b is None else [x, w, b]
    grads = torch.autograd.grad((y * g.to(F64)).sum(), leaves)
    return grads[0], grads[1], None if b is None else grads[2]


def _assert_autograds(layer: nn.Linear, x: Tensor, g: Tensor, grad_input: Tensor) -> None:
    """The input gradient returned and the parameter gradients accumulated from zero are
    autograd's for the layer's current parameters, to float64 rounding."""
    assert layer.bias is not None and layer.bias.grad is not None
    assert layer.weight.grad is not None
    expected = _autograd(x, layer.weight.data, layer.bias.data, g)
    torch.testing.assert_close(grad_input, expected[0], rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.weight.grad, expected[1], rtol=1e-13, atol=0)
    torch.testing.assert_close(layer.bias.grad, expected[2], rtol=1e-13, atol=0)


def test_backward_after_a_pickle_round_trip_matches_autograd() -> None:
    """A layer unpickled after its forward (its cached input kept, its views of the
    parameters dropped by ``__getstate__``) computes the input and parameter gradients of
    that forward: G W, G^T X and the batch sum of G, as autograd does."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    layer(x)
    twin = pickle.loads(pickle.dumps(layer))
    g = torch.randn(4, 2, dtype=F64)
    grad_input = twin.backward(g)
    _assert_autograds(twin, x, g, grad_input)


def test_backward_reads_a_weight_replaced_after_the_forward() -> None:
    """A weight of the same shape, dtype and device put in place between forward and backward
    (``weight.data = ...``) is the one the input gradient G W is computed with, as autograd
    computes it for that weight; the parameter gradients are those of the cached input."""
    torch.manual_seed(1)
    layer = nn.Linear(3, 2, dtype=F64)
    x = torch.randn(5, 3, dtype=F64)
    layer(x)
    layer.weight.data = torch.randn(2, 3, dtype=F64)
    g = torch.randn(5, 2, dtype=F64)
    grad_input = layer.backward(g)
    _assert_autograds(layer, x, g, grad_input)


def test_an_input_of_the_old_dtype_after_a_cast_is_refused_by_name() -> None:
    """After ``to(float64)`` and a float64 forward, a float32 input of that shape is refused
    with the layer's TypeError naming both dtypes (not torch's addmm error), and the last good
    forward stays cached: its backward still gives autograd's gradients."""
    torch.manual_seed(2)
    layer = nn.Linear(3, 2)
    layer(torch.randn(4, 3))
    layer.to(F64)
    x = torch.randn(4, 3, dtype=F64)
    layer(x)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Linear: input dtype torch.float32 does not match the parameters' dtype torch.float64"
        ),
    ):
        layer(torch.randn(4, 3))
    g = torch.randn(4, 2, dtype=F64)
    grad_input = layer.backward(g)
    _assert_autograds(layer, x, g, grad_input)


def test_a_bias_set_by_hand_after_the_forward_is_refused_before_the_weight_gradient() -> None:
    """A plain tensor assigned as ``bias`` between forward and backward is refused by the
    backward with the layer's TypeError naming it (not an AttributeError from reading its
    missing gradient), before the weight gradient is accumulated: it is left as it was."""
    torch.manual_seed(3)
    layer = nn.Linear(3, 2, dtype=F64)
    layer(torch.randn(4, 3, dtype=F64))
    assert layer.weight.grad is not None
    before = layer.weight.grad.clone()
    layer.bias = torch.zeros(2, dtype=F64)  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"^Linear: bias must be a minidl Parameter, got Tensor"):
        layer.backward(torch.randn(4, 2, dtype=F64))
    assert torch.equal(layer.weight.grad, before)
