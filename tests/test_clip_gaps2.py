"""Gradient clipping: behaviours the mutation audit of nn/clip.py and nn/_stack_clip.py found
unchecked. Each test pins one against an oracle: PyTorch's clip_grad_norm_ / clip_grad_value_,
a float64 norm of the same values, clip_grad_norm_ of each model alone for a stack's StackClip,
or the exact message of a refusal (with every gradient left as it was)."""

from __future__ import annotations

import math

import pytest
import torch

from minidl import nn
from minidl.nn._stack_clip import StackClip
from minidl.nn.flat import flat_buffer
from tests.test_clip_gaps import _stack_and_twins


def _stacked(twins: list[nn.Sequential], alone: list[nn.Sequential], layout: str) -> nn.Sequential:
    """The models of ``alone`` stacked, each model's gradients set to its twin's."""
    stack = nn.stack_models(alone, layout=layout)
    for index, twin in enumerate(twins):
        for parameter, source in zip(
            nn.model_parameters(stack, index), twin.parameters(), strict=True
        ):
            parameter.grad.copy_(source.grad)
    return stack


def _own_holders(stack: nn.Sequential, models: int, flat: bool) -> list[tuple]:
    holders = []
    for index in range(models):
        own = nn.model_parameters(stack, index)
        given = [nn.flat_model_parameters(stack, slice(index, index + 1))] if flat else own
        holders.append((f"optimizer {index}", index, index + 1, given, given))
    return holders


# ---- clip.py ------------------------------------------------------------------------------


def test_a_flat_models_inf_norm_is_one_reduction_over_the_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(mutant C05) The module promises one norm over a flat buffer whatever the depth, of any
    order: an inf-norm too is one vector_norm over the buffer (not one per parameter and one of
    those), and its value is PyTorch's."""
    torch.manual_seed(0)
    model = nn.mlp((3, 5, 4, 2), "tanh", dtype=torch.float64)
    for parameter in model.parameters():
        parameter.grad.normal_()
    parameters = list(model.parameters())
    assert flat_buffer([p.grad for p in parameters]) is not None
    twins = []
    for parameter in parameters:
        twin = torch.nn.Parameter(parameter.data.clone())
        twin.grad = parameter.grad.clone()
        twins.append(twin)
    calls = []
    norm = torch.linalg.vector_norm

    def counted(*arguments, **keywords):
        calls.append(arguments[0].shape)
        return norm(*arguments, **keywords)

    monkeypatch.setattr(torch.linalg, "vector_norm", counted)
    total = nn.clip_grad_norm_(parameters, 0.1, norm_type=math.inf)
    monkeypatch.undo()
    expected = torch.nn.utils.clip_grad_norm_(twins, 0.1, norm_type=math.inf)
    assert len(calls) == 1
    assert torch.equal(total, expected)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=1e-15, atol=0)


def test_a_long_buffer_is_measured_in_rows_of_4096_as_documented() -> None:
    """(mutant C22) The module documents a buffer of more than 4096 entries measured as rows of
    4096 and the rest, the norm of their norms: the float32 total has that computation's bits
    (rows of another length round otherwise for this seed; StackClip and fit_rounds rely on the
    same length being used everywhere)."""
    parameters = [nn.Parameter(torch.zeros(2 * 4096)), nn.Parameter(torch.zeros(5))]
    assert nn.flat.flatten_parameters(parameters) is not None
    buffer = flat_buffer([p.grad for p in parameters])
    assert buffer is not None
    buffer.copy_(torch.randn(buffer.shape, generator=torch.Generator().manual_seed(0)) + 0.5)
    rows = torch.linalg.vector_norm(buffer[: 2 * 4096].view(2, 4096), dim=1)
    rest = torch.linalg.vector_norm(buffer[2 * 4096 :])
    expected = torch.linalg.vector_norm(torch.cat((rows, rest.reshape(1))))
    exact = torch.linalg.vector_norm(buffer.double())
    total = nn.clip_grad_norm_(parameters, math.inf)
    assert torch.equal(total, expected)
    torch.testing.assert_close(total.double(), exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0])
