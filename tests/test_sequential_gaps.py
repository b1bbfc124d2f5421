"""``Sequential``'s behaviours that hand-made mutants of ``minidl/nn/sequential.py`` showed untested.

Each test checks what a user relies on: the model that a refused change says to build (checked
against what ``torch.nn.Sequential``'s change leaves, where PyTorch is the oracle), the values and
gradients of a chain against PyTorch autograd in float64, and the state left after a refusal.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from minidl import nn
from tests.helpers import OneColumnGradient

F64 = torch.float64

_BUILD = "; build a new Sequential with every module in the order data flows through them, "


def _four() -> tuple[nn.Sequential, torch.nn.Sequential]:
    """A model of four modules and its ``torch.nn`` twin (the same layer types, in order)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Tanh())
    twin = torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2), torch.nn.Tanh()
    )
    return model, twin


@pytest.mark.parametrize(
    ("ours", "theirs", "given", "recipe"),
    [
        (
            lambda m: m.insert(0, nn.Sigmoid()),
            lambda t: t.insert(0, torch.nn.Sigmoid()),
            "a Sigmoid to insert at 0",
            "Sequential(module, *model)",
        ),
        (
            lambda m: m.__setitem__(-4, nn.Sigmoid()),
            lambda t: t.__setitem__(-4, torch.nn.Sigmoid()),
            "a Sigmoid to put at model[-4]",
            "Sequential(module, *model[1:])",
        ),
        (
            lambda m: m.__delitem__(-4),
            lambda t: t.__delitem__(-4),
            "del model[-4]",
            "Sequential(*model[1:])",
        ),
        (
            lambda m: m.__setitem__(3, nn.Sigmoid()),
            lambda t: t.__setitem__(3, torch.nn.Sigmoid()),
            "a Sigmoid to put at model[3]",
            "Sequential(*model[:3], module)",
        ),
    ],
    ids=["insert(0)", "model[-4] =", "del model[-4]", "model[3] ="],
)
def test_a_refused_change_at_either_end_says_to_build_what_torch_leaves(
    ours: Callable[[Any], object], theirs: Callable[[Any], object], given: str, recipe: str
) -> None:
    """At the first place (``insert(0)``, index ``-len``) and the last, the refusal's recipe is
    exact, and the model it builds has the layer types that PyTorch's in-place change leaves:
    ``insert(0)`` puts the module first, not last; ``model[-4]`` is in range, not refused as
    out of range."""
    model, twin = _four()
    layers = list(model)
    with pytest.raises(TypeError) as info:
        ours(model)
    assert str(info.value).endswith(f"got {given}{_BUILD}{recipe}")
    assert list(model) == layers
    theirs(twin)
    built = eval(  # (the message's own code)
        recipe,
        {"Sequential": nn.Sequential},
        {"model": model, "module": nn.Sigmoid()},
    )
    assert [type(part).__name__ for part in built] == [type(part).__name__ for part in twin]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.__setitem__(4, nn.Sigmoid()),
        lambda m: m.__setitem__(-5, nn.Sigmoid()),
        lambda m: m.__delitem__(4),
        lambda m: m.pop(4),
    ],
    ids=["model[4] =", "model[-5] =", "del model[4]", "pop(4)"],
)
def test_a_change_just_out_of_range_names_no_place(change: Callable[[Any], object]) -> None:
    """An index one past either end, which PyTorch refuses (IndexError), names no place to
    build the model at (``Sequential(*modules)``), as one far out of range does; not the
    first place (``4 % 4 == 0``)."""
    model, twin = _four()
    with pytest.raises(IndexError):
        twin[4]
    layers = list(model)
    with pytest.raises(TypeError) as info:
        change(model)
    assert str(info.value).endswith("Sequential(*modules)")
    assert list(model) == layers


@pytest.mark.parametrize("kind", [list, tuple])
def test_modules_given_in_a_list_or_tuple_are_refused_saying_to_unpack_them(kind: type) -> None:
    """``Sequential([a, b])`` or ``Sequential((a, b))`` (a common slip) is refused naming the
    container and the fix, ``Sequential(*modules)``."""
    with pytest.raises(TypeError) as info:
        nn.Sequential(kind([nn.Linear(2, 2), nn.Tanh()]))
    assert str(info.value) == (
        f"Sequential: argument 0 must be a minidl Module, got a {kind.__name__}; pass the "
        "modules themselves, Sequential(*modules)"
    )


