"""The Module base class (minidl.nn.module): what a fourth mutation audit found untested, each
test naming the change to the source it fails on, and a small bug it found (fixed): an attribute
named "" said to be missing. Oracles: torch.nn where minidl follows it, the documented behaviour,
or the documented error (type and words), with the state compared after a refusal."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from minidl import nn
from minidl.nn.flat import flat_buffer, flatten_parameters
from minidl.nn.module import unregistered_parameters
from minidl.nn.parameter import Parameter

F64 = torch.float64


def test_to_refuses_non_blocking_given_twice_even_as_none() -> None:
    """``to(dtype, flag, non_blocking=...)`` gives the flag twice, whatever the keyword holds
    (``None`` too): refused, nothing cast."""
    layer = nn.Linear(2, 2)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "Linear.to: got non_blocking twice, False after the dtype and non_blocking=None; "
            "give one of them"
        ),
    ):
        layer.to(torch.float64, False, non_blocking=None)  # type: ignore[arg-type]
    assert layer.weight.dtype == torch.float32


@pytest.mark.parametrize("kind", [bool, complex, float, int])
def test_to_refuses_a_python_type_by_name(kind: type) -> None:
    layer = nn.Linear(2, 2)
    with pytest.raises(
        TypeError,
        match=re.escape(
            f"Linear.to: got Python's {kind.__name__}, which is neither a device nor a dtype"
        ),
    ):
        layer.to(kind)  # type: ignore[arg-type]
    assert layer.weight.dtype == torch.float32


def test_a_move_of_the_original_drops_the_plans_of_its_shallow_copy() -> None:
    """A shallow copy of a Sequential shares its registries, so ``to`` on the original moves
    the copy's tensors too; ``_moved`` is called on every module sharing them, so the copy's
    plans (which hold buffers of the old dtype: memory that would be kept until the copy is
    gone) are dropped with the original's. The copy and the original both refuse the old
    dtype afterwards, in the same words."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    shallow = copy.copy(model)
    x, grad = torch.randn(5, 3), torch.randn(5, 2)
    for _ in range(3):  # (the signature noted, trained, then planned)
        shallow(x)
        shallow.backward(grad)
    assert list(shallow._plans._values) == [(x.shape, torch.float32, x.device)]
    model.to(F64)
    assert list(shallow._plans._values) == []
    message = re.escape(
        "Linear: input dtype torch.float32 does not match the parameters' dtype torch.float64"
    )
    for module in (model, shallow):
        with pytest.raises(TypeError, match=message):
            module(x)


def test_a_batch_of_one_after_a_larger_one_is_tried_and_refused_before_the_dropout_draws() -> None:
    """A batch of one sample has its own trial (a batch norm trains on none): after a trial
    for a batch of four, a batch of one is tried again, so the batch norm refuses it in the
    trial, before the dropout in front of it draws from its generator or anything else
    changes."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Dropout(0.5, generator=generator),
        nn.Linear(3, 4, dtype=F64),
        nn.BatchNorm1d(4, dtype=F64),
    )
    model(torch.randn(4, 3, dtype=F64))
    state = generator.get_state()
    buffers = [b.clone() for b in model.buffers()]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "BatchNorm1d: training mode needs more than one sample per feature to estimate a "
            "variance, got an input of shape (1, 4)"
        ),
    ) as info:
        model(torch.randn(1, 3, dtype=F64))
    assert info.value.__notes__ == ["in Sequential, at module 2 (BatchNorm1d)"]
    assert torch.equal(generator.get_state(), state)
    for buffer, before in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(buffer, before)


@pytest.mark.parametrize(("inner", "expected"), [(1023, ["log[0][0]"]), (1024, [])])
def test_unregistered_parameters_looks_into_a_level_of_at_most_1024_lists(
    inner: int, expected: list[str]
) -> None:
    """The walk looks into a level of up to ``_MOST_NESTED`` (1024) lists and stops past it
    (a log of many rows is data): a parameter in the first of 1024 inner lists is found, one
    in the first of 1025 is not."""
    layer = nn.Linear(2, 2)
    hidden = Parameter(torch.zeros(2))
    layer.log = [[hidden]] + [[0] for _ in range(inner)]
    assert unregistered_parameters(layer) == expected


@pytest.mark.parametrize(
    ("method", "what"), [("get_parameter", "an nn.Parameter"), ("get_buffer", "a buffer")]
)
def test_an_attribute_named_empty_is_named_as_any_other_attribute(method: str, what: str) -> None:
    """An attribute named "" (``setattr(module, "", value)``, which Python allows) is named by
    ``get_parameter("")`` as any other attribute is ("is not an nn.Parameter: it is an
    attribute (int)"), as PyTorch's finds it. (Fixed: "Linear has no attribute ``", which was
    false; Module._not_found looked for no attribute of an empty name.)"""
    layer = nn.Linear(2, 2)
    setattr(layer, "", 5)
    kind = method.removeprefix("get_")
    has = "'weight', 'bias'" if kind == "parameter" else "none"
    with pytest.raises(
        AttributeError,
        match=re.escape(
            f"Linear.{method}: '' names no {kind}: `` is not {what}: it is an attribute (int) "
            f"of Linear (this Linear, whose {kind}s are: {has})"
        ),
    ):
        getattr(layer, method)("")
    assert getattr(layer, "") == 5
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_a_flat_module_whose_gradient_was_replaced_stays_flat_after_a_cast() -> None:
    """A module made flat by hand (``flatten_parameters``) whose values tile one buffer but
    whose bias gradient was replaced by a tensor of its own is still flat after ``to``: the
    whole model is flattened again (values and gradients each one buffer), as ``_move``
    promises ("keep a flat model flat"), not moved parameter by parameter; every value and
    gradient is the old one cast, exactly."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    flatten_parameters(list(layer.parameters()))
    layer.weight.grad.normal_()
    layer.bias.grad = torch.ones(2)
    before = [(p.data.clone(), p.grad.clone()) for p in layer.parameters()]
    assert flat_buffer([p.data for p in layer.parameters()]) is not None
    assert flat_buffer([p.grad for p in layer.parameters()]) is None
    layer.to(F64)
    parameters = list(layer.parameters())
    values = flat_buffer([p.data for p in parameters])
    grads = flat_buffer([p.grad for p in parameters])
    assert values is not None and values.dtype == F64
    assert grads is not None and grads.dtype == F64
    for parameter, (value, grad) in zip(parameters, before, strict=True):
        assert torch.equal(parameter.data, value.to(F64))
        assert torch.equal(parameter.grad, grad.to(F64))
