"""``Module.state_dict(destination=..., prefix=..., keep_vars=...)`` against ``torch.nn.Module``'s.

A ``torch.nn`` twin of the same model (``to_torch``) is the oracle for the names, their order
and where they are written: a ``prefix`` is put before every name as it is, a ``destination``
is written into and returned, and ``keep_vars=True`` gives the objects that ``get_parameter``
and ``get_buffer`` give. minidl's entries stay copies without ``keep_vars`` (PyTorch's share
memory with the model); a state dict of ``Parameter`` objects loads as PyTorch's does. Bad
arguments are refused, leaving the destination as it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import MutableMapping
from types import MappingProxyType
from typing import Any

import pytest
import torch
import torch.nn as tnn

from minidl import nn
from minidl.interop import to_torch
from minidl.nn.module import Module
from minidl.nn.parameter import Parameter
from tests.helpers import F64


def _pair() -> tuple[Module, tnn.Module]:
    """A model with parameters, buffers and a nested ``Sequential``, and its ``torch.nn`` twin."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    ).to(F64)
    model(torch.randn(5, 2, dtype=F64))  # (running statistics other than the initial ones)
    return model, to_torch(model)


@pytest.mark.parametrize("prefix", ["", "model.", "model", "a.b."])
def test_a_prefix_is_put_before_every_name_as_in_torch(prefix: str) -> None:
    model, twin = _pair()
    ours, theirs = model.state_dict(prefix=prefix), twin.state_dict(prefix=prefix)
    assert list(ours) == list(theirs)
    for name, value in ours.items():
        assert torch.equal(value, theirs[name])


@pytest.mark.parametrize("kind", [dict, OrderedDict], ids=["dict", "OrderedDict"])
def test_a_destination_is_written_into_and_returned_as_in_torch(kind: type) -> None:
    """Its entries stay first; an entry under a name that the module gives is replaced in its
    place."""
    model, twin = _pair()
    ours: MutableMapping[str, Any] = kind(first=1, **{"p.1.running_var": 2}, last=3)
    theirs: MutableMapping[str, Any] = kind(ours)
    assert model.state_dict(destination=ours, prefix="p.") is ours
    assert twin.state_dict(destination=theirs, prefix="p.") is theirs
    assert list(ours) == list(theirs)
    assert ours["first"] == 1 and ours["last"] == 3
    for name, value in ours.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, theirs[name])
    assert isinstance(ours["p.1.running_var"], torch.Tensor)


def test_keep_vars_gives_the_objects_themselves_as_torch() -> None:
    """Each entry is what ``get_parameter`` or ``get_buffer`` gives for its name, in both
    frameworks: the ``Parameter`` object (with its gradient), the buffer tensor itself."""
    model, twin = _pair()
    ours, theirs = model.state_dict(keep_vars=True), twin.state_dict(keep_vars=True)
    assert list(ours) == list(theirs)
    parameters = dict(twin.named_parameters())
    for name in theirs:
        if name in parameters:
            assert theirs[name] is twin.get_parameter(name)
            assert ours[name] is model.get_parameter(name)
            assert isinstance(ours[name], Parameter)
        else:
            assert theirs[name] is twin.get_buffer(name)
            assert ours[name] is model.get_buffer(name)
    prefixed = model.state_dict(prefix="m.", keep_vars=True)
    assert all(prefixed["m." + name] is value for name, value in ours.items())


def test_without_keep_vars_the_entries_are_copies() -> None:
    """minidl's documented behaviour, where PyTorch's entries share memory with the model: a
    state dict keeps its values while the model trains."""
    model, twin = _pair()
    ours, theirs = model.state_dict(), twin.state_dict()
    assert theirs["0.weight"].data_ptr() == twin.get_parameter("0.weight").data_ptr()
    before = ours["0.weight"].clone()
    model.get_parameter("0.weight").data.add_(1.0)
    model.get_buffer("1.running_mean").add_(1.0)
    assert torch.equal(ours["0.weight"], before)
    assert not torch.equal(ours["1.running_mean"], model.get_buffer("1.running_mean"))