class _SameTwice(nn.Module):
    """One ``Tanh`` object registered under two names, applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.tanh = self.register_module("a", nn.Tanh())
        self.register_module("b", self.tanh)

    def forward(self, input: Tensor) -> Tensor:
        return self.tanh.forward(self.tanh.forward(input))

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.tanh.backward(self.tanh.backward(grad_output))


def test_a_module_at_two_places_inside_one_child_is_refused() -> None:
    """A child that holds one module object at two places (its second forward overwrites the
    cache the first one's backward needs) is refused when the model is built, naming both
    paths, as two children that are one object are."""
    with pytest.raises(ValueError) as info:
        nn.Sequential(nn.Linear(2, 2), _SameTwice())
    assert str(info.value) == (
        "Sequential: the Tanh at '1.b' is the same object as the one at '1.a'; a module keeps "
        "what its last forward computed for its backward, so each place needs its own (e.g. a "
        "second Tanh())"
    )


class _NanAbove2(nn.Module):
    """The identity, but NaN for every value above 2."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.where(input > 2, torch.nan, input)

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.clone()


def test_detect_anomaly_does_not_check_the_values_of_a_trial_in_a_nested_sequential() -> None:
    """A batch norm makes a new input shape run a trial (the first sample, in evaluation mode)
    before the training forward. Under ``detect_anomaly()`` the trial's values, which are not
    the training forward's, are not checked in a nested ``Sequential`` either: here the trial
    sees 5 (NaN after the last layer) where training sees the normalised batch (finite). The
    forward is PyTorch's, and the running statistics counted the batch once."""
    from minidl.anomaly import detect_anomaly

    norm = nn.BatchNorm1d(1, dtype=F64)
    model = nn.Sequential(norm, nn.Sequential(_NanAbove2()))
    twin = torch.nn.BatchNorm1d(1, dtype=F64)
    x = torch.tensor([[5.0], [3.0]], dtype=F64)
    with detect_anomaly():
        output = model(x)
    expected = twin(x).detach()
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.running_mean, twin.running_mean, rtol=0, atol=1e-15)


class _AtMost10(nn.Module):
    """The identity, which refuses any value above 10."""

    def forward(self, input: Tensor) -> Tensor:
        if bool((input > 10).any()):
            raise ValueError("_AtMost10: a value above 10")
        return input.clone()

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.clone()


class _Pair(nn.Module):
    """A container of one's own: a ``Linear`` then an ``_AtMost10``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = self.register_module("linear", nn.Linear(2, 3, dtype=F64))
        self.check = self.register_module("check", _AtMost10())

    def forward(self, input: Tensor) -> Tensor:
        return self.check.forward(self.linear.forward(input))

    def backward(self, grad_output: Tensor) -> Tensor:
        return self.linear.backward(self.check.backward(grad_output))


def test_a_first_child_container_refusing_part_way_refuses_the_backward() -> None:
    """The first child is a container of one's own whose second layer refuses an input after
    its first layer cached it. Its backward would differentiate that cache (the refused input,
    of the good one's shape: silently wrong gradients), so the chain refuses the backward until
    a forward succeeds, naming the child, and leaves every gradient as it was."""
    torch.manual_seed(0)
    model = nn.Sequential(_Pair(), nn.Tanh())
    x = torch.full((4, 2), 0.1, dtype=F64)
    model(x)
    with pytest.raises(ValueError, match=r"^_AtMost10: a value above 10"):
        model(x * 1000)
    before = [parameter.grad.clone() for parameter in model.parameters()]
    for method in ("backward", "backward_parameters"):
        with pytest.raises(RuntimeError) as info:
            getattr(model, method)(torch.ones(4, 3, dtype=F64))
        assert str(info.value).startswith(
            "Sequential: backward after the forward refused by module 0 (_Pair): the modules "
            "that ran had already cached its input"
        )
    assert all(
        torch.equal(parameter.grad, old)
        for parameter, old in zip(model.parameters(), before, strict=True)
    )


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_refusal_in_a_slices_backward_names_the_modules_as_registered(method: str) -> None:
    """A slice keeps the model's names (``model[2:]``'s first module is ``"2"``): the note of
    a refusal in its backward names the refusing module and the module whose backward gave the
    gradient by those names, as the model's own refusal would."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), OneColumnGradient(), nn.Tanh()
    )
    part = model[2:]
    part(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"gradient has shape \(5, 1\)") as info:
        getattr(part, method)(torch.ones(5, 4))
    assert getattr(info.value, "__notes__", None) == [
        f"in Sequential.{method}, at module 2 (Linear), given the gradient returned by the "
        "backward of module 3 (OneColumnGradient)"
    ]