def test_the_last_entry_of_a_long_buffer_counts(norm_type: float) -> None:
    """(mutant C26) A buffer of 4097 entries is a row of 4096 and a rest of one entry: that
    entry counts in the norm, as PyTorch counts it (here it is nearly all of it)."""
    parameters = [
        nn.Parameter(torch.zeros(4096, dtype=torch.float64)),
        nn.Parameter(torch.zeros(1, dtype=torch.float64)),
    ]
    assert nn.flat.flatten_parameters(parameters) is not None
    buffer = flat_buffer([p.grad for p in parameters])
    assert buffer is not None and buffer.numel() == 4097
    buffer.copy_(torch.rand(4097, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    buffer[-1] = 1e3
    twins = []
    for parameter in parameters:
        twin = torch.nn.Parameter(parameter.data.clone())
        twin.grad = parameter.grad.clone()
        twins.append(twin)
    total = nn.clip_grad_norm_(parameters, 1.0, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(twins, 1.0, norm_type)
    torch.testing.assert_close(total, expected, rtol=1e-13, atol=0)
    for parameter, twin in zip(parameters, twins, strict=True):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=1e-13, atol=0)


@pytest.mark.parametrize("layout", ["layer", "model"])
def test_stack_models_of_a_long_gradient_with_a_rest_of_one_are_clipped_as_each_alone(
    layout: str,
) -> None:
    """(mutant S14) Models whose clipped piece is 4097 entries a model, a row of 4096 and a
    rest of one (laid out by layer: a 17 x 241 weight; by model: a block of 62*64 + 64 + 64 + 1
    entries), that last entry large: each model's gradients, clipped in the stack, are
    clip_grad_norm_'s of the model alone, to 1e-13."""
    sizes = (241, 17, 1) if layout == "layer" else (62, 64, 1)
    alone, twins = _stack_and_twins(sizes, 3, seed=11)
    for twin in twins:
        parameters = list(twin.parameters())
        last = parameters[0] if layout == "layer" else parameters[-1]
        assert (
            last.data.numel() if layout == "layer" else sum(p.data.numel() for p in parameters)
        ) == 4097
        last.grad.view(-1)[-1] = 1e4
    stack = _stacked(twins, alone, layout)
    flat = layout == "model"
    StackClip(stack, 1.0, _own_holders(stack, 3, flat), flat=flat, where="test")()
    for index, twin in enumerate(twins):
        nn.clip_grad_norm_(twin.parameters(), 1.0)
        for parameter, expected in zip(
            nn.model_parameters(stack, index), twin.parameters(), strict=True
        ):
            torch.testing.assert_close(parameter.grad, expected.grad, rtol=1e-13, atol=0)


@pytest.mark.parametrize("layout", ["layer"])
def test_a_parameter_given_to_a_later_optimizer_and_held_by_another_is_refused(
    layout: str,
) -> None:
    """(mutant S28) Model 1's first parameter, given to optimizer 1 (which does not hold it)
    and held by optimizer 2: its gradient would be counted in model 2's norm and scaled by its
    coefficient. Refused naming both optimizers, whichever optimizer it was given to (not only
    the first), and no gradient changes."""
    alone, twins = _stack_and_twins((3, 5, 2), 3, seed=4)
    stack = _stacked(twins, alone, layout)
    own = [nn.model_parameters(stack, index) for index in range(3)]
    shared = own[1][0]
    holders = [
        ("optimizer 0", 0, 1, own[0], own[0]),
        ("optimizer 1", 1, 2, own[1], own[1][1:]),
        ("optimizer 2", 2, 3, own[2], [*own[2], shared]),
    ]
    before = [parameter.grad.clone() for parameter in stack.parameters()]
    with pytest.raises(ValueError) as raised:
        StackClip(stack, 0.5, holders, flat=False, where="fit_rounds")()
    assert str(raised.value) == (
        "fit_rounds: with max_grad_norm, each model's gradients are clipped to their own norm, "
        f"but optimizer 2 holds {shared!r}, which was given to optimizer 1: its gradient would "
        "belong to no one model; give each optimizer parameters of its own"
    )
    for parameter, grad in zip(stack.parameters(), before, strict=True):
        assert torch.equal(parameter.grad, grad)