def test_without_keep_vars_the_entries_are_detached_as_in_torch() -> None:
    """PyTorch's entries are detached from any autograd graph, whatever the model's tensors
    record; so are minidl's copies, of a buffer set to record its operations since it was
    registered too (a copy of it alone would record the copy)."""
    model, twin = _pair()
    model.get_buffer("1.running_mean").requires_grad_()
    twin.get_buffer("1.running_mean").requires_grad_()
    ours, theirs = model.state_dict(), twin.state_dict()
    assert list(ours) == list(theirs)
    for name, value in ours.items():
        assert not theirs[name].requires_grad and theirs[name].grad_fn is None
        assert not value.requires_grad and value.grad_fn is None
        assert torch.equal(value, theirs[name])


def test_a_state_dict_of_parameters_loads_as_in_torch() -> None:
    """``load_state_dict(state_dict(keep_vars=True))`` of another model copies its values in,
    as PyTorch's does with its Parameters; the model's own loads as the identity."""
    model, twin = _pair()
    other = nn.Sequential(
        nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    ).to(F64)
    torch_other = to_torch(other)
    torch_other.load_state_dict(twin.state_dict(keep_vars=True))
    other.load_state_dict(model.state_dict(keep_vars=True))
    for name, value in other.state_dict().items():
        assert torch.equal(value, torch_other.state_dict()[name])
        assert torch.equal(value, model.state_dict()[name])
    assert other.get_parameter("0.weight") is not model.get_parameter("0.weight")
    before = model.state_dict()
    model.load_state_dict(model.state_dict(keep_vars=True))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_a_torch_state_dict_of_parameters_loads_their_values_outside_any_graph() -> None:
    """PyTorch's ``state_dict(keep_vars=True)`` holds its Parameters, which record their
    operations: their values are loaded, and the model's tensors stay outside any autograd
    graph, as PyTorch's own stay leaves (a copy of them recorded would make every parameter
    a node of one, its value given by a copy)."""
    model, twin = _pair()
    other = nn.Sequential(
        nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    ).to(F64)
    torch_other = to_torch(other)
    state = twin.state_dict(keep_vars=True)
    assert all(state[name].requires_grad for name, _ in twin.named_parameters())
    torch_other.load_state_dict(state)
    assert other.load_state_dict(state) == ([], [])
    for name, value in other.state_dict(keep_vars=True).items():
        tensor = value.data if isinstance(value, Parameter) else value
        assert torch_other.state_dict(keep_vars=True)[name].grad_fn is None
        assert not tensor.requires_grad and tensor.grad_fn is None
        assert torch.equal(tensor, model.state_dict()[name])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"destination": []}, "destination must be a mutable mapping (a dict) or None, got list"),
        (
            {"destination": MappingProxyType({})},
            "destination must be a mutable mapping (a dict) or None, got mappingproxy",
        ),
        ({"prefix": 1}, "prefix must be a str, got int"),
        ({"prefix": None}, "prefix must be a str, got NoneType"),
        ({"keep_vars": 1}, "keep_vars must be True or False, got 1"),
        ({"keep_vars": "yes"}, "keep_vars must be True or False, got 'yes'"),
    ],
)
def test_bad_arguments_are_refused_leaving_the_destination_as_it_was(
    arguments: dict[str, Any], message: str
) -> None:
    model, _ = _pair()
    destination = {"first": 1}
    with pytest.raises(TypeError) as refused:
        model.state_dict(**{"destination": destination, **arguments})
    assert str(refused.value) == f"Sequential.state_dict: {message}"
    assert destination == {"first": 1}


def test_the_arguments_are_taken_by_keyword() -> None:
    """PyTorch's positional form is deprecated (it warns): minidl takes keywords only."""
    model, _ = _pair()
    with pytest.raises(TypeError, match=r"state_dict\(\) takes 1 positional argument"):
        model.state_dict(None, "model.")  # type: ignore[misc]