def _model() -> nn.Sequential:
    """A small model of two layers (seeded)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))


@pytest.mark.parametrize(
    "move",
    [
        lambda m: m.to(torch.float32),
        lambda m: m.to("cpu"),
        lambda m: m.float(),
    ],
    ids=["to(float32)", "to(cpu)", "float()"],
)
def test_a_move_that_changes_nothing_keeps_an_assigned_parameter_tensor_as_torch_does(
    move: Callable[[Any], object],
) -> None:
    """A tensor assigned to a parameter's ``.data`` stays that parameter's memory through a
    ``.to()`` to the dtype and device it already has, as in ``torch.nn``: a move that changes
    nothing copies nothing (the flat buffer is not made again, which would untie the tensor
    the caller still holds and writes into)."""
    torch.manual_seed(0)
    first, last = nn.Linear(2, 3), nn.Linear(3, 2)
    model = nn.Sequential(first, nn.Tanh(), last)
    twin = torch.nn.Linear(2, 3)
    torch.manual_seed(1)
    given = torch.randn(3, 2)
    first.weight.data = given
    twin.weight.data = given
    assert move(model) is model
    move(twin)
    assert twin.weight.data.data_ptr() == given.data_ptr()  # (the oracle)
    assert first.weight.data.data_ptr() == given.data_ptr()
    with torch.no_grad():
        given.add_(1.0)  # (the caller's tensor is still the layer's weight)
    assert first.bias is not None and last.bias is not None
    x = torch.randn(4, 2)
    expected = torch.tanh(x @ given.T + first.bias.data) @ last.weight.data.T + last.bias.data
    torch.testing.assert_close(model(x), expected)


class _RefusingIndex:
    """An object whose ``__index__`` refuses with an error that is no ``TypeError``."""

    def __index__(self) -> int:
        raise ValueError("no index here")


@pytest.mark.parametrize(
    ("index", "got"),
    [
        (torch.tensor(1, device="meta"), "a tensor of torch.int64 and shape ()"),
        (_RefusingIndex(), "_RefusingIndex"),
    ],
    ids=["meta int tensor", "__index__ raising ValueError"],
)
def test_an_index_whose_index_method_refuses_in_any_error_is_refused_as_no_integer(
    index: object, got: str
) -> None:
    """An index whose ``__index__`` raises (a meta tensor's ``.item()`` raises RuntimeError, a
    class of one's own may raise ValueError) is refused as a float tensor's is: a TypeError
    naming ``Sequential`` and what was given, not the index's own error; the model is
    unchanged and still runs."""
    model = _model()
    before = [p.data.clone() for p in model.parameters()]
    with pytest.raises(TypeError) as caught:
        model[index]  # type: ignore[call-overload]
    assert str(caught.value) == f"Sequential: indices must be integers or slices, got {got}"
    assert len(model) == 3
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.data, b)
    y: Tensor = model(torch.ones(1, 2))
    assert y.shape == (1, 2)


def test_a_module_in_evaluation_mode_at_two_places_is_refused() -> None:
    """A module's forward cache is overwritten by its second place in evaluation mode as in
    training mode (its backward would differentiate the wrong input), so a module object given
    twice is refused whatever its mode, naming both places."""
    layer = nn.Linear(2, 2)
    layer.eval()
    with pytest.raises(ValueError) as info:
        nn.Sequential(layer, nn.Tanh(), layer)
    assert str(info.value).startswith(
        "Sequential: the Linear at '2' is the same object as the one at '0'; a module keeps "
        "what its last forward computed for its backward, so each place needs its own"
    )


def test_a_change_at_a_slice_of_step_zero_names_the_slice_as_written() -> None:
    """``del model[::0]`` (which PyTorch refuses too, a slice step cannot be zero) is refused
    naming the slice as written, its step included, not as ``model[:]`` (every module)."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with pytest.raises(TypeError) as info:
        del model[::0]
    assert str(info.value) == (
        "Sequential: a Sequential's modules are fixed when it is built (its forward runs them "
        "in that order, and its parameters are one flat buffer made then), got del "
        "model[::0]; build a new Sequential with every module in the order data flows through "
        "them, Sequential(*modules)"
    )
    assert len(model) == 2


def test_a_nested_chains_skipped_layer_cast_since_the_forward_is_not_checked() -> None:
    """``backward_parameters`` skips the modules in front of the first one with parameters,
    also inside a nested ``Sequential`` that is that first one: a batch norm without
    parameters in front of its first ``Linear``, cast since the forward, is neither run nor
    checked, and the parameters get autograd's gradients (float64)."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(3, affine=False).to(F64)
    linear = nn.Linear(3, 2).to(F64)
    model = nn.Sequential(nn.Sequential(norm, linear), nn.Tanh())
    x = torch.randn(5, 3, dtype=F64)
    grad = torch.randn(5, 2, dtype=F64)
    assert linear.bias is not None
    weight = linear.weight.data.clone().requires_grad_(True)
    bias = linear.bias.data.clone().requires_grad_(True)
    normalized = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
    output = torch.tanh(normalized @ weight.T + bias)
    expected = torch.autograd.grad(output, (weight, bias), grad)
    model(x)
    norm.to(torch.float32)  # (its backward would refuse: it is not run)
    model.backward_parameters(grad)
    torch.testing.assert_close(linear.weight.grad, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(linear.bias.grad, expected[1], rtol=1e-12, atol=1e-12)


# -- a fourth pass: the trial in evaluation mode ----------------------------------------------


class _NeedsTwo(nn.Module):
    """An identity of one's own computing batch statistics, as a batch norm: in training mode
    it refuses a batch of fewer than two samples; in evaluation mode it takes any."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, input: Tensor) -> Tensor:
        self.calls += 1
        if self.training and input.shape[0] < 2:
            raise ValueError(f"_NeedsTwo: got {input.shape[0]} samples in training mode")
        return input.clone()

    def backward(self, grad_output: Tensor) -> Tensor:
        return grad_output.clone()


def _with_needs_two() -> nn.Sequential:
    """``_NeedsTwo`` first, then a layer and a batch norm (whose running statistics make a new
    input signature run a trial in evaluation mode), in float64 (seeded)."""
    torch.manual_seed(0)
    return nn.Sequential(
        _NeedsTwo(), nn.Linear(3, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64), nn.Tanh()
    )


def test_a_first_child_refusing_after_a_trial_that_ran_every_child_refuses_the_backward() -> None:
    """A dropout makes a batch of one sample run a trial (in evaluation mode, where the first
    child takes it) through every child, whose caches are then the trial's; the first child
    then refuses the batch in training mode. A backward would differentiate the trial's caches
    (the dropout's, with no mask), so the chain refuses it, naming the child, and leaves the
    gradients and the dropout's generator as they were."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    first = _NeedsTwo()
    model = nn.Sequential(
        first, nn.Linear(3, 4, dtype=F64), nn.Dropout(0.5, generator=generator), nn.Tanh()
    )
    state = generator.get_state()
    with pytest.raises(ValueError, match=r"^_NeedsTwo: got 1 samples in training mode"):
        model(torch.randn(1, 3, dtype=F64))
    assert first.calls == 2  # (the trial's forward, then the training one)
    for method in ("backward", "backward_parameters"):
        with pytest.raises(RuntimeError) as info:
            getattr(model, method)(torch.ones(1, 4, dtype=F64))
        assert str(info.value).startswith(
            "Sequential: backward after the forward refused by module 0 (_NeedsTwo): the "
            "modules that ran had already cached its input"
        )
    assert all(not p.grad.any() for p in model.parameters())
    assert torch.equal(generator.get_state(), state)


def test_an_empty_batch_refused_by_the_first_child_keeps_the_last_forwards_backward() -> None:
    """An empty batch runs no trial (it has no sample to try): the first child, which takes it
    in evaluation mode, refuses it in training mode in its own words, before anything ran on
    it, so the backward of the last good forward still gives the numbers of a twin that never
    saw the empty batch, not a refusal (nor the error of a layer after it in a trial)."""
    model = _with_needs_two()
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    x = torch.randn(5, 3, dtype=F64)
    grad = torch.randn(5, 4, dtype=F64)
    model(x)
    twin(x)
    with pytest.raises(ValueError, match=r"^_NeedsTwo: got 0 samples in training mode") as info:
        model(torch.empty(0, 3, dtype=F64))
    assert getattr(info.value, "__notes__", None) == ["in Sequential, at module 0 (_NeedsTwo)"]
    torch.testing.assert_close(model.backward(grad), twin.backward(grad), rtol=0, atol=0)
    for ours, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=0)
    for buffer, twins in zip(model.buffers(), twin.buffers(), strict=True):
        torch.testing.assert_close(buffer, twins, rtol=0, atol=0)


def test_a_refused_batch_of_one_sample_is_tried_once() -> None:
    """A batch of one sample is its own first sample: the trial refuses it (a layer of another
    width) having run the children before the refusing one once, in evaluation mode, not a
    second time on the whole batch; the dropout's generator is left as it was, and the error
    names the layer and the shape given."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    first = _NeedsTwo()
    model = nn.Sequential(
        first, nn.Dropout(0.5, generator=generator), nn.Linear(3, 4, dtype=F64), nn.Tanh()
    )
    state = generator.get_state()
    with pytest.raises(
        ValueError, match=r"^Linear: expected 3 input features, got 5 \(input shape \(1, 5\)\)"
    ):
        model(torch.randn(1, 5, dtype=F64))
    assert first.calls == 1
    assert torch.equal(generator.get_state(), state)


def test_a_single_sample_in_evaluation_mode_after_a_trial_is_normalised_as_torch_does() -> None:
    """A trial makes a batch norm in training mode refuse a single sample in evaluation mode
    too (as its training forward would), for the trial's time only: after a training forward
    that ran a trial, the model in evaluation mode normalises a single sample with the running
    statistics, as ``torch.nn`` does."""
    torch.manual_seed(0)
    linear = nn.Linear(3, 4, dtype=F64)
    model = nn.Sequential(linear, nn.BatchNorm1d(4, dtype=F64))
    twin_linear = torch.nn.Linear(3, 4, dtype=F64)
    twin = torch.nn.Sequential(twin_linear, torch.nn.BatchNorm1d(4, dtype=F64))
    with torch.no_grad():
        twin_linear.weight.copy_(linear.weight.data)
        assert linear.bias is not None
        twin_linear.bias.copy_(linear.bias.data)
    x = torch.randn(6, 3, dtype=F64)
    torch.testing.assert_close(model(x), twin(x).detach(), rtol=1e-12, atol=1e-12)
    model.eval()
    twin.eval()
    sample = torch.randn(1, 3, dtype=F64)
    torch.testing.assert_close(model(sample), twin(sample).detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (
            torch.nn.Linear,
            "the class torch.nn.modules.linear.Linear, a PyTorch module's class (minidl.nn has "
            "its own modules; minidl.interop.from_torch converts a PyTorch module)",
        ),
        (int, "the class int"),
    ],
    ids=["torch.nn.Linear", "int"],
)
def test_a_class_that_is_no_minidl_module_is_not_said_to_be_one_to_instantiate(
    given: type, named: str
) -> None:
    """A minidl module's class given for an instance is refused with the fix, an instance; a
    class that is no minidl module (PyTorch's ``Linear``, ``int``) is refused without it (an
    instance of it would be refused too), named as a class, PyTorch's as PyTorch's (it was
    "got type")."""
    prefix = "Sequential: argument 1 must be a minidl Module, got "
    with pytest.raises(TypeError) as info:
        nn.Sequential(nn.Tanh(), given)  # type: ignore[arg-type]
    assert str(info.value) == prefix + named
    with pytest.raises(TypeError) as info:
        nn.Sequential(nn.Tanh(), nn.ReLU)  # type: ignore[arg-type]
    assert str(info.value) == prefix + "the class ReLU; pass an instance, ReLU()"