def test_loading_into_a_buffer_whose_elements_share_memory_is_refused_before_any_write() -> None:
    """A buffer registered expanded (a broadcast constant, which PyTorch takes): the load wrote
    the parameters, then failed in torch's words (``more than one element of the written-to
    tensor refers to a single memory location``) with the parameter already changed. Refused
    by name before anything is written; with the entry left out, the rest loads."""

    class Scale(Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_parameter("w", Parameter(torch.ones(3)))
            self.register_buffer("mask", torch.ones(1).expand(3))

    module = Scale()
    state = {"w": torch.full((3,), 5.0), "mask": torch.tensor([1.0, 0.0, 1.0])}
    with pytest.raises(ValueError) as error:
        module.load_state_dict(state)
    assert str(error.value) == (
        "Scale.load_state_dict: entry 'mask' is to be written into 'mask' of shape (3,), whose "
        "elements share memory (strides (0,), as an expanded tensor has): the copy would fail "
        "part-way, other entries written; register 'mask' as a tensor whose elements each have "
        "their own memory (its .clone()), or load without this entry (strict=False)"
    )
    assert torch.equal(module.w.data, torch.ones(3))
    module.load_state_dict({"w": state["w"]}, strict=False)
    assert torch.equal(module.w.data, state["w"]) and torch.equal(module.mask, torch.ones(3))


def _tied_model() -> nn.Sequential:
    first, second = nn.Linear(3, 3, dtype=F64), nn.Linear(3, 3, dtype=F64)
    second.register_parameter("weight", first.weight)
    return nn.Sequential(first, nn.Tanh(), second)


def test_a_tied_tensor_given_under_both_names_with_a_nan_loads() -> None:
    """The two entries of a tied weight (a diverged run's, one tensor under both names) were
    compared with torch.equal, for which NaN equals nothing: refused as "different values"."""
    model = _tied_model()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    weight = state["0.weight"]
    weight[0, 0] = float("nan")
    state["2.weight"] = weight
    model.load_state_dict(state)
    assert bool(torch.isnan(model[0].weight.data[0, 0])) and model[2].weight is model[0].weight
    state["2.weight"] = weight.clone()  # (a copy: equal, NaN at the same place)
    model.load_state_dict(state)
    other = weight.clone()
    other[1, 1] = 7.0
    state["2.weight"] = other
    with pytest.raises(ValueError, match=r"hold different values; expected one of them"):
        model.load_state_dict(state)


def test_a_tied_tensors_second_entry_of_another_shape_is_named_by_its_shape() -> None:
    """Said as "hold different values", where the entry has another shape."""
    model = _tied_model()
    state = dict(model.state_dict())
    state["2.weight"] = torch.zeros(3, 4, dtype=F64)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    assert str(error.value) == (
        "Sequential.load_state_dict: entry '2.weight' has shape (3, 4), expected (3, 3)"
    )


def test_a_sequential_refuses_two_parameters_over_one_tensor() -> None:
    """``second.weight.data = first.weight.data`` makes two Parameters over one tensor, which an
    optimizer refuses by name; a Sequential copied each into its flat buffer, untying them
    without a word (and an optimizer built on it then took them). Refused, nothing changed; the
    tie made as one Parameter builds."""
    first, second = nn.Linear(3, 3, dtype=F64), nn.Linear(3, 3, dtype=F64)
    second.weight.data = first.weight.data
    with pytest.raises(ValueError) as error:
        nn.Sequential(first, nn.Tanh(), second)
    assert str(error.value) == (
        "Sequential: parameters '0.weight' and '2.weight' are two Parameters over one tensor's "
        "memory, which the model's flat buffer would copy apart (untying them); tie them as one "
        "Parameter (register the Parameter at '0.weight' as '2.weight' too, register_parameter), "
        "or give each its own tensor (.clone())"
    )
    # over a part of it (starting at another address): refused too
    other = nn.Linear(3, 2, dtype=F64)
    other.weight.data = first.weight.data[1:]
    with pytest.raises(ValueError, match=r"^Sequential: parameters '2\.weight' and '4\.weight' "):
        nn.Sequential(nn.Linear(3, 3, dtype=F64), nn.Tanh(), other, nn.Tanh(), first)
    with pytest.raises(ValueError, match=r"^Sequential: parameters '0\.weight' and '2\.weight' "):
        nn.Sequential(first, nn.Tanh(), other)
    assert second.weight.data.data_ptr() == first.weight.data.data_ptr()
    second.register_parameter("weight", first.weight)
    model = nn.Sequential(first, nn.Tanh(), second)
    assert model[2].weight is model[0].weight


def test_an_empty_expanded_buffer_still_loads() -> None:
    """A buffer of no elements with a stride 0 has nothing to write: it loaded before the check
    of elements sharing memory, which refused it."""

    class Empty(Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("a", torch.zeros(0, 1).expand(0, 3))

    module = Empty()
    module.load_state_dict({"a": torch.zeros(0, 3)})
    assert module.a.shape == (0, 3)