def test_an_insert_at_a_bool_index_says_to_build_at_the_int_it_stands_for() -> None:
    """``insert`` takes an index as PyTorch's does (``operator.index``: ``True`` is 1); the
    refusal's recipe writes the place as that int (``model[:1]``, not ``model[:True]``)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with pytest.raises(TypeError) as info:
        model.insert(True, nn.Sigmoid())
    recipe = "Sequential(*model[:1], module, *model[1:])"
    assert str(info.value).endswith(f"got a Sigmoid to insert at True{_BUILD}{recipe}")


@pytest.mark.parametrize("name", ["_refused", "_tried", "_updaters", "_registrations_seen"])
def test_a_sequential_pickled_before_an_attribute_existed_loads_and_runs(name: str) -> None:
    """A chain (with a batch norm, which its trial concerns) pickled after a forward by a version
    without the attribute (its note of a refused forward, its trial's key, the parts it tries,
    its count of registrations) loads with it made again: its backward, before and after a new
    forward, gives the input and parameter gradients of the chain itself, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4, dtype=F64), nn.BatchNorm1d(4, dtype=F64), nn.Tanh())
    x = torch.randn(5, 4, dtype=F64)
    model(x)
    state = model.__getstate__()
    del state[name]
    old = nn.Sequential.__new__(nn.Sequential)
    old.__setstate__(state)
    grad = torch.randn(5, 4, dtype=F64)
    for again in (False, True):
        if again:
            assert torch.equal(old(x), model(x))
        model.zero_grad()
        old.zero_grad()
        assert torch.equal(old.backward(grad), model.backward(grad))
        for got, expected in zip(old.parameters(), model.parameters(), strict=True):
            assert got.grad is not None and expected.grad is not None
            assert torch.equal(got.grad, expected.grad)


def test_an_input_that_is_no_tensor_gets_the_first_layers_error_in_a_chain_with_a_trial() -> None:
    """A chain with a batch norm (whose running statistics make a new input run a trial) given
    an input that is no tensor (a list) raises the first layer's error, as a chain without one
    does, not an ``AttributeError`` of the trial reading its shape; the statistics are left as
    they were."""
    torch.manual_seed(0)
    norm = nn.BatchNorm1d(2, dtype=F64)
    model = nn.Sequential(nn.Linear(2, 2, dtype=F64), norm, nn.Tanh())
    statistics = [buffer.clone() for buffer in norm.buffers()]
    with pytest.raises(
        TypeError,
        match=r"^Linear: expected a torch\.Tensor as input, got list\n"
        r"in Sequential, at module 0 \(Linear\)$",
    ):
        model([[1.0, 2.0], [3.0, 4.0]])  # type: ignore[arg-type]
    assert all(
        torch.equal(buffer, old) for buffer, old in zip(norm.buffers(), statistics, strict=True)
    )


# A fourth mutation audit of sequential.py (m15, m17, m20, m23, m24, m35, m66, m68).


def test_a_first_layer_put_in_place_with_another_shape_is_refused_before_any_gradient_accumulates() -> (
    None
):
    """A weight of another shape put in place of the first layer's after the forward: backward
    refuses (the Linear's own error) before the last layer's backward ran, so its gradient is
    unchanged (no half-accumulated backward)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    x = torch.randn(5, 3, dtype=F64)
    model(x)
    model[0].weight.data = torch.zeros(6, 3, dtype=F64)
    before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"^Linear"):
        model.backward(torch.ones(5, 2, dtype=F64))
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad, b)


def test_backward_parameters_refuses_a_first_trained_layer_of_another_shape_before_anything_accumulates() -> (
    None
):
    """``backward_parameters`` checks the first layer with parameters (which runs its own
    ``backward_parameters`` last) before the layers after it accumulate anything."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    model(torch.randn(5, 3, dtype=F64))
    model[0].weight.data = torch.zeros(6, 3, dtype=F64)
    before = [p.grad.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"^Linear"):
        model.backward_parameters(torch.ones(5, 2, dtype=F64))
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad, b)


class _Square(nn.Module):
    """``x**2``, which caches its input and reads it in backward (a module of one's own)."""

    def forward(self, input: Tensor) -> Tensor:
        self._x = input
        return input * input

    def backward(self, grad_output: Tensor) -> Tensor:
        return 2 * self._x * grad_output


def test_an_input_in_the_memory_of_the_parameters_gradients_is_read_as_it_was_at_forward() -> None:
    """An input that is a parameter's gradient (a view of the chain's flat gradient buffer) is
    copied by forward: a module of one's own first, which reads its cached input in backward,
    reads the input's value at forward, not what the last layer's backward wrote into it since
    (the oracle: PyTorch autograd on a copy of the input)."""
    torch.manual_seed(0)
    model = nn.Sequential(_Square(), nn.Linear(4, 4)).to(F64)
    model[1].weight.grad.copy_(torch.randn(4, 4, dtype=F64))
    x = model[1].weight.grad  # (4, 4): a batch of 4 inputs of 4 features
    leaf = x.clone().requires_grad_(True)
    weight = model[1].weight.data.clone().requires_grad_(True)
    bias = model[1].bias.data.clone()
    expected = torch.nn.functional.linear(leaf * leaf, weight, bias)
    output = model(x)
    torch.testing.assert_close(output, expected.detach(), rtol=1e-12, atol=1e-12)
    g = torch.randn(4, 4, dtype=F64)
    expected.backward(g)
    torch.testing.assert_close(model.backward(g), leaf.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("anomaly", [False, True], ids=["plain", "detect_anomaly"])
def test_a_forward_that_succeeds_after_a_refused_one_makes_backward_possible_again(
    anomaly: bool,
) -> None:
    """A forward refused part-way refuses backward; the next forward that succeeds makes it
    possible again, with the gradient of that forward (oracle: PyTorch autograd), with and
    without ``detect_anomaly``."""
    import contextlib

    import minidl

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), _AtMost10()).to(F64)
    weight, bias = model[0].weight.data.clone(), model[0].bias.data.clone()
    with minidl.detect_anomaly() if anomaly else contextlib.nullcontext():
        with pytest.raises(ValueError, match=r"^_AtMost10: a value above 10"):
            model(torch.full((3, 2), 1e6, dtype=F64))
        with pytest.raises(
            RuntimeError,
            match=r"^Sequential: backward after the forward refused by module 1 \(_AtMost10\)",
        ):
            model.backward(torch.ones(3, 2, dtype=F64))
        x = torch.randn(3, 2, dtype=F64)
        model(x)
        g = torch.randn(3, 2, dtype=F64)
        got = model.backward(g)
    leaf = x.clone().requires_grad_(True)
    torch.nn.functional.linear(leaf, weight, bias).backward(g)
    torch.testing.assert_close(got, leaf.grad, rtol=1e-12, atol=1e-12)


def test_a_pickled_chain_finds_its_first_trained_module_again_in_the_process_that_loads_it() -> (
    None
):
    """The count of registrations seen is this process's: a pickle carries none (-1, found
    again), as another process counts from 0 and may reach the same number with registrations
    not seen. (The plans and signatures are dropped likewise.)"""
    import pickle

    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    state = model.__getstate__()
    assert state["_registrations_seen"] == -1
    assert state["_planned"] is None and state["_tried"] is None
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded._registrations_seen == -1
    x = torch.randn(4, 2)
    loaded(x)
    loaded.backward_parameters(torch.ones(4, 1))
    assert not torch.equal(loaded[0].weight.grad, torch.zeros(3, 2))


def test_a_sequential_pickled_before_plans_existed_loads_and_trains_as_a_new_one() -> None:
    """A state without the plans' attributes (a pickle from before they existed) makes them
    on load: forward and backward run, and give the fresh model's results bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(F64)
    twin = copy.deepcopy(model)
    state = model.__getstate__()
    for key in ("_plannable", "_plans", "_planned", "_last_signature", "_trained_signature"):
        del state[key]
    loaded = nn.Sequential.__new__(nn.Sequential)
    loaded.__setstate__(state)
    for _ in range(3):  # (the third call runs a plan, in the twin at least)
        x, g = torch.randn(4, 2, dtype=F64), torch.randn(4, 1, dtype=F64)
        assert torch.equal(loaded(x), twin(x))
        assert torch.equal(loaded.backward(g), twin.backward(g))
    for p, q in zip(loaded.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_a_tuple_of_modules_given_as_one_argument_says_to_unpack_it() -> None:
    """``Sequential((a, b))`` (a tuple, as a list) is refused with the fix: pass the modules."""
    with pytest.raises(
        TypeError,
        match=r"^Sequential: argument 0 must be a minidl Module, got a tuple; pass the modules "
        r"themselves, Sequential\(\*modules\)$",
    ):
        nn.Sequential((nn.Tanh(), nn.ReLU()))  # type: ignore[arg-type]


# The rest of the fourth mutation audit of sequential.py (m40, m42, m49, m59).


class _WritesThenReads(nn.Module):
    """``y = x W^T + b``, a module of one's own whose backward accumulates ``W.grad`` first and
    then reads ``grad_output`` (for ``b.grad`` and the input gradient): a ``grad_output`` in the
    memory of ``W.grad`` would be read after it was changed."""

    def __init__(self, features: int) -> None:
        super().__init__()
        weight = torch.randn(features, features, dtype=F64) / features**0.5
        self.weight = self.register_parameter("weight", nn.Parameter(weight))
        self.bias = self.register_parameter("bias", nn.Parameter(torch.randn(features, dtype=F64)))
        self._input: Tensor | None = None

    def forward(self, input: Tensor) -> Tensor:
        self._input = input
        return input @ self.weight.data.t() + self.bias.data

    def backward(self, grad_output: Tensor) -> Tensor:
        assert self._input is not None
        self.weight.grad.add_(grad_output.t() @ self._input)
        self.bias.grad.add_(grad_output.sum(0))
        return grad_output @ self.weight.data


@pytest.mark.parametrize("method", ["backward", "backward_parameters"])
def test_a_gradient_in_the_memory_of_the_last_modules_parameter_gradient_is_read_as_given(
    method: str,
) -> None:
    """A ``grad_output`` that is the last module's ``weight.grad`` itself (in the chain's flat
    gradient memory) is copied before any module runs: a last module of one's own that writes
    ``weight.grad`` and then reads ``grad_output`` gets the gradient as it was given (oracle:
    PyTorch autograd on copies, the gradients accumulated onto what they held)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Tanh(), _WritesThenReads(4))
    own = model[1]
    own.weight.grad.copy_(torch.randn(4, 4, dtype=F64))
    own.bias.grad.copy_(torch.randn(4, dtype=F64))
    weight_before, bias_before = own.weight.grad.clone(), own.bias.grad.clone()
    x = torch.randn(4, 4, dtype=F64)
    leaf = x.clone().requires_grad_(True)
    weight = own.weight.data.clone().requires_grad_(True)
    bias = own.bias.data.clone().requires_grad_(True)
    expected = torch.tanh(leaf) @ weight.t() + bias
    torch.testing.assert_close(model(x), expected.detach(), rtol=1e-12, atol=1e-12)
    gradient = own.weight.grad  # (4, 4): the output's shape
    expected.backward(gradient.clone())
    got = getattr(model, method)(gradient)
    torch.testing.assert_close(own.weight.grad, weight_before + weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(own.bias.grad, bias_before + bias.grad, rtol=1e-12, atol=1e-12)
    if method == "backward":
        assert got is not None
        torch.testing.assert_close(got, leaf.grad, rtol=1e-12, atol=1e-12)
    else:
        assert got is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_plan_that_declined_a_leaf_gradient_in_backward_is_dropped_with_the_graph_it_holds(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``backward`` (not ``backward_parameters``) of a leaf gradient whose operations are
    recorded, through a plan whose last child is a 16-bit ELU: the ELU writes the graph's result
    into a plan buffer before the first layer's product refuses it (the plan declines). The plan
    is dropped: the buffer no longer holds the leaf's graph (the leaf is freed), and the plan
    made again runs the next backwards instead of declining each (results: the children's, bit
    for bit)."""
    import gc
    import weakref

    import minidl.nn.chain

    declined: list[int] = []
    original = minidl.nn.chain.ChainPlan.backward

    def counted(self: minidl.nn.chain.ChainPlan, grad: Tensor, with_input: bool) -> Tensor | None:
        try:
            return original(self, grad, with_input)
        except minidl.nn.chain.PlanDeclinedError:
            declined.append(1)
            raise

    monkeypatch.setattr(minidl.nn.chain.ChainPlan, "backward", counted)
    torch.manual_seed(20)
    model = nn.Sequential(
        nn.Linear(3, 5, dtype=dtype), nn.Tanh(), nn.Linear(5, 2, dtype=dtype), nn.ELU()
    )
    plain = copy.deepcopy(model)
    x = torch.randn(5, 3).to(dtype)
    for _ in range(3):  # (the second forward after a backward makes a plan; the third runs it)
        y = model(x)
        if model._planned is None:
            model.backward_parameters(torch.zeros_like(y))
    assert model._planned is not None
    leaf = torch.randn(y.shape).to(dtype).requires_grad_()
    alive = weakref.ref(leaf)
    model.backward(leaf)
    assert declined == [1]
    del leaf
    gc.collect()
    assert alive() is None
    for _ in range(3):
        y = model(x)
        expected = x
        for module in plain:
            expected = module(expected)
        assert torch.equal(y, expected)
        g = torch.randn(y.shape).to(dtype)
        want = g
        for module in reversed(list(plain)):
            want = module.backward(want)
        assert torch.equal(model.backward(g), want)
    assert declined == [1]
    assert model._planned is not None  # (the last backward ran the plan made again)


def test_an_index_out_of_range_given_as_a_numpy_integer_or_tensor_is_named_as_given() -> None:
    """``model[i]`` takes what PyTorch's takes (``operator.index``: a NumPy integer, a one-element
    integer tensor): in range, the module at that place; out of range, an ``IndexError`` naming
    the index as it was given (not the int it stands for)."""
    import numpy as np

    model = nn.Sequential(nn.Tanh(), nn.ReLU(), nn.Tanh())
    assert model[np.int64(1)] is model[1] and model[torch.tensor(-1)] is model[2]
    for index, written in [
        (np.int64(7), "np.int64(7)"),
        (torch.tensor(7), "tensor(7)"),
        (torch.tensor([-4]), "tensor([-4])"),
    ]:
        with pytest.raises(IndexError) as caught:
            model[index]
        assert str(caught.value) == f"Sequential: index {written} is out of range for 3 modules"


def test_a_sum_with_a_module_nested_in_the_model_names_its_dotted_path_in_the_model() -> None:
    """``model + other`` where the module shared lies inside a child of ``model`` (not one of
    its own children): refused by ``+`` (not by the sum's build, which numbers the places in the
    sum the caller never sees), naming the module's path in each model; nothing is changed."""
    inner = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    model = nn.Sequential(inner, nn.Linear(2, 2))
    other = nn.Sequential(nn.ReLU(), inner[1])
    data = [parameter.data for parameter in model.parameters()]
    with pytest.raises(ValueError) as refused:
        model + other
    assert str(refused.value) == (
        "Sequential: model + other would put the Tanh at '1' of other, the same object as the "
        "one at '0.1' of model, at two places; a module keeps what its last forward computed for "
        "its backward, so each place needs its own: add a copy with modules of its own, "
        "model + copy.deepcopy(other)"
    )
    assert all(p.data is d for p, d in zip(model.parameters(), data, strict=True))
    assert len(model) == 2 and len(other) == 2 and len(inner) == 2
